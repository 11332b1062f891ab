package check

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	milter "github.com/d--j/go-milter"
)

// script says what a test milter answers, and records what it was told.
type script struct {
	connect, helo, mail, data, eoh, body *milter.Response
	rcpt                                 func(string) *milter.Response
	eom                                  func(m milter.Modifier) *milter.Response
	request                              map[milter.MacroStage][]string // macros the milter asks for

	mu      sync.Mutex
	macros  map[string]string // "stage name" → value
	headers []string
	bodyGot string
	events  []string
}

func (s *script) record(stage string, m milter.Modifier, names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, stage)
	for _, n := range names {
		if v, ok := m.GetEx(n); ok {
			s.macros[stage+" "+n] = v
		}
	}
}

func (s *script) macro(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.macros[key]
}

func or(r *milter.Response) (*milter.Response, error) {
	if r == nil {
		return milter.RespContinue, nil
	}
	return r, nil
}

var allMacros = []string{"i", "j", "v", "_", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_port}", "{client_name}",
	"{mail_addr}", "{mail_host}", "{mail_mailer}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}", "{auth_authen}", "{tls_version}"}

type scriptedMilter struct {
	milter.NoOpMilter
	s *script
}

func (t *scriptedMilter) Connect(host, family string, port uint16, addr string, m milter.Modifier) (*milter.Response, error) {
	t.s.record("connect", m, allMacros...)
	return or(t.s.connect)
}
func (t *scriptedMilter) Helo(name string, m milter.Modifier) (*milter.Response, error) {
	t.s.record("helo", m, allMacros...)
	return or(t.s.helo)
}
func (t *scriptedMilter) MailFrom(from, args string, m milter.Modifier) (*milter.Response, error) {
	t.s.record("mail "+from, m)
	t.s.record("mail", m, allMacros...)
	return or(t.s.mail)
}
func (t *scriptedMilter) RcptTo(rcpt, args string, m milter.Modifier) (*milter.Response, error) {
	t.s.record("rcpt", m, allMacros...)
	if t.s.rcpt != nil {
		return or(t.s.rcpt(rcpt))
	}
	return milter.RespContinue, nil
}
func (t *scriptedMilter) Data(m milter.Modifier) (*milter.Response, error) {
	t.s.record("data", m, allMacros...)
	return or(t.s.data)
}
func (t *scriptedMilter) Header(name, value string, m milter.Modifier) (*milter.Response, error) {
	t.s.mu.Lock()
	t.s.headers = append(t.s.headers, name+":"+value)
	t.s.mu.Unlock()
	return milter.RespContinue, nil
}
func (t *scriptedMilter) Headers(m milter.Modifier) (*milter.Response, error) {
	t.s.record("eoh", m, allMacros...)
	return or(t.s.eoh)
}
func (t *scriptedMilter) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	t.s.mu.Lock()
	t.s.bodyGot += string(chunk)
	t.s.mu.Unlock()
	return or(t.s.body)
}
func (t *scriptedMilter) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	t.s.record("eom", m, allMacros...)
	if t.s.eom != nil {
		return or(t.s.eom(m))
	}
	return milter.RespAccept, nil
}
func (t *scriptedMilter) Abort(m milter.Modifier) error {
	t.s.record("abort", m)
	return nil
}

