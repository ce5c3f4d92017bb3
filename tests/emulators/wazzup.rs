//! The Wazzup emulator, driven with reqwest as the robot's client will drive the real API,
//! and its webhooks read by the robot's own parser.

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use sales_robot::adapters::wazzup::webhook;
use sales_robot::domain::event::EventKind;
use serde_json::{Value, json};

use crate::support::wazzup::*;

async fn send(emu: &WazzupEmulator, key: Option<&str>, body: Value) -> Response {
    let mut request = Client::new()
        .post(format!("{}/v3/message", emu.base_url()))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("POST /v3/message")
}

fn text_to(chat_id: &str, text: &str, crm_message_id: &str) -> Value {
    json!({
        "channelId": CHANNEL_WHATSAPP,
        "chatType": "whatsapp",
        "chatId": chat_id,
        "text": text,
        "crmMessageId": crm_message_id,
    })
}

/// The error code of an error answer, after checking the body's documented shape.
async fn error_of(response: Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["status"], json!(status.as_u16()), "{body}");
    assert_eq!(body["requestId"].as_str().map(str::len), Some(32), "{body}");
    assert!(body["description"].is_string(), "{body}");
    let code = body["error"].as_str().expect("an error code").to_owned();
    (status, code, body)
}

#[tokio::test]
async fn a_message_is_taken_with_201_and_its_ids() {
    let emu = WazzupEmulator::start().await;
    let response = send(
        &emu,
        Some(API_KEY),
        text_to(
            "79161234567",
            "Добрый день! Напоминаем о КП.",
            "chain-1:lead-7:step-1",
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["chatId"], "79161234567");
    let message_id = body["messageId"].as_str().unwrap();
    let sent = emu.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, message_id);
    assert_eq!(
        sent[0].text.as_deref(),
        Some("Добрый день! Напоминаем о КП.")
    );
    assert_eq!(
        sent[0].crm_message_id.as_deref(),
        Some("chain-1:lead-7:step-1")
    );
    assert_eq!(sent[0].status, "sent");
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_and_nothing_is_sent() {
    let emu = WazzupEmulator::start().await;
    for key in [None, Some("not-the-key")] {
        let response = send(&emu, key, text_to("79161234567", "x", "k")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(emu.sent().is_empty());
}

#[tokio::test]
async fn bad_shapes_are_400_with_the_fields_named() {
    let emu = WazzupEmulator::start().await;
    let cases = [
        (
            json!({"channelId": "not-a-uuid", "chatType": "whatsapp", "chatId": "79161234567", "text": "x"}),
            vec!["channelId"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "sms", "chatId": "79161234567", "text": "x"}),
            vec!["chatType"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "chatId": "+7 916 123-45-67", "text": "x"}),
            vec!["chatId"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "text": "x"}),
            vec!["chatId"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "chatId": 79161234567u64, "text": "x"}),
            vec!["chatId"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "chatId": "79161234567", "text": "x", "chatID": "1"}),
            vec!["chatID"],
        ),
        (
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "chatId": "79161234567", "text": "x", "clearUnanswered": "no"}),
            vec!["clearUnanswered"],
        ),
    ];
    for (body, fields) in cases {
        let (status, code, error) = error_of(send(&emu, Some(API_KEY), body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code, "INVALID_MESSAGE_DATA", "{body}");
        assert_eq!(error["data"]["fields"], json!(fields), "{body}");
    }
    let (_, code, _) = error_of(send(&emu, Some(API_KEY), json!([1, 2])).await).await;
    assert_eq!(code, "VALIDATION_ERROR");
    assert!(emu.sent().is_empty());
}

