//! Wazzup's delivery statuses read back into the steps that sent the messages.
//!
//! Wazzup answers a send with 201 and its message id; the fate of the message comes later
//! as a `statuses` webhook, which carries that id and no `crmMessageId`. So each WhatsApp
//! message a step sends is kept under Wazzup's id ([`state::SentStep`]), and a status:
//! - `sent`, `delivered`, `read`, `edited`: changes nothing; an unknown status is logged;
//! - `error` with `24_HOURS_EXCEEDED` for free text: the phone's session is taken as closed
//!   from now on, and the step is decided again by the domain (the client's last message now
//!   counts for nothing) and carried out in that form (its approved template, or what
//!   `otherwise` says), once, under its own record `{step}#closed`: its own `crmMessageId`
//!   and `Message-ID`, the same on every try;
//! - any other `error`, or a closed session for what was already the closed form: the step
//!   is marked failed with the reason and the manager told, as when a send fails at once;
//! - for a message the robot did not send (a manager's): nothing.
//!
//! The same status twice acts once: the failure is a compare-and-set of the step's record
//! from `done`, the second form a claim of its own record. A status may come before the
//! worker that sent the message has recorded it: the status is kept first and the record
//! looked for after; the sender records first and looks for a kept status after, so one of
//! the two always sees the other, and the claims let only one act. A kept status the sender
//! cannot act on at once (the CRM or Wazzup down) goes on the events' queue, to be tried
//! again as a status from the webhook is.

use chrono::{DateTime, Utc};

use super::lead::{Names, Seen};
use super::step::{Acted, WAZZUP_GUARD, via_of};
use super::{ChainEngine, crm_error, state};
use crate::adapters::store::{QueueItem, StepRecord, StepState, Store, StoreError};
use crate::domain::chains::{Chain, Channel, Delivery, Step, read_status};
use crate::domain::event::{Event, EventKind, Source, dedup_key};
use crate::domain::lead::Lead;
use crate::service::jobs::{HANDLE_EVENT, HandleEvent, HandlerError};

/// What a delivery status did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBack {
    /// A status that changes nothing (on its way, delivered, read), or one not known.
    Nothing,
    /// A status of a message no step sent (a manager's), or not recorded yet: kept for
    /// when it is.
    NotOurs,
    /// The step was carried out again for a closed session, and settled so.
    Again(StepState),
    /// The step was marked failed and the manager told.
    Failed,
    /// This status was acted on before, or the step is no longer there to act on.
    Already,
}

/// The record of a step's second form, for a closed session.
pub fn closed_record(step_record: &str) -> String {
    format!("{step_record}#closed")
}

/// A step as it stands now: its chain, the step, the lead and what was read of it.
struct StepNow<'a> {
    chain: &'a Chain,
    step: &'a Step,
    lead: Lead,
    names: std::sync::Arc<Names>,
    seen: Seen,
}

impl ChainEngine {
    /// A `message_status` event from Wazzup (see the module's comment).
    pub async fn on_status(&self, event: &Event, store: &Store) -> Result<ReadBack, HandlerError> {
        let EventKind::MessageStatus {
            status,
            error,
            description,
        } = &event.kind
        else {
            return Ok(ReadBack::Nothing);
        };
        self.read_back(
            store,
            &event.entity_id,
            &state::EarlyStatus {
                status: status.clone(),
                error: error.clone(),
                description: description.clone(),
            },
        )
        .await
    }

    async fn read_back(
        &self,
        store: &Store,
        message_id: &str,
        status: &state::EarlyStatus,
    ) -> Result<ReadBack, HandlerError> {
        let delivery = read_status(
            &status.status,
            status.error.as_deref(),
            status.description.as_deref(),
        );
        match delivery {
            Delivery::Progress => {
                tracing::debug!(message = %message_id, status = %status.status, "a WhatsApp message is on its way");
                return Ok(ReadBack::Nothing);
            }
            Delivery::Unknown => {
                tracing::info!(message = %message_id, status = %status.status, "a Wazzup status this robot does not know; nothing done");
                return Ok(ReadBack::Nothing);
            }
            Delivery::SessionClosed | Delivery::Undeliverable { .. } => {}
        }
        // Kept before the look, so that a sender recording the message right now finds it.
        state::keep_early(store, message_id, status).await?;
        let Some(sent) = state::sent_step(store, message_id).await? else {
            tracing::debug!(message = %message_id, "a status of a message no chain step sent");
            return Ok(ReadBack::NotOurs);
        };
        self.act_on(store, &sent, delivery).await
    }

