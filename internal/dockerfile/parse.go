// Package dockerfile parses Dockerfiles and builds them into layers of an
// image.Store: FROM (an image or a sandpool template), RUN (in a sandbox,
// through a Runner), COPY and ADD of local files, ENV, ARG, WORKDIR, USER,
// and the metadata instructions CMD, ENTRYPOINT, LABEL and SHELL. Each
// step whose inputs did not change since an earlier build comes from a
// cache, as with docker build. Anything else is refused with an error that
// names the line.
package dockerfile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/image"
)

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	// Escape is the escape character: '\' unless a "# escape=`"
	// directive says otherwise.
	Escape rune
	// Instructions in order; ARGs before the FROM come first.
	Instructions []Instruction
}

// Instruction is one instruction, continuation lines joined.
type Instruction struct {
	// Line is where it starts (1-based).
	Line int
	// Cmd is the keyword, upper case: "RUN".
	Cmd string
	// Flags are the leading --name=value options, in order.
	Flags []Flag
	// Args is the JSON array when JSON is set; otherwise a single
	// element, the text after the flags, unexpanded.
	Args []string
	JSON bool
	// Original is the instruction as written (continuations joined).
	Original string
}

// Flag is an option such as --chown=user.
type Flag struct {
	Name, Value string
}

// Flag returns the value of flag name and whether it is set.
func (in Instruction) Flag(name string) (string, bool) {
	for _, f := range in.Flags {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Error is a problem with the Dockerfile or a step of its build, with the
// line it is on. Its kind is image.ErrInvalid, or ErrRunFailed for a RUN
// command that failed.
type Error struct {
	Line        int
	Instruction string // the keyword, "" for the file as a whole
	Msg         string
	// Kind is what it wraps; nil means image.ErrInvalid.
	Kind error
}

// ErrRunFailed is the kind of a build whose RUN command failed: the
// request was fine, the Dockerfile's own code is not (422 build_failed).
var ErrRunFailed = errdefs.New(errdefs.ErrFailed, "build_failed", "a RUN step failed")

func (e *Error) Error() string {
	switch {
	case e.Line == 0:
		return "Dockerfile: " + e.Msg
	case e.Instruction == "":
		return fmt.Sprintf("Dockerfile line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("Dockerfile line %d: %s: %s", e.Line, e.Instruction, e.Msg)
}

// Unwrap makes errors.Is(err, image.ErrInvalid) (or Kind) true.
func (e *Error) Unwrap() error {
	if e.Kind != nil {
		return e.Kind
	}
	return image.ErrInvalid
}

func errorf(line int, cmd, format string, args ...any) error {
	return &Error{Line: line, Instruction: cmd, Msg: fmt.Sprintf(format, args...)}
}

var directiveRE = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$`)

// maxDockerfile bounds what Parse reads.
const maxDockerfile = 1 << 20

// Parse reads a Dockerfile. Errors name the line and wrap
// image.ErrInvalid.
func Parse(r io.Reader) (*Dockerfile, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxDockerfile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDockerfile {
		return nil, errorf(0, "", "larger than %d bytes", maxDockerfile)
	}
	df := &Dockerfile{Escape: '\\'}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 64<<10), maxDockerfile+1)
	var lines []string
	for sc.Scan() {
		lines = append(lines, strings.TrimSuffix(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, errorf(0, "", "%v", err)
	}
	i := 0
	// Parser directives: only at the very top, before any other line.
	seen := map[string]bool{}
directives:
	for ; i < len(lines); i++ {
		m := directiveRE.FindStringSubmatch(lines[i])
		if m == nil {
			break
		}
		key := strings.ToLower(m[1])
		if seen[key] {
			return nil, errorf(i+1, "", "the %s directive appears twice", key)
		}
		seen[key] = true
		switch key {
		case "escape":
			if m[2] != "\\" && m[2] != "`" {
				return nil, errorf(i+1, "", "invalid escape character %q: use \\ or `", m[2])
			}
			df.Escape = rune(m[2][0])
		case "syntax", "check":
			// Frontend selection and lint settings: nothing for us.
		default:
			// Not a directive after all: a comment. Directives end here.
			i++
			break directives
		}
	}
	for i < len(lines) {
		line := lines[i]
		start := i
		i++
		trimmed := strings.TrimLeftFunc(line, unicode.IsSpace)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		// Join continuation lines; comment and empty lines inside are
		// dropped, as Docker does.
		text, cont := continued(trimmed, df.Escape)
		for cont && i < len(lines) {
			next := lines[i]
			i++
			nt := strings.TrimLeftFunc(next, unicode.IsSpace)
			if nt == "" || strings.HasPrefix(nt, "#") {
				continue
			}
			var more string
			more, cont = continued(next, df.Escape)
			text += more
		}
		in, err := parseInstruction(start+1, text, df.Escape)
		if err != nil {
			return nil, err
		}
		df.Instructions = append(df.Instructions, in)
	}
	if err := validate(df); err != nil {
		return nil, err
	}
	return df, nil
}

