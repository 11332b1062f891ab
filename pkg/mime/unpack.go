package mime

import (
	"encoding/json"
	"fmt"
	"io"
	stdmime "mime"
	"os"
	"strconv"
	"strings"
)

// List parses the message in r and returns its parts in order (a parent
// before its children) and the warnings.
func List(r io.Reader, lim Limits) ([]*Part, []string, error) {
	var parts []*Part
	var warns []string
	err := Walk(r, lim, Handler{
		Begin: func(p *Part) io.Writer { parts = append(parts, p); return nil },
		End: func(p *Part) {
			for _, w := range p.Warnings {
				warns = append(warns, "part "+p.ID+": "+w)
			}
		},
		Warn: func(s string) { warns = append(warns, s) },
	})
	return parts, warns, err
}

// listField makes a value safe for one tab-separated field: a name with
// control characters or backslashes is shown Go-quoted.
func listField(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsAny(s, "\\\"") || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// WriteList writes the listing: one line per part,
// PART<TAB>TYPE<TAB>DISPOSITION<TAB>SIZE<TAB>NAME, SIZE the decoded size
// and "-" for what is missing. With asJSON it writes a JSON array instead.
func WriteList(w io.Writer, parts []*Part, asJSON bool) error {
	if asJSON {
		if parts == nil {
			parts = []*Part{}
		}
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(parts)
	}
	for _, p := range parts {
		if _, err := fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", p.ID, listField(p.Type), listField(p.Disposition),
			p.DecodedSize, listField(p.Name)); err != nil {
			return err
		}
	}
	return nil
}

// UnpackOptions says what to write where.
type UnpackOptions struct {
	Dir   string
	All   bool // every leaf part, not just attachments
	Force bool // replace existing regular files
	Lim   Limits
	// Wrote is called with each path written; Warn with each problem.
	Wrote func(path string)
	Warn  func(msg string)
}

// Unpack writes the attachments of the message in r (every part with
// All), decoded, into Dir, under safe names, and decodes uuencoded blocks
// found in text parts. It returns the number of files written; the error
// is ErrEmpty or a read error, or the directory cannot be opened.
func Unpack(r io.Reader, o UnpackOptions) (int, error) {
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	if o.Wrote == nil {
		o.Wrote = func(string) {}
	}
	dir, err := os.Open(o.Dir)
	if err != nil {
		return 0, fmt.Errorf("unpack: %w", err)
	}
	defer dir.Close()
	if fi, err := dir.Stat(); err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("unpack: %s is not a directory", o.Dir)
	}
	written, failed := 0, 0
	var firstErr error
	create := func(name, fallback string, mode os.FileMode) (io.WriteCloser, error) {
		safe := SafeName(name)
		if safe == "" {
			safe = fallback
		}
		f, _, err := CreateExclusive(dir, safe, mode, o.Force)
		if err != nil {
			if failed++; firstErr == nil {
				firstErr = err
			}
			return nil, err
		}
		written++
		o.Wrote(f.Name())
		return f, nil
	}
	err = Walk(r, o.Lim, Handler{
		Begin: func(p *Part) io.Writer {
			if p.Container {
				// a forwarded message sent as an attachment is also saved whole
				if strings.HasPrefix(p.Type, "message/") && (p.Disposition == "attachment" || p.Name != "") {
					f, err := create(p.Name, "part-"+p.ID+".eml", 0o666)
					if err != nil {
						o.Warn(fmt.Sprintf("part %s: %v", p.ID, err))
						return nil
					}
					return f
				}
				return nil
			}
			var file io.WriteCloser
			if p.IsAttachment() || o.All {
				f, err := create(p.Name, "part-"+p.ID+extFor(p.Type), 0o666)
				if err != nil {
					o.Warn(fmt.Sprintf("part %s: %v", p.ID, err))
				} else {
					file = f
				}
			}
			if p.Type == "text/plain" && !p.IsAttachment() {
				// uuencoded files hide in plain text bodies
				n := 0
				u := &UUScanner{
					Open: func(name string, mode os.FileMode) (io.WriteCloser, error) {
						n++
						return create(name, fmt.Sprintf("part-%s-uu%d", p.ID, n), mode|0o600)
					},
					Warn: func(s string) { o.Warn("part " + p.ID + ": " + s) },
				}
				if file == nil {
					return u
				}
				return &teeCloser{file, u}
			}
			if file == nil {
				return nil
			}
			return file
		},
		End: func(p *Part) {
			for _, w := range p.Warnings {
				o.Warn("part " + p.ID + ": " + w)
			}
		},
		Warn: o.Warn,
	})
	if err == nil && written == 0 && failed > 0 {
		err = &CreateError{Failed: failed, Err: firstErr}
	}
	return written, err
}

// CreateError says that no file could be created (the first reason).
type CreateError struct {
	Failed int
	Err    error
}

func (e *CreateError) Error() string {
	return fmt.Sprintf("unpack: no file could be written (%d failed): %v", e.Failed, e.Err)
}

func (e *CreateError) Unwrap() error { return e.Err }

// teeCloser writes a text part to its file and to the uuencode scanner.
type teeCloser struct {
	f io.WriteCloser
	u *UUScanner
}

func (t *teeCloser) Write(p []byte) (int, error) {
	t.u.Write(p)
	return t.f.Write(p)
}

func (t *teeCloser) Close() error {
	t.u.Close()
	return t.f.Close()
}

// Uudecode decodes every uuencoded or begin-base64 block in r into dir,
// under safe names; it returns the number of blocks found.
func Uudecode(r io.Reader, o UnpackOptions) (int, error) {
	if o.Dir == "" {
		o.Dir = "."
	}
	dir, err := os.Open(o.Dir)
	if err != nil {
		return 0, fmt.Errorf("uudecode: %w", err)
	}
	defer dir.Close()
	u := &UUScanner{Warn: o.Warn, Open: func(name string, mode os.FileMode) (io.WriteCloser, error) {
		safe := SafeName(name)
		if safe == "" {
			safe = "uudecoded"
		}
		f, _, err := CreateExclusive(dir, safe, mode|0o600, o.Force)
		if err != nil {
			return nil, err
		}
		if o.Wrote != nil {
			o.Wrote(f.Name())
		}
		return f, nil
	}}
	if _, err := io.Copy(u, r); err != nil {
		return u.Found, fmt.Errorf("uudecode: read: %w", err)
	}
	u.Close()
	return u.Found, nil
}

// extFor is an extension for a generated name, from the content type.
func extFor(t string) string {
	switch t {
	case "text/plain":
		return ".txt"
	case "text/html":
		return ".html"
	case "message/rfc822":
		return ".eml"
	case "application/octet-stream":
		return ".bin"
	}
	if exts, _ := stdmime.ExtensionsByType(t); len(exts) > 0 {
		return exts[0]
	}
	return ".bin"
}
