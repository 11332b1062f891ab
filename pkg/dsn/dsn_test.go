package dsn

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// parse runs Python's email package (a parser nobody here wrote) over msg
// and returns what it saw.
func parse(t *testing.T, msg []byte) map[string]any {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed to check DSNs with an independent parser")
	}
	script := `
import sys, json, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
out = {"ctype": m.get_content_type(), "report_type": m.get_param("report-type"),
       "from": str(m["From"]), "to": str(m["To"]), "subject": str(m["Subject"]),
       "auto": str(m["Auto-Submitted"]), "defects": len(m.defects), "parts": []}
for p in m.iter_parts():
    d = {"ctype": p.get_content_type(), "defects": len(p.defects)}
    if p.get_content_type() == "message/delivery-status":
        blocks = p.get_payload()
        d["blocks"] = [dict(b.items()) for b in blocks]
    elif p.get_content_type() == "message/rfc822":
        inner = p.get_payload()[0]
        d["subject"] = str(inner["Subject"])
        d["body"] = inner.get_content()
    else:
        d["text"] = p.get_content()
    out["parts"].append(d)
print(json.dumps(out))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return m
}

var orig = "From: alice@example.org\r\nTo: bob@example.test\r\nSubject: lunch?\r\n\r\nAt noon.\r\n"

func TestFailure(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	msg, err := Build(&Report{
		Hostname: "mx.example.test", To: "alice@example.org", QueueID: "0ABC123DEF",
		Arrived: at, Date: at.Add(time.Hour),
		Recipients: []Recipient{
			{Final: "bob@example.test", Original: "robert@example.test", Action: Failed, Status: "5.1.1",
				Diagnostic: "no such user: bob@example.test", LastAttempt: at},
			{Final: "carol@remote.test", Action: Failed, Status: "5.7.1", Remote: true, RemoteMTA: "mx.remote.test",
				Diagnostic: "550-5.7.1 go away\r\n550 5.7.1 really", LastAttempt: at},
		},
		Original: strings.NewReader(orig), OriginalSize: int64(len(orig)),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := parse(t, msg)
	if m["ctype"] != "multipart/report" || m["report_type"] != "delivery-status" || m["defects"].(float64) != 0 {
		t.Fatalf("top: %v", m)
	}
	if !strings.Contains(m["from"].(string), "MAILER-DAEMON@mx.example.test") || m["auto"] != "auto-replied" ||
		!strings.Contains(m["subject"].(string), "Undelivered") {
		t.Fatalf("header: %v", m)
	}
	parts := m["parts"].([]any)
	if len(parts) != 3 {
		t.Fatalf("parts: %v", parts)
	}
	if p := parts[0].(map[string]any); p["ctype"] != "text/plain" || !strings.Contains(p["text"].(string), "go away 550 5.7.1 really") {
		t.Fatalf("text part: %v", p)
	}
	ds := parts[1].(map[string]any)
	blocks := ds["blocks"].([]any)
	if len(blocks) != 3 {
		t.Fatalf("blocks: %v", blocks)
	}
	per := blocks[0].(map[string]any)
	if per["Reporting-MTA"] != "dns; mx.example.test" || per["Arrival-Date"] == nil {
		t.Fatalf("per-message: %v", per)
	}
	b1 := blocks[1].(map[string]any)
	if b1["Final-Recipient"] != "rfc822; bob@example.test" || b1["Original-Recipient"] != "rfc822; robert@example.test" ||
		b1["Action"] != "failed" || b1["Status"] != "5.1.1" || b1["Diagnostic-Code"] != "x-unix; no such user: bob@example.test" ||
		b1["Last-Attempt-Date"] == nil {
		t.Fatalf("rcpt 1: %v", b1)
	}
	b2 := blocks[2].(map[string]any)
	if b2["Diagnostic-Code"] != "smtp; 550-5.7.1 go away 550 5.7.1 really" || b2["Remote-MTA"] != "dns; mx.remote.test" {
		t.Fatalf("rcpt 2: %v", b2)
	}
	if p := parts[2].(map[string]any); p["ctype"] != "message/rfc822" || p["subject"] != "lunch?" || !strings.Contains(p["body"].(string), "At noon.") {
		t.Fatalf("original: %v", p)
	}
}

func TestDelayAndLargeOriginal(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	big := "Subject: big\nX-Test: 1\n\n" + strings.Repeat("0123456789\n", MaxOriginal/10)
	msg, err := Build(&Report{
		Hostname: "mx.example.test", To: "alice@example.org", QueueID: "0ABC",
		Recipients: []Recipient{{Final: "bob@example.test", Action: Delayed, Status: "4.2.2",
			Diagnostic: "mailbox full", LastAttempt: at, WillRetryUntil: at.Add(120 * time.Hour)}},
		Original: strings.NewReader(big), OriginalSize: int64(len(big)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg, []byte("0123456789")) {
		t.Fatal("body of a large original must not be returned")
	}
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("bare LF in the DSN")
	}
	m := parse(t, msg)
	if !strings.Contains(m["subject"].(string), "Delayed") {
		t.Fatalf("subject %v", m["subject"])
	}
	parts := m["parts"].([]any)
	b := parts[1].(map[string]any)["blocks"].([]any)[1].(map[string]any)
	if b["Action"] != "delayed" || b["Status"] != "4.2.2" || b["Will-Retry-Until"] == nil {
		t.Fatalf("block %v", b)
	}
	if p := parts[2].(map[string]any); p["ctype"] != "text/rfc822-headers" || !strings.Contains(p["text"].(string), "X-Test: 1") {
		t.Fatalf("headers part %v", p)
	}
}

func TestNoRecipients(t *testing.T) {
	if _, err := Build(&Report{Hostname: "h"}); err == nil {
		t.Fatal("want an error")
	}
}
