//! What events do to chains. An event about a lead compares the lead's facts with those
//! last seen: a trigger that fires enrols the lead and plans its first step; a stop
//! condition that holds (the stage changed, a win, the manager's tag, an incoming call)
//! stops its running enrolments. A client's WhatsApp message is remembered for the 24
//! hours and stops every running enrolment of the leads of that phone; a new request from
//! the same phone does the same. A lead that the clock alone may enrol later (a meeting
//! that may be missed) gets a wake-up on the queue for that moment.

use chrono::{DateTime, Utc};

use super::lead::{Names, Seen, set_stage};
use super::{ChainEngine, crm_error, state};
use crate::adapters::store::{Stopped, Store};
use crate::domain::chains::{Enrolment, Stop};
use crate::domain::condition::Facts;
use crate::domain::event::{Event, EventKind};
use crate::domain::lead::Lead;
use crate::service::jobs::HandlerError;

/// What an event did to a lead's chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrolled {
    /// The keys of the enrolments made now.
    pub enrolled: Vec<String>,
    /// The keys of the enrolments stopped now, with why.
    pub stopped: Vec<(String, String)>,
}

impl ChainEngine {
    /// Whatever an event about `lead` means for its chains (see the module's comment).
    pub async fn on_lead(
        &self,
        kind: &EventKind,
        lead: &Lead,
        store: &Store,
    ) -> Result<Enrolled, HandlerError> {
        self.look(Some(kind), lead, store, self.now()).await
    }

