package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/delivery"
	"letterbox/pkg/dkim"
	"letterbox/pkg/maildir"
	"letterbox/pkg/privsep"
	"letterbox/pkg/remote"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
	"letterbox/pkg/submission"
	"letterbox/pkg/sysexits"
)

// Flags are queue-runner's own flags (the schedule, the MDA, the daemon);
// remote.Flags() are added by NewApp.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "daemon", Usage: "keep running: wait on the trigger FIFO and the retry timer"},
		&cli.DurationFlag{Name: "retry-after", Usage: "first retry `DELAY` after a temporary failure (doubles after each)", Value: DefaultRetryAfter},
		&cli.DurationFlag{Name: "max-retry-interval", Usage: "longest `DELAY` between retries", Value: DefaultMaxRetryInterval},
		&cli.DurationFlag{Name: "warn-after", Usage: "send one delay warning after `DURATION` (0: never)", Value: DefaultWarnAfter},
		&cli.DurationFlag{Name: "bounce-after", Usage: "give up and bounce after `DURATION`", Value: DefaultBounceAfter},
		&cli.StringFlag{Name: "mda", Usage: "deliver local mailboxes by piping to `COMMAND` (sh -c) instead of in-process"},
		&cli.DurationFlag{Name: "interval", Usage: "the daemon's longest `SLEEP` between passes", Value: DefaultInterval},
		cliapp.Flag(dkim.KeysFlag),
	}
}

var subcommands = map[string]bool{"list": true, "flush": true, "show": true, "remove": true}

// listFlags are list's own options; they stay after the subcommand.
var listFlags = []cli.Flag{
	&cli.BoolFlag{Name: "json", Usage: "one JSON array"},
	&cli.IntFlag{Name: "limit", Usage: "at most `N` messages (0: all)"},
	&cli.StringFlag{Name: "domain", Usage: "only messages with a pending recipient at `DOMAIN`"},
	&cli.StringFlag{Name: "state", Usage: "only messages that are `STATE`: due (a pass would work them now) or deferred"},
}

// NewApp builds the queue-runner command line.
func NewApp() *cli.App {
	flags := append(Flags(), remote.Flags()...)
	app := cliapp.NewApp("queue-runner", "deliver what is in the spool: one pass, or --daemon", flags)
	app.UsageText = "queue-runner [options] [list [--json] [--limit N] [--domain DOMAIN] [--state due|deferred] | flush | show ID | remove ID]"
	app.Action = func(c *cli.Context) error {
		if c.Args().Present() {
			return sysexits.New(sysexits.Usage, fmt.Errorf("unknown subcommand %q", c.Args().First()))
		}
		if c.Bool("daemon") {
			return runDaemon(c)
		}
		return runPass(c, false)
	}
	app.Commands = []*cli.Command{
		{Name: "list", Usage: "show the queue (like mailq)", Flags: listFlags, Action: runList},
		{Name: "flush", Usage: "attempt every pending recipient now", Action: func(c *cli.Context) error { return runPass(c, true) }},
		{Name: "show", Usage: "print a message's envelope and header", ArgsUsage: "ID", Action: runShow},
		{Name: "remove", Usage: "remove a message from the queue", ArgsUsage: "ID", Action: runRemove},
	}
	app.ExitErrHandler = func(*cli.Context, error) {}
	return app
}

// Run runs the app on args, accepting options after the subcommand too
// (they are moved before it).
func Run(app *cli.App, args []string) error {
	flags := append(cliapp.CommonFlags(), append(Flags(), remote.Flags()...)...)
	return app.Run(ReorderArgs(args, boolFlags(flags)))
}

func boolFlags(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": true, "h": true, "version": true, "v": true, "json": true}
	for _, f := range flags {
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				m[n] = true
			}
		}
	}
	return m
}

