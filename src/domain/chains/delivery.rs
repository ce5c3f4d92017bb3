//! What a messenger's delivery status means for a chain step that sent the message.
//!
//! Wazzup answers a send with 201 and reports the message's fate later, as a status (API v3
//! webhooks: `sent`, `delivered`, `read`, `edited`, or `error` with a code). Free text
//! outside WhatsApp's 24-hour session is taken and then fails with `24_HOURS_EXCEEDED`;
//! other codes say the client cannot get the message at all.

/// Wazzup's code for free text sent outside WhatsApp's 24-hour session.
pub const SESSION_CLOSED: &str = "24_HOURS_EXCEEDED";

/// What one status of a sent message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// On its way or there (`sent`, `delivered`, `read`, `edited`): nothing to do.
    Progress,
    /// WhatsApp's session with the client is closed: the free text never reached them, and
    /// only what the step allows for a closed session may go instead.
    SessionClosed,
    /// The client will never get it (no WhatsApp on the number, judged spam, the channel
    /// rejected…): the step failed.
    Undeliverable {
        /// The messenger's code, `UNKNOWN` when it gave none.
        code: String,
        /// Why, in the words a manager reads.
        why: String,
    },
    /// A status this robot does not know: logged, nothing done.
    Unknown,
}

/// Reads a status: `status` as the messenger names it, `error` its error code and
/// `description` what it said about the error.
pub fn read_status(status: &str, error: Option<&str>, description: Option<&str>) -> Delivery {
    match status {
        "sent" | "delivered" | "read" | "edited" => Delivery::Progress,
        "error" if error == Some(SESSION_CLOSED) => Delivery::SessionClosed,
        "error" => {
            let code = error.unwrap_or("UNKNOWN").to_owned();
            let why = match (
                words_of(&code),
                description.filter(|d| !d.trim().is_empty()),
            ) {
                (Some(words), _) => words.to_owned(),
                (None, Some(said)) => format!("Wazzup: {said}"),
                (None, None) => "Wazzup не доставил сообщение".to_owned(),
            };
            Delivery::Undeliverable {
                why: format!("{why} ({code})"),
                code,
            }
        }
        _ => Delivery::Unknown,
    }
}

/// The codes of Wazzup's webhook documentation a WhatsApp message can fail with, in
/// Russian; `None` for the others, whose description is shown as it came.
fn words_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "BAD_CONTACT" => "у номера нет WhatsApp",
        "TOO_LONG_TEXT" => "текст сообщения слишком длинный",
        "TOO_BIG_CONTENT" => "файл больше 50 МБ",
        "SPAM" => "сообщение не отправлено: WhatsApp заподозрил спам",
        "TOO_MANY_EXT_REQS" => "отправка прервана: слишком много сообщений с канала",
        "MESSAGE_CANCELLED" => "отправка сообщения остановлена",
        "CONTENT_CONVERSION_ERROR" => "не удалось преобразовать вложение",
        "MESSAGE_DELETED" => "сообщение удалено отправителем",
        "CHANNEL_REJECTED" => "канал WhatsApp отклонён",
        "GENERAL_ERROR" | "UNKNOWN_ERROR" => "ошибка Wazzup",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_changes_nothing_and_an_unknown_status_is_told_apart() {
        for s in ["sent", "delivered", "read", "edited"] {
            assert_eq!(read_status(s, None, None), Delivery::Progress, "{s}");
        }
        assert_eq!(read_status("played", None, None), Delivery::Unknown);
    }

    #[test]
    fn the_closed_session_is_not_a_failure() {
        assert_eq!(
            read_status("error", Some("24_HOURS_EXCEEDED"), Some("closed")),
            Delivery::SessionClosed
        );
    }

    #[test]
    fn other_errors_fail_with_words_for_the_manager() {
        assert_eq!(
            read_status("error", Some("BAD_CONTACT"), Some("no such account")),
            Delivery::Undeliverable {
                code: "BAD_CONTACT".into(),
                why: "у номера нет WhatsApp (BAD_CONTACT)".into(),
            }
        );
        let Delivery::Undeliverable { why, .. } =
            read_status("error", Some("NEW_CODE"), Some("Something new"))
        else {
            panic!()
        };
        assert_eq!(why, "Wazzup: Something new (NEW_CODE)");
        let Delivery::Undeliverable { code, .. } = read_status("error", None, None) else {
            panic!()
        };
        assert_eq!(code, "UNKNOWN");
    }
}