    /// Records that a step's WhatsApp message went as Wazzup's `message_id`, then acts on
    /// an error status that came before the record. When acting fails for a reason that
    /// can pass (the CRM or the channel down), the status is put on the events' queue, as
    /// if Wazzup had posted it again, so that it is tried again with the events' retries
    /// rather than forgotten; acting on it is idempotent.
    pub(super) async fn sent_through_wazzup(
        &self,
        store: &Store,
        message_id: &str,
        sent: &state::SentStep,
    ) -> Result<(), HandlerError> {
        if let Some(early) = record_then_look(store, message_id, sent).await? {
            let delivery = read_status(
                &early.status,
                early.error.as_deref(),
                early.description.as_deref(),
            );
            if let Err(e) = self.act_on(store, sent, delivery).await {
                tracing::warn!(message = %message_id, error = %e, "an early status could not be acted on now; queued to be tried again");
                queue_again(store, message_id, &early).await?;
            }
        }
        Ok(())
    }

    async fn act_on(
        &self,
        store: &Store,
        sent: &state::SentStep,
        delivery: Delivery,
    ) -> Result<ReadBack, HandlerError> {
        match delivery {
            Delivery::SessionClosed if !sent.closed_form => self.again_closed(store, sent).await,
            Delivery::SessionClosed => {
                let why = "сессия WhatsApp закрыта (24_HOURS_EXCEEDED), хотя сообщение было \
                           одобренным шаблоном";
                self.fail_sent(store, sent, why).await
            }
            Delivery::Undeliverable { why, .. } => self.fail_sent(store, sent, &why).await,
            Delivery::Progress | Delivery::Unknown => Ok(ReadBack::Nothing),
        }
    }

