#!/usr/bin/env bash
# check-man.sh [PAGE…]: every man page (default man/*.[0-9]) must be clean
# under both renderers a reader meets: mandoc (BSDs, Alpine, `mandoc -l`) and
# groff (Debian's and Fedora's man(1)). A page passes when
#   - `mandoc -T lint -W warning` says nothing;
#   - `groff -mandoc -ww -z` says nothing (groff's mdoc macros read words
#     like "An" or "Re" inside arguments as macro calls and silently drop text
#     mandoc keeps, e.g. a whole .Rs block);
#   - neither renderer's text output has an empty section or subsection
#     (a heading followed by the next heading or the end of the page);
#   - both renderers produce the same section headings, in the same order;
#   - no quotes nest by mistake: `.Pq Sq a Sq b` or `.Brq Qq a , Qq b`
#     renders as (‘a ‘b’’), the first quote swallowing the second, under
#     both renderers and without a warning; two closing quotes in a row
#     (’’ ”” or """) are taken as that mistake.
# Without mandoc or groff it skips with a message, unless CI is set: then a
# missing renderer is a failure (.ci/run installs both).
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mandoc >/dev/null || missing+=("mandoc (Debian package mandoc)")
command -v groff >/dev/null || missing+=("groff (Debian package groff-base)")
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${CI:-}" ]; then
    echo "check-man: CI is set and these are missing: ${missing[*]}" >&2
    exit 1
  fi
  echo "check-man: not installed: ${missing[*]}; man pages not checked (CI installs them)"
  exit 0
fi

if [ $# -gt 0 ]; then pages=("$@"); else pages=(man/*.[0-9]); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# plain strips the overstriking (bold, underline) of the terminal renderers.
plain() { LC_ALL=C sed 's/.\x08//g'; }

# empty_sections FILE prints each heading of a rendered page that has no text
# under it. Section headings start in column 0, subsection headings in column
# 3, text is indented further; the first line is the page header and the last
# non-blank line the footer (OS, date and OS again). A page that ends without
# its footer was cut short by the renderer: that is reported too.
empty_sections() {
  awk '
    { line[NR] = $0 }
    END {
      last = NR
      while (last > 0 && line[last] ~ /^[ \t]*$/) last--
      if (line[last] !~ /^[^ ].*[^ ]   +[^ ].*[^ ]   +[^ ]/) { print "(the page footer is missing)"; last++ }
      for (i = 2; i < last; i++) {
        if (line[i] ~ /^[ \t]*$/) continue
        match(line[i], /^ */); ind = RLENGTH
        if (ind != 0 && ind != 3) continue
        j = i + 1
        while (j < last && line[j] ~ /^[ \t]*$/) j++
        match(line[j], /^ */); next_ind = RLENGTH
        if (j >= last || next_ind <= ind) {
          sub(/^ */, "", line[i]); print line[i]
        }
      }
    }' "$1"
}

# headings FILE prints the section headings (column 0) between header and footer.
headings() {
  awk '{ line[NR] = $0 }
    END {
      last = NR
      while (last > 0 && line[last] ~ /^[ \t]*$/) last--
      for (i = 2; i < last; i++) if (line[i] ~ /^[^ \t]/) print line[i]
    }' "$1"
}

fail=0
bad() { echo "check-man: $1: $2" >&2; fail=1; }
for page in "${pages[@]}"; do
  name=$(basename "$page")
  out=$(mandoc -T lint -W warning "$page" 2>&1) || true
  [ -n "$out" ] && bad "$page" "mandoc -T lint -W warning:"$'\n'"$out"
  out=$(groff -mandoc -ww -z "$page" 2>&1) || true
  [ -n "$out" ] && bad "$page" "groff -mandoc -ww -z:"$'\n'"$out"

  mandoc -T utf8 "$page" 2>/dev/null | plain >"$tmp/$name.mandoc"
  groff -mandoc -Tutf8 -ww "$page" 2>/dev/null | plain >"$tmp/$name.groff"
  for r in mandoc groff; do
    empty=$(empty_sections "$tmp/$name.$r")
    [ -n "$empty" ] && bad "$page" "empty section under $r: $(echo "$empty" | paste -sd, -)"
  done
  for r in mandoc groff; do
    nested=$(grep -n "’’\|””\|\"\"\"" "$tmp/$name.$r")
    [ -n "$nested" ] && bad "$page" "quotes nested by mistake under $r (put each quoting macro on a line of its own):"$'\n'"$nested"
  done
  if ! cmp -s <(headings "$tmp/$name.mandoc") <(headings "$tmp/$name.groff"); then
    bad "$page" "sections differ between mandoc and groff:"$'\n'"$(diff <(headings "$tmp/$name.mandoc") <(headings "$tmp/$name.groff"))"
  fi
done
if [ "$fail" = 0 ]; then
  echo "man pages: clean under mandoc and groff (${#pages[@]} pages)"
fi
exit "$fail"