// ReorderArgs moves options that follow a subcommand in front of it, so
// `queue-runner list --spool X` means `queue-runner --spool X list`. The
// subcommand's own options (list's listFlags) stay after it; bools lists
// the options that take no value.
func ReorderArgs(args []string, bools map[string]bool) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Options before the subcommand.
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		out = append(out, a)
		if name := strings.TrimLeft(a, "-"); !strings.Contains(name, "=") && !bools[name] && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	if i >= len(args) || !subcommands[args[i]] {
		return append(out, args[i:]...)
	}
	sub := args[i]
	own := map[string]string{}
	if sub == "list" {
		for _, f := range listFlags {
			kind := "value"
			if _, ok := f.(*cli.BoolFlag); ok {
				kind = "bool"
			}
			for _, n := range f.Names() {
				own[n] = kind
			}
		}
	}
	var rest []string
	for i++; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "help" || name == "h" || own[name] == "bool" {
			rest = append(rest, a)
			continue
		}
		if own[name] == "value" {
			rest = append(rest, a)
			if !hasValue && i+1 < len(args) {
				i++
				rest = append(rest, args[i])
			}
			continue
		}
		out = append(out, a)
		if !strings.Contains(a, "=") && !bools[name] && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return append(append(out, sub), rest...)
}

// setup opens the spool and builds the Runner from the flags.
func setup(c *cli.Context) (*Runner, *config.Common, error) {
	root := c
	if l := c.Lineage(); len(l) > 1 {
		root = l[len(l)-2]
	}
	cm, err := cliapp.Load(root)
	if err != nil {
		return nil, nil, sysexits.New(sysexits.Config, err)
	}
	sp, err := spool.Open(cm.Spool)
	if err != nil {
		return nil, nil, sysexits.New(sysexits.CantCreat, err)
	}
	warn := root.Duration("warn-after")
	if warn == 0 {
		warn = -1 // 0 = never
	}
	r := &Runner{Spool: sp, Hostname: cm.Hostname, Postmaster: cm.Postmaster, MDA: root.String("mda"),
		RetryAfter: root.Duration("retry-after"), MaxRetryInterval: root.Duration("max-retry-interval"),
		WarnAfter: warn, BounceAfter: root.Duration("bounce-after"), Interval: root.Duration("interval"),
		// The same limits pkg/remote applies to connections: a pass never
		// starts more work than the client could carry at once.
		Workers: root.Int("concurrency"), PerDestination: root.Int("concurrency-per-domain"),
		// Concurrent deliveries into one Maildir share new/'s fsyncs.
		Owners: delivery.Owners{MailUser: cm.MailUser, DefaultPrivs: cm.DefaultPrivs, DirSync: &maildir.DirSyncer{}},
		Log:    cm.Log}
	r.Signer = signer(root.String("dkim-keys"))
	r.Pickup = pickup(cm)
	return r, cm, nil
}

// pickup admits local users' drop files: the trace field comes from the
// file's owner; root, queue-runner's own user and mail-user may set any
// sender without a warning (Postfix's trusted users).
func pickup(cm *config.Common) spool.Pickup {
	trusted := []uint32{0, uint32(os.Geteuid())}
	if cm.MailUser != "" {
		if c, err := privsep.LookupUser(cm.MailUser); err == nil {
			trusted = append(trusted, c.UID)
		}
	}
	return submission.Pickup{Hostname: cm.Hostname, IsLocal: cm.IsLocalDomain, Trusted: trusted}.Header
}

// deliverers adds the router and the remote client (for passes).
func deliverers(c *cli.Context, r *Runner, cm *config.Common) (func(), error) {
	root := c
	if l := c.Lineage(); len(l) > 1 {
		root = l[len(l)-2]
	}
	rt, err := route.New(cm, true)
	if err != nil {
		return nil, sysexits.New(sysexits.Config, err)
	}
	r.Router = rt
	rc, err := remote.ConfigFromContext(root, cm)
	if err != nil {
		return nil, sysexits.New(sysexits.Config, err)
	}
	rc.SelectMX = selectMX
	cl, err := remote.New(rc)
	if err != nil {
		return nil, sysexits.New(sysexits.Config, err)
	}
	r.Remote = cl
	return func() { cl.Close() }, nil
}

