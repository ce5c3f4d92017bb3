//! E-mail over SMTP, behind one small trait, so that the follow-up chains can be tested
//! against a listener and never see SMTP.
//!
//! Every message carries the `Message-ID` its caller gives, made from what the message is
//! (the chain, the lead, the step), never a random one: a resend after a crash then carries
//! the same id, which the robot's own records, the recipient's mail program and a person
//! reading logs all recognise as the same letter.
//!
//! The server comes as one URL (`ROBOT_SMTP_URL`), in lettre's forms:
//! `smtps://user:password@host[:465]` (TLS from the start), `smtp://user:password@host:587?
//! tls=required` (STARTTLS), `smtp://host:25` (plain, for a relay on the same machine).
//! TLS is rustls with the Web PKI roots.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

/// One letter to one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The recipient, `client@example.ru` or `Иван Петров <client@example.ru>`.
    pub to: String,
    /// The subject, any Unicode.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// An HTML body besides the text one, for mail programs that show HTML.
    pub html: Option<String>,
    /// The `Message-ID`, `step-3.lead-1042@robot.example.ru`, with or without its angle
    /// brackets: the same for every attempt at the same letter.
    pub message_id: String,
}

/// Why a letter was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The letter cannot be made: a recipient or `Message-ID` that is no address, a sender
    /// that is none. Permanent, nothing was sent.
    #[error("the e-mail cannot be made: {0}")]
    Invalid(String),
    /// The server refused it for good (a 5xx reply: no such mailbox, policy). Permanent: the
    /// step is marked failed and the manager gets a task.
    #[error("the mail server refused the e-mail ({code}): {message}")]
    Refused {
        /// The SMTP reply code.
        code: String,
        /// The server's words.
        message: String,
    },
    /// The server refused the login (530, 534, 535): a person must fix `ROBOT_SMTP_URL`;
    /// jobs are retried meanwhile.
    #[error("the mail server refused the login: {0}")]
    Credentials(String),
    /// Not now: a 4xx reply (greylisting, a full queue), a connection refused or broken, a
    /// timeout, a TLS failure. Try again later.
    #[error("the e-mail could not be sent now: {0}")]
    Transient(String),
    /// `ROBOT_SMTP_URL` is no SMTP URL the robot can use.
    #[error("the mail server's URL cannot be used: {0}")]
    Config(String),
}

impl MailError {
    /// Whether sending the same letter again can never succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Invalid(_) | MailError::Refused { .. })
    }
}

/// Sends e-mail.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends one letter; `Ok` once the server has taken it.
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// A mail server reached over SMTP.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The server without its login and password, for `Debug` and errors.
    server: String,
}

// By hand: the transport is built from a URL that holds the password.
impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for the server at `url`, sending as `from`; each exchange with the server
    /// may take `timeout`. No connection is made until the first letter.
    pub fn new(url: &SecretString, from: &str, timeout: Duration) -> Result<SmtpMailer, MailError> {
        let url = url.expose_secret().trim();
        let server = server_of(url)?;
        let from: Mailbox = from
            .trim()
            .parse()
            .map_err(|e| MailError::Invalid(format!("the sender `{from}`: {e}")))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // lettre's words name the scheme or the TLS option, never the password.
            .map_err(|e| MailError::Config(format!("{server}: {e}")))?
            .timeout(Some(timeout))
            .build();
        Ok(SmtpMailer {
            transport,
            from,
            server,
        })
    }

    /// The letter as it goes on the wire.
    fn message(&self, email: &Email) -> Result<Message, MailError> {
        let to: Mailbox = email
            .to
            .trim()
            .parse()
            .map_err(|e| MailError::Invalid(format!("the recipient `{}`: {e}", email.to)))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .message_id(Some(message_id(&email.message_id)?));
        let built = match &email.html {
            None => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(email.text.clone()),
            ),
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                html.clone(),
            )),
        };
        built.map_err(|e| MailError::Invalid(e.to_string()))
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = self.message(email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, &self.server))
    }
}

