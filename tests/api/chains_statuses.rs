//! Wazzup's delivery statuses read back into the ОП-2 chain (shipped `chains.toml`), on
//! the amoCRM, Wazzup and SMTP emulators: the Wazzup emulator posts each message's
//! `statuses` webhook to the robot's hook a moment after the send, as Wazzup does.

use std::time::SystemTime;

use sales_robot::adapters::store::{StepRecord, StepState};
use sales_robot::adapters::wazzup::webhook;
use sales_robot::service::chains::delivery::closed_record;
use sales_robot::service::chains::step::step_key;
use sales_robot::service::chains::{ReadBack, StepRun};

use crate::chains::{PHONE, TEMPLATES, World, local, moscow};
use crate::helpers::{Backend, eventually};
use crate::support::wazzup::CHANNEL_WABA;

/// The client writes in WhatsApp on Tuesday at 13:50, before the lead is qualified: the
/// robot takes the session as open until Wednesday 13:50.
async fn the_client_wrote_on_tuesday(w: &World) {
    let at = moscow("2026-03-03 13:50");
    w.set_clock(at);
    let (_, status) = w
        .wazzup
        .client_wrote_at(CHANNEL_WABA, PHONE, "Жду предложение", SystemTime::from(at))
        .await;
    assert_eq!(status, Some(200));
    w.app.wait_for_journal(1, 20).await;
    w.set_clock(moscow("2026-03-03 14:00"));
}

/// The record of step `index`'s second form, for a closed session.
async fn closed_form_of(w: &World, key: &str, index: usize) -> StepRecord {
    w.store()
        .step_record(&closed_record(&step_key(key, index)))
        .await
        .unwrap()
        .expect("the second form was claimed")
}

/// Waits until step `index`'s second form is settled as `state`: the worker records it a
/// moment after Wazzup has taken the message.
async fn until_closed_form_is(w: &World, key: &str, index: usize, state: StepState) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let record = closed_form_of(w, key, index).await;
        if record.state == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second form stayed {record:?}, not {state:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the emulator has taken `n` messages.
async fn until_sent(w: &World, n: usize) {
    eventually(20, || async { w.wazzup.sent().len() >= n })
        .await
        .unwrap_or_else(|()| {
            panic!(
                "the emulator did not take {n} messages: {:?}",
                w.wazzup.sent()
            )
        });
}

/// The robot believes the session open, Wazzup's side has it closed by Wednesday: the
/// free text of «Аудио» comes back `24_HOURS_EXCEEDED`, and the step's approved template
/// goes instead, once, however often the status comes.
async fn free_text_outside_the_session_is_sent_again_as_its_approved_template(backend: Backend) {
    let w = World::new(backend).await;
    w.wazzup.post_statuses();
    the_client_wrote_on_tuesday(&w).await;
    // On Tuesday the session is open on Wazzup's side too.
    w.wazzup.open_session(CHANNEL_WABA, PHONE);
    let key = w.qualify().await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Tue 03.03 14:30");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let first = &w.wazzup.sent()[0];
    assert!(first.text.is_some() && first.status == "sent", "{first:?}");
    // Its status, `delivered`, changes nothing.
    w.app.wait_for_journal(3, 20).await;

    // By Wednesday WhatsApp's session is closed, whatever the robot believes.
    w.wazzup.close_session(CHANNEL_WABA, PHONE);
    w.run_next(&key).await.unwrap(); // the call task
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Wed 04.03 13:00");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let free = w.wazzup.sent()[1].clone();
    assert!(
        free.text.is_some(),
        "free text, the session being open: {free:?}"
    );
    assert_eq!(free.status, "error");

    until_sent(&w, 3).await;
    let sent = w.wazzup.sent();
    let template = &sent[2];
    assert_eq!(template.template_id.as_deref(), Some(TEMPLATES[0].0));
    assert_eq!(template.template_values, ["Андрей", "Иван Петров"]);
    assert_ne!(template.crm_message_id, free.crm_message_id);
    until_closed_form_is(&w, &key, 2, StepState::Done).await;

    // Wazzup posts the same status again: intake takes it as a duplicate; and the same
    // event handled again (a replay past the dedup window) finds the step acted on.
    assert_eq!(
        w.wazzup.post_status(&free.message_id, "error").await,
        Some(200)
    );
    let body = serde_json::to_vec(&w.wazzup.posted().last().unwrap().body).unwrap();
    let event = webhook::parse(&body, &[]).unwrap().events.remove(0);
    for _ in 0..2 {
        let read = w.engine.on_status(&event, w.store()).await.unwrap();
        assert_eq!(read, ReadBack::Already);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(w.wazzup.sent().len(), 3, "the template went once");
    // The chain went on: «Игнор» is next, on Thursday.
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.enrolment.next, 3);
    assert_eq!(w.counts(), (3, 0, 1));
    w.app.stop().await;
}

/// The first step has no approved template and `otherwise = "email"`: its free text comes
/// back `24_HOURS_EXCEEDED` and the letter goes. From then on the phone's session is taken
/// as closed: «Аудио» on Wednesday, within the 24 hours of the client's message, goes
/// straight away as its template.
async fn free_text_without_a_template_becomes_the_letter_and_later_steps_use_templates(
    backend: Backend,
) {
    let w = World::new(backend).await;
    w.wazzup.post_statuses();
    // Wazzup has the client's message of 13:50 too, but its session runs on the real clock:
    // closed.
    the_client_wrote_on_tuesday(&w).await;
    let key = w.qualify().await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Tue 03.03 14:30");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let free = w.wazzup.sent()[0].clone();
    assert!(free.text.is_some(), "{free:?}");
    eventually(20, || async { !w.smtp.received().is_empty() })
        .await
        .expect("the letter goes instead of the free text");
    let letters = w.smtp.received();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].rcpt_to, ["kovalev@example.ru"]);
    assert_eq!(
        letters[0].subject().as_deref(),
        Some("Шаблон после квалификации")
    );

    w.run_next(&key).await.unwrap(); // the call task
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Wed 04.03 13:00");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let sent = w.wazzup.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].template_id.as_deref(), Some(TEMPLATES[0].0));
    assert_eq!(sent[1].status, "sent");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(w.counts(), (2, 1, 1), "one letter, nothing sent twice");
    w.app.stop().await;
}

