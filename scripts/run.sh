#!/usr/bin/env bash
# make run: a working local mail system on loopback high ports, domain
# example.test, a demo user, data under ./var. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
VAR=$PWD/var
mkdir -p "$VAR"/{spool,mail,tls} && chmod 700 "$VAR"
CONF=$VAR/letterbox.conf
if [ ! -f "$CONF" ]; then
  cat > "$CONF" <<CONF
# letterbox.conf for 'make run' — see man/letterbox.conf.5
hostname = "mx.example.test"
domains = ["example.test"]
spool = "$VAR/spool"
mail-root = "$VAR/mail"
users = "$VAR/users"
aliases = "$VAR/aliases"
relay-networks = ["127.0.0.0/8", "::1/128"]
retry-after = "1m"
# curl and other simple clients send bare LF line ends: take them as CRLF
# (Postfix 3.9's smtpd_forbid_bare_newline = normalize; see smtpd(8)).
bare-newline = "normalize"
CONF
  printf 'postmaster: demo\nabuse: demo\n' > "$VAR/aliases"
  : > "$VAR/users"
fi
export LETTERBOX_CONFIG=$CONF
if command -v openssl >/dev/null && [ ! -f "$VAR/tls/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=mx.example.test \
    -keyout "$VAR/tls/key.pem" -out "$VAR/tls/cert.pem" >/dev/null 2>&1
fi
if [ -f "$VAR/tls/cert.pem" ] && ! grep -q tls-cert "$CONF"; then
  printf 'tls-cert = "%s"\ntls-key = "%s"\n' "$VAR/tls/cert.pem" "$VAR/tls/key.pem" >> "$CONF"
fi
# A var/ from before bare-newline existed gets it too.
if ! grep -q '^bare-newline' "$CONF"; then
  printf 'bare-newline = "normalize"\n' >> "$CONF"
fi
if ! grep -q '^demo@example.test:' "$VAR/users"; then
  PW=$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-12)
  echo "$PW" | bin/mailuser add demo@example.test
  echo "$PW" > "$VAR/demo-password" && chmod 600 "$VAR/demo-password"
fi
PW=$(cat "$VAR/demo-password")

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; echo; echo "letterbox stopped"' EXIT INT TERM
bin/smtpd --listen 127.0.0.1:2525 --listen submission=127.0.0.1:2587 2>>"$VAR/smtpd.log" & pids+=($!)
bin/queue-runner --daemon 2>>"$VAR/queue-runner.log" & pids+=($!)
[ -x bin/pop3d ] && { bin/pop3d --listen 127.0.0.1:2110 2>>"$VAR/pop3d.log" & pids+=($!); }
[ -x bin/imapd ] && { bin/imapd --listen 127.0.0.1:2143 2>>"$VAR/imapd.log" & pids+=($!); }
# Ready when every listener accepts a connection (bash's /dev/tcp), not
# after some time: the commands below must work the moment they show.
ports=(2525 2587)
[ -x bin/pop3d ] && ports+=(2110)
[ -x bin/imapd ] && ports+=(2143)
for port in "${ports[@]}"; do
  for i in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    [ "$i" = 300 ] && { echo "nothing listens on 127.0.0.1:$port after 30 s; see $VAR/*.log" >&2; exit 1; }
    sleep 0.1
  done
done
cat <<MSG
letterbox is running (data and logs under $VAR):
  SMTP        127.0.0.1:2525   (relay from loopback; STARTTLS with a self-signed cert)
  submission  127.0.0.1:2587   (AUTH required)
$( [ -x bin/pop3d ] && echo "  POP3        127.0.0.1:2110" )
$( [ -x bin/imapd ] && echo "  IMAP        127.0.0.1:2143   (STARTTLS with the same certificate)" )
  demo user   demo@example.test   password: $PW
  Maildir     $VAR/mail/example.test/demo/

Try:
  printf 'Subject: hi\\n\\nhello\\n' | curl -s smtp://127.0.0.1:2525 --mail-from me@example.test --mail-rcpt demo@example.test -T -
$( command -v swaks >/dev/null && echo "  swaks --server 127.0.0.1:2525 --to demo@example.test" )
  python3 -c 'import smtplib; s = smtplib.SMTP("127.0.0.1", 2587); s.login("demo@example.test", "$PW"); s.sendmail("demo@example.test", ["demo@example.test"], "Subject: submitted\\r\\n\\r\\nhello\\r\\n"); s.quit()'
  echo "Subject: cron" | LETTERBOX_CONFIG=$CONF bin/sendmail demo@example.test
  LETTERBOX_CONFIG=$CONF bin/queue-runner list
$( [ -x bin/pop3d ] && echo "  curl -s pop3://127.0.0.1:2110/ -u demo@example.test:$PW --list-only" )
$( [ -x bin/imapd ] && echo "  curl -s imap://127.0.0.1:2143/ -u demo@example.test:$PW                 # list folders
  curl -s 'imap://127.0.0.1:2143/INBOX;UID=1' -u demo@example.test:$PW     # read a message" )
$( [ -x bin/imapd ] && echo "Or any IMAP client: mutt -f imap://demo%40example.test@127.0.0.1:2143/" )
Ctrl-C stops it.
MSG
wait