/// `<left@right>` from the caller's id, with or without its brackets.
fn message_id(id: &str) -> Result<String, MailError> {
    let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
    let valid = match bare.split_once('@') {
        Some((left, right)) => {
            !left.is_empty()
                && !right.is_empty()
                && !right.contains('@')
                && bare
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\'))
        }
        None => false,
    };
    if valid {
        Ok(format!("<{bare}>"))
    } else {
        Err(MailError::Invalid(format!(
            "`{id}` is no Message-ID: write it like \"step-3.lead-1042@robot.example.ru\""
        )))
    }
}

/// `scheme://host:port` of an SMTP URL, without the login and password.
fn server_of(url: &str) -> Result<String, MailError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        MailError::Config(format!(
            "not a URL like \"smtps://user:password@smtp.example.ru\" ({e})"
        ))
    })?;
    let host = parsed
        .host_str()
        .ok_or_else(|| MailError::Config(format!("{}:// without a host", parsed.scheme())))?;
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}

/// What a failed send means for the chain step.
fn classify(e: &SmtpError, server: &str) -> MailError {
    let said = format!("{server}: {e}");
    match e.status() {
        Some(code) if e.is_permanent() => {
            let code = code.to_string();
            if matches!(code.as_str(), "530" | "534" | "535" | "538") {
                MailError::Credentials(said)
            } else {
                MailError::Refused {
                    code,
                    message: said,
                }
            }
        }
        // 4xx, and everything that is no reply at all: the connection, TLS, a timeout.
        _ => MailError::Transient(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer() -> SmtpMailer {
        SmtpMailer::new(
            &SecretString::from("smtps://robot:s3cr3t-pw@smtp.example.ru"),
            "Отдел продаж <sales@example.ru>",
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn message_ids_are_taken_with_or_without_brackets() {
        assert_eq!(message_id("a.1@robot.ru").unwrap(), "<a.1@robot.ru>");
        assert_eq!(message_id(" <a.1@robot.ru> ").unwrap(), "<a.1@robot.ru>");
        for bad in [
            "",
            "no-at",
            "@robot.ru",
            "a@",
            "a b@robot.ru",
            "a@b@c",
            "шаг@robot.ru",
        ] {
            assert!(
                matches!(message_id(bad), Err(MailError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_password_stays_out_of_debug() {
        let shown = format!("{:?}", mailer());
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("smtps://smtp.example.ru"), "{shown}");
    }

    #[test]
    fn urls_that_cannot_be_used_are_refused_without_their_password() {
        for bad in [
            "smtp.example.ru",
            "imap://u:s3cr3t-pw@host",
            "smtp://u:s3cr3t-pw@host?tls=maybe",
        ] {
            let e = SmtpMailer::new(&SecretString::from(bad), "a@b.ru", Duration::from_secs(1))
                .unwrap_err();
            assert!(matches!(e, MailError::Config(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
        }
    }

    #[test]
    fn a_bad_recipient_is_invalid_and_permanent() {
        let email = Email {
            to: "not an address".into(),
            subject: "Тема".into(),
            text: "Текст".into(),
            html: None,
            message_id: "x@robot.ru".into(),
        };
        let e = mailer().message(&email).unwrap_err();
        assert!(
            matches!(e, MailError::Invalid(_)) && e.is_permanent(),
            "{e:?}"
        );
    }

    #[test]
    fn the_letter_carries_the_given_message_id() {
        let email = Email {
            to: "Иван Петров <ivan@example.ru>".into(),
            subject: "Коммерческое предложение".into(),
            text: "Добрый день!".into(),
            html: Some("<p>Добрый день!</p>".into()),
            message_id: "step-3.lead-1042@robot.example.ru".into(),
        };
        let raw = String::from_utf8(mailer().message(&email).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Message-ID: <step-3.lead-1042@robot.example.ru>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
    }
}
