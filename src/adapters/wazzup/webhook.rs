//! Wazzup webhooks (API v3): JSON with `messages[]` and/or `statuses[]`, and a
//! `{"test": true}` check. A message from a client (not our own echo) is a reply that stops
//! follow-up chains. Formats: see `fixtures/README.md`.

use serde::Deserialize;

use crate::adapters::webhook::{Caller, Parsed, WebhookError};
use crate::domain::event::{Event, EventKind, Source, dedup_key};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    test: bool,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    statuses: Vec<Status>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    message_id: String,
    channel_id: String,
    chat_type: String,
    chat_id: String,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    date_time: Option<String>,
    /// `text`, `image`, `audio`, `video`, `document`, `vcard`, `geo`, `missing_call`…
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl Message {
    /// The text, or the kind of a message that has none, in the words of a letter.
    fn said(&self) -> Option<String> {
        if let Some(text) = self
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Some(text.to_owned());
        }
        let kind = match self.kind.as_deref()? {
            "image" => "изображение",
            "audio" => "голосовое сообщение",
            "video" => "видео",
            "document" => "файл",
            "vcard" => "контакт",
            "geo" => "геопозиция",
            "missing_call" => "пропущенный звонок",
            "text" => return None,
            other => other,
        };
        Some(format!("[{kind}]"))
    }
}

/// One entry of `statuses[]`, as Wazzup's webhooks documentation (API v3, "Webhook about
/// updating the status of outgoing messages",
/// https://wazzup24.com/help/api-documentation-en/webhooks/) lists it: `messageId` (Wazzup's
/// id of the message, the one its send answered with), `timestamp` (ISO time), `status`
/// (`sent`, `delivered`, `read`, `error`, `edited`) and, only with `error`, an `error`
/// object `{error, description, data}`. A status carries no `crmMessageId`: the robot
/// knows its own messages by `messageId`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    message_id: String,
    status: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    error: Option<StatusError>,
}

/// The `error` object of a failed status.
#[derive(Debug, Deserialize)]
struct StatusError {
    /// The code: `24_HOURS_EXCEEDED`, `BAD_CONTACT`, `SPAM`, `CHANNEL_REJECTED`…
    error: String,
    #[serde(default)]
    description: Option<String>,
}

fn unix(rfc3339: Option<&str>) -> Option<i64> {
    rfc3339
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
}