// selectMX is pkg/route's decision of the MX hosts mail may go to (a
// backup MX sends only to more preferred hosts; a loop is refused).
func selectMX(domain string, hosts []remote.MX) ([]remote.MX, error) {
	in := make([]route.MX, len(hosts))
	for i, h := range hosts {
		in[i] = route.MX(h)
	}
	out, err := route.UsableMX(domain, in)
	if err != nil {
		return nil, err
	}
	kept := make([]remote.MX, len(out))
	for i, h := range out {
		kept[i] = remote.MX(h)
	}
	return kept, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func runPass(c *cli.Context, flush bool) error {
	r, cm, err := setup(c)
	if err != nil {
		return err
	}
	done, err := deliverers(c, r, cm)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := signalContext()
	defer cancel()
	st, err := r.Pass(ctx, flush)
	cm.Log.Info("pass done", "messages", st.Messages, "delivered", st.Delivered, "deferred", st.Deferred, "bounced", st.Bounced, "notices", st.Notices,
		"queued", st.Queued, "stat", st.Stat, "skipped", st.Skipped)
	if err != nil {
		return sysexits.New(sysexits.TempFail, err)
	}
	return nil
}

func runDaemon(c *cli.Context) error {
	r, cm, err := setup(c)
	if err != nil {
		return err
	}
	done, err := deliverers(c, r, cm)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := signalContext()
	defer cancel()
	cm.Log.Info("daemon started", "spool", cm.Spool)
	err = r.Daemon(ctx)
	cm.Log.Info("daemon stopped")
	if err != nil {
		return sysexits.New(sysexits.TempFail, err)
	}
	return nil
}

func runList(c *cli.Context) error {
	r, _, err := setup(c)
	if err != nil {
		return err
	}
	o := ListOptions{Limit: c.Int("limit"), Domain: c.String("domain"), State: c.String("state")}
	if err := o.check(); err != nil {
		return sysexits.New(sysexits.Usage, err)
	}
	if err := r.writeList(c.App.Writer, o, c.Bool("json")); err != nil {
		return notFound(err)
	}
	return nil
}

func oneID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", sysexits.New(sysexits.Usage, fmt.Errorf("%s: want one queue ID", c.Command.Name))
	}
	return c.Args().First(), nil
}

func runShow(c *cli.Context) error {
	id, err := oneID(c)
	if err != nil {
		return err
	}
	r, _, err := setup(c)
	if err != nil {
		return err
	}
	env, err := r.Spool.Load(id)
	if err != nil {
		return notFound(err)
	}
	w := c.App.Writer
	io.WriteString(w, env.Format())
	fmt.Fprintln(w)
	f, err := r.Spool.OpenData(id)
	if err != nil {
		return notFound(err)
	}
	defer f.Close()
	// The header only: the body may be large and is the sender's business.
	tp := textproto.NewReader(bufio.NewReader(f))
	for {
		line, err := tp.ReadContinuedLineBytes()
		if err != nil || len(line) == 0 {
			break
		}
		fmt.Fprintf(w, "%s\n", line)
	}
	return nil
}

func runRemove(c *cli.Context) error {
	id, err := oneID(c)
	if err != nil {
		return err
	}
	r, cm, err := setup(c)
	if err != nil {
		return err
	}
	if err := r.Spool.Remove(id); err != nil {
		if errors.Is(err, spool.ErrLocked) {
			return sysexits.New(sysexits.TempFail, fmt.Errorf("%s is being delivered right now; try again", id))
		}
		return notFound(err)
	}
	cm.Log.Info("removed by operator", "id", id)
	return nil
}

func notFound(err error) error {
	if errors.Is(err, spool.ErrNotFound) {
		return sysexits.New(sysexits.NoInput, err)
	}
	if errors.Is(err, os.ErrPermission) {
		return sysexits.New(sysexits.NoPerm, err)
	}
	return sysexits.New(sysexits.IOErr, err)
}
