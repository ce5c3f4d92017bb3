//! One step of one enrolment, carried out once.
//!
//! The order: the enrolment must still be running and at this step; the lead is read
//! again from the CRM; the step must be due; the chain must not stop now; the domain
//! decides what the step becomes for this lead; a message waits for the throttles; then the
//! step is **claimed** in the store, carried out through the channel or the CRM, and
//! **recorded**; the enrolment moves on and its next step is put on the queue.
//!
//! A step found claimed but not recorded (its worker died between the two, or is still at
//! it) is handled by what it did:
//! - WhatsApp, claimed less than [`WAZZUP_GUARD`] ago: sent again with the same
//!   `crmMessageId`; Wazzup answers "already sent" if the first one went. Later: nobody can
//!   know, so it is marked uncertain and not sent again;
//! - e-mail: never sent again. Once its worker must be gone (the lease, `[limits] lease`,
//!   five minutes by default) it is marked uncertain, logged and noted on the lead, once;
//! - a CRM write (task, note, move): after the lease, the CRM is asked first. A task for the
//!   lead with the same text among its open tasks, or a note with the same text on the
//!   lead, means it got there and the step is recorded done; otherwise it is made. A move
//!   is simply made again (the same move). A task the manager completed within the lease
//!   is not among the open ones and would be made again;
//! - while the lease runs, the step is looked at again when it ends.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use super::lead::{Names, Needs, Seen, Sources, context_of};
use super::{ChainEngine, crm_error, state};
use crate::adapters::mail::Email;
use crate::adapters::store::{StepRecord, StepState, Store};
use crate::adapters::wazzup::send::{Content, Outgoing, Sent};
use crate::domain::chains::{
    Action, Chain, Channel, Decided, Enrolment, Hold, Sent as Counted, Step,
};
use crate::domain::lead::{Lead, LeadUpdate};
use crate::domain::task::{EntityRef, NewTask, TaskKind};
use crate::service::jobs::HandlerError;

/// A job may fire this much before its step's moment and still carry it out (Redis's
/// scheduled jobs may run up to a second early).
pub const EARLY: TimeDelta = TimeDelta::seconds(60);
/// How long after a WhatsApp claim the same `crmMessageId` may be sent again: Wazzup
/// recognises a repeat for 60 seconds; a margin is kept for clocks and the request's time.
pub const WAZZUP_GUARD: TimeDelta = TimeDelta::seconds(50);
/// How long the manager has for a task about a step the robot could not carry out.
const FAILURE_TASK: TimeDelta = TimeDelta::hours(4);

/// What running a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRun {
    /// The step is settled: carried out, skipped, failed (the manager told) or uncertain.
    Settled(StepState),
    /// Not due yet: planned again for then.
    NotYet(DateTime<Utc>),
    /// A throttle holds it: planned again for then.
    Held(DateTime<Utc>),
    /// Another worker has it claimed: looked at again then.
    InFlight(DateTime<Utc>),
    /// The enrolment is stopped, with why (now, or before).
    Stopped(String),
    /// Not the enrolment's next step (done already, or the chain is done): nothing to do.
    Stale,
    /// No such enrolment, or its lead is gone.
    Gone,
}

/// What carrying out an action came to.
pub(super) enum Acted {
    /// Done; what happened (a message id).
    Done(String),
    /// A WhatsApp message Wazzup took: what happened, and Wazzup's id of it, whose status
    /// comes later.
    Sent {
        /// What happened.
        detail: String,
        /// Wazzup's id of the message.
        message_id: String,
    },
    /// Passed over.
    Skipped(String),
    /// Cannot be done, ever: why, for the manager.
    Failed(String),
    /// Not now: try again. `released` when nothing can have gone out, so the step may be
    /// claimed afresh; otherwise the claim stays, renewed, for a resend within Wazzup's
    /// guard.
    Retry { why: String, released: bool },
}

/// Where the step's action goes.
pub(super) fn via_of(decided: &Decided) -> &'static str {
    match decided {
        Decided::Send { channel, .. } => channel.as_str(),
        Decided::SendApproved { .. } => Channel::Wazzup.as_str(),
        Decided::Skip => "none",
        _ => "crm",
    }
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// The `crmMessageId` of a step's WhatsApp message: the same on every attempt.
pub fn crm_message_id(step_key: &str) -> String {
    format!("chain-{}", digest(step_key))
}

