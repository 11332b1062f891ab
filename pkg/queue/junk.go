package queue

import (
	"os"
	"path/filepath"

	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// junkFolder files a message that the checks on mail in marked as junk
// (spool.Envelope.Junk: a DMARC policy of quarantine, a milter's
// quarantine) into the Maildir's Junk folder, the one imapd creates with
// the \Junk SPECIAL-USE attribute; into INBOX while the user has none (it
// is not created for them). mbox and --mda deliveries are unchanged.
func junkFolder(env *spool.Envelope, d route.Destination) route.Destination {
	if env.Junk == "" || d.Kind != route.Maildir {
		return d
	}
	d.Folder = ""
	if fi, err := os.Stat(filepath.Join(d.Path, ".Junk")); err == nil && fi.IsDir() {
		d.Folder = "Junk"
	}
	return d
}