/// A number Wazzup takes and then reports without WhatsApp (`BAD_CONTACT` in the status):
/// the step is failed with the reason and the manager gets the task; the chain goes on.
/// Statuses of messages the robot did not send change nothing.
async fn a_status_not_on_whatsapp_fails_the_step_and_tasks_the_manager(backend: Backend) {
    let w = World::new(backend).await;
    w.wazzup.post_statuses();
    w.wazzup.add_number_without_whatsapp(PHONE);
    let key = w.qualify().await;
    for _ in 0..2 {
        w.run_next(&key).await.unwrap();
    }
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Wed 04.03 13:00");
    // Taken with 201: done, until the status says otherwise.
    assert_eq!(run, StepRun::Settled(StepState::Done));
    eventually(20, || async { w.tasks().len() == 2 })
        .await
        .expect("the manager gets a task about the failed step");
    let tasks = w.tasks();
    let text = tasks[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Робот не выполнил шаг «Шаблон «Аудио Михаила Николаевича»»"),
        "{text}"
    );
    assert!(
        text.contains("у номера нет WhatsApp (BAD_CONTACT)"),
        "{text}"
    );
    let record = w
        .store()
        .step_record(&step_key(&key, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, StepState::Failed);
    assert!(
        record.detail.starts_with("у номера нет WhatsApp"),
        "{record:?}"
    );
    let enrolment = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(enrolment.enrolment.next, 3, "the chain goes on");

    // The fixtures' statuses, a BAD_CONTACT among them, are of messages the robot did not
    // send (a manager's): nothing happens.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/wazzup");
    for file in ["statuses.json", "status_bad_contact.json"] {
        let body = std::fs::read(root.join(file)).unwrap();
        for event in webhook::parse(&body, &[]).unwrap().events {
            let read = w.engine.on_status(&event, w.store()).await.unwrap();
            assert!(
                matches!(read, ReadBack::Nothing | ReadBack::NotOurs),
                "{file}: {read:?}"
            );
        }
    }
    assert_eq!(w.counts(), (1, 1, 2), "nothing more");
    w.app.stop().await;
}

/// A status of `message_id` as Wazzup posts it, `error` with `code`, as the robot's event.
fn error_status(message_id: &str, code: &str) -> sales_robot::domain::event::Event {
    let body = serde_json::json!({ "statuses": [{
        "messageId": message_id,
        "timestamp": "2026-03-04T10:00:01.000Z",
        "status": "error",
        "error": { "error": code, "description": "as Wazzup says it" },
    }]});
    webhook::parse(body.to_string().as_bytes(), &[])
        .unwrap()
        .events
        .remove(0)
}

/// Runs ОП-2's first two steps (Tuesday's message, Wednesday's call task), then has Wazzup's
/// status `code` for «Аудио», which will go as `id`, come before «Аудио» is sent: it is
/// kept, not acted on.
async fn status_before_audio(w: &World, key: &str, id: &str, code: &str) {
    for _ in 0..2 {
        w.run_next(key).await.unwrap();
    }
    w.wazzup.next_message_id(id);
    let early = w
        .engine
        .on_status(&error_status(id, code), w.store())
        .await
        .unwrap();
    assert_eq!(early, ReadBack::NotOurs, "not known yet");
}

/// The status comes before the worker that sent the message has recorded Wazzup's id of
/// it (a slow 201): it is kept, and the sender acts on it as soon as it records the send.
async fn a_status_that_comes_before_the_send_is_recorded_still_fails_the_step(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let id = "5b0e7c1a-2f4d-4e8b-9a63-7c1d2e3f4a50";
    status_before_audio(&w, &key, id, "BAD_CONTACT").await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Wed 04.03 13:00");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    assert_eq!(w.wazzup.sent()[0].message_id, id);
    // Acted on within the run itself.
    let record = w
        .store()
        .step_record(&step_key(&key, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, StepState::Failed, "{record:?}");
    let tasks = w.tasks();
    assert_eq!(tasks.len(), 2, "the call, and the task about the failure");
    assert!(
        tasks[1]["text"]
            .as_str()
            .unwrap()
            .contains("у номера нет WhatsApp"),
        "{tasks:?}"
    );
    w.app.stop().await;
}

/// A `24_HOURS_EXCEEDED` comes before the sender recorded the free text, and Wazzup fails
/// when the sender then sends the template in its place: the status goes back on the
/// events' queue, and the robot's worker sends the template once Wazzup answers again.
async fn an_early_status_that_cannot_be_acted_on_at_once_is_tried_again(backend: Backend) {
    let w = World::new(backend).await;
    the_client_wrote_on_tuesday(&w).await;
    let key = w.qualify().await;
    let id = "7c2e9d4b-1a3f-4b6c-8d5e-2f1a0b9c8d7e";
    status_before_audio(&w, &key, id, "24_HOURS_EXCEEDED").await;
    // The free text goes; every try of the template after it fails.
    w.wazzup.fail_after(1, 4, 500);
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(local(at), "Wed 04.03 13:00");
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let sent = w.wazzup.sent();
    assert_eq!(sent.len(), 2, "only the free texts went: {sent:?}");
    assert_eq!(sent[1].message_id, id);
    let released = closed_form_of(&w, &key, 2).await;
    assert_eq!(
        released.state,
        StepState::Released,
        "the template went nowhere: {released:?}"
    );
    // Wazzup answers again; the queued status is handled by the robot's worker.
    w.wazzup.recover();
    until_sent(&w, 3).await;
    let template = &w.wazzup.sent()[2];
    assert_eq!(template.template_id.as_deref(), Some(TEMPLATES[0].0));
    until_closed_form_is(&w, &key, 2, StepState::Done).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(w.wazzup.sent().len(), 3, "the template went once");
    w.app.stop().await;
}

/// Two workers handle the same `24_HOURS_EXCEEDED` at once (a retry and a replay): the
/// letter that stands in for the free text goes once.
async fn the_same_status_handled_twice_at_once_sends_one_letter(backend: Backend) {
    let w = World::new(backend).await;
    the_client_wrote_on_tuesday(&w).await;
    let key = w.qualify().await;
    let (_, run) = w.run_next(&key).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let free = w.wazzup.sent()[0].clone();
    assert_eq!(free.status, "error", "{free:?}");
    let event = error_status(&free.message_id, "24_HOURS_EXCEEDED");
    let (a, b) = tokio::join!(
        w.engine.on_status(&event, w.store()),
        w.engine.on_status(&event, w.store()),
    );
    let acted = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(ReadBack::Again(StepState::Done))))
        .count();
    assert_eq!(acted, 1, "{a:?} {b:?}");
    let again = w.engine.on_status(&event, w.store()).await.unwrap();
    assert_eq!(again, ReadBack::Already);
    eventually(10, || async { !w.smtp.received().is_empty() })
        .await
        .expect("the letter");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(w.smtp.received().len(), 1);
    assert_eq!(w.wazzup.sent().len(), 1, "no second WhatsApp message");
    w.app.stop().await;
}