// continued strips a trailing escape character (and the blanks after it)
// and reports whether the line goes on.
func continued(line string, escape rune) (string, bool) {
	t := strings.TrimRightFunc(line, unicode.IsSpace)
	if strings.HasSuffix(t, string(escape)) {
		return strings.TrimSuffix(t, string(escape)), true
	}
	return line, false
}

var supported = map[string]bool{
	"FROM": true, "RUN": true, "COPY": true, "ADD": true, "ENV": true, "ARG": true,
	"WORKDIR": true, "USER": true, "CMD": true, "ENTRYPOINT": true, "LABEL": true, "SHELL": true,
}

var known = map[string]bool{
	"EXPOSE": true, "VOLUME": true, "HEALTHCHECK": true, "ONBUILD": true,
	"STOPSIGNAL": true, "MAINTAINER": true,
}

// flagsAllowed lists the options each instruction takes; others known to
// Docker are refused as unsupported, unknown ones as unknown.
var flagsAllowed = map[string][]string{
	"FROM": {"platform"},
	"COPY": {"chown", "chmod"},
	"ADD":  {"chown", "chmod"},
}

var flagsUnsupported = map[string][]string{
	"FROM": {},
	"RUN":  {"mount", "network", "security"},
	"COPY": {"from", "link", "parents", "exclude"},
	"ADD":  {"checksum", "keep-git-dir", "link", "exclude"},
}

func parseInstruction(line int, text string, escape rune) (Instruction, error) {
	text = strings.TrimSpace(text)
	var word, rest string
	if i := strings.IndexFunc(text, unicode.IsSpace); i >= 0 {
		word, rest = text[:i], strings.TrimSpace(text[i:])
	} else {
		word, rest = text, ""
	}
	cmd := strings.ToUpper(word)
	in := Instruction{Line: line, Cmd: cmd, Original: text}
	switch {
	case known[cmd]:
		return in, errorf(line, cmd, "not supported by sandpool's builder")
	case !supported[cmd]:
		return in, errorf(line, "", "unknown instruction %q", word)
	}
	// Leading --flags.
	for strings.HasPrefix(rest, "--") {
		var tok string
		if i := strings.IndexFunc(rest, unicode.IsSpace); i >= 0 {
			tok, rest = rest[:i], strings.TrimSpace(rest[i:])
		} else {
			tok, rest = rest, ""
		}
		name, value, _ := strings.Cut(tok[2:], "=")
		switch {
		case contains(flagsAllowed[cmd], name):
			in.Flags = append(in.Flags, Flag{Name: name, Value: value})
		case contains(flagsUnsupported[cmd], name):
			return in, errorf(line, cmd, "--%s is not supported", name)
		default:
			return in, errorf(line, cmd, "unknown flag --%s", name)
		}
	}
	if strings.HasPrefix(rest, "<<") && (cmd == "RUN" || cmd == "COPY" || cmd == "ADD") {
		return in, errorf(line, cmd, "heredocs are not supported")
	}
	switch cmd {
	case "RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD":
		if strings.HasPrefix(rest, "[") {
			var arr []string
			if err := json.Unmarshal([]byte(rest), &arr); err == nil {
				in.Args, in.JSON = arr, true
				break
			} else if cmd == "SHELL" {
				return in, errorf(line, cmd, "requires a JSON array of strings: %v", err)
			}
			// Not JSON after all: shell form, as Docker does.
		}
		if cmd == "SHELL" {
			return in, errorf(line, cmd, "requires a JSON array of strings")
		}
		in.Args = []string{rest}
	default:
		in.Args = []string{rest}
	}
	return in, checkArgs(in, escape)
}