/// The `Message-ID` of a step's letter: the same on every attempt.
pub fn message_id(step_key: &str, domain: &str) -> String {
    format!("chain-{}@{domain}", digest(step_key))
}

/// The key of step `index` of enrolment `key`.
pub fn step_key(key: &str, index: usize) -> String {
    format!("{key}#{index}")
}

impl ChainEngine {
    /// Runs step `index` of enrolment `key` as of `now`: the whole of one job. Idempotent:
    /// a second run of a step carried out finds it done and acts no more.
    pub async fn run_step(
        &self,
        store: &Store,
        key: &str,
        index: usize,
        now: DateTime<Utc>,
    ) -> Result<StepRun, HandlerError> {
        let Some(record) = store.enrolment(key).await? else {
            return Ok(StepRun::Gone);
        };
        if let Some(s) = &record.stopped {
            return Ok(StepRun::Stopped(s.reason.clone()));
        }
        let due_at = record.due_at;
        let e = record.enrolment;
        if e.next != index {
            // The job of the step just done, delivered again: its worker may have died after
            // saving the progress and before planning the next step, so the plan is made
            // again. Its key is the first plan's, so where that one is queued this is a no-op.
            if index + 1 == e.next
                && let Some(due) = due_at
            {
                self.schedule(store, key, e.next, due, now, false).await?;
            }
            return Ok(StepRun::Stale);
        }
        let Some(chain) = self.chains.chain(&e.chain) else {
            let why = crate::domain::chains::StopReason::ChainRemoved.to_string();
            self.stop(store, key, &why, now).await?;
            return Ok(StepRun::Stopped(why));
        };
        let Some(step) = chain.steps.get(index) else {
            return Ok(StepRun::Stale);
        };
        let Some(lead) = self.crm.lead(&e.lead_id).await.map_err(crm_error)? else {
            let why = "the lead is gone from the CRM";
            self.stop(store, key, why, now).await?;
            return Ok(StepRun::Gone);
        };
        let (names, seen) = self.read_seen(&lead).await.map_err(crm_error)?;
        let skey = step_key(key, index);
        let wall = Utc::now();
        let mut resume = false;
        if let Some(r) = store.step_record(&skey).await? {
            match r.state {
                StepState::Claimed => {
                    let age = wall - r.claimed_at;
                    let lease = self.lease();
                    if r.via == Channel::Wazzup.as_str() && age < WAZZUP_GUARD {
                        resume = true;
                    } else if age < lease {
                        // A second past the lease: a look a hair early would find it still
                        // running and plan itself again for the same moment, whose job
                        // key (the step and that second) is taken, and the step would stall.
                        let again = now + (lease - age) + TimeDelta::seconds(1);
                        self.schedule(store, key, index, again, now, true).await?;
                        return Ok(StepRun::InFlight(again));
                    } else if r.via == "crm" {
                        resume = true;
                    } else {
                        return self
                            .uncertain(store, e, chain, step, &lead, &seen, r, now)
                            .await;
                    }
                }
                StepState::Released => {}
                state => {
                    // Recorded, but the enrolment did not move on (a crash in between).
                    self.advance(store, e, index, r.at, &seen, now).await?;
                    return Ok(StepRun::Settled(state));
                }
            }
        }
        if !resume {
            let Some(due) = self.chains.next_step(&e, now, seen.zone) else {
                return Ok(StepRun::Stale);
            };
            if due.at > now + EARLY {
                store.save_progress(&e, Some(due.at)).await?;
                self.schedule(store, key, index, due.at, now, true).await?;
                return Ok(StepRun::NotYet(due.at));
            }
        }
        if let Some(reason) = self.chains.should_stop(&e, None, &seen.facts) {
            let why = reason.to_string();
            self.stop(store, key, &why, now).await?;
            return Ok(StepRun::Stopped(why));
        }
        // Only a WhatsApp message depends on the client's session: other steps skip the reads.
        let open_since = if matches!(
            step.action,
            Action::Message {
                channel: Channel::Wazzup,
                ..
            }
        ) {
            state::open_since(store, &seen.phones).await?
        } else {
            None
        };
        let decision = self
            .chains
            .decide_step(step, &seen.facts, seen.priority, open_since, now);
        let via = via_of(&decision.action);
        let channel = match &decision.action {
            Decided::Send { channel, .. } => Some(*channel),
            Decided::SendApproved { .. } => Some(Channel::Wazzup),
            _ => None,
        };
        let record = |state, detail: String| StepRecord {
            state,
            claimed_at: wall,
            at: now,
            via: via.to_owned(),
            detail,
        };
        // Settled at once, with no action: a skip, or a channel the robot has not got.
        let settled_now = match (&decision.action, channel) {
            (Decided::Skip, _) => Some(record(
                StepState::Skipped,
                format!("skipped: {}", decision.because),
            )),
            (_, Some(c)) if !self.channels.has(c) => Some(record(
                StepState::Failed,
                format!("{}: {}", c, not_configured(c)),
            )),
            _ => None,
        };
        if let Some(settled) = settled_now {
            if store.claim_step(&skey, &settled).await?.is_some() {
                // Another worker settled or claimed it between the look and now.
                return Ok(StepRun::InFlight(now + self.lease()));
            }
            if settled.state == StepState::Failed {
                tracing::error!(key = %key, step = %step.title, why = %settled.detail, "a chain step cannot be carried out");
                self.tell_manager(chain, step, &lead, &seen, &settled.detail, now)
                    .await;
            }
            self.advance(store, e, index, now, &seen, now).await?;
            return Ok(StepRun::Settled(settled.state));
        }
        let mut slots = None;
        if let Some(c) = channel
            && !resume
        {
            match self.take_slots(store, chain, c, &seen, now).await? {
                Ok(taken) => slots = Some(taken),
                Err(hold) => {
                    let until = hold.until();
                    store.save_progress(&e, Some(until)).await?;
                    self.schedule(store, key, index, until, now, true).await?;
                    tracing::info!(key = %key, step = %step.title, why = %hold, "a chain message waits for a throttle");
                    return Ok(StepRun::Held(until));
                }
            }
        }
        if !resume
            && let Some(before) = store
                .claim_step(&skey, &record(StepState::Claimed, String::new()))
                .await?
        {
            // Another worker took it between the look and the claim.
            self.give_back(store, slots).await?;
            let again = now + self.lease();
            tracing::debug!(key = %key, state = before.state.as_str(), "the step is another worker's");
            return Ok(StepRun::InFlight(again));
        }
        let acted = self
            .act(
                store,
                &decision.action,
                step,
                &lead,
                &names,
                &seen,
                &skey,
                now,
                resume,
            )
            .await;
        let from = StepState::Claimed;
        match acted {
            Acted::Skipped(detail) => {
                self.settle(store, &skey, from, record(StepState::Skipped, detail))
                    .await?;
                self.give_back(store, slots).await?;
                self.advance(store, e, index, now, &seen, now).await?;
                Ok(StepRun::Settled(StepState::Skipped))
            }
            Acted::Done(detail) => {
                tracing::info!(key = %key, step = %step.title, lead = %lead.id, what = %detail, "chain step carried out");
                self.settle(store, &skey, from, record(StepState::Done, detail))
                    .await?;
                self.advance(store, e, index, now, &seen, now).await?;
                Ok(StepRun::Settled(StepState::Done))
            }
            Acted::Sent { detail, message_id } => {
                tracing::info!(key = %key, step = %step.title, lead = %lead.id, what = %detail, "chain step carried out");
                self.settle(store, &skey, from, record(StepState::Done, detail))
                    .await?;
                self.advance(store, e, index, now, &seen, now).await?;
                let phone = seen.phones.first().cloned().unwrap_or_default();
                let sent = state::SentStep {
                    record: skey.clone(),
                    enrolment: key.to_owned(),
                    index,
                    phone,
                    // Only free text needs the session; a template is its closed form.
                    closed_form: !matches!(
                        decision.action,
                        Decided::Send {
                            channel: Channel::Wazzup,
                            ..
                        }
                    ),
                };
                // The step is settled and the chain moved on: a failure here must not make
                // the job run again, which would find the step done and do nothing.
                if let Err(e) = self.sent_through_wazzup(store, &message_id, &sent).await {
                    tracing::error!(key = %key, step = %step.title, message = %message_id, error = %e, "the WhatsApp message went, but its status cannot be read back");
                }
                Ok(StepRun::Settled(StepState::Done))
            }
            Acted::Failed(why) => {
                tracing::error!(key = %key, step = %step.title, lead = %lead.id, why = %why, "a chain step failed for good; the manager gets a task");
                self.settle(store, &skey, from, record(StepState::Failed, why.clone()))
                    .await?;
                self.give_back(store, slots).await?;
                self.tell_manager(chain, step, &lead, &seen, &why, now)
                    .await;
                self.advance(store, e, index, now, &seen, now).await?;
                Ok(StepRun::Settled(StepState::Failed))
            }
            Acted::Retry { why, released } => {
                let state = if released {
                    StepState::Released
                } else {
                    StepState::Claimed
                };
                // A renewed claim: a resend within the guard is safe from now on.
                self.settle(store, &skey, from, record(state, why.clone()))
                    .await?;
                self.give_back(store, slots).await?;
                Err(HandlerError::Other(format!("{}: {why}", step.title)))
            }
        }
    }

