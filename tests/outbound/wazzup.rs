//! The Wazzup sender: a message, idempotency, the errors by whose fault they are, retries and
//! the rate limit.

use std::time::{Duration, Instant};

use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::store::{Location, Store, StoreSettings};
use sales_robot::adapters::wazzup::client::WazzupClient;
use sales_robot::adapters::wazzup::send::{Content, Outgoing, SendError, Sent, WhatsApp};
use sales_robot::domain::rate::Rate;
use secrecy::SecretString;

use crate::support::wazzup::*;

/// A fresh SQLite store for the rate limit.
pub async fn store() -> Store {
    let dir = tempfile::tempdir().unwrap().keep();
    let settings = StoreSettings {
        namespace: "outbound-test".into(),
        dedup_window: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(2),
    };
    Store::open(&Location::Sqlite(dir.join("robot.db")), settings)
        .await
        .unwrap()
}

/// Retries with short waits, so that failure tests stay quick.
fn fast() -> Retries {
    Retries {
        attempts: 4,
        base: Duration::from_millis(50),
        max: Duration::from_millis(200),
    }
}

async fn client(emu: &WazzupEmulator, channel: &str) -> WazzupClient {
    WazzupClient::new(
        emu.base_url(),
        channel,
        SecretString::from(API_KEY),
        store().await,
    )
    .with_retries(fast())
}

fn text(phone: &str, body: &str, key: &str) -> Outgoing {
    Outgoing {
        phone: phone.into(),
        content: Content::Text(body.into()),
        crm_message_id: key.into(),
    }
}

#[tokio::test]
async fn a_message_goes_to_the_number_as_digits() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let sent = wazzup
        .send(&text(
            "+7 (916) 123-45-67",
            "Андрей, добрый день! Напоминаем о КП.",
            "chain-kp:lead-1042:step-1",
        ))
        .await
        .unwrap();
    let recorded = emu.sent();
    assert_eq!(recorded.len(), 1);
    let m = &recorded[0];
    assert_eq!(
        sent,
        Sent::Accepted {
            message_id: m.message_id.clone(),
            chat_id: "79161234567".into()
        }
    );
    assert_eq!(m.channel_id, CHANNEL_WHATSAPP);
    assert_eq!(m.chat_type, "whatsapp");
    assert_eq!(m.chat_id, "79161234567");
    assert_eq!(
        m.text.as_deref(),
        Some("Андрей, добрый день! Напоминаем о КП.")
    );
    assert_eq!(
        m.crm_message_id.as_deref(),
        Some("chain-kp:lead-1042:step-1")
    );
    // A robot's message leaves the client's unanswered message marked for the manager.
    assert_eq!(m.clear_unanswered, Some(false));
}

#[tokio::test]
async fn the_same_crm_message_id_twice_sends_once() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let message = text(
        "79161234567",
        "Напоминаем о КП",
        "chain-kp:lead-1042:step-1",
    );
    assert!(matches!(
        wazzup.send(&message).await.unwrap(),
        Sent::Accepted { .. }
    ));
    assert_eq!(wazzup.send(&message).await.unwrap(), Sent::AlreadySent);
    assert_eq!(emu.sent().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_is_retried_into_already_sent() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    // Wazzup takes the message but the gateway answers 504: the retry is told it went.
    emu.lose_next_answers(1, 504);
    let sent = wazzup
        .send(&text("79161234567", "Напоминаем о КП", "k-lost"))
        .await
        .unwrap();
    assert_eq!(sent, Sent::AlreadySent);
    assert_eq!(emu.sent().len(), 1);
    assert_eq!(emu.requests().len(), 2);
}