// startMilter runs a milter on loopback with script s and returns its
// specification.
func startMilter(t *testing.T, s *script) MilterSpec {
	t.Helper()
	s.macros = map[string]string{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []milter.Option{
		milter.WithMilter(func() milter.Milter { return &scriptedMilter{s: s} }),
		milter.WithActions(milter.AllClientSupportedActionMasks),
	}
	for stage, names := range s.request {
		opts = append(opts, milter.WithMacroRequest(stage, names))
	}
	srv := milter.NewServer(opts...)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return MilterSpec{Network: "tcp", Address: l.Addr().String()}
}

const milterMsg = "Received: from client.test by mx.example.test\nFrom: a@b.test\nTo: u@example.test\nSubject: original\nX-Remove: me\n\nthe original body\n"

func milterTx() transaction {
	return transaction{ip: "192.0.2.1", helo: "client.test", from: "a@b.test", rcpts: []string{"u@example.test", "v@example.test"}, msg: milterMsg}
}

func noDNS(ms ...MilterSpec) Config {
	return Config{SPF: ModeOff, DKIMVerify: ModeOff, DMARC: ModeOff, Milters: ms, MilterTimeout: 2 * time.Second}
}

// TestMilterModifications: every modification a milter can make is
// applied to the committed message, in order, and the macros are those
// Postfix sends.
func TestMilterModifications(t *testing.T) {
	s := &script{eom: func(m milter.Modifier) *milter.Response {
		m.AddHeader("X-Added", "yes")
		m.ChangeHeader(1, "Subject", " changed")
		m.ChangeHeader(1, "X-Remove", "")
		m.InsertHeader(0, "X-Top", "first")
		m.AddRecipient("<w@example.test>", "")
		m.DeleteRecipient("<v@example.test>")
		m.ReplaceBody(strings.NewReader("a new body\nin two lines\n"))
		return milter.RespAccept
	}}
	c := newChecker(t, nil, noDNS(startMilter(t, s)))
	o := run(t, c, milterTx())
	if o.err != nil || o.result == nil {
		t.Fatalf("%v", o.err)
	}
	want := "X-Top: first\r\nReceived: from client.test by mx.example.test\r\nFrom: a@b.test\r\nTo: u@example.test\r\nSubject: changed\r\nX-Added: yes\r\n\r\na new body\r\nin two lines\r\n"
	if o.stored != want {
		t.Errorf("stored:\n%q\nwant:\n%q", o.stored, want)
	}
	if strings.Join(o.result.Rcpts, " ") != "u@example.test w@example.test" {
		t.Errorf("recipients %v", o.result.Rcpts)
	}
	// What it was told: the header as it is (values without the space
	// after the colon, as Postfix sends them), the body.
	if strings.Join(s.headers, "|") != "Received:from client.test by mx.example.test|From:a@b.test|To:u@example.test|Subject:original|X-Remove:me" {
		t.Errorf("headers %q", s.headers)
	}
	if s.bodyGot != "the original body\r\n" {
		t.Errorf("body %q", s.bodyGot)
	}
	for k, want := range map[string]string{
		"connect j":             "mx.example.test",
		"connect {daemon_name}": "mx.example.test",
		"connect {daemon_addr}": "127.0.0.1",
		"connect _":             "unknown [192.0.2.1]",
		"mail i":                "TESTID0001",
		"mail {mail_addr}":      "a@b.test",
		"mail {mail_host}":      "b.test",
		"mail {mail_mailer}":    "smtp",
		"rcpt i":                "TESTID0001",
		"rcpt {rcpt_addr}":      "v@example.test",
		"rcpt {rcpt_mailer}":    "local",
		"eom i":                 "TESTID0001",
	} {
		if got := s.macro(k); got != want {
			t.Errorf("macro %s = %q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(s.macro("connect v"), "letterbox ") {
		t.Errorf("macro v = %q", s.macro("connect v"))
	}
	// Postfix's defaults do not include {client_addr} at connect.
	if s.macro("connect {client_addr}") != "" || s.macro("mail {auth_authen}") != "" {
		t.Errorf("macros beyond Postfix's defaults were sent: %v", s.macros)
	}
}

// TestMilterMacroRequest: a milter that asks for other macros gets them.
func TestMilterMacroRequest(t *testing.T) {
	s := &script{request: map[milter.MacroStage][]string{milter.StageConnect: {"{client_addr}", "{client_port}", "{client_name}"}}}
	c := newChecker(t, nil, noDNS(startMilter(t, s)))
	run(t, c, milterTx())
	if s.macro("connect {client_addr}") != "192.0.2.1" || s.macro("connect {client_port}") != "40000" || s.macro("connect {client_name}") != "unknown" {
		t.Errorf("requested macros: %v", s.macros)
	}
}

// TestMilterChain: a second milter sees the first one's changes; a
// quarantine sends the message to Junk.
func TestMilterChain(t *testing.T) {
	first := &script{eom: func(m milter.Modifier) *milter.Response {
		m.AddHeader("X-Spam-Flag", "YES")
		return milter.RespContinue
	}}
	second := &script{eom: func(m milter.Modifier) *milter.Response {
		m.Quarantine("spam flagged")
		return milter.RespAccept
	}}
	c := newChecker(t, nil, noDNS(startMilter(t, first), startMilter(t, second)))
	o := run(t, c, milterTx())
	if o.err != nil {
		t.Fatal(o.err)
	}
	if last := second.headers[len(second.headers)-1]; last != "X-Spam-Flag:YES" {
		t.Errorf("second milter's last header %q", last)
	}
	if !strings.Contains(o.result.Junk, "spam flagged") {
		t.Errorf("junk %q", o.result.Junk)
	}
}

// TestMilterVerdicts: each refusal where it happens, and discard.
func TestMilterVerdicts(t *testing.T) {
	reject554, _ := milter.RejectWithCodeAndReason(554, "5.7.0 go away\nand stay away")
	custom451, _ := milter.RejectWithCodeAndReason(451, "4.7.0 later please")
	for _, tc := range []struct {
		name  string
		s     *script
		check func(t *testing.T, o outcome)
	}{
		{"reject at connect", &script{connect: milter.RespReject}, func(t *testing.T, o outcome) {
			if o.connect == nil || o.connect.Code != 550 {
				t.Errorf("connect %v", o.connect)
			}
		}},
		{"tempfail at mail", &script{mail: milter.RespTempFail}, func(t *testing.T, o outcome) {
			if o.mail == nil || o.mail.Error() != "451 4.7.1 Service unavailable - try again later" {
				t.Errorf("mail %v", o.mail)
			}
		}},
		{"one recipient refused", &script{rcpt: func(r string) *milter.Response {
			if r == "v@example.test" {
				return reject554
			}
			return nil
		}}, func(t *testing.T, o outcome) {
			if o.rcpt[0] != nil || o.rcpt[1] == nil || o.rcpt[1].Error() != "554 5.7.0 go away and stay away" {
				t.Errorf("rcpt %v", o.rcpt)
			}
			if o.err != nil || strings.Join(o.result.Rcpts, " ") != "u@example.test" {
				t.Errorf("message %v %+v", o.err, o.result)
			}
		}},
		{"refused at data", &script{data: milter.RespReject}, func(t *testing.T, o outcome) {
			if o.data == nil || o.data.Code != 550 {
				t.Errorf("data %v", o.data)
			}
		}},
		{"refused in the body", &script{body: custom451}, func(t *testing.T, o outcome) {
			if o.err == nil || o.err.Error() != "451 4.7.0 later please" || o.result != nil {
				t.Errorf("message %v", o.err)
			}
		}},
		{"refused at the end", &script{eom: func(milter.Modifier) *milter.Response { return reject554 }}, func(t *testing.T, o outcome) {
			if o.err == nil || !strings.HasPrefix(o.err.Error(), "554 5.7.0") || o.result != nil {
				t.Errorf("message %v", o.err)
			}
		}},
		{"discard at rcpt", &script{rcpt: func(string) *milter.Response { return milter.RespDiscard }}, func(t *testing.T, o outcome) {
			v, ok := o.err.(*Verdict)
			if !ok || !v.Discard || v.Code != 250 || o.result != nil {
				t.Errorf("message %v", o.err)
			}
		}},
		{"discard at the end", &script{eom: func(milter.Modifier) *milter.Response { return milter.RespDiscard }}, func(t *testing.T, o outcome) {
			if v, ok := o.err.(*Verdict); !ok || !v.Discard || o.result != nil {
				t.Errorf("message %v", o.err)
			}
		}},
		{"every recipient deleted", &script{eom: func(m milter.Modifier) *milter.Response {
			m.DeleteRecipient("<u@example.test>")
			m.DeleteRecipient("<v@example.test>")
			return milter.RespAccept
		}}, func(t *testing.T, o outcome) {
			if v, ok := o.err.(*Verdict); !ok || !v.Discard || o.result != nil {
				t.Errorf("message %v", o.err)
			}
		}},
		{"accept at mail: nothing more sent", &script{mail: milter.RespAccept, eom: func(m milter.Modifier) *milter.Response {
			m.AddHeader("X-Should-Not", "be here")
			return milter.RespAccept
		}}, func(t *testing.T, o outcome) {
			if o.err != nil || strings.Contains(o.stored, "X-Should-Not") {
				t.Errorf("message %v %q", o.err, o.stored)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChecker(t, nil, noDNS(startMilter(t, tc.s)))
			tc.check(t, run(t, c, milterTx()))
		})
	}
}

// rawMilter is a milter that negotiates, then answers the command number
// after (counted from the connect event) with reply, and to the others
// with continue. A nil reply means: say nothing (hang); "close" closes.
func rawMilter(t *testing.T, after int, reply []byte, close bool) MilterSpec {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				n := 0
				for {
					var hdr [4]byte
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						return
					}
					data := make([]byte, binary.BigEndian.Uint32(hdr[:]))
					if _, err := io.ReadFull(c, data); err != nil {
						return
					}
					switch data[0] {
					case 'O':
						c.Write([]byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0, 0xff, 0, 0, 0, 0})
						continue
					case 'D', 'A', 'Q': // macros, abort, quit: no reply
						if data[0] == 'Q' {
							return
						}
						continue
					}
					if n == after {
						if close {
							return
						}
						if reply == nil {
							time.Sleep(time.Hour) // hang; the test's cleanup closes us
						}
						c.Write(reply)
					} else {
						c.Write([]byte{0, 0, 0, 1, 'c'})
					}
					n++
				}
			}(c)
		}
	}()
	return MilterSpec{Network: "tcp", Address: l.Addr().String()}
}

