//! Outgoing mail (sign-in codes). Two transports behind one type:
//!
//! - SMTP through `lettre`, configured by `COALITION_SMTP_URL` in lettre's URL form:
//!   `smtp://host:port` (plain, for a relay on loopback or a private network),
//!   `smtp://host:587?tls=required` (STARTTLS, refused without it),
//!   `smtps://user:password@host` (TLS from the first byte), and `COALITION_SMTP_FROM`.
//! - The development mailer, used when no SMTP URL is set (the embedded default): it
//!   writes each message, sign-in code included, to the log at `info`, marked as the
//!   development mailer. That is the one place a secret reaches the log, by design: with
//!   nothing configured a developer still has to be able to sign in. `serve` says at start
//!   that mail goes to the log, so nobody runs it that way by mistake.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// The sender when `COALITION_SMTP_FROM` is unset.
pub const DEFAULT_FROM: &str = "Coalition <no-reply@localhost>";

/// One plain-text message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

pub enum Mailer {
    /// Writes messages to the log instead of sending them.
    Development { from: Mailbox },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        /// The relay's host and port, for the start-up log line (never the credentials).
        relay: String,
    },
}

impl Mailer {
    /// The mailer `COALITION_SMTP_URL` and `COALITION_SMTP_FROM` describe; an error
    /// names what is wrong (without echoing a password from the URL).
    pub fn from_settings(smtp_url: Option<&str>, from: &str) -> Result<Self, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|_| format!("'{from}' is not a mailbox such as \"Name <address@host>\""))?;
        let Some(url) = smtp_url else {
            return Ok(Mailer::Development { from });
        };
        let parsed = url::Url::parse(url).map_err(|_| "not a URL".to_owned())?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") {
            return Err("must be an smtp:// or smtps:// URL".into());
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("names no host")?;
        let relay = match parsed.port() {
            Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
            None => format!("{}://{host}", parsed.scheme()),
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("cannot be used: {}", scrub(&e.to_string(), &parsed)))?
            // A relay that hangs must not hold a sign-in task forever.
            .timeout(Some(Duration::from_secs(15)))
            .build();
        Ok(Mailer::Smtp {
            transport,
            from,
            relay,
        })
    }

    pub fn is_development(&self) -> bool {
        matches!(self, Mailer::Development { .. })
    }

    /// Where mail goes, for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Development { .. } => {
                "the log (development mailer: COALITION_SMTP_URL is not set; sign-in codes are written to the log)".into()
            }
            Mailer::Smtp { relay, .. } => format!("SMTP relay {relay}"),
        }
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), String> {
        match self {
            Mailer::Development { from } => {
                tracing::info!(
                    target: "coalition::mailer",
                    mailer = "development",
                    from = %from,
                    to = %mail.to,
                    subject = %mail.subject,
                    text = %mail.text,
                    "development mailer: this message was NOT sent, only written to the log"
                );
                Ok(())
            }
            Mailer::Smtp {
                transport, from, ..
            } => {
                let to: Mailbox = mail
                    .to
                    .parse()
                    .map_err(|_| "the recipient is not a valid address".to_owned())?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .header(lettre::message::header::ContentType::TEXT_PLAIN)
                    // Quoted-printable: Romanian letters survive any relay, and a line
                    // such as the code stays readable as it is.
                    .body(
                        lettre::message::Body::new_with_encoding(
                            mail.text.clone(),
                            lettre::message::header::ContentTransferEncoding::QuotedPrintable,
                        )
                        .map_err(|_| "encoding the message".to_owned())?,
                    )
                    .map_err(|e| format!("building the message: {e}"))?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("SMTP: {e}"))
            }
        }
    }
}

/// An error text without the URL's password, should the library ever quote it.
fn scrub(text: &str, url: &url::Url) -> String {
    match url.password() {
        Some(password) if !password.is_empty() => text.replace(password, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(Mailer::from_settings(None, DEFAULT_FROM)
            .unwrap()
            .is_development());
        let smtp = Mailer::from_settings(Some("smtp://127.0.0.1:2525"), DEFAULT_FROM).unwrap();
        assert_eq!(smtp.describe(), "SMTP relay smtp://127.0.0.1:2525");
        let tls = Mailer::from_settings(
            Some("smtps://user:hunter2@mail.example.org"),
            "Rewards <rewards@example.org>",
        )
        .unwrap();
        assert!(!tls.describe().contains("hunter2"));
        assert!(Mailer::from_settings(Some("http://mail.example.org"), DEFAULT_FROM).is_err());
        assert!(Mailer::from_settings(Some("smtp://"), DEFAULT_FROM).is_err());
        assert!(Mailer::from_settings(None, "not a mailbox").is_err());
    }
}