    pub(super) async fn settle(
        &self,
        store: &Store,
        skey: &str,
        from: StepState,
        record: StepRecord,
    ) -> Result<(), HandlerError> {
        if !store.settle_step(skey, from, &record).await? {
            tracing::warn!(step = %skey, state = record.state.as_str(), "the step was settled by another worker meanwhile");
        }
        Ok(())
    }

    /// Marks a step nobody can know the fate of as uncertain, tells the manager once, and
    /// moves on.
    #[allow(clippy::too_many_arguments)]
    async fn uncertain(
        &self,
        store: &Store,
        e: Enrolment,
        chain: &Chain,
        step: &Step,
        lead: &Lead,
        seen: &Seen,
        claimed: StepRecord,
        now: DateTime<Utc>,
    ) -> Result<StepRun, HandlerError> {
        let index = e.next;
        let skey = step_key(&e.key, index);
        let record = StepRecord {
            state: StepState::Uncertain,
            detail: format!(
                "claimed at {} and never recorded: it may or may not have gone; not sent again",
                claimed.claimed_at.to_rfc3339()
            ),
            ..claimed
        };
        if store
            .settle_step(&skey, StepState::Claimed, &record)
            .await?
        {
            tracing::warn!(key = %e.key, step = %step.title, lead = %lead.id, via = %record.via, "a chain step was interrupted between sending and recording; it is not sent again");
            let text = format!(
                "Робот не уверен, что шаг «{}» цепочки «{}» выполнен: работа прервалась между отправкой и записью. Повторно не отправляем — проверьте переписку с клиентом.",
                step.title, chain.name
            );
            if let Err(err) = self
                .crm
                .add_note(&EntityRef::lead(lead.id.clone()), &text)
                .await
            {
                tracing::warn!(lead = %lead.id, error = %err, "could not note the uncertain step on the lead");
            }
        }
        self.advance(store, e, index, now, seen, now).await?;
        Ok(StepRun::Settled(StepState::Uncertain))
    }

