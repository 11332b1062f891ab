package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testFlags are deliver's flags plus one of each other kind.
func testFlags() []Flag {
	return []Flag{
		{Name: "sender", Aliases: []string{"f"}, EnvVars: []string{"SENDER"}, Usage: "envelope `SENDER`"},
		{Name: "recipient", Aliases: []string{"a"}, EnvVars: []string{"RECIPIENT"}, Usage: "envelope `RECIPIENT`"},
		{Name: "maildir", Usage: "Maildir `DIR`"},
		{Name: "max-recipients", Kind: Int, Default: 100, Usage: "limit"},
		{Name: "max-message-size", Kind: Int64, Default: int64(35 << 20), Usage: "limit"},
		{Name: "command-timeout", Kind: Duration, Default: 5 * time.Minute, Usage: "limit"},
		{Name: "allow-insecure-auth", Kind: Bool, Usage: "allow it"},
		{Name: "relay-networks", Kind: StringSlice, Usage: "`CIDR`s"},
	}
}

// parse runs the lean parser for "deliver" with env as the whole
// environment and returns the set, stdout and stderr.
func parse(t *testing.T, env map[string]string, args ...string) (*Set, string, string, error) {
	t.Helper()
	l := NewLean("deliver", "test usage", "[ADDRESS]", testFlags())
	var out, errw bytes.Buffer
	l.Stdout, l.Stderr = &out, &errw
	l.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	s, err := l.Parse(args)
	return s, out.String(), errw.String(), err
}