#[tokio::test]
async fn content_rules_give_their_codes() {
    let emu = WazzupEmulator::start().await;
    let base = |extra: Value| {
        let mut body =
            json!({"channelId": CHANNEL_WHATSAPP, "chatType": "whatsapp", "chatId": "79161234567"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (
            base(json!({"text": "x", "contentUri": "https://example.ru/a.pdf"})),
            "MESSAGE_ONLY_TEXT_OR_CONTENT",
        ),
        (base(json!({})), "MESSAGE_NOTHING_TO_SEND"),
        (
            base(json!({"text": "   "})),
            "MESSAGES_TEXT_CAN_NOT_BE_BLANK",
        ),
        (
            base(json!({"text": "я".repeat(10_001)})),
            "MESSAGE_TEXT_TOO_LONG",
        ),
        (
            json!({"channelId": "00000000-0000-4000-8000-000000000000", "chatType": "whatsapp", "chatId": "79161234567", "text": "x"}),
            "CHANNEL_NOT_FOUND",
        ),
    ];
    for (body, expected) in cases {
        let (status, code, _) = error_of(send(&emu, Some(API_KEY), body).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, expected));
    }
    let (_, code, error) = error_of(
        send(
            &emu,
            Some(API_KEY),
            json!({"channelId": CHANNEL_TELEGRAM, "chatType": "whatsapp", "chatId": "79161234567", "text": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(code, "WRONG_TRANSPORT");
    assert_eq!(error["data"]["transport"], "tgapi");
    assert_eq!(error["data"]["chatType"], "whatsapp");

    for (state, expected) in [
        ("disabled", "CHANNEL_BLOCKED"),
        ("notEnoughMoney", "CHANNEL_NO_MONEY"),
        ("phoneUnavailable", "MESSAGE_CHANNEL_UNAVAILABLE"),
    ] {
        emu.set_channel_state(CHANNEL_WHATSAPP, state);
        let (_, code, _) =
            error_of(send(&emu, Some(API_KEY), text_to("79161234567", "x", "k")).await).await;
        assert_eq!(code, expected);
    }
    assert!(emu.sent().is_empty());
}

#[tokio::test]
async fn a_repeated_crm_message_id_is_refused_for_60_seconds() {
    let emu = WazzupEmulator::start().await;
    let body = text_to("79161234567", "Первое напоминание", "chain-1:lead-7:step-1");
    assert_eq!(
        send(&emu, Some(API_KEY), body.clone()).await.status(),
        StatusCode::CREATED
    );
    let (status, code, error) = error_of(send(&emu, Some(API_KEY), body.clone()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code, "REPEATED_CRM_MESSAGE_ID");
    assert_eq!(error["data"]["crmMessageId"], "chain-1:lead-7:step-1");
    assert_eq!(emu.sent().len(), 1);
    // The guard covers a minute only, as Wazzup's does: after it the same id sends again.
    emu.advance_clock(Duration::from_secs(61));
    assert_eq!(
        send(&emu, Some(API_KEY), body).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(emu.sent().len(), 2);
}

#[tokio::test]
async fn a_number_without_whatsapp_is_bad_contact() {
    let emu = WazzupEmulator::start().await;
    emu.add_invalid_number("79000000000");
    let (status, code, _) =
        error_of(send(&emu, Some(API_KEY), text_to("79000000000", "x", "k")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "BAD_CONTACT")
    );
    assert!(emu.sent().is_empty());
}

#[tokio::test]
async fn over_the_limit_of_a_window_is_429_until_the_next_window() {
    let emu = WazzupEmulator::start().await;
    emu.set_rate_limit(3, Duration::from_secs(5));
    let mut statuses = Vec::new();
    for i in 0..7 {
        let response = send(
            &emu,
            Some(API_KEY),
            text_to("79161234567", "x", &format!("k{i}")),
        )
        .await;
        statuses.push(response.status().as_u16());
    }
    // A window may begin between two of the requests, but 7 cannot fit in two windows of 3.
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 1,
        "{statuses:?}"
    );
    assert_eq!(
        emu.too_many_requests(),
        statuses.iter().filter(|s| **s == 429).count()
    );
    emu.advance_clock(Duration::from_secs(5));
    let response = send(&emu, Some(API_KEY), text_to("79161234567", "x", "later")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn fail_next_answers_before_anything_else() {
    let emu = WazzupEmulator::start().await;
    emu.fail_next(2, 503);
    for _ in 0..2 {
        let response = send(&emu, None, text_to("79161234567", "x", "k")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let response = send(&emu, Some(API_KEY), text_to("79161234567", "x", "k")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn channels_and_templates_are_listed() {
    let emu = WazzupEmulator::start().await;
    let get = |path: &str| {
        Client::new()
            .get(format!("{}{path}", emu.base_url()))
            .bearer_auth(API_KEY)
            .send()
    };
    let channels: Value = get("/v3/channels").await.unwrap().json().await.unwrap();
    let whatsapp = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelId"] == CHANNEL_WHATSAPP)
        .unwrap();
    assert_eq!(whatsapp["transport"], "whatsapp");
    assert_eq!(whatsapp["state"], "active");
    let templates: Value = get("/v3/templates/whatsapp")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(templates[0]["templateGuid"], TEMPLATE_FOLLOW_UP);
}

#[tokio::test]
async fn waba_free_text_outside_the_window_fails_later_and_templates_go() {
    let emu = WazzupEmulator::start().await;
    let sink = WebhookSink::start().await;
    emu.set_webhooks(sink.url(), None);
    let text = json!({
        "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": "79161234567",
        "text": "Добрый день!", "crmMessageId": "a",
    });
    // Taken, then failed: the API answers 201 and the status webhook says why.
    let response = send(&emu, Some(API_KEY), text).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(emu.post_status(&id, "error").await, Some(200));
    let parsed = webhook::parse(&sink.deliveries()[0].body, &[]).unwrap();
    assert_eq!(
        parsed.events[0].kind,
        EventKind::MessageStatus {
            status: "error".into(),
            error: Some("24_HOURS_EXCEEDED".into()),
            description: Some("The 24-hour WABA dialogue is closed".into()),
        }
    );

    let template = json!({
        "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": "79161234567",
        "templateId": TEMPLATE_FOLLOW_UP, "templateValues": ["Андрей", "№ 1042"], "crmMessageId": "b",
    });
    assert_eq!(
        send(&emu, Some(API_KEY), template).await.status(),
        StatusCode::CREATED
    );
    let wrong_count = json!({
        "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": "79161234567",
        "templateId": TEMPLATE_FOLLOW_UP, "templateValues": ["Андрей"], "crmMessageId": "c",
    });
    let (_, code, error) = error_of(send(&emu, Some(API_KEY), wrong_count).await).await;
    assert_eq!(code, "INVALID_MESSAGE_DATA");
    assert_eq!(error["data"]["fields"], json!(["templateValues"]));

    // Once the client writes, free text goes for 24 hours.
    emu.client_writes(CHANNEL_WABA, "79161234567", "Да, удобно")
        .await;
    let text = json!({
        "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": "79161234567",
        "text": "Отлично, звоню!", "crmMessageId": "d",
    });
    assert_eq!(
        send(&emu, Some(API_KEY), text).await.status(),
        StatusCode::CREATED
    );
    let sent = emu.sent();
    let statuses: Vec<&str> = sent.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses, ["error", "sent", "sent"]);
    assert_eq!(sent[1].template_values, ["Андрей", "№ 1042"]);
}

#[tokio::test]
async fn its_webhooks_read_as_a_reply_an_echo_and_statuses() {
    let emu = WazzupEmulator::start().await;
    let sink = WebhookSink::start().await;
    emu.set_webhooks(sink.url(), Some("crm-key-1"));

    let response = send(
        &emu,
        Some(API_KEY),
        text_to("79161234567", "Напоминаем о КП", "s1"),
    )
    .await;
    let id = response.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(emu.post_echo(&id).await, Some(200));
    assert_eq!(emu.post_status(&id, "delivered").await, Some(200));
    let (reply_id, status) = emu
        .client_writes(CHANNEL_WHATSAPP, "79161234567", "Добрый день! Получил КП.")
        .await;
    assert_eq!(status, Some(200));

    let deliveries = sink.deliveries();
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        assert_eq!(d.authorization.as_deref(), Some("Bearer crm-key-1"));
        assert!(
            d.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json"))
        );
    }
    let echo = webhook::parse(&deliveries[0].body, &[]).unwrap();
    assert!(echo.events.is_empty(), "an echo is no reply");
    assert_eq!(echo.ignored, ["messages[isEcho]"]);
    let body: Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(body["messages"][0]["isEcho"], true);
    assert_eq!(body["messages"][0]["messageId"], json!(id));

    let status = webhook::parse(&deliveries[1].body, &[]).unwrap();
    assert_eq!(status.events[0].entity_id, id);
    assert_eq!(
        status.events[0].kind,
        EventKind::MessageStatus {
            status: "delivered".into(),
            error: None,
            description: None,
        }
    );

    let reply = webhook::parse(&deliveries[2].body, &[CHANNEL_WHATSAPP.to_owned()]).unwrap();
    assert_eq!(reply.events.len(), 1);
    assert_eq!(reply.events[0].entity_id, "79161234567");
    match &reply.events[0].kind {
        EventKind::ClientReplied {
            message_id, phone, ..
        } => {
            assert_eq!(message_id, &reply_id);
            assert_eq!(phone.as_deref(), Some("79161234567"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn webhooks_are_set_only_when_the_test_post_gets_200() {
    let emu = WazzupEmulator::start().await;
    let sink = WebhookSink::start().await;
    let patch = |uri: &str| {
        Client::new()
            .patch(format!("{}/v3/webhooks", emu.base_url()))
            .bearer_auth(API_KEY)
            .json(&json!({"webhooksUri": uri, "subscriptions": {"messagesAndStatuses": true}}))
            .send()
    };
    sink.answer(500);
    let (status, code, _) = error_of(patch(sink.url()).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "testPostNotPassed")
    );
    sink.answer(200);
    assert_eq!(patch(sink.url()).await.unwrap().status(), StatusCode::OK);
    let tests: Vec<Value> = sink
        .deliveries()
        .iter()
        .map(|d| serde_json::from_slice(&d.body).unwrap())
        .collect();
    assert_eq!(tests, [json!({"test": true}), json!({"test": true})]);
    let check = webhook::parse(&sink.deliveries()[1].body, &[]).unwrap();
    assert!(check.is_check);

    // Now the emulator posts there.
    emu.client_writes(CHANNEL_WHATSAPP, "79161234567", "Здравствуйте")
        .await;
    assert_eq!(sink.deliveries().len(), 3);
    let too_long = format!("https://robot.example.ru/{}", "a".repeat(200));
    let (_, code, _) = error_of(patch(&too_long).await.unwrap()).await;
    assert_eq!(code, "VALIDATION_ERROR");
}

/// Waits for the sink's `n`th delivery and reads it as JSON.
async fn delivery(sink: &WebhookSink, n: usize) -> Value {
    for _ in 0..200 {
        if let Some(d) = sink.deliveries().get(n) {
            return serde_json::from_slice(&d.body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no delivery {n}: {}", sink.deliveries().len());
}

#[tokio::test]
async fn statuses_come_on_their_own_in_the_documented_shape() {
    let emu = WazzupEmulator::start().await;
    let sink = WebhookSink::start().await;
    emu.set_webhooks(sink.url(), None);
    emu.post_statuses();
    emu.add_number_without_whatsapp("79990001122");
    let to = |chat: &str, crm: &str| {
        json!({
            "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": chat,
            "templateId": TEMPLATE_FOLLOW_UP, "templateValues": ["Андрей", "№ 1042"],
            "crmMessageId": crm,
        })
    };
    // Taken, then failed: no WhatsApp on the number.
    let response = send(&emu, Some(API_KEY), to("79990001122", "s1")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["messageId"].clone();
    let body = delivery(&sink, 0).await;
    let status = &body["statuses"][0];
    assert_eq!(status["messageId"], id);
    assert_eq!(status["status"], "error");
    assert_eq!(status["error"]["error"], "BAD_CONTACT");
    assert!(status["error"]["description"].is_string());
    assert!(status["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(status.get("crmMessageId").is_none(), "{status}");

    // Free text within a session the emulator was told is open, then after it closed.
    let text = |crm: &str| {
        json!({
            "channelId": CHANNEL_WABA, "chatType": "whatsapp", "chatId": "79161234567",
            "text": "Добрый день!", "crmMessageId": crm,
        })
    };
    emu.open_session(CHANNEL_WABA, "79161234567");
    assert_eq!(
        send(&emu, Some(API_KEY), text("s2")).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        delivery(&sink, 1).await["statuses"][0]["status"],
        "delivered"
    );
    emu.close_session(CHANNEL_WABA, "79161234567");
    assert_eq!(
        send(&emu, Some(API_KEY), text("s3")).await.status(),
        StatusCode::CREATED
    );
    let closed = delivery(&sink, 2).await;
    assert_eq!(closed["statuses"][0]["error"]["error"], "24_HOURS_EXCEEDED");
    let parsed = webhook::parse(&serde_json::to_vec(&closed).unwrap(), &[]).unwrap();
    assert_eq!(
        parsed.events[0].kind,
        EventKind::MessageStatus {
            status: "error".into(),
            error: Some("24_HOURS_EXCEEDED".into()),
            description: Some("The 24-hour WABA dialogue is closed".into()),
        }
    );
}