    /// Records that step `index` was settled at `at`, and plans the next one.
    async fn advance(
        &self,
        store: &Store,
        mut e: Enrolment,
        index: usize,
        at: DateTime<Utc>,
        seen: &Seen,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        e.step_done(index, at);
        let next = self.chains.next_step(&e, now, seen.zone);
        store.save_progress(&e, next.map(|d| d.at)).await?;
        match next {
            Some(due) => {
                self.schedule(store, &e.key, due.index, due.at, now, false)
                    .await?;
            }
            None => tracing::info!(key = %e.key, "chain finished"),
        }
        Ok(())
    }

    /// Takes a message's place under both throttles, or says until when it waits.
    async fn take_slots(
        &self,
        store: &Store,
        chain: &Chain,
        channel: Channel,
        seen: &Seen,
        now: DateTime<Utc>,
    ) -> Result<Result<[String; 2], Hold>, HandlerError> {
        let day = now.with_timezone(&seen.zone).date_naive();
        let client = state::client_counter(&seen.client, day);
        let minute = state::channel_counter(channel, now);
        // Taken first and given back when over: two workers cannot both pass one place.
        let c = store.bump(&client, 1, state::DAY_KEPT).await?;
        let m = store.bump(&minute, 1, state::MINUTE_KEPT).await?;
        let sent = Counted {
            channel_last_minute: u32::try_from(m - 1).unwrap_or(0),
            client_today: u32::try_from(c - 1).unwrap_or(0),
        };
        let window = self.chains.window_of(chain);
        let checked = self.chains.throttle.check(
            channel,
            sent,
            now,
            window,
            &self.chains.calendar,
            seen.zone,
        );
        let taken = [client, minute];
        match checked {
            Ok(()) => Ok(Ok(taken)),
            Err(hold) => {
                self.give_back(store, Some(taken)).await?;
                Ok(Err(hold))
            }
        }
    }

