#!/usr/bin/env bash
# Regenerates maildir.tar and expected.txt: a Maildir that Dovecot itself
# (dovecot-lda delivering, doveadm flagging, copying, moving, expunging,
# creating and subscribing folders) wrote, and what doveadm reports about
# it. TestDovecotMaildir opens the Maildir and must report the same.
# Needs dovecot-core; run as root (Dovecot runs as nobody) or as a user.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
chmod 755 "$w"
md=$w/Maildir
printf 'base_dir = %s/run\nlog_path = /dev/stderr\nssl = no\nmail_location = maildir:%s\n' "$w" "$md" > "$w/dovecot.conf"
as=(env USER="$(id -un)" HOME="$w")
if [ "$(id -u)" = 0 ]; then
  chown -R nobody:nogroup "$w"
  as=(setpriv --reuid=nobody --regid=nogroup --clear-groups env USER=nobody HOME="$w")
fi
lda() { printf "$1" | "${as[@]}" /usr/lib/dovecot/dovecot-lda -c "$w/dovecot.conf" -f sender@example.org; }
da() { "${as[@]}" doveadm -c "$w/dovecot.conf" "$@"; }
lda 'Subject: one\n\nfirst\n'
lda 'Subject: two\r\n\r\nsecond, CRLF\r\n'
lda 'Subject: three\n\nthird\nwith lines\n'
lda 'Subject: four\n\nfourth\n'
lda 'Subject: five\n\nfifth, expunged\n'
lda 'Subject: six\n\nsixth, moved\n'
da mailbox create -s Sent Work.Proj 'Ünïcode & more'
da mailbox subscribe INBOX
da flags add '\Seen $Label1' mailbox INBOX uid 1
da flags add '\Flagged work' mailbox INBOX uid 2
da flags add '\Answered \Draft $Label1 later' mailbox INBOX uid 3
da flags add '\Deleted' mailbox INBOX uid 5
da expunge mailbox INBOX uid 5
da copy Sent mailbox INBOX uid 1:2
da move Work.Proj mailbox INBOX uid 6
da flags add 'proj' mailbox Work.Proj all
lda 'Subject: seven\n\nseventh, after the rest\n'
# A message Dovecot has never seen: it numbers it on the fetch below.
printf 'Subject: eight\n\nin new/ by hand\n' > "$md/new/1700000000.M1P1.handmade"
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$w"
da fetch 'mailbox uid flags size.virtual date.received' mailbox '*' all > "$here/expected.txt"
da mailbox status -t 'messages' '*' >/dev/null
for m in INBOX Sent Work.Proj 'Ünïcode & more'; do
  da -f flow mailbox status 'uidvalidity uidnext' "$m" >> "$here/expected.txt"
done
# Dovecot's own index files are not ours to read: leave them out.
(cd "$w" && tar --exclude='dovecot.index*' --exclude='dovecot.list.index*' --exclude='dovecot.mailbox.log' \
  --owner=0 --group=0 --numeric-owner --sort=name -cf "$here/maildir.tar" Maildir)
echo "wrote $here/maildir.tar and expected.txt"