    /// What the lead as read now means for its chains at `now`: an event's look (`kind`),
    /// or a wake-up's (`None`, no event: only the facts and the clock). A lead a trigger of
    /// the clock may fire for later (a meeting to be missed) gets a wake-up planned for
    /// then (see [`super::wake`]).
    pub async fn look(
        &self,
        kind: Option<&EventKind>,
        lead: &Lead,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Enrolled, HandlerError> {
        let (names, seen) = self.read_seen(lead).await.map_err(crm_error)?;
        let mut out = Enrolled::default();
        let new = matches!(
            kind,
            Some(EventKind::LeadCreated { .. } | EventKind::UnsortedCreated { .. })
        );
        for phone in &seen.phones {
            if new {
                // A new request from the same phone is the client answering.
                for other in state::leads_of_phone(store, phone).await? {
                    if other != lead.id {
                        let why = format!("the client sent a new request (lead {})", lead.id);
                        out.stopped
                            .extend(self.stop_on_reply(&other, &why, store, now).await?);
                    }
                }
            }
            state::index_phone(store, phone, &lead.id).await?;
        }
        for record in store.enrolments_of(&lead.id).await? {
            if !record.is_running() {
                continue;
            }
            let e = &record.enrolment;
            if let Some(reason) = self.chains.should_stop(e, kind, &seen.facts)
                && self.stop(store, &e.key, &reason.to_string(), now).await?
            {
                out.stopped.push((e.key.clone(), reason.to_string()));
            }
        }
        let before = match state::facts(store, &lead.id).await? {
            Some(facts) => facts,
            None if new => Facts::new(),
            None => match kind {
                Some(kind) => before_from_event(kind, &seen.facts, &names),
                None => seen.facts.clone(),
            },
        };
        for e in self.chains.enrol(&lead.id, &before, &seen.facts, now) {
            let added = store.add_enrolment(&e).await?;
            let record = store.enrolment(&e.key).await?;
            // Planned unless it was planned before. A crash between adding and planning, or
            // between recording the plan and queueing its job, is healed by the event's
            // retry: the job is queued again under the first plan's key, a no-op where it
            // is queued already.
            if let Some(r) = record
                && r.is_running()
                && r.enrolment.next == 0
            {
                match r.due_at {
                    None => self.plan_first(store, &r.enrolment, &seen, now).await?,
                    Some(at) if !added => {
                        let first = super::step::step_key(&r.enrolment.key, 0);
                        if store.step_record(&first).await?.is_none() {
                            self.schedule(store, &r.enrolment.key, 0, at, now, false)
                                .await?;
                        }
                    }
                    Some(_) => {}
                }
            }
            if added {
                tracing::info!(lead = %lead.id, chain = %e.chain, key = %e.key, "lead enrolled in a chain");
                out.enrolled.push(e.key.clone());
            }
        }
        if let Some(at) = self.chains.check_at(&seen.facts, now) {
            self.plan_check(store, &lead.id, at, now).await?;
        }
        state::save_facts(store, &lead.id, &seen.facts).await?;
        Ok(out)
    }

    async fn plan_first(
        &self,
        store: &Store,
        e: &Enrolment,
        seen: &Seen,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let Some(due) = self.chains.next_step(e, now, seen.zone) else {
            return Ok(());
        };
        // Queued before the plan is kept: a crash in between plans it again on the event's
        // retry, under the same key, which the queue drops.
        self.schedule(store, &e.key, due.index, due.at, now, false)
            .await?;
        store.save_progress(e, Some(due.at)).await?;
        Ok(())
    }

    /// A client's message through Wazzup: remembered for WhatsApp's 24 hours, and every
    /// running enrolment of the leads of that phone that stops on a reply stops.
    pub async fn on_reply(
        &self,
        event: &Event,
        store: &Store,
    ) -> Result<Vec<(String, String)>, HandlerError> {
        let EventKind::ClientReplied {
            chat_type,
            phone,
            text,
            written_at,
            ..
        } = &event.kind
        else {
            return Ok(Vec::new());
        };
        let Some(phone) = phone
            .clone()
            .or_else(|| (chat_type == "whatsapp").then(|| event.entity_id.clone()))
        else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let at = written_at
            .or_else(|| {
                event
                    .occurred_at
                    .and_then(|t| DateTime::from_timestamp(t, 0))
            })
            .unwrap_or(now);
        state::record_reply(store, &phone, at).await?;
        if let Some(text) = text {
            let said = state::Said {
                at,
                from_client: true,
                text: text.clone(),
            };
            state::record_message(store, &phone, &said).await?;
        }
        let mut stopped = Vec::new();
        for lead in state::leads_of_phone(store, &phone).await? {
            for record in store.enrolments_of(&lead).await? {
                if !record.is_running() {
                    continue;
                }
                let e = &record.enrolment;
                let facts = state::facts(store, &lead).await?.unwrap_or_default();
                if let Some(reason) = self.chains.should_stop(e, Some(&event.kind), &facts)
                    && self.stop(store, &e.key, &reason.to_string(), now).await?
                {
                    stopped.push((e.key.clone(), reason.to_string()));
                }
            }
        }
        Ok(stopped)
    }

    /// Stops the running enrolments of `lead` whose chains stop on a reply.
    async fn stop_on_reply(
        &self,
        lead: &str,
        why: &str,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, HandlerError> {
        let mut stopped = Vec::new();
        for record in store.enrolments_of(lead).await? {
            let e = &record.enrolment;
            let replies = self
                .chains
                .chain(&e.chain)
                .is_some_and(|c| c.stops.contains(&Stop::Reply));
            if record.is_running() && replies && self.stop(store, &e.key, why, now).await? {
                stopped.push((e.key.clone(), why.to_owned()));
            }
        }
        Ok(stopped)
    }

    /// Stops one enrolment with `why`; whether this call stopped it.
    pub async fn stop(
        &self,
        store: &Store,
        key: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, HandlerError> {
        let stopped = Stopped {
            at: now,
            reason: why.to_owned(),
        };
        let done = store.stop_enrolment(key, &stopped).await?;
        if done {
            tracing::info!(key = %key, why = %why, "chain stopped");
        }
        Ok(done)
    }

    /// Stops every running enrolment of `lead` (a person asked); the keys stopped.
    pub async fn stop_lead(
        &self,
        store: &Store,
        lead: &str,
        why: &str,
    ) -> Result<Vec<String>, HandlerError> {
        let now = self.now();
        let mut out = Vec::new();
        for record in store.enrolments_of(lead).await? {
            if record.is_running() && self.stop(store, &record.enrolment.key, why, now).await? {
                out.push(record.enrolment.key);
            }
        }
        Ok(out)
    }
}

/// The facts before an event the engine has no snapshot for: the stage the event says the
/// lead left, or the facts as they are (nothing changed, so nothing enrols on a lead the
/// robot sees for the first time).
fn before_from_event(kind: &EventKind, now: &Facts, names: &Names) -> Facts {
    let old = match kind {
        EventKind::LeadStatusChanged { old_status_id, .. }
        | EventKind::LeadUpdated { old_status_id, .. } => old_status_id.as_deref(),
        _ => None,
    };
    let mut before = now.clone();
    if let Some(old) = old {
        set_stage(&mut before, old, names);
        before.remove(crate::domain::chains::facts::LOSS_REASON);
    }
    before
}
