package cliapp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
)

// parityFlags has a flag of each kind, with zero and non-zero defaults
// and an alias: the shapes of imapd's and pop3d's flags, which moved from
// urfave/cli to config's lean parser and must read the same command lines,
// environments and files as before.
func parityFlags() []config.Flag {
	return append(config.ProxyFlags(),
		config.Flag{Name: "listen", Kind: config.StringSlice, Usage: "listen on `[MODE=]ADDR` (repeatable)"},
		config.Flag{Name: "mode", Default: "imap", Usage: "`MODE` of the session"},
		config.Flag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER`"},
		config.Flag{Name: "allow-insecure-auth", Kind: config.Bool, Usage: "allow it"},
		config.Flag{Name: "flag-updates", Kind: config.Bool, Default: true, Usage: "update flags"},
		config.Flag{Name: "max-errors", Kind: config.Int, Default: 10, Usage: "errors"},
		config.Flag{Name: "max-zero", Kind: config.Int, Usage: "an int without default"},
		config.Flag{Name: "idle-timeout", Kind: config.Duration, Default: 30 * time.Minute, Usage: "idle"},
		config.Flag{Name: "poll-interval", Kind: config.Duration, Usage: "poll; 0: never"},
		config.Flag{Name: "max-message-size", Kind: config.Int64, Default: int64(35 << 20), Usage: "largest in `OCTETS`"},
		config.Flag{Name: "max-preauth-literal", Kind: config.Int64, Usage: "an int64 without default"},
	)
}

// values renders every flag's resolved value, the same way for both parsers.
func values(flags []config.Flag, v config.Values) string {
	var b strings.Builder
	for _, f := range append(config.CommonFlags(), flags...) {
		var x any
		switch f.Kind {
		case config.StringSlice:
			x = fmt.Sprintf("%q", v.StringSlice(f.Name))
		case config.Bool:
			x = v.Bool(f.Name)
		case config.Int:
			x = v.Int(f.Name)
		case config.Int64:
			x = v.Int64(f.Name)
		case config.Duration:
			x = v.Duration(f.Name)
		default:
			x = fmt.Sprintf("%q", v.String(f.Name))
		}
		fmt.Fprintf(&b, "%s=%v\n", f.Name, x)
	}
	return b.String()
}

// parseBoth parses args in the current environment with urfave/cli (as
// NewApp wires it) and with the lean parser; each result is the values or
// "error".
func parseBoth(t *testing.T, flags []config.Flag, args []string) (cliOut, leanOut string) {
	t.Helper()
	app := NewApp("imapd", "test", Flags(flags))
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.Action = func(c *cli.Context) error { cliOut = values(flags, c); return nil }
	if err := app.Run(append([]string{"imapd"}, args...)); err != nil {
		t.Logf("urfave/cli: %v", err)
		cliOut = "error"
	}
	l := config.NewLean("imapd", "test", "", flags)
	l.Stdout, l.Stderr = io.Discard, io.Discard
	s, err := l.Parse(args)
	if err != nil {
		t.Logf("lean: %v", err)
		leanOut = "error"
	} else {
		leanOut = values(flags, s)
	}
	return cliOut, leanOut
}

// TestLeanParity: the lean parser resolves every command line,
// environment and file below as urfave/cli did, empty environment
// variables and zero defaults included.
func TestLeanParity(t *testing.T) {
	file := writeConf(t, `
hostname = "file.example"
listen = ["imap=127.0.0.1:143", "imaps=127.0.0.1:993"]
max-errors = 7
max-message-size = 1000
idle-timeout = "45m"
poll-interval = "3s"
allow-insecure-auth = true
flag-updates = false
proxy-networks = ["10.0.0.0/8"]
[imapd]
mode = "imaps"
[pop3d]
mode = "pop3"
`)
	cases := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"defaults", nil, nil},
		{"flags", []string{"--max-errors", "5", "-max-zero=6", "--allow-insecure-auth", "--flag-updates=false",
			"--listen", "a:1", "--listen", "b:2", "--poll-interval", "2s", "--max-message-size", "0x10", "-u", "mail",
			"--domains", "A.test", "--domains", "b.test,c.test"}, nil},
		{"slice with commas and spaces", []string{"--listen", " a:1 , b:2 "}, nil},
		{"empty values", []string{"--listen", "", "--mode", "", "--domains="}, nil},
		{"a bool takes no separate value", []string{"--allow-insecure-auth", "false", "--max-errors", "2"}, nil},
		{"single dash, equals", []string{"-listen=a:1", "-poll-interval=1h"}, nil},
		{"bool=true", []string{"--allow-insecure-auth=true", "--flag-updates=1"}, nil},
		{"arguments end the flags", []string{"extra", "--max-errors", "3"}, nil},
		{"double dash", []string{"--max-errors", "3", "--", "--max-zero", "4"}, nil},
		{"environment", nil, map[string]string{"LETTERBOX_MAX_ERRORS": "4", "LETTERBOX_LISTEN": "a:1, b:2",
			"LETTERBOX_ALLOW_INSECURE_AUTH": "1", "LETTERBOX_FLAG_UPDATES": "false", "LETTERBOX_POLL_INTERVAL": "1m",
			"LETTERBOX_MAX_MESSAGE_SIZE": "99", "LETTERBOX_USER": "env", "LETTERBOX_MODE": "imaps"}},
		{"empty environment", nil, map[string]string{"LETTERBOX_MAX_ERRORS": "", "LETTERBOX_ALLOW_INSECURE_AUTH": "",
			"LETTERBOX_FLAG_UPDATES": "", "LETTERBOX_POLL_INTERVAL": "", "LETTERBOX_MAX_MESSAGE_SIZE": "",
			"LETTERBOX_USER": "", "LETTERBOX_MODE": "", "LETTERBOX_LISTEN": "", "LETTERBOX_DOMAINS": ""}},
		{"file", nil, map[string]string{"LETTERBOX_CONFIG": file}},
		{"flag beats environment beats file", []string{"--max-errors", "1", "--listen", "flag:1"},
			map[string]string{"LETTERBOX_CONFIG": file, "LETTERBOX_MAX_ERRORS": "2", "LETTERBOX_POLL_INTERVAL": "9s",
				"LETTERBOX_LISTEN": "env:1"}},
		{"empty environment hides the file", nil, map[string]string{"LETTERBOX_CONFIG": file,
			"LETTERBOX_MAX_ERRORS": "", "LETTERBOX_ALLOW_INSECURE_AUTH": "", "LETTERBOX_FLAG_UPDATES": "",
			"LETTERBOX_POLL_INTERVAL": "", "LETTERBOX_MAX_MESSAGE_SIZE": "", "LETTERBOX_MODE": "", "LETTERBOX_LISTEN": ""}},
		{"--config", []string{"--config", file, "--mode", "imap"}, nil},
		{"unknown flag", []string{"--bogus"}, nil},
		{"bad int", []string{"--max-errors", "x"}, nil},
		{"bad duration", []string{"--poll-interval", "5"}, nil},
		{"missing value", []string{"--listen"}, nil},
		{"bad environment", nil, map[string]string{"LETTERBOX_MAX_ERRORS": "lots"}},
		{"bad bool in environment", nil, map[string]string{"LETTERBOX_ALLOW_INSECURE_AUTH": "maybe"}},
		{"missing file", nil, map[string]string{"LETTERBOX_CONFIG": filepath.Join(t.TempDir(), "absent")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range append(config.CommonFlags(), parityFlags()...) {
				for _, e := range f.AllEnvVars() {
					old, had := os.LookupEnv(e)
					os.Unsetenv(e)
					if had {
						t.Cleanup(func() { os.Setenv(e, old) })
					}
				}
			}
			t.Setenv("LETTERBOX_HOSTNAME", "host.test") // the lazy default is the machine's
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cliOut, leanOut := parseBoth(t, parityFlags(), c.args)
			if cliOut != leanOut {
				t.Errorf("args %q env %q:\nurfave/cli:\n%s\nlean:\n%s", c.args, c.env, cliOut, leanOut)
			}
		})
	}
}

// TestLeanHelpParity: --help of the lean parser is urfave/cli's, byte for
// byte, for flags of every kind.
func TestLeanHelpParity(t *testing.T) {
	t.Setenv("LETTERBOX_HOSTNAME", "")
	os.Unsetenv("LETTERBOX_HOSTNAME")
	for _, argsUsage := range []string{"", "[ADDRESS]"} {
		var cliOut, leanOut bytes.Buffer
		app := NewApp("imapd", "serve something", Flags(parityFlags()))
		app.ArgsUsage = argsUsage
		app.Writer, app.ErrWriter = &cliOut, io.Discard
		app.Action = func(*cli.Context) error { return errors.New("no help printed") }
		if err := app.Run([]string{"imapd", "--help"}); err != nil {
			t.Fatal(err)
		}
		l := config.NewLean("imapd", "serve something", argsUsage, parityFlags())
		l.Stdout = &leanOut
		if _, err := l.Parse([]string{"--help"}); !errors.Is(err, config.ErrHelp) {
			t.Fatalf("lean --help: %v", err)
		}
		if cliOut.String() != leanOut.String() {
			t.Errorf("ArgsUsage %q: --help differs\nurfave/cli:\n%s\nlean:\n%s", argsUsage, cliOut.String(), leanOut.String())
		}
	}
}
