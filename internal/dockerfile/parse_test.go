package dockerfile_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/image"
)

func TestParse(t *testing.T) {
	src := `# syntax=docker/dockerfile:1
# escape=\

# a comment
ARG BASE=busybox
FROM --platform=linux/amd64 $BASE AS build
RUN echo one \
  # a comment inside is dropped
  two \

  three
RUN ["/bin/echo", "json form"]
RUN [not json
COPY --chown=user:staff --chmod=640 a b /dst/
add x y
ENV A=1 B="two words"
ENV LEGACY value with spaces
CMD echo hi
SHELL ["/bin/bash", "-c"]
`
	df, err := dockerfile.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	type in struct {
		Line  int
		Cmd   string
		Flags []dockerfile.Flag
		Args  []string
		JSON  bool
	}
	var got []in
	for _, i := range df.Instructions {
		got = append(got, in{i.Line, i.Cmd, i.Flags, i.Args, i.JSON})
	}
	want := []in{
		{5, "ARG", nil, []string{"BASE=busybox"}, false},
		{6, "FROM", []dockerfile.Flag{{"platform", "linux/amd64"}}, []string{"$BASE AS build"}, false},
		{7, "RUN", nil, []string{"echo one   two   three"}, false},
		{12, "RUN", nil, []string{"/bin/echo", "json form"}, true},
		{13, "RUN", nil, []string{"[not json"}, false},
		{14, "COPY", []dockerfile.Flag{{"chown", "user:staff"}, {"chmod", "640"}}, []string{"a b /dst/"}, false},
		{15, "ADD", nil, []string{"x y"}, false},
		{16, "ENV", nil, []string{`A=1 B="two words"`}, false},
		{17, "ENV", nil, []string{"LEGACY value with spaces"}, false},
		{18, "CMD", nil, []string{"echo hi"}, false},
		{19, "SHELL", nil, []string{"/bin/bash", "-c"}, true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("instructions (-want +got):\n%s", diff)
	}
	if df.Escape != '\\' {
		t.Errorf("escape %q", df.Escape)
	}
}

func TestParseEscapeDirective(t *testing.T) {
	df, err := dockerfile.Parse(strings.NewReader("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo done\n"))
	if err != nil {
		t.Fatal(err)
	}
	if df.Escape != '`' || df.Instructions[1].Args[0] != `dir c:\   && echo done` {
		t.Errorf("escape %q, RUN %q", df.Escape, df.Instructions[1].Args[0])
	}
	// Not at the top: a comment, not a directive.
	df, err = dockerfile.Parse(strings.NewReader("FROM scratch\n# escape=`\nRUN a \\\n b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if df.Escape != '\\' || df.Instructions[1].Args[0] != "a  b" {
		t.Errorf("escape %q, RUN %q", df.Escape, df.Instructions[1].Args[0])
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for _, c := range []struct {
		name, src string
		line      int
		words     []string
	}{
		{"empty", "# nothing\n", 0, []string{"no instructions"}},
		{"no from", "ARG A=1\n", 0, []string{"no FROM"}},
		{"run before from", "\nRUN echo\nFROM scratch\n", 2, []string{"RUN", "must begin with FROM"}},
		{"unknown", "FROM scratch\nFROB x\n", 2, []string{`unknown instruction "FROB"`}},
		{"unsupported", "FROM scratch\n\nEXPOSE 80\n", 3, []string{"EXPOSE", "not supported"}},
		{"volume", "FROM scratch\nVOLUME /data\n", 2, []string{"VOLUME", "not supported"}},
		{"healthcheck", "FROM scratch\nHEALTHCHECK NONE\n", 2, []string{"HEALTHCHECK", "not supported"}},
		{"multi-stage", "FROM scratch\nRUN x\nFROM scratch\n", 3, []string{"multi-stage"}},
		{"copy --from", "FROM scratch\nCOPY --from=build /a /b\n", 2, []string{"COPY", "--from is not supported"}},
		{"run --mount", "FROM scratch\nRUN --mount=type=cache,target=/x true\n", 2, []string{"--mount is not supported"}},
		{"unknown flag", "FROM scratch\nCOPY --frob a b\n", 2, []string{"unknown flag --frob"}},
		{"copy one arg", "FROM scratch\nCOPY a\n", 2, []string{"COPY", "source and a destination"}},
		{"heredoc", "FROM scratch\nRUN <<EOF\necho\nEOF\n", 2, []string{"heredocs"}},
		{"env no value", "FROM scratch\nENV A\n", 2, []string{"ENV", "needs a value"}},
		{"label not pair", "FROM scratch\nLABEL a=1 b\n", 2, []string{"LABEL", `"b" is not name=value`}},
		{"arg bad name", "FROM scratch\nARG 1x=2\n", 2, []string{"ARG", "invalid name"}},
		{"user two words", "FROM scratch\nUSER a b\n", 2, []string{"USER", "exactly one"}},
		{"shell not json", "FROM scratch\nSHELL /bin/sh -c\n", 2, []string{"SHELL", "JSON"}},
		{"unterminated quote", "FROM scratch\nENV A=\"x\n", 2, []string{"unterminated"}},
		{"bad escape", "# escape=x\nFROM scratch\n", 1, []string{"invalid escape"}},
		{"from two words", "FROM a b\n", 1, []string{"FROM image [AS name]"}},
		{"continuation line count", "FROM scratch\nRUN a \\\n  b\nWHAT\n", 4, []string{"WHAT"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := dockerfile.Parse(strings.NewReader(c.src))
			var de *dockerfile.Error
			if !errors.As(err, &de) || !errors.Is(err, image.ErrInvalid) {
				t.Fatalf("error %v (%T); want a *dockerfile.Error of kind invalid", err, err)
			}
			if de.Line != c.line {
				t.Errorf("line %d, want %d (%v)", de.Line, c.line, err)
			}
			for _, w := range c.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not mention %q", err, w)
				}
			}
		})
	}
}

// FuzzParse: any input parses or fails with a *dockerfile.Error, never a
// panic, and what parses keeps its line numbers in order.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM scratch\n",
		"# escape=`\nFROM a\nRUN x `\n y\n",
		"ARG A=1\nFROM ${A:-b}\nENV X=\"1 2\" Y='$A'\nCOPY --chown=1:2 a b c/\nRUN [\"a\",\"b\"]\n",
		"FROM a\nRUN a \\\n# c\n\n b\nUSER u:g\nWORKDIR /x\nLABEL a=b\nCMD [\"x\"]\nENTRYPOINT y\nSHELL [\"sh\"]\n",
		"FROM a\nRUN <<EOF\n",
		"\r\nFROM a\r\nRUN x\\\r\n  y\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		df, err := dockerfile.Parse(strings.NewReader(src))
		if err != nil {
			var de *dockerfile.Error
			if !errors.As(err, &de) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		last := 0
		for _, in := range df.Instructions {
			if in.Line <= last {
				t.Fatalf("line %d after %d", in.Line, last)
			}
			last = in.Line
		}
	})
}