// TestMilterBroken: a milter that is down, hangs, answers nonsense or goes
// away mid-message gets its default action: tempfail refuses with 451 and
// commits nothing (the client keeps the message), accept lets the message
// through unchanged. No panic, no hang beyond milter-timeout.
func TestMilterBroken(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := MilterSpec{Network: "tcp", Address: l.Addr().String()}
	l.Close()
	for _, tc := range []struct {
		name string
		spec MilterSpec
	}{
		{"down", down},
		{"hangs at connect", rawMilter(t, 0, nil, false)},
		{"hangs at the end of the message", rawMilter(t, 13, nil, false)},
		{"goes away at the second recipient", rawMilter(t, 4, nil, true)},
		{"goes away in the header", rawMilter(t, 8, nil, true)},
		{"goes away in the body", rawMilter(t, 12, nil, true)},
		{"empty packet", rawMilter(t, 3, []byte{0, 0, 0, 0}, false)},
		{"huge packet", rawMilter(t, 3, []byte{0x7f, 0xff, 0xff, 0xff, 'c'}, false)},
		{"unknown reply code", rawMilter(t, 2, []byte{0, 0, 0, 1, 'Z'}, false)},
		{"malformed reply code", rawMilter(t, 2, []byte{0, 0, 0, 4, 'y', '9', '9', 0}, false)},
		{"modification before the end", rawMilter(t, 1, []byte{0, 0, 0, 5, 'h', 'a', 0, 'b', 0}, false)},
		{"truncated modification", rawMilter(t, 13, []byte{0, 0, 0, 3, 'm', 0, 0, 0, 0, 0, 1, 'a'}, false)},
	} {
		for _, action := range []string{"tempfail", "accept"} {
			t.Run(tc.name+"/"+action, func(t *testing.T) {
				spec := tc.spec
				spec.DefaultAction = action
				spec.Timeout = 300 * time.Millisecond
				c := newChecker(t, nil, noDNS(spec))
				start := time.Now()
				o := run(t, c, milterTx())
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("took %v", d)
				}
				var v *Verdict
				for _, x := range append([]*Verdict{o.connect, o.mail, o.data}, o.rcpt...) {
					if x != nil {
						v = x
					}
				}
				if vv, ok := o.err.(*Verdict); ok {
					v = vv
				}
				if action == "tempfail" {
					if v == nil || v.Code != 451 || o.result != nil {
						t.Errorf("verdict %v, committed %v", v, o.result != nil)
					}
					return
				}
				if v != nil || o.err != nil || o.result == nil || !strings.HasSuffix(o.stored, "\r\n\r\nthe original body\r\n") {
					t.Errorf("verdict %v, err %v, stored %q", v, o.err, o.stored)
				}
			})
		}
	}
}

// TestFramedConn: packets of length 0 (go-milter would index their first
// byte) or over 1 MiB (it would allocate them) are refused before the
// library sees them, and so are more replies per message than the limit.
func TestFramedConn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  []byte
		total int64
		ok    bool
	}{
		{"continue", []byte{0, 0, 0, 1, 'c'}, 100, true},
		{"empty", []byte{0, 0, 0, 0}, 100, false},
		{"huge", []byte{0x7f, 0, 0, 0, 'c'}, 1 << 40, false},
		{"over the message's total", []byte{0, 0, 0, 10, 'b', 1, 2, 3, 4, 5, 6, 7, 8, 9}, 5, false},
	} {
		a, b := net.Pipe()
		go func() { b.Write(tc.data); b.Close() }()
		c := &framedConn{Conn: a, maxTotal: tc.total}
		var hdr [4]byte
		_, err := io.ReadFull(c, hdr[:])
		if err == nil {
			body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			_, err = io.ReadFull(c, body)
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		a.Close()
	}
}