/// Parses one Wazzup webhook body. Messages from channels not in `channels` (when it is not
/// empty) are ignored.
pub fn parse(body: &[u8], channels: &[String]) -> Result<Parsed, WebhookError> {
    let body: Body = serde_json::from_slice(body)?;
    let mut parsed = Parsed {
        is_check: body.test,
        ..Parsed::default()
    };
    for m in body.messages {
        if m.is_echo {
            parsed.ignored.push("messages[isEcho]".to_owned());
            continue;
        }
        if !channels.is_empty() && !channels.contains(&m.channel_id) {
            parsed.ignored.push("messages[other channel]".to_owned());
            continue;
        }
        let phone = (m.chat_type == "whatsapp" && m.chat_id.bytes().all(|b| b.is_ascii_digit()))
            .then(|| m.chat_id.clone());
        let text = m.said();
        parsed.caller = Caller {
            account: Some(m.channel_id.clone()),
            ..Caller::default()
        };
        parsed.events.push(Event {
            source: Source::Wazzup,
            account: m.channel_id.clone(),
            dedup_key: dedup_key(
                Source::Wazzup,
                &m.channel_id,
                "client_replied",
                &m.chat_id,
                &m.message_id,
            ),
            entity_id: m.chat_id,
            crm_entity: None,
            occurred_at: unix(m.date_time.as_deref()),
            modified_by: None,
            kind: EventKind::ClientReplied {
                chat_type: m.chat_type,
                channel_id: m.channel_id,
                message_id: m.message_id,
                phone,
                text,
                written_at: m
                    .date_time
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc)),
            },
        });
    }
    for s in body.statuses {
        let (error, description) = match s.error {
            Some(e) => (Some(e.error), e.description),
            None => (None, None),
        };
        parsed.events.push(Event {
            source: Source::Wazzup,
            account: "wazzup".to_owned(),
            dedup_key: dedup_key(
                Source::Wazzup,
                "wazzup",
                "message_status",
                &s.message_id,
                &s.status,
            ),
            entity_id: s.message_id,
            crm_entity: None,
            occurred_at: unix(s.timestamp.as_deref()),
            modified_by: None,
            kind: EventKind::MessageStatus {
                status: s.status,
                error,
                description,
            },
        });
    }
    parsed
        .ignored
        .extend(body.other.keys().filter(|k| k.as_str() != "test").cloned());
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_message_is_a_reply_and_an_echo_is_not() {
        let body = br#"{"messages":[
            {"messageId":"m1","channelId":"c1","chatType":"whatsapp","chatId":"79161234567","isEcho":false,"dateTime":"2026-11-23T09:00:00.000Z","type":"text","text":"ok"},
            {"messageId":"m2","channelId":"c1","chatType":"whatsapp","chatId":"79161234567","isEcho":true,"type":"text","text":"hello"}
        ]}"#;
        let p = parse(body, &[]).unwrap();
        assert_eq!(p.events.len(), 1);
        let e = &p.events[0];
        assert_eq!(e.kind.name(), "client_replied");
        assert_eq!(e.entity_id, "79161234567");
        assert_eq!(e.dedup_key, "wazzup:c1:client_replied:79161234567:m1");
        assert_eq!(e.occurred_at, Some(1_795_424_400));
        let EventKind::ClientReplied { text, .. } = &e.kind else {
            panic!("{:?}", e.kind);
        };
        assert_eq!(text.as_deref(), Some("ok"));
    }

    #[test]
    fn a_message_without_text_says_what_it_was() {
        let body = br#"{"messages":[
            {"messageId":"m3","channelId":"c1","chatType":"whatsapp","chatId":"79161234567","type":"audio","contentUri":"https://store.wazzup24.com/a.ogg"}
        ]}"#;
        let p = parse(body, &[]).unwrap();
        let EventKind::ClientReplied { text, .. } = &p.events[0].kind else {
            panic!("{:?}", p.events[0].kind);
        };
        assert_eq!(text.as_deref(), Some("[голосовое сообщение]"));
    }

    #[test]
    fn the_test_check_is_recognised() {
        let p = parse(br#"{"test": true}"#, &[]).unwrap();
        assert!(p.is_check);
        assert!(p.events.is_empty());
    }

    #[test]
    fn statuses_carry_their_error() {
        let body = br#"{"statuses":[{"messageId":"m1","timestamp":"2026-11-23T09:00:00Z","status":"error","error":{"error":"24_HOURS_EXCEEDED","description":"late"}}]}"#;
        let p = parse(body, &[]).unwrap();
        assert_eq!(
            p.events[0].kind,
            EventKind::MessageStatus {
                status: "error".into(),
                error: Some("24_HOURS_EXCEEDED".into()),
                description: Some("late".into()),
            }
        );
    }

    #[test]
    fn a_status_without_its_message_or_with_a_bad_error_is_refused_by_its_key() {
        let err = parse(br#"{"statuses":[{"status":"read"}]}"#, &[]).unwrap_err();
        assert!(err.to_string().contains("messageId"), "{err}");
        let err = parse(
            br#"{"statuses":[{"messageId":"m1","status":"error","error":{"description":"x"}}]}"#,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("`error`"), "{err}");
    }

    #[test]
    fn an_unknown_status_is_taken() {
        let p = parse(
            br#"{"statuses":[{"messageId":"m1","status":"played"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(p.events[0].kind.name(), "message_status");
    }

    #[test]
    fn a_message_without_its_chat_is_refused() {
        let err = parse(
            br#"{"messages":[{"messageId":"m1","channelId":"c1","chatType":"whatsapp"}]}"#,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("chatId"), "{err}");
    }

    #[test]
    fn other_channels_are_ignored_when_channels_are_configured() {
        let body = br#"{"messages":[{"messageId":"m1","channelId":"c9","chatType":"whatsapp","chatId":"7916"}]}"#;
        let p = parse(body, &["c1".to_owned()]).unwrap();
        assert!(p.events.is_empty());
    }
}
