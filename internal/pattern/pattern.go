// Package pattern checks names against a regular expression and a length
// range. Go's regexp compiles a counted repetition such as {0,62} by
// unrolling it, which costs time and memory in every process that loads
// the package: sandpool's binary is every sandbox's PID 1 too, so names
// are checked with an unbounded expression and a length instead.
package pattern

import "regexp"

// Pattern is a regular expression with bounds on the length of what it
// matches.
type Pattern struct {
	re       *regexp.Regexp
	min, max int
}

// New compiles expr (anchored by the caller, with * or + where a count
// would be) for strings of min to max bytes. It panics on a bad expr, as
// regexp.MustCompile does: patterns are package-level constants.
func New(expr string, min, max int) Pattern {
	return Pattern{re: regexp.MustCompile(expr), min: min, max: max}
}

// MatchString reports whether s has an allowed length and matches.
func (p Pattern) MatchString(s string) bool {
	return len(s) >= p.min && len(s) <= p.max && p.re.MatchString(s)
}