    /// The step, its chain and its lead as they are now; `None` when the enrolment, the
    /// chain, the step or the lead is gone.
    async fn step_now(
        &self,
        store: &Store,
        sent: &state::SentStep,
    ) -> Result<Option<StepNow<'_>>, HandlerError> {
        let Some(record) = store.enrolment(&sent.enrolment).await? else {
            return Ok(None);
        };
        let Some(chain) = self.chains.chain(&record.enrolment.chain) else {
            return Ok(None);
        };
        let Some(step) = chain.steps.get(sent.index) else {
            return Ok(None);
        };
        let Some(lead) = self
            .crm
            .lead(&record.enrolment.lead_id)
            .await
            .map_err(crm_error)?
        else {
            return Ok(None);
        };
        let (names, seen) = self.read_seen(&lead).await.map_err(crm_error)?;
        Ok(Some(StepNow {
            chain,
            step,
            lead,
            names,
            seen,
        }))
    }

    /// Marks a sent step failed with `why` and tells the manager, once.
    async fn fail_sent(
        &self,
        store: &Store,
        sent: &state::SentStep,
        why: &str,
    ) -> Result<ReadBack, HandlerError> {
        let Some(before) = store.step_record(&sent.record).await? else {
            return Ok(ReadBack::Already);
        };
        if before.state != StepState::Done {
            return Ok(ReadBack::Already);
        }
        let failed = StepRecord {
            state: StepState::Failed,
            detail: format!("{why}; отправлено было: {}", before.detail),
            ..before
        };
        if !store
            .settle_step(&sent.record, StepState::Done, &failed)
            .await?
        {
            return Ok(ReadBack::Already);
        }
        let now = self.now();
        match self.step_now(store, sent).await? {
            Some(s) => {
                tracing::error!(step = %sent.record, title = %s.step.title, lead = %s.lead.id, why = %why, "a chain's WhatsApp message was not delivered; the manager gets a task");
                self.tell_manager(s.chain, s.step, &s.lead, &s.seen, why, now)
                    .await;
            }
            None => {
                tracing::error!(step = %sent.record, why = %why, "a chain's WhatsApp message was not delivered; its lead or chain is gone")
            }
        }
        Ok(ReadBack::Failed)
    }

    /// Carries a step out again in the form its rules give a closed session.
    async fn again_closed(
        &self,
        store: &Store,
        sent: &state::SentStep,
    ) -> Result<ReadBack, HandlerError> {
        let now = self.now();
        state::record_closed(store, &sent.phone, now).await?;
        let Some(enrolment) = store.enrolment(&sent.enrolment).await? else {
            return Ok(ReadBack::Already);
        };
        if let Some(stopped) = &enrolment.stopped {
            // A reply stopped it, most likely: the manager has the conversation now.
            tracing::info!(step = %sent.record, why = %stopped.reason, "free text outside the session, but the chain is stopped: not carried out again");
            return Ok(ReadBack::Already);
        }
        let Some(s) = self.step_now(store, sent).await? else {
            return Ok(ReadBack::Already);
        };
        // As before any step: a lead won, moved on or stopped by the manager meanwhile.
        if let Some(reason) = self
            .chains
            .should_stop(&enrolment.enrolment, None, &s.seen.facts)
        {
            self.stop(store, &sent.enrolment, &reason.to_string(), now)
                .await?;
            return Ok(ReadBack::Already);
        }
        let open_since = state::open_since(store, &s.seen.phones).await?;
        let decision =
            self.chains
                .decide_step(s.step, &s.seen.facts, s.seen.priority, open_since, now);
        let key = closed_record(&sent.record);
        let wall = Utc::now();
        let via = via_of(&decision.action);
        let record = |state, detail: String| StepRecord {
            state,
            claimed_at: wall,
            at: now,
            via: via.to_owned(),
            detail,
        };
        let mut resume = false;
        if let Some(before) = store
            .claim_step(&key, &record(StepState::Claimed, String::new()))
            .await?
        {
            if before.state != StepState::Claimed {
                return Ok(ReadBack::Already);
            }
            if !self.resumable(&before, wall) {
                self.left_uncertain(store, &key, before).await?;
                return Ok(ReadBack::Already);
            }
            resume = true;
        }
        tracing::info!(step = %sent.record, lead = %s.lead.id, what = ?decision.action, because = %decision.because, "free text came back 24_HOURS_EXCEEDED; the step is carried out for a closed session");
        let acted = self
            .act(
                store,
                &decision.action,
                s.step,
                &s.lead,
                &s.names,
                &s.seen,
                &key,
                now,
                resume,
            )
            .await;
        self.settle_again(store, sent, &key, acted, &s, record, now)
            .await
    }

    /// Whether a second form found claimed may be sent again: a WhatsApp message within
    /// Wazzup's guard against a repeated `crmMessageId`.
    fn resumable(&self, claimed: &StepRecord, wall: DateTime<Utc>) -> bool {
        claimed.via == Channel::Wazzup.as_str() && wall - claimed.claimed_at < WAZZUP_GUARD
    }

    /// A second form claimed by a worker that died: nobody knows whether it went, so it is
    /// not sent again.
    async fn left_uncertain(
        &self,
        store: &Store,
        key: &str,
        claimed: StepRecord,
    ) -> Result<(), HandlerError> {
        if wall_age(&claimed) < self.lease() {
            return Err(HandlerError::Other(format!(
                "{key} is being carried out by another worker; looked at again later"
            )));
        }
        let record = StepRecord {
            state: StepState::Uncertain,
            detail: "claimed and never recorded: not sent again".into(),
            ..claimed
        };
        if store.settle_step(key, StepState::Claimed, &record).await? {
            tracing::warn!(step = %key, "the closed-session form of a step was interrupted; it is not sent again");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle_again(
        &self,
        store: &Store,
        sent: &state::SentStep,
        key: &str,
        acted: Acted,
        s: &StepNow<'_>,
        record: impl Fn(StepState, String) -> StepRecord,
        now: DateTime<Utc>,
    ) -> Result<ReadBack, HandlerError> {
        let from = StepState::Claimed;
        match acted {
            Acted::Sent { detail, message_id } => {
                self.settle(store, key, from, record(StepState::Done, detail))
                    .await?;
                let again = state::SentStep {
                    record: key.to_owned(),
                    closed_form: true,
                    ..sent.clone()
                };
                // The closed form cannot be carried out a third time: any error fails it.
                let early = record_then_look(store, &message_id, &again).await?;
                let delivery = early
                    .map(|e| read_status(&e.status, e.error.as_deref(), e.description.as_deref()));
                match delivery {
                    Some(Delivery::SessionClosed) => {
                        let why = "сессия WhatsApp закрыта (24_HOURS_EXCEEDED)";
                        self.fail_sent(store, &again, why).await?;
                    }
                    Some(Delivery::Undeliverable { why, .. }) => {
                        self.fail_sent(store, &again, &why).await?;
                    }
                    _ => {}
                }
                Ok(ReadBack::Again(StepState::Done))
            }
            Acted::Done(detail) => {
                self.settle(store, key, from, record(StepState::Done, detail))
                    .await?;
                Ok(ReadBack::Again(StepState::Done))
            }
            Acted::Skipped(detail) => {
                self.settle(store, key, from, record(StepState::Skipped, detail))
                    .await?;
                Ok(ReadBack::Again(StepState::Skipped))
            }
            Acted::Failed(why) => {
                self.settle(store, key, from, record(StepState::Failed, why.clone()))
                    .await?;
                tracing::error!(step = %key, lead = %s.lead.id, why = %why, "the closed-session form of a step failed; the manager gets a task");
                self.tell_manager(s.chain, s.step, &s.lead, &s.seen, &why, now)
                    .await;
                Ok(ReadBack::Again(StepState::Failed))
            }
            Acted::Retry { why, released } => {
                let state = if released {
                    StepState::Released
                } else {
                    StepState::Claimed
                };
                self.settle(store, key, from, record(state, why.clone()))
                    .await?;
                Err(HandlerError::Other(format!("{}: {why}", s.step.title)))
            }
        }
    }
}

/// How long a status handed back to the events' queue waits before its first new try.
const AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Puts a kept status of `message_id` on the events' queue, as the Wazzup webhook would
/// bring it, under a key of its own (the webhook's own key may be remembered already).
async fn queue_again(
    store: &Store,
    message_id: &str,
    status: &state::EarlyStatus,
) -> Result<(), HandlerError> {
    let event = Event {
        source: Source::Wazzup,
        account: "wazzup".to_owned(),
        kind: EventKind::MessageStatus {
            status: status.status.clone(),
            error: status.error.clone(),
            description: status.description.clone(),
        },
        entity_id: message_id.to_owned(),
        crm_entity: None,
        occurred_at: None,
        modified_by: None,
        dedup_key: dedup_key(
            Source::Wazzup,
            "wazzup",
            "message_status",
            message_id,
            &format!("{}#again", status.status),
        ),
    };
    let job = HandleEvent { event, attempt: 1 };
    let queue = store.queue_name(HANDLE_EVENT);
    store
        .enqueue(QueueItem {
            queue: &queue,
            payload: serde_json::to_vec(&job).map_err(StoreError::from)?,
            key: &job.key(),
            run_after: Some(AGAIN_AFTER),
        })
        .await?;
    Ok(())
}

/// Records the send, then reads what error status came for it before the record.
async fn record_then_look(
    store: &Store,
    message_id: &str,
    sent: &state::SentStep,
) -> Result<Option<state::EarlyStatus>, HandlerError> {
    state::record_sent(store, message_id, sent).await?;
    Ok(state::early_status(store, message_id).await?)
}

fn wall_age(claimed: &StepRecord) -> chrono::TimeDelta {
    Utc::now() - claimed.claimed_at
}