func mustParse(t *testing.T, env map[string]string, args ...string) (*Set, string) {
	t.Helper()
	s, _, warn, err := parse(t, env, args...)
	if err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return s, warn
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "letterbox.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const leanConf = `
hostname = "file.example"
spool = "/file/spool"
sender = "file@example.test"
recipient = "top@example.test"
max-recipients = 7
max-message-size = 1000
command-timeout = "2m"
allow-insecure-auth = true
relay-networks = ["10.0.0.0/8", "127.0.0.0/8"]
some-future-key = 1

[deliver]
recipient = "table@example.test"
spool = "/deliver/spool"

[smtpd]
spool = "/smtpd/spool"
`

func TestLeanPrecedence(t *testing.T) {
	conf := writeConf(t, leanConf)
	env := map[string]string{"LETTERBOX_CONFIG": conf}

	s, warn := mustParse(t, env)
	if got := s.String("hostname"); got != "file.example" {
		t.Errorf("file: hostname = %q", got)
	}
	// The [deliver] table overrides the top level; [smtpd] is not ours.
	if got := s.String("spool"); got != "/deliver/spool" {
		t.Errorf("[deliver] spool = %q", got)
	}
	if got := s.String("recipient"); got != "table@example.test" {
		t.Errorf("[deliver] recipient = %q", got)
	}
	if s.String("sender") != "file@example.test" || s.Int("max-recipients") != 7 || s.Int64("max-message-size") != 1000 ||
		s.Duration("command-timeout") != 2*time.Minute || !s.Bool("allow-insecure-auth") ||
		strings.Join(s.StringSlice("relay-networks"), ",") != "10.0.0.0/8,127.0.0.0/8" {
		t.Errorf("file values: sender %q, %d, %d, %v, %v, %v", s.String("sender"), s.Int("max-recipients"),
			s.Int64("max-message-size"), s.Duration("command-timeout"), s.Bool("allow-insecure-auth"), s.StringSlice("relay-networks"))
	}
	if !strings.Contains(warn, "some-future-key") {
		t.Errorf("unknown key not warned about: %q", warn)
	}
	if strings.Contains(warn, "smtpd") {
		t.Errorf("a known command's table warned about: %q", warn)
	}
	if got := s.Source("spool"); got != "file "+conf {
		t.Errorf("source of spool = %q", got)
	}

	// Environment beats file: LETTERBOX_<FLAG> first, then the flag's own.
	env["SENDER"] = "env@example.test"
	env["LETTERBOX_MAX_RECIPIENTS"] = "9"
	env["LETTERBOX_RELAY_NETWORKS"] = "192.0.2.0/24, 198.51.100.0/24"
	env["LETTERBOX_ALLOW_INSECURE_AUTH"] = "false"
	s, _ = mustParse(t, env)
	if s.String("sender") != "env@example.test" || s.Int("max-recipients") != 9 || s.Bool("allow-insecure-auth") ||
		strings.Join(s.StringSlice("relay-networks"), ",") != "192.0.2.0/24,198.51.100.0/24" {
		t.Errorf("env should beat file: %q %d %v %v", s.String("sender"), s.Int("max-recipients"), s.Bool("allow-insecure-auth"), s.StringSlice("relay-networks"))
	}
	env["LETTERBOX_SENDER"] = "lb@example.test"
	s, _ = mustParse(t, env)
	if got := s.String("sender"); got != "lb@example.test" {
		t.Errorf("LETTERBOX_SENDER should beat SENDER: %q", got)
	}
	// An empty variable is set: an empty sender is the null sender.
	env["LETTERBOX_SENDER"] = ""
	s, _ = mustParse(t, env)
	if got, src := s.String("sender"), s.Source("sender"); got != "" || src != "env LETTERBOX_SENDER" {
		t.Errorf("empty LETTERBOX_SENDER: %q from %q", got, src)
	}

	// Flags beat everything, in every spelling.
	s, _ = mustParse(t, env, "-f", "flag@example.test", "--max-recipients=11", "-relay-networks", "a", "--relay-networks", "b,c",
		"--allow-insecure-auth", "--command-timeout", "3s", "user@example.test")
	if s.String("sender") != "flag@example.test" || s.Int("max-recipients") != 11 || !s.Bool("allow-insecure-auth") ||
		s.Duration("command-timeout") != 3*time.Second || strings.Join(s.StringSlice("relay-networks"), ",") != "a,b,c" {
		t.Errorf("flag should beat env: %q %d %v %v %v", s.String("sender"), s.Int("max-recipients"),
			s.Bool("allow-insecure-auth"), s.Duration("command-timeout"), s.StringSlice("relay-networks"))
	}
	if got := s.Args(); len(got) != 1 || got[0] != "user@example.test" {
		t.Errorf("args = %q", got)
	}
	s, _ = mustParse(t, env, "--sender=", "-a=x@example.test")
	if s.String("sender") != "" || s.String("recipient") != "x@example.test" {
		t.Errorf("--sender= / -a=: %q %q", s.String("sender"), s.String("recipient"))
	}
	// --config on the command line beats LETTERBOX_CONFIG.
	other := writeConf(t, "spool = \"/other\"\n")
	s, _ = mustParse(t, env, "--config", other)
	if got := s.String("spool"); got != "/other" {
		t.Errorf("--config: spool = %q", got)
	}
}

func TestLeanDefaults(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "absent.conf")
	if _, _, _, err := parse(t, map[string]string{"LETTERBOX_CONFIG": absent}); err == nil || !strings.HasPrefix(err.Error(), "config:") {
		t.Fatalf("an explicitly named config file that is missing must be a config error, got %v", err)
	}
	var ue *UsageError
	if _, _, _, err := parse(t, map[string]string{"LETTERBOX_CONFIG": absent}); errors.As(err, &ue) {
		t.Fatalf("a missing config file is not a usage error: %v", err)
	}
	// An empty LETTERBOX_CONFIG means the default file; the test can't rely
	// on /etc/letterbox/letterbox.conf being absent, so flags pin the rest.
	conf := writeConf(t, "")
	s, _ := mustParse(t, map[string]string{"LETTERBOX_CONFIG": conf}, "--hostname", "h.test")
	if s.Int("max-recipients") != 100 || s.Int64("max-message-size") != 35<<20 || s.Duration("command-timeout") != 5*time.Minute ||
		s.Bool("allow-insecure-auth") || len(s.StringSlice("relay-networks")) != 0 || s.String("sender") != "" {
		t.Errorf("defaults: %d %d %v %v %v", s.Int("max-recipients"), s.Int64("max-message-size"),
			s.Duration("command-timeout"), s.Bool("allow-insecure-auth"), s.StringSlice("relay-networks"))
	}
	if s.String("spool") != "/var/spool/letterbox" || s.String("log-level") != "info" || s.Source("spool") != "" {
		t.Errorf("common defaults: spool %q log-level %q", s.String("spool"), s.String("log-level"))
	}
	cm, err := Load(s, "deliver", &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Hostname != "h.test" || strings.Join(cm.Domains, ",") != "h.test" {
		t.Errorf("Load: hostname %q domains %v", cm.Hostname, cm.Domains)
	}
	// The hostname default is computed only when asked for.
	s, _ = mustParse(t, map[string]string{"LETTERBOX_CONFIG": conf})
	if h, _ := os.Hostname(); s.String("hostname") != h {
		t.Errorf("hostname default %q, want %q", s.String("hostname"), h)
	}
	if s.String("no-such-flag") != "" || s.Int("sender") != 0 {
		t.Error("unknown names and other kinds read as zero")
	}
}

func TestLeanBadInput(t *testing.T) {
	conf := writeConf(t, "")
	env := map[string]string{"LETTERBOX_CONFIG": conf}
	for _, args := range [][]string{
		{"--bogus"},
		{"-x", "y"},
		{"--maildir"},       // needs a value
		{"-f"},              // the alias too
		{"---maildir", "x"}, // bad syntax
		{"-=x"},
		{"--max-recipients", "many"},
		{"--allow-insecure-auth=maybe"},
		{"--command-timeout", "5"},
	} {
		_, _, _, err := parse(t, env, args...)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		}
	}
	// Flags end at the first argument or at "--".
	s, _ := mustParse(t, env, "user@example.test", "--bogus")
	if got := s.Args(); len(got) != 2 || got[1] != "--bogus" {
		t.Errorf("args after the first argument: %q", got)
	}
	s, _ = mustParse(t, env, "--", "-f")
	if got := s.Args(); len(got) != 1 || got[0] != "-f" {
		t.Errorf("args after --: %q", got)
	}
	s, _ = mustParse(t, env, "-")
	if got := s.Args(); len(got) != 1 || got[0] != "-" {
		t.Errorf("a lone - is an argument: %q", got)
	}

	// Bad values in the environment or the file are configuration errors.
	for _, c := range []struct {
		env  map[string]string
		conf string
	}{
		{map[string]string{"LETTERBOX_MAX_RECIPIENTS": "lots"}, ""},
		{nil, "max-recipients = \"lots\"\n"},
		{nil, "sender = 5\n"},
		{nil, "relay-networks = [1, 2]\n"},
		{nil, "command-timeout = 5\n"},
		{nil, "allow-insecure-auth = \"yes\"\n"},
		{nil, "max-recipients = [\n"},
	} {
		e := map[string]string{"LETTERBOX_CONFIG": writeConf(t, c.conf)}
		for k, v := range c.env {
			e[k] = v
		}
		_, _, _, err := parse(t, e)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "config:") {
			t.Errorf("env %v conf %q: got %v, want a config error", c.env, c.conf, err)
		}
	}
}

func TestLeanHelpVersion(t *testing.T) {
	conf := writeConf(t, "")
	env := map[string]string{"LETTERBOX_CONFIG": conf}
	for _, arg := range []string{"--help", "-h", "-help"} {
		_, out, _, err := parse(t, env, "-f", "x", arg, "--bogus")
		if !errors.Is(err, ErrHelp) {
			t.Fatalf("%s: %v", arg, err)
		}
		for _, f := range append(CommonFlags(), testFlags()...) {
			for _, n := range f.Names() {
				if !strings.Contains(out, dash(n)+" ") {
					t.Errorf("%s: --help lacks %s:\n%s", arg, dash(n), out)
				}
			}
			for _, e := range f.AllEnvVars() {
				if !strings.Contains(out, "$"+e) {
					t.Errorf("%s: --help lacks $%s", arg, e)
				}
			}
		}
		for _, want := range []string{"NAME:\n   deliver - test usage\n", "USAGE:\n   deliver [global options] [ADDRESS]\n",
			"VERSION:\n   " + Version + "\n", "GLOBAL OPTIONS:\n", "--sender SENDER, -f SENDER", "--relay-networks CIDR [ --relay-networks CIDR ]",
			`(default: "/var/spool/letterbox")`, "(default: 5m0s)", "--help, -h", "--version, -v"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: --help lacks %q:\n%s", arg, want, out)
			}
		}
	}
	for _, arg := range []string{"--version", "-v"} {
		_, out, _, err := parse(t, env, arg)
		if !errors.Is(err, ErrHelp) || out != "deliver version "+Version+"\n" {
			t.Errorf("%s: %q %v", arg, out, err)
		}
	}
}

// TestKnownKeys: the common flags and every command's flags are known, so
// one file serves all without warnings.
func TestKnownKeys(t *testing.T) {
	for _, f := range CommonFlags() {
		if !IsKnownKey(f.Name) {
			t.Errorf("common flag %s unknown", f.Name)
		}
	}
	for _, k := range []string{"sender", "maildir", "relay-networks", "route", "scheme"} {
		if !IsKnownKey(k) {
			t.Errorf("%s unknown", k)
		}
	}
	if IsKnownKey("no-such-key") {
		t.Error("no-such-key known")
	}
	AddKnownKeys("no-such-key")
	// The registry is the process's: forget the key, so the test holds
	// when run again in the same process (-count).
	t.Cleanup(func() {
		keysMu.Lock()
		defer keysMu.Unlock()
		delete(known(), "no-such-key")
	})
	if !IsKnownKey("no-such-key") {
		t.Error("AddKnownKeys had no effect")
	}
}

func TestEnvName(t *testing.T) {
	if g := EnvName("max-message-size"); g != "LETTERBOX_MAX_MESSAGE_SIZE" {
		t.Fatal(g)
	}
}

func TestLoggerLevels(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "warn", "json", "x")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "id", "Q1")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), `"id":"Q1"`) {
		t.Fatalf("log output %q", b.String())
	}
	if _, err := NewLogger(&b, "loud", "logfmt", "x"); err == nil {
		t.Fatal("bad level accepted")
	}
}
