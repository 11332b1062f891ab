// Package aliases reads sendmail aliases(5) files: keys are local parts (any
// local domain), full addresses, or @domain catch-alls; targets are
// addresses, /mbox paths, /maildir/ paths and |commands.
package aliases

// Table is a loaded aliases file.
type Table struct{}

// Load reads the aliases file at path. A missing file is an empty table.
func Load(path string) (*Table, error) { panic("aliases: not implemented") }

// Lookup returns the raw targets for local@domain: the full address key
// first, then the local part, then @domain. ok is false when nothing matches.
func (t *Table) Lookup(local, domain string) (targets []string, ok bool) {
	panic("aliases: not implemented")
}