/// The client writes after the free text went and before its `24_HOURS_EXCEEDED` is read:
/// the chain has stopped, and nothing stands in for the free text.
async fn a_status_for_a_stopped_chain_sends_nothing(backend: Backend) {
    let w = World::new(backend).await;
    the_client_wrote_on_tuesday(&w).await;
    let key = w.qualify().await;
    w.run_next(&key).await.unwrap();
    let free = w.wazzup.sent()[0].clone();
    assert_eq!(free.status, "error", "{free:?}");
    let (_, status) = w
        .wazzup
        .client_writes(CHANNEL_WABA, PHONE, "Пришлите на почту")
        .await;
    assert_eq!(status, Some(200));
    eventually(20, || async {
        !w.store()
            .enrolment(&key)
            .await
            .unwrap()
            .unwrap()
            .is_running()
    })
    .await
    .expect("the reply stops the chain");
    let read = w
        .engine
        .on_status(
            &error_status(&free.message_id, "24_HOURS_EXCEEDED"),
            w.store(),
        )
        .await
        .unwrap();
    assert_eq!(read, ReadBack::Already);
    assert_eq!(w.counts(), (1, 0, 0), "no letter, no template");
    w.app.stop().await;
}

crate::on_both_backends!(free_text_outside_the_session_is_sent_again_as_its_approved_template);
crate::on_both_backends!(
    free_text_without_a_template_becomes_the_letter_and_later_steps_use_templates
);
crate::on_both_backends!(a_status_not_on_whatsapp_fails_the_step_and_tasks_the_manager);
crate::on_both_backends!(a_status_that_comes_before_the_send_is_recorded_still_fails_the_step);
crate::on_both_backends!(the_same_status_handled_twice_at_once_sends_one_letter);
crate::on_both_backends!(an_early_status_that_cannot_be_acted_on_at_once_is_tried_again);
crate::on_both_backends!(a_status_for_a_stopped_chain_sends_nothing);
