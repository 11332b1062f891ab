package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Lean parses a command line without urfave/cli, for deliver: a program run
// once per message pays for every package it links at each start, and
// urfave/cli drags in net/http, crypto/tls, YAML and a Markdown renderer.
// It accepts what urfave/cli (Go's flag package underneath) accepted:
// -name or --name, a value as the next argument or after "=", a bool flag
// alone or as --name=false; flags end at the first argument that is not
// one, or at "--". Precedence: flag > environment > file > default.
type Lean struct {
	Command   string // name in --help and --version, and the [table] of the file
	Usage     string // one line for --help
	ArgsUsage string // e.g. "[ADDRESS]"
	Flags     []Flag // CommonFlags() first, then the command's own
	Stdout    io.Writer
	Stderr    io.Writer // config file warnings
	// LookupEnv reads the environment; os.LookupEnv when nil.
	LookupEnv func(string) (string, bool)
}

// NewLean returns a parser for command with the common flags and flags.
func NewLean(command, usage, argsUsage string, flags []Flag) *Lean {
	return &Lean{Command: command, Usage: usage, ArgsUsage: argsUsage,
		Flags: append(CommonFlags(), flags...), Stdout: os.Stdout, Stderr: os.Stderr}
}

// ErrHelp is returned by Parse when it printed --help or --version: the
// command exits 0 without doing anything else.
var ErrHelp = errors.New("help or version printed")

// UsageError is a wrong command line (unknown flag, missing or bad value).
// Other errors of Parse come from the environment or the config file.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Set holds the values Parse resolved; it satisfies Values. Not safe for
// concurrent use (lazy defaults are computed on first read).
type Set struct {
	byName   map[string]*Flag
	vals     map[string]any    // set by flag, environment or file
	from     map[string]string // where each of vals came from
	defaults map[string]any    // lazy defaults, once computed
	args     []string
}

// Parse resolves every flag from args (without the program name), the
// environment and the config file.
func (l *Lean) Parse(args []string) (*Set, error) {
	s := &Set{byName: map[string]*Flag{}, vals: map[string]any{}, from: map[string]string{}, defaults: map[string]any{}}
	for i := range l.Flags {
		for _, n := range l.Flags[i].Names() {
			s.byName[n] = &l.Flags[i]
		}
	}
	if err := l.parseArgs(s, args); err != nil {
		return nil, err
	}
	if err := l.applyEnv(s); err != nil {
		return nil, err
	}
	if err := l.applyFile(s); err != nil {
		return nil, err
	}
	return s, nil
}

func (l *Lean) parseArgs(s *Set, args []string) error {
	seen := map[string]bool{} // slices: the command line replaces, then appends
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			s.args = args[i+1:]
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			s.args = args[i:]
			return nil
		}
		name := a[1:]
		if name[0] == '-' {
			name = name[1:]
		}
		if name == "" || name[0] == '-' || name[0] == '=' {
			return &UsageError{fmt.Sprintf("bad flag syntax: %s", a)}
		}
		value, hasValue := "", false
		if k := strings.IndexByte(name, '='); k >= 0 {
			name, value, hasValue = name[:k], name[k+1:], true
		}
		f := s.byName[name]
		if f == nil {
			switch name {
			case "help", "h":
				return l.help()
			case "version", "v":
				fmt.Fprintf(l.out(), "%s version %s\n", l.Command, Version)
				return ErrHelp
			}
			return &UsageError{fmt.Sprintf("flag provided but not defined: -%s", name)}
		}
		if f.Kind == Bool && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 >= len(args) {
				return &UsageError{fmt.Sprintf("flag needs an argument: -%s", name)}
			}
			i++
			value = args[i]
		}
		v, err := parseValue(f.Kind, value)
		if err != nil {
			return &UsageError{fmt.Sprintf("invalid value %q for flag -%s: %v", value, name, err)}
		}
		if f.Kind == StringSlice && seen[f.Name] {
			v = append(s.vals[f.Name].([]string), v.([]string)...)
		}
		seen[f.Name] = true
		s.vals[f.Name], s.from[f.Name] = v, "flag"
	}
	return nil
}

