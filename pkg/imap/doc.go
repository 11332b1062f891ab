// Package imap is imapd's protocol: IMAP4rev1 (RFC 3501) and IMAP4rev2
// (RFC 9051) over one user's mailboxes as pkg/mailstore keeps them
// (Dovecot-compatible Maildir++), with ENABLE, IDLE, UIDPLUS, MOVE,
// SPECIAL-USE, CREATE-SPECIAL-USE, NAMESPACE, LITERAL+, ID, UNSELECT,
// CHILDREN, LIST-EXTENDED, LIST-STATUS, ESEARCH, SEARCHRES, SASL-IR,
// AUTH=PLAIN, STARTTLS and implicit TLS, STATUS=SIZE, APPENDLIMIT, BINARY,
// UTF8=ACCEPT, CONDSTORE and QRESYNC (RFC 7162), SORT and THREAD
// (RFC 5256).
//
// Why a protocol layer of our own rather than go-imap v2's imapserver
// (v2.0.0-beta.9, LIBRARIES.md): its server has no CONDSTORE or QRESYNC
// code at all (only the capability names), no SORT or THREAD, runs one
// command at a time (no pipelining), caps literals outside APPEND at 4 KiB
// after login and APPEND at a constant 100 MiB, and has no way to end
// sessions on SIGTERM. Carrying those would mean rewriting its parser and
// most of its responses; smtpd made the same choice for the same kind of
// reasons. go-imap's client is used in the tests, as an independent
// implementation.
//
// The parts:
//   - wire.go, parse.go, fetchparse.go, searchparse.go: the command reader
//     and parser. A literal ends at its octet count, never at a line end
//     (so a CRLF inside one cannot start a command: issue 11's smuggling
//     class); a synchronizing literal is asked for ("+") only once the
//     command before it parsed, and before login a literal over 4 KiB is
//     refused.
//   - session.go, auth.go: states, dispatch, login (users file via
//     Backend), STARTTLS, limits, the session's log line.
//   - selected.go: the selected folder as the client knows it (sequence
//     numbers are ours; UIDs, flags and MODSEQs the store's), and the
//     unilateral updates: EXISTS, EXPUNGE or VANISHED, FETCH FLAGS, sent
//     after every command where RFC 9051 § 7.5.1 allows them (never an
//     EXPUNGE during FETCH, STORE, SEARCH, SORT or THREAD) and during IDLE
//     as soon as the store's Watch says something changed.
//   - fetch.go, body.go, envelope.go: FETCH; bodies go out with CRLF line
//     ends, streamed from the file; BODYSTRUCTURE and sections come from
//     pkg/mime's lenient parser (the one mime-pack uses), so broken MIME
//     gets an answer, never an error.
//   - search.go, sort.go, store.go, mailbox.go: the other commands.
package imap
