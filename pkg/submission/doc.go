// Package submission holds the admission rules that smtpd and sendmail
// share, for mail from our own users: the syntax of a mailbox address as
// both read it, the check of a local recipient against the router, which
// envelope senders a user owns, and the Date and Message-ID fields added
// to a message that lacks them. smtpd applies them to SMTP sessions,
// sendmail to local injection; neither imports the other for them.
package submission