#[tokio::test]
async fn a_number_without_whatsapp_is_permanent_and_not_retried() {
    let emu = WazzupEmulator::start().await;
    emu.add_invalid_number("79000000000");
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let e = wazzup
        .send(&text("+7 900 000-00-00", "x", "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Recipient { code, .. } if code == "BAD_CONTACT"),
        "{e:?}"
    );
    assert!(e.is_permanent());
    assert_eq!(emu.requests().len(), 1);
}

#[tokio::test]
async fn what_is_no_phone_is_refused_without_a_request() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let e = wazzup
        .send(&text("звонить секретарю", "x", "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Recipient { code, .. } if code == "INVALID_PHONE"),
        "{e:?}"
    );
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_a_credentials_error_at_once() {
    let emu = WazzupEmulator::start().await;
    let wazzup = WazzupClient::new(
        emu.base_url(),
        CHANNEL_WHATSAPP,
        SecretString::from("wrong-key-77f0"),
        store().await,
    )
    .with_retries(fast());
    let e = wazzup
        .send(&text("79161234567", "x", "k"))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    assert!(!e.is_permanent());
    assert!(!e.to_string().contains("wrong-key-77f0"), "{e}");
    assert_eq!(emu.requests().len(), 1);
}

#[tokio::test]
async fn limits_and_failures_are_retried_then_succeed() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    emu.fail_next(2, 429);
    let sent = wazzup
        .send(&text("79161234567", "x", "k-429"))
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Accepted { .. }));
    emu.fail_next(1, 502);
    emu.fail_next(1, 500);
    let sent = wazzup
        .send(&text("79161234567", "y", "k-5xx"))
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Accepted { .. }));
    assert_eq!(emu.sent().len(), 2);
    assert_eq!(emu.requests().len(), 6);
}

#[tokio::test]
async fn a_limit_that_never_lifts_is_unavailable_after_the_retries() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    emu.fail_next(10, 429);
    let e = wazzup
        .send(&text("79161234567", "x", "k"))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Unavailable(_)), "{e:?}");
    assert!(!e.is_permanent());
    assert_eq!(emu.requests().len(), fast().attempts as usize);
}

#[tokio::test]
async fn a_channel_that_cannot_send_is_not_the_clients_fault() {
    let emu = WazzupEmulator::start().await;
    emu.set_channel_state(CHANNEL_WHATSAPP, "notEnoughMoney");
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let e = wazzup
        .send(&text("79161234567", "x", "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Channel { code, .. } if code == "CHANNEL_NO_MONEY"),
        "{e:?}"
    );
    assert!(!e.is_permanent());

    // A channel of another messenger is a setting to fix, too.
    let telegram = client(&emu, CHANNEL_TELEGRAM).await;
    let e = telegram
        .send(&text("79161234567", "x", "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Channel { code, .. } if code == "WRONG_TRANSPORT"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_refused_message_is_permanent() {
    let emu = WazzupEmulator::start().await;
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await;
    let e = wazzup
        .send(&text("79161234567", &"я".repeat(10_001), "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Rejected { code, .. } if code == "MESSAGE_TEXT_TOO_LONG"),
        "{e:?}"
    );
    assert!(e.is_permanent());
}

#[tokio::test]
async fn a_template_opens_the_conversation_on_whatsapp_business() {
    let emu = WazzupEmulator::start().await;
    let waba = client(&emu, CHANNEL_WABA).await;
    let sent = waba
        .send(&Outgoing {
            phone: "8 916 123-45-67".into(),
            content: Content::Template {
                id: TEMPLATE_FOLLOW_UP.into(),
                values: vec!["Андрей".into(), "№ 1042".into()],
            },
            crm_message_id: "chain-kp:lead-1042:step-1".into(),
        })
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Accepted { .. }));
    let m = &emu.sent()[0];
    assert_eq!(m.chat_id, "79161234567");
    assert_eq!(m.template_id.as_deref(), Some(TEMPLATE_FOLLOW_UP));
    assert_eq!(m.template_values, ["Андрей", "№ 1042"]);
    assert_eq!(m.text, None);
    assert_eq!(m.status, "sent");
}

#[tokio::test]
async fn the_shared_rate_limit_keeps_under_wazzups() {
    let emu = WazzupEmulator::start().await;
    // Wazzup's rule scaled down: 5 requests a second, in fixed windows.
    emu.set_rate_limit(5, Duration::from_secs(1));
    let wazzup = client(&emu, CHANNEL_WHATSAPP).await.with_rate(Rate {
        per_second: 4.0,
        burst: 1,
    });
    let started = Instant::now();
    for i in 0..9 {
        wazzup
            .send(&text("79161234567", "x", &format!("k{i}")))
            .await
            .unwrap();
    }
    assert_eq!(emu.too_many_requests(), 0);
    // Nine requests 250 ms apart: two seconds from the first to the last.
    assert!(
        started.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(emu.sent().len(), 9);
}
