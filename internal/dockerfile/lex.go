package dockerfile

import (
	"fmt"
	"strings"
	"unicode"
)

// rawWords splits s on whitespace outside quotes, keeping each word as
// written (quotes and escapes in place) for word to process later, as
// Docker does for ENV, LABEL, ARG, COPY and ADD.
func rawWords(s string, escape rune) ([]string, error) {
	var words []string
	var cur strings.Builder
	rs := []rune(s)
	var quote rune
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case quote == 0 && unicode.IsSpace(c):
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
			continue
		case c == escape && quote != '\'' && i+1 < len(rs):
			cur.WriteRune(c)
			i++
			c = rs[i]
		case c == '$' && quote != '\'' && i+1 < len(rs) && rs[i+1] == '{':
			// ${...} is one piece, blanks and all.
			depth := 0
			for ; i < len(rs); i++ {
				cur.WriteRune(rs[i])
				if rs[i] == '{' {
					depth++
				} else if rs[i] == '}' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			continue
		case quote == 0 && (c == '\'' || c == '"'):
			quote = c
		case c == quote:
			quote = 0
		}
		cur.WriteRune(c)
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words, nil
}

// lexer expands variables and removes quotes in one word, as a shell
// would: '...' is literal; in "..." and bare text $NAME and ${NAME} expand,
// with ${NAME:-word}, ${NAME-word}, ${NAME:+word}, ${NAME+word},
// ${NAME:?message} and ${NAME?message}; the escape character makes the
// next character literal.
type lexer struct {
	escape rune
	lookup func(name string) (string, bool)
}

func (l lexer) word(s string) (string, error) {
	var out strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == '\'':
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return "", fmt.Errorf("unterminated ' quote in %q", s)
			}
			out.WriteString(string(rs[i+1 : j]))
			i = j
		case c == '"':
			i++
			for ; i < len(rs) && rs[i] != '"'; i++ {
				switch {
				case rs[i] == l.escape && i+1 < len(rs) && (rs[i+1] == '"' || rs[i+1] == '$' || rs[i+1] == l.escape):
					i++
					out.WriteRune(rs[i])
				case rs[i] == '$':
					v, n, err := l.dollar(rs, i)
					if err != nil {
						return "", err
					}
					out.WriteString(v)
					i += n - 1
				default:
					out.WriteRune(rs[i])
				}
			}
			if i >= len(rs) {
				return "", fmt.Errorf("unterminated \" quote in %q", s)
			}
		case c == l.escape:
			if i+1 < len(rs) {
				i++
			}
			out.WriteRune(rs[i])
		case c == '$':
			v, n, err := l.dollar(rs, i)
			if err != nil {
				return "", err
			}
			out.WriteString(v)
			i += n - 1
		default:
			out.WriteRune(c)
		}
	}
	return out.String(), nil
}

// dollar expands the $ at rs[i], returning the value and how many runes
// it took.
func (l lexer) dollar(rs []rune, i int) (string, int, error) {
	if i+1 >= len(rs) {
		return "$", 1, nil
	}
	if rs[i+1] != '{' {
		j := i + 1
		for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || (j > i+1 && unicode.IsDigit(rs[j]))) {
			j++
		}
		if j == i+1 {
			return "$", 1, nil
		}
		v, _ := l.lookup(string(rs[i+1 : j]))
		return v, j - i, nil
	}
	depth, j := 0, i+2
	for ; j < len(rs); j++ {
		if rs[j] == '{' && rs[j-1] == '$' {
			depth++
		}
		if rs[j] == '}' {
			if depth == 0 {
				break
			}
			depth--
		}
	}
	if j >= len(rs) {
		return "", 0, fmt.Errorf("missing } in %q", string(rs[i:]))
	}
	body := string(rs[i+2 : j])
	k := 0
	for k < len(body) && (body[k] == '_' || unicode.IsLetter(rune(body[k])) || (k > 0 && unicode.IsDigit(rune(body[k])))) {
		k++
	}
	name, mod := body[:k], body[k:]
	if name == "" {
		return "", 0, fmt.Errorf("bad substitution ${%s}", body)
	}
	v, set := l.lookup(name)
	n := j - i + 1
	if mod == "" {
		return v, n, nil
	}
	colon := strings.HasPrefix(mod, ":")
	op := strings.TrimPrefix(mod, ":")
	if op == "" {
		return "", 0, fmt.Errorf("bad substitution ${%s}", body)
	}
	arg, err := l.word(op[1:])
	if err != nil {
		return "", 0, err
	}
	empty := !set || (colon && v == "")
	switch op[0] {
	case '-':
		if empty {
			return arg, n, nil
		}
		return v, n, nil
	case '+':
		if empty {
			return "", n, nil
		}
		return arg, n, nil
	case '?':
		if empty {
			if arg == "" {
				arg = "is not set"
			}
			return "", 0, fmt.Errorf("%s: %s", name, arg)
		}
		return v, n, nil
	}
	return "", 0, fmt.Errorf("unsupported substitution ${%s}", body)
}

// vars expands $NAME and ${...} in s and leaves everything else as it is
// (the JSON form of COPY and ADD).
func (l lexer) vars(s string) (string, error) {
	var out strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		switch {
		case rs[i] == l.escape && i+1 < len(rs) && rs[i+1] == '$':
			i++
			out.WriteRune('$')
		case rs[i] == '$':
			v, n, err := l.dollar(rs, i)
			if err != nil {
				return "", err
			}
			out.WriteString(v)
			i += n - 1
		default:
			out.WriteRune(rs[i])
		}
	}
	return out.String(), nil
}
