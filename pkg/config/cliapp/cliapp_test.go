package cliapp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// runApp runs a test command with args and returns the values it saw.
func runApp(t *testing.T, args []string) (map[string]any, string) {
	t.Helper()
	got := map[string]any{}
	app := NewApp("smtpd", "test", []cli.Flag{
		&cli.IntFlag{Name: "max-recipients", Value: 100},
		&cli.DurationFlag{Name: "command-timeout", Value: 5 * time.Minute},
		&cli.StringSliceFlag{Name: "relay-networks"},
		&cli.BoolFlag{Name: "allow-insecure-auth"},
	})
	var errw bytes.Buffer
	app.ErrWriter = &errw
	app.Action = func(c *cli.Context) error {
		cm, err := Load(c)
		if err != nil {
			return err
		}
		got["hostname"] = cm.Hostname
		got["domains"] = strings.Join(cm.Domains, ",")
		got["spool"] = cm.Spool
		got["max-recipients"] = c.Int("max-recipients")
		got["command-timeout"] = c.Duration("command-timeout")
		got["relay-networks"] = strings.Join(c.StringSlice("relay-networks"), ",")
		got["allow-insecure-auth"] = c.Bool("allow-insecure-auth")
		return nil
	}
	if err := app.Run(append([]string{"smtpd"}, args...)); err != nil {
		t.Fatalf("run %v: %v (stderr %s)", args, err, errw.String())
	}
	return got, errw.String()
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "letterbox.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	conf := writeConf(t, `
hostname = "file.example"
spool = "/file/spool"
max-recipients = 7
command-timeout = "2m"
relay-networks = ["10.0.0.0/8", "127.0.0.0/8"]
allow-insecure-auth = true
some-future-key = 1

[smtpd]
spool = "/smtpd/spool"

[pop3d]
spool = "/pop3d/spool"
`)
	t.Setenv("LETTERBOX_CONFIG", conf)

	got, warn := runApp(t, nil)
	want := map[string]any{
		"hostname": "file.example", "domains": "file.example", "spool": "/smtpd/spool",
		"max-recipients": 7, "command-timeout": 2 * time.Minute,
		"relay-networks": "10.0.0.0/8,127.0.0.0/8", "allow-insecure-auth": true,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("file: %s = %v, want %v", k, got[k], v)
		}
	}
	if !strings.Contains(warn, "some-future-key") {
		t.Errorf("unknown key not warned about: %q", warn)
	}

	t.Setenv("LETTERBOX_MAX_RECIPIENTS", "9")
	t.Setenv("LETTERBOX_SPOOL", "/env/spool")
	got, _ = runApp(t, nil)
	if got["max-recipients"] != 9 || got["spool"] != "/env/spool" {
		t.Errorf("env should beat file: %v", got)
	}

	got, _ = runApp(t, []string{"--max-recipients", "11", "--spool", "/flag/spool", "--domains", "a.test", "--domains", "B.test."})
	if got["max-recipients"] != 11 || got["spool"] != "/flag/spool" || got["domains"] != "a.test,b.test" {
		t.Errorf("flag should beat env: %v", got)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	t.Setenv("LETTERBOX_CONFIG", filepath.Join(t.TempDir(), "absent.conf"))
	app := NewApp("smtpd", "test", nil)
	app.ErrWriter = &bytes.Buffer{}
	app.Action = func(c *cli.Context) error { return nil }
	if err := app.Run([]string{"smtpd"}); err == nil {
		t.Fatal("an explicitly named config file that is missing must be an error")
	}
	os.Unsetenv("LETTERBOX_CONFIG")
	t.Setenv("LETTERBOX_CONFIG", "")
	got, _ := runApp(t, []string{"--hostname", "h.test"})
	if got["max-recipients"] != 100 || got["command-timeout"] != 5*time.Minute || got["domains"] != "h.test" {
		t.Errorf("defaults: %v", got)
	}
}

func TestBadFile(t *testing.T) {
	t.Setenv("LETTERBOX_CONFIG", writeConf(t, "max-recipients = [\n"))
	app := NewApp("smtpd", "test", nil)
	app.ErrWriter = &bytes.Buffer{}
	app.Action = func(c *cli.Context) error { return nil }
	if err := app.Run([]string{"smtpd"}); err == nil {
		t.Fatal("a malformed config file must be an error")
	}
}