func (l *Lean) applyEnv(s *Set) error {
	lookup := l.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	for i := range l.Flags {
		f := &l.Flags[i]
		if _, ok := s.vals[f.Name]; ok {
			continue
		}
		for _, e := range f.AllEnvVars() {
			raw, ok := lookup(e)
			if !ok {
				continue
			}
			v, err := envValue(f, raw)
			if err != nil {
				return fmt.Errorf("config: environment %s=%q: %w", e, raw, err)
			}
			// A variable that is set, even empty, hides the file's key
			// (urfave/cli's altsrc did the same).
			s.vals[f.Name], s.from[f.Name] = v, "env "+e
			break
		}
	}
	return nil
}

// applyFile reads the file named by --config or LETTERBOX_CONFIG, else
// DefaultFile if it exists, for the flags still unset.
func (l *Lean) applyFile(s *Set) error {
	path := s.String("config")
	explicit := path != ""
	if !explicit {
		path = DefaultFile
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		// os.IsNotExist, not errors.Is: ReadFile's *PathError is all it
		// needs to look through, and errors.Is's first call costs deliver
		// ~0.1 ms of reflection and interface tables built at run time.
		if !explicit && os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	values, err := Merge(raw, l.Command, l.Stderr)
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	for i := range l.Flags {
		f := &l.Flags[i]
		if _, ok := s.vals[f.Name]; ok {
			continue
		}
		raw, ok := values[f.Name]
		if !ok {
			continue
		}
		v, err := fileValue(f.Kind, raw)
		if err != nil {
			return fmt.Errorf("config: %s: key %q: %w", path, f.Name, err)
		}
		s.vals[f.Name], s.from[f.Name] = v, "file "+path
	}
	return nil
}

func (l *Lean) out() io.Writer {
	if l.Stdout == nil {
		return os.Stdout
	}
	return l.Stdout
}

// help prints --help in the layout of the urfave/cli commands.
func (l *Lean) help() error {
	w := tabwriter.NewWriter(l.out(), 1, 8, 2, ' ', 0)
	args := ""
	if l.ArgsUsage != "" {
		args = " " + l.ArgsUsage
	}
	fmt.Fprintf(w, "NAME:\n   %s - %s\n\nUSAGE:\n   %s [global options]%s\n\nVERSION:\n   %s\n\nGLOBAL OPTIONS:\n",
		l.Command, l.Usage, l.Command, args, Version)
	for _, f := range l.Flags {
		fmt.Fprintf(w, "   %s\t%s\n", flagNames(f), flagUsage(f))
	}
	fmt.Fprintf(w, "   --help, -h\tshow help\n   --version, -v\tprint the version\n")
	if err := w.Flush(); err != nil {
		return fmt.Errorf("config: --help: %w", err)
	}
	return ErrHelp
}

func dash(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func flagNames(f Flag) string {
	ph, _ := f.Placeholder()
	var parts []string
	for _, n := range f.Names() {
		p := dash(n)
		if ph != "" {
			p += " " + ph
		}
		if f.Kind == StringSlice {
			p += " [ " + p + " ]"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func flagUsage(f Flag) string {
	_, u := f.Placeholder()
	// As urfave/cli prints them: strings and lists only when not empty,
	// each string of a list quoted; numbers, durations and bools always,
	// zero and false included.
	switch d := f.DefaultValue().(type) {
	case string:
		if d != "" {
			u += fmt.Sprintf(" (default: %q)", d)
		}
	case []string:
		var q []string
		for _, e := range d {
			if e != "" {
				q = append(q, strconv.Quote(e))
			}
		}
		if len(q) > 0 {
			u += " (default: " + strings.Join(q, ", ") + ")"
		}
	case bool, int, int64, time.Duration:
		u += fmt.Sprintf(" (default: %v)", d)
	case nil:
		switch f.Kind {
		case Bool:
			u += " (default: false)"
		case Int, Int64:
			u += " (default: 0)"
		case Duration:
			u += " (default: 0s)"
		}
	}
	envs := f.AllEnvVars()
	for i, e := range envs {
		envs[i] = "$" + e
	}
	return u + " [" + strings.Join(envs, ", ") + "]"
}

// parseValue reads a command-line or environment value.
func parseValue(k Kind, s string) (any, error) {
	switch k {
	case StringSlice:
		// Split as urfave/cli's StringSlice did: "" is one empty element.
		parts := strings.Split(s, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts, nil
	case Bool:
		return strconv.ParseBool(s)
	case Int:
		n, err := strconv.ParseInt(s, 0, strconv.IntSize)
		return int(n), err
	case Int64:
		return strconv.ParseInt(s, 0, 64)
	case Duration:
		return time.ParseDuration(s)
	}
	return s, nil
}

// envValue reads an environment variable's value. An empty one means what
// it meant to urfave/cli, whose behaviour the commands keep: false for a
// bool, the default for a number or duration, "" for a string, and a list
// of one empty string.
func envValue(f *Flag, s string) (any, error) {
	if s == "" {
		switch f.Kind {
		case Bool:
			return false, nil
		case Int, Int64, Duration:
			if d := f.DefaultValue(); d != nil {
				return d, nil
			}
			return zero(f.Kind), nil
		}
	}
	return parseValue(f.Kind, s)
}

// zero is the zero value of a kind, as Set's getters return it.
func zero(k Kind) any {
	switch k {
	case StringSlice:
		return []string(nil)
	case Bool:
		return false
	case Int:
		return 0
	case Int64:
		return int64(0)
	case Duration:
		return time.Duration(0)
	}
	return ""
}

// fileValue converts a value decoded from TOML (after normalize).
func fileValue(k Kind, v any) (any, error) {
	switch k {
	case String:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("want a string, have %T", v)
	case StringSlice:
		switch v := v.(type) {
		case string:
			return []string{v}, nil
		case []any:
			out := make([]string, len(v))
			for i, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("want a list of strings, have %T in it", e)
				}
				out[i] = s
			}
			return out, nil
		}
		return nil, fmt.Errorf("want a list of strings, have %T", v)
	case Bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("want true or false, have %T", v)
	case Int, Int64:
		n, ok := v.(int)
		if !ok {
			return nil, fmt.Errorf("want an integer, have %T", v)
		}
		if k == Int64 {
			return int64(n), nil
		}
		return n, nil
	case Duration:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a duration such as \"5m\", have %T", v)
		}
		return time.ParseDuration(s)
	}
	return nil, fmt.Errorf("flag kind %d unknown", k)
}

// Args returns the arguments after the flags.
func (s *Set) Args() []string { return s.args }

// Source tells where name's value came from: "flag", "env VAR",
// "file PATH", or "" for the default.
func (s *Set) Source(name string) string {
	if f := s.byName[name]; f != nil {
		return s.from[f.Name]
	}
	return ""
}

func (s *Set) get(name string) any {
	f := s.byName[name]
	if f == nil {
		return nil
	}
	if v, ok := s.vals[f.Name]; ok {
		return v
	}
	if v, ok := s.defaults[f.Name]; ok {
		return v
	}
	v := f.DefaultValue()
	s.defaults[f.Name] = v
	return v
}

// String returns a String flag's value ("" for an unknown name).
func (s *Set) String(name string) string {
	v, _ := s.get(name).(string)
	return v
}

// StringSlice returns a copy of a StringSlice flag's values.
func (s *Set) StringSlice(name string) []string {
	v, _ := s.get(name).([]string)
	return append([]string(nil), v...)
}

// Bool returns a Bool flag's value.
func (s *Set) Bool(name string) bool {
	v, _ := s.get(name).(bool)
	return v
}

// Int returns an Int flag's value.
func (s *Set) Int(name string) int {
	v, _ := s.get(name).(int)
	return v
}

// Int64 returns an Int64 flag's value.
func (s *Set) Int64(name string) int64 {
	v, _ := s.get(name).(int64)
	return v
}

// Duration returns a Duration flag's value.
func (s *Set) Duration(name string) time.Duration {
	v, _ := s.get(name).(time.Duration)
	return v
}
