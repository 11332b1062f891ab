// Package mailstore is one user's mail as IMAP sees it: INBOX (the user's
// Maildir, the one deliver and queue-runner write) and Maildir++ folders,
// stored exactly as Dovecot stores them so that Dovecot and imapd can serve
// the same Maildir in turn or at once (DESIGN.md § imapd's storage):
//
//   - folders are `.Name` directories under the INBOX Maildir, hierarchy
//     separator ".", names in modified UTF-7 on disk (UTF-8 in this API);
//   - UIDs, UIDVALIDITY and UIDNEXT in `dovecot-uidlist` (version 3),
//     changed only under `dovecot-uidlist.lock`, as Dovecot does;
//   - keywords in `dovecot-keywords` (letters a–z after ":2," in names);
//   - subscriptions in `subscriptions` at the INBOX root;
//   - everything else (MODSEQs, sizes, dates, the expunge log for QRESYNC)
//     in a cache file of our own per folder, rebuilt from the Maildir when
//     it is missing, damaged or from another version.
//
// CONTRACT between pkg/imap (the protocol) and this package (the storage):
// the exported names of this file (methods in store.go and view.go) are
// what imapd is written against. The protocol layer owns sequence numbers
// and when updates may be told to a client; this package owns UIDs, flags,
// MODSEQs and the files.
//
// Sessions of one process share each folder's state (Open with the same
// Root shares it): a change made through one view is seen by the others
// at their next Sync and wakes their Watch. Other processes (imapd,
// Dovecot, deliver, pop3d) are seen through the files, cheaply (see
// folder.go). Files: see uidlist.go, keywords.go, subscriptions.go,
// specialuse.go, uidvalidity.go, cache.go, lock.go.
package mailstore

import (
	"errors"
	"log/slog"
	"time"
)

// Errors; test them with errors.Is. The protocol maps them to response codes.
var (
	ErrNoMailbox   = errors.New("mailbox does not exist")                      // [NONEXISTENT]
	ErrExists      = errors.New("mailbox already exists")                      // [ALREADYEXISTS]
	ErrBadName     = errors.New("invalid mailbox name")                        // [CANNOT]
	ErrInbox       = errors.New("operation not allowed on INBOX")              // [CANNOT]
	ErrHasChildren = errors.New("mailbox has children")                        // [INUSE]? see Delete
	ErrTooBig      = errors.New("message too big")                             // [TOOBIG]
	ErrNoKeywords  = errors.New("no room for another keyword in this mailbox") // [LIMIT]
	ErrReadOnly    = errors.New("mailbox opened read-only")                    // EXAMINE
	ErrExpunged    = errors.New("message was expunged")                        // [EXPUNGEISSUED]
	ErrBadFlag     = errors.New("invalid flag")                                // BAD, or NO [CANNOT]
	ErrSpecialUse  = errors.New("special-use attribute not supported")         // [USEATTR]
)

// System flags as IMAP names them; anything else in a flag list is a keyword.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// Special-use attributes (RFC 6154) of the folders created at first login.
const (
	UseSent    = `\Sent`
	UseDrafts  = `\Drafts`
	UseTrash   = `\Trash`
	UseJunk    = `\Junk`
	UseArchive = `\Archive`
)

// Options for Open.
type Options struct {
	Root     string // the user's Maildir: INBOX; folders are Root/.Name
	Hostname string // for unique file names (several hosts may share Root)
	// PollInterval makes Watch also look for changes this often, for file
	// systems where inotify cannot see other hosts' writes (NFS). 0: inotify
	// only.
	PollInterval   time.Duration
	MaxMessageSize int64 // APPEND limit; 0 = none
	Log            *slog.Logger
}

// Store is one user's mailboxes. It is safe for concurrent use by the
// sessions of one process; other processes (imapd, Dovecot, deliver,
// pop3d) may change the same files at any time.
type Store struct {
	acc    *account
	opts   Options
	closed bool
}

// MailboxInfo is one line of LIST.
type MailboxInfo struct {
	Name        string // UTF-8, "." separated; "INBOX" for the inbox
	SpecialUse  string // UseSent … or ""
	Subscribed  bool
	HasChildren bool
	NonExistent bool // a parent that is not a folder itself (a.b exists, a does not): \NonExistent, \Noselect
}

// Delimiter is the hierarchy separator.
const Delimiter = '.'

// Status is what STATUS and SELECT report.
type Status struct {
	Messages, Recent, Unseen, Deleted uint32
	UIDNext, UIDValidity              uint32
	Size                              int64 // STATUS=SIZE: sum of RFC822.SIZE
	HighestModSeq                     uint64
}

// AppendResult is what APPENDUID (RFC 4315) needs.
type AppendResult struct {
	UIDValidity uint32
	UID         uint32
}

// Msg is one message as the store sees it now.
type Msg struct {
	UID    uint32
	Recent bool     // this view was the first to see it (IMAP4rev1 \Recent)
	Flags  []string // system flags and keywords, without \Recent; shared: do not modify
	ModSeq uint64
	Size   int64 // RFC822.SIZE: the size with CRLF line ends, as FETCH sends it
	// InternalDate is zero while the date was not read from the file:
	// View.InternalDates reads it.
	InternalDate time.Time
}

// Snapshot is a folder's state at one moment. Msgs are in UID order, which
// is the order of sequence numbers. Msgs may be shared with other views
// and later snapshots: read it, never modify it.
type Snapshot struct {
	Msgs          []Msg
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	// Keywords are those defined in the folder (for FLAGS); NoNewKeywords
	// is set when all 26 of a Maildir's keyword letters are taken (no \*
	// in PERMANENTFLAGS).
	Keywords      []string
	NoNewKeywords bool
}

// StoreOp is how STORE combines flags.
type StoreOp int

const (
	StoreReplace StoreOp = iota // FLAGS
	StoreAdd                    // +FLAGS
	StoreRemove                 // -FLAGS
)

// CopyResult is what COPYUID (RFC 4315) needs; SrcUIDs[i] became DstUIDs[i].
type CopyResult struct {
	UIDValidity      uint32
	SrcUIDs, DstUIDs []uint32
}