// checkArgs checks what can be checked before variables are known.
func checkArgs(in Instruction, escape rune) error {
	raw := ""
	if !in.JSON {
		raw = in.Args[0]
	}
	words, err := rawWords(raw, escape)
	if err != nil {
		return errorf(in.Line, in.Cmd, "%v", err)
	}
	switch in.Cmd {
	case "FROM":
		if len(words) != 1 && !(len(words) == 3 && strings.EqualFold(words[1], "AS")) {
			return errorf(in.Line, in.Cmd, "want FROM image [AS name]")
		}
	case "RUN", "CMD", "ENTRYPOINT", "SHELL":
		if in.JSON && len(in.Args) == 0 && in.Cmd != "CMD" && in.Cmd != "ENTRYPOINT" {
			return errorf(in.Line, in.Cmd, "requires at least one argument")
		}
		if !in.JSON && strings.TrimSpace(raw) == "" && in.Cmd == "RUN" {
			return errorf(in.Line, in.Cmd, "requires a command")
		}
	case "COPY", "ADD":
		n := len(words)
		if in.JSON {
			n = len(in.Args)
		}
		if n < 2 {
			return errorf(in.Line, in.Cmd, "requires at least a source and a destination")
		}
	case "ENV", "LABEL":
		if len(words) == 0 {
			return errorf(in.Line, in.Cmd, "requires at least one name=value")
		}
		if in.Cmd == "ENV" && !strings.Contains(words[0], "=") {
			if len(words) < 2 {
				return errorf(in.Line, in.Cmd, "%s needs a value: ENV name=value", words[0])
			}
			return nil // legacy "ENV name value"
		}
		for _, w := range words {
			if k, _, ok := strings.Cut(w, "="); !ok || k == "" {
				return errorf(in.Line, in.Cmd, "%q is not name=value", w)
			}
		}
	case "ARG":
		if len(words) == 0 {
			return errorf(in.Line, in.Cmd, "requires a name")
		}
		for _, w := range words {
			if k, _, _ := strings.Cut(w, "="); !varName.MatchString(k) {
				return errorf(in.Line, in.Cmd, "invalid name %q", k)
			}
		}
	case "WORKDIR":
		if strings.TrimSpace(raw) == "" {
			return errorf(in.Line, in.Cmd, "requires a directory")
		}
	case "USER":
		if len(words) != 1 {
			return errorf(in.Line, in.Cmd, "requires exactly one user[:group]")
		}
	}
	return nil
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validate checks the order of instructions: ARGs, then one FROM, then
// the rest.
func validate(df *Dockerfile) error {
	if len(df.Instructions) == 0 {
		return errorf(0, "", "no instructions")
	}
	from := false
	for _, in := range df.Instructions {
		switch {
		case in.Cmd == "FROM" && from:
			return errorf(in.Line, in.Cmd, "multi-stage builds (a second FROM) are not supported")
		case in.Cmd == "FROM":
			from = true
		case !from && in.Cmd != "ARG":
			return errorf(in.Line, in.Cmd, "a Dockerfile must begin with FROM (only ARG may come before it)")
		}
	}
	if !from {
		return errorf(0, "", "no FROM instruction")
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
