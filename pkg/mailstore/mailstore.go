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
// the exported names below are what imapd is written against. The
// protocol layer owns sequence numbers and when updates may be told to a
// client; this package owns UIDs, flags, MODSEQs and the files.
package mailstore

import (
	"errors"
	"io"
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
type Store struct{}

// Open opens (creating if needed) the Maildir at opts.Root.
func Open(opts Options) (*Store, error) { return nil, errNotYet }

// Close releases the store's watches and caches.
func (s *Store) Close() error { return nil }

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

// List returns every mailbox (and subscribed names that no longer exist,
// with NonExistent set), INBOX first, the rest sorted by name.
func (s *Store) List() ([]MailboxInfo, error) { return nil, errNotYet }

// EnsureSpecialUse creates Sent, Drafts, Trash, Junk and Archive (subscribed,
// with their special-use attributes) when no folder has that use yet.
func (s *Store) EnsureSpecialUse() error { return errNotYet }

// Create makes a folder (and its missing parents) with an optional
// special-use attribute (CREATE-SPECIAL-USE).
func (s *Store) Create(name, specialUse string) error { return errNotYet }

// Delete removes a folder and its messages; INBOX is ErrInbox.
func (s *Store) Delete(name string) error { return errNotYet }

// Rename renames a folder and its children; renaming INBOX moves its
// messages to a new folder and leaves INBOX empty (RFC 3501 § 6.3.5).
func (s *Store) Rename(oldName, newName string) error { return errNotYet }

// SetSubscribed adds or removes name in the subscriptions file.
func (s *Store) SetSubscribed(name string, on bool) error { return errNotYet }

// Status is what STATUS and SELECT report.
type Status struct {
	Messages, Recent, Unseen, Deleted uint32
	UIDNext, UIDValidity              uint32
	Size                              int64 // STATUS=SIZE: sum of RFC822.SIZE
	HighestModSeq                     uint64
}

// Status returns a folder's counters without selecting it.
func (s *Store) Status(name string) (Status, error) { return Status{}, errNotYet }

// AppendResult is what APPENDUID (RFC 4315) needs.
type AppendResult struct {
	UIDValidity uint32
	UID         uint32
}

// Append stores a message durably (tmp, fsync, rename, fsync dir) before
// returning, with flags (system flags and keywords) and the internal date
// (zero: now). A message over MaxMessageSize is ErrTooBig, and nothing is
// left behind.
func (s *Store) Append(name string, flags []string, date time.Time, r io.Reader) (AppendResult, error) {
	return AppendResult{}, errNotYet
}

// Select opens a folder for a session; readOnly for EXAMINE.
func (s *Store) Select(name string, readOnly bool) (*View, error) { return nil, errNotYet }

// Msg is one message as the store sees it now.
type Msg struct {
	UID          uint32
	Flags        []string // system flags and keywords, without \Recent
	Recent       bool     // this view was the first to see it (IMAP4rev1 \Recent)
	ModSeq       uint64
	Size         int64 // RFC822.SIZE: the size with CRLF line ends, as FETCH sends it
	InternalDate time.Time
}

// Snapshot is a folder's state at one moment. Msgs are in UID order, which
// is the order of sequence numbers.
type Snapshot struct {
	Msgs          []Msg
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
}

// View is one session's open folder.
type View struct{}

// Sync looks for changes (new messages, moved into cur/ and given UIDs;
// expunges; flag changes by anyone, each of which raises that message's
// MODSEQ) and returns the current state. The protocol compares it with
// what its client was told. Cheap when nothing changed.
func (v *View) Sync() (Snapshot, error) { return Snapshot{}, errNotYet }

// ReadOnly reports whether the view came from EXAMINE.
func (v *View) ReadOnly() bool { return false }

// Open returns a message's content as stored (LF or CRLF line ends; the
// protocol sends CRLF). A message expunged meanwhile is ErrExpunged.
func (v *View) Open(uid uint32) (io.ReadSeekCloser, error) { return nil, errNotYet }

// StoreOp is how STORE combines flags.
type StoreOp int

const (
	StoreReplace StoreOp = iota // FLAGS
	StoreAdd                    // +FLAGS
	StoreRemove                 // -FLAGS
)

// Store changes flags of the given UIDs (missing UIDs are skipped). With
// unchangedSince > 0 (CONDSTORE UNCHANGEDSINCE) a message whose MODSEQ is
// higher is left alone and listed in failed. changed lists the messages
// whose flags changed, with their new MODSEQ.
func (v *View) Store(uids []uint32, op StoreOp, flags []string, unchangedSince uint64) (changed []Msg, failed []uint32, err error) {
	return nil, nil, errNotYet
}

// Expunge removes the messages flagged \Deleted, only those among uids
// when uids is not nil (UID EXPUNGE), and returns the UIDs removed.
func (v *View) Expunge(uids []uint32) ([]uint32, error) { return nil, errNotYet }

// CopyResult is what COPYUID (RFC 4315) needs; SrcUIDs[i] became DstUIDs[i].
type CopyResult struct {
	UIDValidity      uint32
	SrcUIDs, DstUIDs []uint32
}

// Copy copies messages (with their flags) to another folder durably.
func (v *View) Copy(uids []uint32, dest string) (CopyResult, error) {
	return CopyResult{}, errNotYet
}

// Move moves messages to another folder durably (RFC 6851): they are in
// dest before they leave this folder.
func (v *View) Move(uids []uint32, dest string) (CopyResult, error) {
	return CopyResult{}, errNotYet
}

// Vanished returns the UIDs expunged after modseq (QRESYNC VANISHED
// (EARLIER)); exact is false when the store no longer knows that far back,
// and then the protocol reports every UID it cannot find.
func (v *View) Vanished(modseq uint64) (uids []uint32, exact bool) { return nil, false }

// Watch returns a channel that receives a value soon after the folder may
// have changed (inotify on new/ and cur/, this process's own sessions, and
// polling every Options.PollInterval if set); stop releases it.
func (v *View) Watch() (changed <-chan struct{}, stop func()) { return nil, func() {} }

// Close ends the view.
func (v *View) Close() error { return nil }

var errNotYet = errors.New("mailstore: not implemented yet")