    async fn give_back(
        &self,
        store: &Store,
        slots: Option<[String; 2]>,
    ) -> Result<(), HandlerError> {
        for name in slots.into_iter().flatten() {
            let kept = if name.starts_with("chains:client:") {
                state::DAY_KEPT
            } else {
                state::MINUTE_KEPT
            };
            store.bump(&name, -1, kept).await?;
        }
        Ok(())
    }

    /// Carries out what the step became.
    /// How long a claimed step may be at work before its worker is taken for dead.
    pub(super) fn lease(&self) -> TimeDelta {
        TimeDelta::from_std(self.chains.lease).unwrap_or(TimeDelta::minutes(5))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn act(
        &self,
        store: &Store,
        decided: &Decided,
        step: &Step,
        lead: &Lead,
        names: &Names,
        seen: &Seen,
        skey: &str,
        now: DateTime<Utc>,
        resume: bool,
    ) -> Acted {
        match decided {
            Decided::Skip => Acted::Skipped("skipped".into()),
            Decided::Send {
                channel: Channel::Wazzup,
                template,
            } => {
                let Some(phone) = seen.phones.first() else {
                    return Acted::Failed("у клиента нет номера WhatsApp".into());
                };
                let text = match self.render(template, lead, names, store, seen).await {
                    Ok(r) => r.body,
                    Err(a) => return a,
                };
                let acted = self
                    .whatsapp(phone, Content::Text(text.clone()), skey)
                    .await;
                self.remember(store, phone, &acted, text, now).await;
                acted
            }
            Decided::SendApproved { name } => {
                let Some(phone) = seen.phones.first() else {
                    return Acted::Failed("у клиента нет номера WhatsApp".into());
                };
                let Some(wa) = &self.channels.whatsapp else {
                    return Acted::Failed(not_configured(Channel::Wazzup).into());
                };
                let approved = match wa.approved(name).await {
                    Ok(Some(a)) => a,
                    Ok(None) => {
                        return Acted::Failed(format!("в Wazzup нет одобренного шаблона «{name}»"));
                    }
                    Err(e) if e.is_permanent() => return Acted::Failed(e.to_string()),
                    Err(e) => {
                        return Acted::Retry {
                            why: e.to_string(),
                            released: true,
                        };
                    }
                };
                let from = Sources {
                    crm: self.crm.as_ref(),
                    store,
                    analogues: &self.chains.analogues,
                    seen,
                };
                let context = match context_of(lead, names, &from, Needs::default()).await {
                    Ok(c) => c,
                    Err(e) => {
                        return Acted::Retry {
                            why: e.to_string(),
                            released: true,
                        };
                    }
                };
                // Assumed: an approved template's variables are, in order, how to address
                // the client and who writes; more variables get the lead's title.
                let first = if context.contact.first_name.is_empty() {
                    context.contact.name.clone()
                } else {
                    context.contact.first_name.clone()
                };
                let mut values = vec![first, context.manager.name.clone()];
                values.resize(approved.variables.max(values.len()), lead.name.clone());
                values.truncate(approved.variables);
                let said = format!("[шаблон «{name}»: {}]", values.join(", "));
                let content = Content::Template {
                    id: approved.id,
                    values,
                };
                let acted = self.whatsapp(phone, content, skey).await;
                self.remember(store, phone, &acted, said, now).await;
                acted
            }
            Decided::Send {
                channel: Channel::Email,
                template,
            } => {
                let Some(mailer) = &self.channels.mailer else {
                    return Acted::Failed(not_configured(Channel::Email).into());
                };
                let Some(to) = &seen.email else {
                    return Acted::Failed("у клиента нет e-mail".into());
                };
                let rendered = match self.render(template, lead, names, store, seen).await {
                    Ok(r) => r,
                    Err(a) => return a,
                };
                let email = Email {
                    to: to.clone(),
                    subject: rendered.subject.unwrap_or_else(|| step.title.clone()),
                    text: rendered.body,
                    html: None,
                    message_id: message_id(skey, &self.channels.mail_domain),
                };
                match mailer.send(&email).await {
                    Ok(()) => Acted::Done(format!("e-mail {} to {to}", email.message_id)),
                    Err(e) if e.is_permanent() => Acted::Failed(e.to_string()),
                    // The server did not take it: nothing went, it may be sent again.
                    Err(e) => Acted::Retry {
                        why: e.to_string(),
                        released: true,
                    },
                }
            }
            Decided::Task { kind, text, within } => {
                let Some(manager) = &lead.responsible_user_id else {
                    return Acted::Failed("у сделки нет ответственного".into());
                };
                let task = NewTask {
                    kind: *kind,
                    text: text.clone(),
                    deadline: (now + TimeDelta::from_std(*within).unwrap_or(FAILURE_TASK))
                        .timestamp(),
                    responsible_user_id: manager.clone(),
                    entity: EntityRef::lead(lead.id.clone()),
                };
                if resume {
                    match self.crm.open_tasks().await {
                        Ok(open) => {
                            if let Some(made) = open
                                .iter()
                                .find(|t| t.entity == Some(task.entity.clone()) && t.text == *text)
                            {
                                return Acted::Done(format!(
                                    "task {}, found in the CRM after its worker died",
                                    made.id
                                ));
                            }
                        }
                        Err(e) => return crm_retry(e),
                    }
                }
                match self.crm.create_task(&task).await {
                    Ok(id) => Acted::Done(format!("task {id}")),
                    Err(e) => crm_retry(e),
                }
            }
            Decided::Note { text } => {
                if resume {
                    match self.crm.notes(&EntityRef::lead(lead.id.clone())).await {
                        Ok(notes) if notes.iter().any(|n| n == text) => {
                            return Acted::Done(
                                "note, found in the CRM after its worker died".into(),
                            );
                        }
                        Ok(_) => {}
                        Err(e) => return crm_retry(e),
                    }
                }
                match self
                    .crm
                    .add_note(&EntityRef::lead(lead.id.clone()), text)
                    .await
                {
                    Ok(()) => Acted::Done("note".into()),
                    Err(e) => crm_retry(e),
                }
            }
            Decided::Move { stage, reason } => {
                let Some(to) = names.stage_named(stage, &lead.pipeline_id) else {
                    return Acted::Failed(format!("в CRM нет этапа «{stage}»"));
                };
                let reason_id = match reason {
                    Some(r) => match names.reason_named(r) {
                        Some(found) => Some(found.id.clone()),
                        None => {
                            return Acted::Failed(format!("в CRM нет причины отказа «{r}»"));
                        }
                    },
                    None => None,
                };
                let update = LeadUpdate {
                    status_id: Some(to.id.clone()),
                    pipeline_id: (to.pipeline.id != lead.pipeline_id)
                        .then(|| to.pipeline.id.clone()),
                    loss_reason_id: reason_id,
                    ..LeadUpdate::default()
                };
                match self.crm.update_lead(&lead.id, &update).await {
                    Ok(()) => Acted::Done(format!("moved to «{}»", to.name)),
                    Err(e) => crm_retry(e),
                }
            }
        }
    }

    /// Keeps a WhatsApp message the robot sent in the conversation the templates see. Best
    /// effort: the message went, and a store that does not answer only loses it from the
    /// history.
    async fn remember(
        &self,
        store: &Store,
        phone: &str,
        acted: &Acted,
        text: String,
        now: DateTime<Utc>,
    ) {
        let went = match acted {
            Acted::Done(d) => !d.ends_with("already sent"),
            Acted::Sent { .. } => true,
            _ => false,
        };
        if !went {
            return;
        }
        let said = state::Said {
            at: now,
            from_client: false,
            text,
        };
        if let Err(e) = state::record_message(store, phone, &said).await {
            tracing::warn!(error = %e, "a sent message was not kept in the conversation");
        }
    }

    async fn render(
        &self,
        template: &str,
        lead: &Lead,
        names: &Names,
        store: &Store,
        seen: &Seen,
    ) -> Result<crate::domain::chains::Rendered, Acted> {
        let needs = self
            .templates
            .placeholders(template)
            .map(|p| Needs::of(&p))
            .unwrap_or_default();
        let from = Sources {
            crm: self.crm.as_ref(),
            store,
            analogues: &self.chains.analogues,
            seen,
        };
        let context = context_of(lead, names, &from, needs)
            .await
            .map_err(|e| Acted::Retry {
                why: e.to_string(),
                released: true,
            })?;
        self.templates
            .render(template, &context)
            .map_err(|e| Acted::Failed(e.to_string()))
    }

    async fn whatsapp(&self, phone: &str, content: Content, skey: &str) -> Acted {
        let Some(wa) = &self.channels.whatsapp else {
            return Acted::Failed(not_configured(Channel::Wazzup).into());
        };
        let message = Outgoing {
            phone: phone.to_owned(),
            content,
            crm_message_id: crm_message_id(skey),
        };
        match wa.send(&message).await {
            Ok(Sent::Accepted { message_id, .. }) => Acted::Sent {
                detail: format!("whatsapp {message_id}"),
                message_id,
            },
            Ok(Sent::AlreadySent) => Acted::Done("whatsapp: already sent".into()),
            Err(e) if e.is_permanent() => Acted::Failed(e.to_string()),
            Err(e) => {
                use crate::adapters::wazzup::send::SendError as W;
                // Refused before anything was taken: nothing went. Otherwise the message
                // may have gone: only a resend with the same id within the guard is safe.
                let released = matches!(e, W::Channel { .. } | W::Unauthorized(_) | W::Store(_));
                Acted::Retry {
                    why: e.to_string(),
                    released,
                }
            }
        }
    }

    /// Tells the lead's manager that a step could not be carried out: a task, or a note
    /// where the priority gives no tasks (or nobody is responsible). Best effort: the step
    /// is recorded already, and a CRM that is down only costs the message in the log.
    pub(super) async fn tell_manager(
        &self,
        chain: &Chain,
        step: &Step,
        lead: &Lead,
        seen: &Seen,
        why: &str,
        now: DateTime<Utc>,
    ) {
        let text = format!(
            "Робот не выполнил шаг «{}» цепочки «{}»: {why}. Свяжитесь с клиентом сами.",
            step.title, chain.name
        );
        let tasks = self.chains.gates.of(seen.priority).tasks;
        let result = match (&lead.responsible_user_id, tasks) {
            (Some(manager), true) => self
                .crm
                .create_task(&NewTask {
                    kind: TaskKind::Other,
                    text,
                    deadline: (now + FAILURE_TASK).timestamp(),
                    responsible_user_id: manager.clone(),
                    entity: EntityRef::lead(lead.id.clone()),
                })
                .await
                .map(|_| ()),
            _ => {
                self.crm
                    .add_note(&EntityRef::lead(lead.id.clone()), &text)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(lead = %lead.id, error = %e, "could not tell the manager about a failed chain step");
        }
    }
}

fn crm_retry(e: crate::adapters::crm::CrmError) -> Acted {
    use crate::adapters::crm::CrmError as C;
    match e {
        C::Rejected(why) => Acted::Failed(format!("CRM отказала: {why}")),
        other => Acted::Retry {
            why: other.to_string(),
            released: true,
        },
    }
}

fn not_configured(channel: Channel) -> &'static str {
    match channel {
        Channel::Wazzup => {
            "канал WhatsApp не настроен: задайте ROBOT_WAZZUP_KEY и [wazzup] send_channel_id"
        }
        Channel::Email => "почта не настроена: задайте ROBOT_SMTP_URL и [smtp] from",
    }
}
