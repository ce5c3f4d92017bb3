//! Routing in `serve`: a new lead goes to a manager who can take it now, with a first task
//! and a note that says why; a lead nobody can take waits on the pending list and is handed
//! out the moment someone can (a presence change, or the periodic recheck); a lead moved by
//! hand in the CRM stays where the person put it, and the loads follow.
//!
//! What the robot remembers of a lead, in the store:
//! - `routing:waiting:{id}`: what the decision reads about a waiting lead, so that the
//!   pending list is worked without reading the CRM until someone can take a lead;
//! - `routing:given:{id}`: to whom the robot gave it, on which day, and which of its writes
//!   to the CRM are done. It is written before the first write, so that a retry after a
//!   crash finishes the writes instead of handing the lead out again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::adapters::crm::{Crm, CrmError};
use crate::adapters::store::{Claim, Store, StoreError};
use crate::domain::catchup::ReadBeforeWrite;
use crate::domain::condition::Facts;
use crate::domain::event::EventKind;
use crate::domain::lead::{Lead, LeadUpdate, closed};
use crate::domain::priority::Priority;
use crate::domain::routing::{
    Board, Decision, FirstTask, Heard, OverflowTo, Request, Roster, Router, RoutingRules,
};
use crate::domain::task::{EntityRef, NewTask, TaskKind};
use crate::service::jobs::HandlerError;
use crate::service::scoring::routing_facts;

/// The counter of routing outcomes, by `outcome` (assigned, waiting, overflow, not_routed,
/// by_hand).
pub const ROUTED: &str = "robot_routing_leads_total";
/// How many leads wait for a manager.
pub const PENDING: &str = "robot_routing_pending";

const DRAIN_LOCK: &str = "routing:drain";
/// Set by a worker that found the drain busy: the one draining may have read the managers
/// before the change that worker brought, so it goes round once more.
const DRAIN_AGAIN: &str = "routing:drain:again";
/// A drain goes round at most this often in a row; the periodic drain does the rest.
const DRAIN_ROUNDS: usize = 4;
/// How long a drain waits for the leads whose own job held them when it first looked.
const BUSY_WAIT: Duration = Duration::from_secs(3);
/// One worker at a time decides for a lead; a worker that dies holding it lets go after
/// this, and the lead's job, delivered again, finishes it.
const LEAD_LOCK: Duration = Duration::from_secs(60);

fn lead_lock(lead: &str) -> String {
    format!("routing:lead:{lead}")
}
/// Claims that lost a race to another worker are decided again at most this often.
const CLAIM_TRIES: usize = 8;
/// Overflows from group to group stop here, in case the rules send a lead round in circles.
const HOPS: usize = 8;

/// The roster and the routing rules.
#[derive(Debug, Clone)]
pub struct RoutingSetup {
    /// `managers.toml`.
    pub roster: Arc<Roster>,
    /// `routing.toml`.
    pub rules: Arc<RoutingRules>,
}

/// What the pending list keeps of a waiting lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiting {
    facts: Facts,
    priority: u8,
    /// The group it was overflowed to, by name; `None` lets its facts choose.
    group: Option<String>,
    /// When it began to wait for its current group.
    entered: DateTime<Utc>,
    /// When it began to wait at all.
    since: DateTime<Utc>,
    /// Its responsible user when it began to wait: another one later means a person took it.
    responsible: Option<String>,
}

/// What the robot did with a lead it handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Given {
    manager: String,
    /// The manager's calendar day it counts in.
    day: NaiveDate,
    reasons: Vec<String>,
    task: Option<PlannedTask>,
    /// The responsible user is written in the CRM.
    written: bool,
    /// The first task is created (or there is none).
    tasked: bool,
    /// The note is added.
    noted: bool,
    /// Given by a person in the CRM, not by the robot.
    by_hand: bool,
    /// The lead as the hand-over read it before writing the manager, when no event's
    /// handler had just read it: catch-up asks it for a change nobody acted on.
    #[serde(default)]
    read: Option<ReadBeforeWrite>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PlannedTask {
    text: String,
    due: DateTime<Utc>,
}

/// What happened to a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Given to this manager (CRM user id) now.
    Assigned {
        /// The manager's CRM user id.
        manager: String,
        /// Why, in Russian.
        reasons: Vec<String>,
    },
    /// Nobody can take it now: it is on the pending list.
    Waiting {
        /// When the robot will look again at the latest.
        until: Option<DateTime<Utc>>,
        /// Why, in Russian.
        why: String,
    },
    /// Its priority is not for a person.
    NotRouted {
        /// Why, in Russian.
        why: String,
    },
    /// Given before (by the robot or by hand); any write left unfinished was finished.
    AlreadyGiven {
        /// The manager's CRM user id.
        manager: String,
    },
    /// Its responsible user is a manager of the roster: it stays theirs.
    Kept,
    /// Won, lost or gone: nothing to route.
    Closed,
    /// Another worker is deciding for this lead right now.
    Busy,
}

/// The manager the robot itself wrote as the lead's responsible user, if it did (not a
/// person's hand-over it followed): catch-up asks it to tell the robot's change of manager
/// from a person's.
pub async fn handed_by_robot(store: &Store, lead: &str) -> Result<Option<String>, StoreError> {
    let Some(v) = store.value(&given_key(lead)).await? else {
        return Ok(None);
    };
    let given: Given = serde_json::from_str(&v)?;
    Ok((given.written && !given.by_hand).then_some(given.manager))
}

/// The lead as the robot's hand-over read it before writing its manager, if that read was
/// not an event's (see [`ReadBeforeWrite`]).
pub async fn read_before_hand_over(
    store: &Store,
    lead: &str,
) -> Result<Option<ReadBeforeWrite>, StoreError> {
    let Some(v) = store.value(&given_key(lead)).await? else {
        return Ok(None);
    };
    let given: Given = serde_json::from_str(&v)?;
    Ok(given.read)
}

/// A source of the time: the real clock in `serve`, a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Hands leads out to the managers.
pub struct RouteLeads {
    crm: Arc<dyn Crm>,
    setup: RoutingSetup,
    clock: Clock,
}

/// The board of the department as the store has it now.
struct Snapshot {
    presence: Vec<Option<Heard>>,
    received: Vec<u32>,
    days: Vec<NaiveDate>,
}

fn waiting_key(lead: &str) -> String {
    format!("routing:waiting:{lead}")
}

fn given_key(lead: &str) -> String {
    format!("routing:given:{lead}")
}

fn crm_error(e: CrmError) -> HandlerError {
    HandlerError::Other(e.to_string())
}

impl RouteLeads {
    /// Routing of `crm`'s leads by `setup`, on the real clock.
    pub fn new(crm: Arc<dyn Crm>, setup: RoutingSetup) -> RouteLeads {
        RouteLeads {
            crm,
            setup,
            clock: Arc::new(Utc::now),
        }
    }

    /// The same, deciding at the times `clock` gives (a test's controlled day).
    pub fn with_clock(mut self, clock: Clock) -> RouteLeads {
        self.clock = clock;
        self
    }

    /// The time now, by this router's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// How often the pending list is looked at again without a presence change.
    pub fn recheck(&self) -> Duration {
        self.setup
            .rules
            .recheck
            .to_std()
            .unwrap_or(Duration::from_secs(30))
    }

    /// Whether `id` is a manager of the roster.
    pub fn is_manager(&self, id: &str) -> bool {
        self.setup.roster.index_of(id).is_some()
    }

    fn router(&self) -> Router<'_> {
        Router {
            roster: &self.setup.roster,
            rules: &self.setup.rules,
        }
    }

    async fn snapshot(&self, store: &Store, now: DateTime<Utc>) -> Result<Snapshot, StoreError> {
        let roster = &self.setup.roster;
        let mut presence = Vec::with_capacity(roster.managers.len());
        let mut received = Vec::with_capacity(roster.managers.len());
        let mut days = Vec::with_capacity(roster.managers.len());
        let mut loads: Vec<(NaiveDate, std::collections::HashMap<String, u32>)> = Vec::new();
        for m in &roster.managers {
            presence.push(store.presence(&m.id).await?.as_ref().map(Heard::from));
            // Each manager's count is of their own calendar day.
            let day = m.local(now).date();
            let i = match loads.iter().position(|(d, _)| *d == day) {
                Some(i) => i,
                None => {
                    loads.push((day, store.loads(day).await?));
                    loads.len() - 1
                }
            };
            received.push(loads[i].1.get(&m.id).copied().unwrap_or(0));
            days.push(day);
        }
        Ok(Snapshot {
            presence,
            received,
            days,
        })
    }

    /// Whatever an event says about a lead that routing cares for: a new lead is handed
    /// out; a lead moved by hand stays moved; a closed lead leaves the pending list.
    pub async fn on_lead(
        &self,
        kind: &EventKind,
        lead: &Lead,
        priority: Option<Priority>,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        let Some(token) = store.try_lock(&lead_lock(&lead.id), LEAD_LOCK).await? else {
            return Ok(Routed::Busy);
        };
        let result = self.on_lead_locked(kind, lead, priority, store).await;
        store.unlock(&lead_lock(&lead.id), &token).await?;
        result
    }

    async fn on_lead_locked(
        &self,
        kind: &EventKind,
        lead: &Lead,
        priority: Option<Priority>,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        let now = self.now();
        if closed(&lead.status_id).is_some() {
            self.forget_waiting(&lead.id, store).await?;
            return Ok(Routed::Closed);
        }
        if let Some(given) = self.given(&lead.id, store).await? {
            return self.follow(lead, given, store).await;
        }
        if let Some(waiting) = self.waiting(&lead.id, store).await? {
            if lead.responsible_user_id != waiting.responsible
                && !self
                    .setup
                    .rules
                    .takes(&self.setup.roster, lead.responsible_user_id.as_deref())
            {
                return self.taken_by_hand(lead, store, now).await;
            }
            // A new priority or new facts count from now on; the wait goes on.
            if let Some(p) = priority {
                let updated = Waiting {
                    facts: routing_facts(lead),
                    priority: p.number(),
                    ..waiting
                };
                self.save_waiting(&lead.id, &updated, store).await?;
                store.add_pending(&lead.id, p, updated.since).await?;
            }
            return Ok(Routed::Waiting {
                until: None,
                why: "ждет менеджера".into(),
            });
        }
        let new = matches!(
            kind,
            EventKind::LeadCreated { .. } | EventKind::UnsortedCreated { .. }
        );
        if !new {
            return Ok(Routed::Kept);
        }
        if !self
            .setup
            .rules
            .takes(&self.setup.roster, lead.responsible_user_id.as_deref())
        {
            return Ok(Routed::Kept);
        }
        self.start(lead, priority.unwrap_or(Priority::UNSCORED), store, now)
            .await
    }

    /// Hands a lead out now whoever's it is, because a person asked (`route --lead`): a
    /// lead given before only gets its unfinished writes; a waiting one is decided again.
    pub async fn route_now(
        &self,
        lead: &Lead,
        priority: Priority,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        let Some(token) = store.try_lock(&lead_lock(&lead.id), LEAD_LOCK).await? else {
            return Ok(Routed::Busy);
        };
        let result = self.route_now_locked(lead, priority, store).await;
        store.unlock(&lead_lock(&lead.id), &token).await?;
        result
    }

    async fn route_now_locked(
        &self,
        lead: &Lead,
        priority: Priority,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        let now = self.now();
        if closed(&lead.status_id).is_some() {
            return Ok(Routed::Closed);
        }
        if let Some(given) = self.given(&lead.id, store).await? {
            return self.follow(lead, given, store).await;
        }
        self.start(lead, priority, store, now).await
    }

    async fn start(
        &self,
        lead: &Lead,
        priority: Priority,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Routed, HandlerError> {
        let waiting = match self.waiting(&lead.id, store).await? {
            Some(w) => Waiting {
                facts: routing_facts(lead),
                priority: priority.number(),
                ..w
            },
            None => Waiting {
                facts: routing_facts(lead),
                priority: priority.number(),
                group: None,
                entered: now,
                since: now,
                responsible: lead.responsible_user_id.clone(),
            },
        };
        let mut snapshot = self.snapshot(store, now).await?;
        self.settle(&lead.id, Some(lead), waiting, &mut snapshot, store, now)
            .await
    }

    /// Decides for one lead, through overflows and lost races, and carries the decision out.
    async fn settle(
        &self,
        lead_id: &str,
        seen: Option<&Lead>,
        mut waiting: Waiting,
        snapshot: &mut Snapshot,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Routed, HandlerError> {
        let router = self.router();
        let roster = &self.setup.roster;
        let priority = Priority::new(waiting.priority).unwrap_or(Priority::UNSCORED);
        let mut tries = 0;
        let mut hops = 0;
        loop {
            let group = waiting.group.as_deref().and_then(|g| roster.group_named(g));
            let request = Request {
                facts: &waiting.facts,
                priority,
                waited: (now - waiting.entered).max(TimeDelta::zero()),
                group,
            };
            let board = Board {
                presence: &snapshot.presence,
                received: &snapshot.received,
            };
            let decision = router.decide(&request, &board, now, &mut rand::rng());
            let (manager, reasons, task) = match decision {
                Decision::Assign {
                    manager,
                    reasons,
                    task,
                } => (manager, reasons, task),
                Decision::Overflow {
                    to: OverflowTo::Group(g),
                    why,
                } if hops < HOPS => {
                    hops += 1;
                    tracing::info!(lead = %lead_id, why = %why, "overflow to another group");
                    ::metrics::counter!(ROUTED, "outcome" => "overflow").increment(1);
                    waiting.group = Some(roster.groups[g].name.clone());
                    waiting.entered = now;
                    continue;
                }
                Decision::Overflow {
                    to: OverflowTo::Manager(m),
                    why,
                } => {
                    ::metrics::counter!(ROUTED, "outcome" => "overflow").increment(1);
                    (m, vec![why], self.first_task(priority, now))
                }
                Decision::Overflow { why, .. } => {
                    return self
                        .wait(lead_id, &waiting, priority, None, why, store)
                        .await;
                }
                Decision::Wait { until, why } => {
                    return self
                        .wait(lead_id, &waiting, priority, until, why, store)
                        .await;
                }
                Decision::NotRouted { why } => {
                    self.forget_waiting(lead_id, store).await?;
                    tracing::info!(lead = %lead_id, why = %why, "not routed to a person");
                    ::metrics::counter!(ROUTED, "outcome" => "not_routed").increment(1);
                    return Ok(Routed::NotRouted { why });
                }
            };
            let m = &roster.managers[manager];
            let day = snapshot.days[manager];
            match store
                .claim_lead(day, lead_id, &m.id, snapshot.received[manager])
                .await?
            {
                claim @ (Claim::Claimed | Claim::AlreadyAssigned(_)) => {
                    // Already given today without a record of it: an earlier attempt died
                    // between the claim and the record. The lead stays with whoever has it.
                    let (manager, m) = match claim {
                        Claim::AlreadyAssigned(who) if who != m.id => match roster.index_of(&who) {
                            Some(i) => (i, &roster.managers[i]),
                            None => (manager, m),
                        },
                        Claim::Claimed => {
                            snapshot.received[manager] += 1;
                            (manager, m)
                        }
                        _ => (manager, m),
                    };
                    let day = snapshot.days[manager];
                    let given = Given {
                        manager: m.id.clone(),
                        day,
                        reasons,
                        task: task.map(|t: FirstTask| PlannedTask {
                            text: t.text,
                            due: t.due,
                        }),
                        written: false,
                        tasked: false,
                        noted: false,
                        by_hand: false,
                        read: None,
                    };
                    self.save_given(lead_id, &given, store).await?;
                    let reasons = given.reasons.clone();
                    self.finish(lead_id, seen, given, store).await?;
                    self.forget_waiting(lead_id, store).await?;
                    tracing::info!(lead = %lead_id, manager = %m.id, name = %m.name, reasons = %reasons.join("; "), "lead routed");
                    ::metrics::counter!(ROUTED, "outcome" => "assigned").increment(1);
                    return Ok(Routed::Assigned {
                        manager: m.id.clone(),
                        reasons,
                    });
                }
                Claim::Moved { count } => {
                    // Another worker gave this manager a lead meanwhile: decide again with
                    // the fresh count, and everyone else's.
                    tries += 1;
                    if tries >= CLAIM_TRIES {
                        *snapshot = self.snapshot(store, now).await?;
                    } else {
                        snapshot.received[manager] = count;
                    }
                    if tries > CLAIM_TRIES * 2 {
                        return self
                            .wait(
                                lead_id,
                                &waiting,
                                priority,
                                None,
                                "другие обработчики раздают лиды одновременно; повторим".into(),
                                store,
                            )
                            .await;
                    }
                }
            }
        }
    }

    fn first_task(&self, priority: Priority, now: DateTime<Utc>) -> Option<FirstTask> {
        self.setup
            .rules
            .priority(priority)
            .task
            .as_ref()
            .map(|t| FirstTask {
                text: t.text.clone(),
                due: now + t.deadline,
            })
    }

    async fn wait(
        &self,
        lead_id: &str,
        waiting: &Waiting,
        priority: Priority,
        until: Option<DateTime<Utc>>,
        why: String,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        self.save_waiting(lead_id, waiting, store).await?;
        store.add_pending(lead_id, priority, waiting.since).await?;
        tracing::info!(lead = %lead_id, why = %why, until = ?until, "lead waits for a manager");
        ::metrics::counter!(ROUTED, "outcome" => "waiting").increment(1);
        Ok(Routed::Waiting { until, why })
    }

    /// Carries out the writes of a handed-out lead that are not done yet: the responsible
    /// user, the first task, the note. Each is recorded as done right after it is, so that
    /// a retry does only what is left.
    /// `seen` is the lead as the caller has just read it, if it has; else it is read here.
    async fn finish(
        &self,
        lead_id: &str,
        seen: Option<&Lead>,
        mut given: Given,
        store: &Store,
    ) -> Result<(), HandlerError> {
        if given.by_hand {
            return Ok(());
        }
        if !given.written {
            let read;
            let current = match seen {
                Some(lead) => lead,
                None => {
                    read = self.crm.lead(lead_id).await.map_err(crm_error)?;
                    let Some(lead) = &read else {
                        // Deleted meanwhile: nothing to write.
                        return Ok(());
                    };
                    given.read = Some(ReadBeforeWrite {
                        updated_at: lead.updated_at,
                        updated_by: lead.updated_by.clone(),
                    });
                    lead
                }
            };
            if current.responsible_user_id.as_deref() != Some(given.manager.as_str()) {
                let update = LeadUpdate {
                    responsible_user_id: Some(given.manager.clone()),
                    ..LeadUpdate::default()
                };
                self.crm
                    .update_lead(lead_id, &update)
                    .await
                    .map_err(crm_error)?;
            }
            given.written = true;
            self.save_given(lead_id, &given, store).await?;
        }
        if !given.tasked {
            if let Some(task) = &given.task {
                let new = NewTask {
                    kind: TaskKind::Call,
                    text: task.text.clone(),
                    deadline: task.due.timestamp(),
                    responsible_user_id: given.manager.clone(),
                    entity: EntityRef::lead(lead_id),
                };
                self.crm.create_task(&new).await.map_err(crm_error)?;
            }
            given.tasked = true;
            self.save_given(lead_id, &given, store).await?;
        }
        if !given.noted {
            let name = self
                .setup
                .roster
                .index_of(&given.manager)
                .map_or(given.manager.as_str(), |i| {
                    self.setup.roster.managers[i].name.as_str()
                });
            let text = format!(
                "Робот передал лид менеджеру {name}: {}.",
                given.reasons.join("; ")
            );
            self.crm
                .add_note(&EntityRef::lead(lead_id), &text)
                .await
                .map_err(crm_error)?;
            given.noted = true;
            self.save_given(lead_id, &given, store).await?;
        }
        Ok(())
    }

    /// A lead the robot knows as given: finish what is left of its writes, or follow a
    /// person who moved it to someone else.
    async fn follow(
        &self,
        lead: &Lead,
        mut given: Given,
        store: &Store,
    ) -> Result<Routed, HandlerError> {
        let settled = given.by_hand || given.written;
        match lead.responsible_user_id.as_deref() {
            Some(now_with) if settled && now_with != given.manager => {
                // A person moved it: the load moves with it, counted on the day it was given.
                let before = store.reassign(given.day, &lead.id, now_with).await?;
                tracing::info!(lead = %lead.id, from = ?before, to = %now_with, "lead moved by hand; the loads follow");
                ::metrics::counter!(ROUTED, "outcome" => "by_hand").increment(1);
                given.manager = now_with.to_owned();
                given.by_hand = true;
                self.save_given(&lead.id, &given, store).await?;
                Ok(Routed::AlreadyGiven {
                    manager: given.manager,
                })
            }
            _ => {
                let manager = given.manager.clone();
                self.finish(&lead.id, Some(lead), given, store).await?;
                Ok(Routed::AlreadyGiven { manager })
            }
        }
    }

    /// A waiting lead that a person gave to a manager: it leaves the list and counts as theirs.
    async fn taken_by_hand(
        &self,
        lead: &Lead,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Routed, HandlerError> {
        let manager = lead.responsible_user_id.clone().unwrap_or_default();
        let day = self
            .setup
            .roster
            .index_of(&manager)
            .map_or(now.date_naive(), |i| {
                self.setup.roster.managers[i].local(now).date()
            });
        store.reassign(day, &lead.id, &manager).await?;
        let given = Given {
            manager: manager.clone(),
            day,
            reasons: vec!["передан вручную в CRM".into()],
            task: None,
            written: true,
            tasked: true,
            noted: true,
            by_hand: true,
            read: None,
        };
        self.save_given(&lead.id, &given, store).await?;
        self.forget_waiting(&lead.id, store).await?;
        tracing::info!(lead = %lead.id, manager = %manager, "a waiting lead was given by hand");
        ::metrics::counter!(ROUTED, "outcome" => "by_hand").increment(1);
        Ok(Routed::AlreadyGiven { manager })
    }

    /// Looks at every waiting lead again, priority 1 first, then the oldest: those someone
    /// can take now are handed out. One worker at a time does it.
    ///
    /// A drain that finds another one running asks it to go round again rather than
    /// skipping: the other may have read the managers before the change that caused this
    /// one, and the lead that change frees would otherwise wait for the periodic drain.
    pub async fn drain(&self, store: &Store) -> Result<Drained, HandlerError> {
        let mut total = Drained::default();
        for _ in 0..DRAIN_ROUNDS {
            let token = match store.try_lock(DRAIN_LOCK, Duration::from_secs(60)).await? {
                Some(token) => token,
                None => {
                    store.set_value(DRAIN_AGAIN, "1").await?;
                    // The other may have finished between the two looks and missed the flag.
                    match store.try_lock(DRAIN_LOCK, Duration::from_secs(60)).await? {
                        Some(token) => token,
                        None => return Ok(total),
                    }
                }
            };
            store.remove_value(DRAIN_AGAIN).await?;
            let result = self.drain_locked(store, self.now()).await;
            store.unlock(DRAIN_LOCK, &token).await?;
            let drained = result?;
            total.assigned.extend(drained.assigned);
            total.still_waiting = drained.still_waiting;
            if store.value(DRAIN_AGAIN).await?.is_none() {
                break;
            }
        }
        Ok(total)
    }

    async fn drain_locked(
        &self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Drained, HandlerError> {
        let pending = store.pending().await?;
        let mut drained = Drained::default();
        if pending.is_empty() {
            ::metrics::gauge!(PENDING).set(0.0);
            return Ok(drained);
        }
        let mut snapshot = self.snapshot(store, now).await?;
        // A lead whose own job holds it is looked at again when the rest is done: that job
        // holds it briefly, and on a waiting lead it only notes what changed, so once it
        // lets go this drain decides for it with what it read.
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        let mut left = pending;
        loop {
            let mut busy = Vec::new();
            for p in left {
                match store.try_lock(&lead_lock(&p.lead_id), LEAD_LOCK).await? {
                    Some(token) => {
                        self.drain_locked_one(&p, token, &mut snapshot, store, now, &mut drained)
                            .await?
                    }
                    None => busy.push(p),
                }
            }
            if busy.is_empty() || tokio::time::Instant::now() >= deadline {
                drained.still_waiting += busy.len();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = busy;
        }
        ::metrics::gauge!(PENDING).set(drained.still_waiting as f64);
        Ok(drained)
    }

    /// Decides for one waiting lead whose lock this drain holds, and lets go of it.
    async fn drain_locked_one(
        &self,
        p: &crate::adapters::store::Pending,
        token: String,
        snapshot: &mut Snapshot,
        store: &Store,
        now: DateTime<Utc>,
        drained: &mut Drained,
    ) -> Result<(), HandlerError> {
        let result = self.drain_one(p, snapshot, store, now).await;
        store.unlock(&lead_lock(&p.lead_id), &token).await?;
        match result? {
            Some(Routed::Assigned { manager, .. }) => drained.assigned.push(manager),
            Some(Routed::AlreadyGiven { manager }) => drained.assigned.push(manager),
            Some(Routed::Waiting { .. }) => drained.still_waiting += 1,
            _ => {}
        }
        Ok(())
    }

    /// Looks at one waiting lead again, under its lock.
    async fn drain_one(
        &self,
        p: &crate::adapters::store::Pending,
        snapshot: &mut Snapshot,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Option<Routed>, HandlerError> {
        // A lead given meanwhile (a crash between the claim and leaving the list) only needs
        // its writes finished.
        if let Some(given) = self.given(&p.lead_id, store).await? {
            let manager = given.manager.clone();
            self.finish(&p.lead_id, None, given, store).await?;
            self.forget_waiting(&p.lead_id, store).await?;
            return Ok(Some(Routed::AlreadyGiven { manager }));
        }
        let waiting = match self.waiting(&p.lead_id, store).await? {
            Some(waiting) => waiting,
            // No snapshot (the list was filled by an older version): read the lead.
            None => match self.crm.lead(&p.lead_id).await.map_err(crm_error)? {
                Some(lead) if closed(&lead.status_id).is_none() => Waiting {
                    facts: routing_facts(&lead),
                    priority: p.priority.number(),
                    group: None,
                    entered: p.since,
                    since: p.since,
                    responsible: lead.responsible_user_id.clone(),
                },
                _ => {
                    self.forget_waiting(&p.lead_id, store).await?;
                    return Ok(None);
                }
            },
        };
        self.settle(&p.lead_id, None, waiting, snapshot, store, now)
            .await
            .map(Some)
    }

    /// Drains the pending list every [`RouteLeads::recheck`] until `stop`.
    pub async fn run(self: Arc<Self>, store: Store, stop: CancellationToken) {
        let every = self.recheck();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.drain(&store).await {
                Ok(d) if !d.assigned.is_empty() => {
                    tracing::info!(
                        assigned = d.assigned.len(),
                        waiting = d.still_waiting,
                        "waiting leads handed out"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not look at the waiting leads; will try again")
                }
            }
        }
    }

    async fn given(&self, lead: &str, store: &Store) -> Result<Option<Given>, StoreError> {
        Ok(match store.value(&given_key(lead)).await? {
            Some(v) => Some(serde_json::from_str(&v)?),
            None => None,
        })
    }

    async fn save_given(&self, lead: &str, given: &Given, store: &Store) -> Result<(), StoreError> {
        store
            .set_value(&given_key(lead), &serde_json::to_string(given)?)
            .await
    }

    async fn waiting(&self, lead: &str, store: &Store) -> Result<Option<Waiting>, StoreError> {
        Ok(match store.value(&waiting_key(lead)).await? {
            Some(v) => Some(serde_json::from_str(&v)?),
            None => None,
        })
    }

    async fn save_waiting(
        &self,
        lead: &str,
        waiting: &Waiting,
        store: &Store,
    ) -> Result<(), StoreError> {
        store
            .set_value(&waiting_key(lead), &serde_json::to_string(waiting)?)
            .await
    }

    async fn forget_waiting(&self, lead: &str, store: &Store) -> Result<(), StoreError> {
        store.remove_pending(lead).await?;
        store.remove_value(&waiting_key(lead)).await
    }
}

/// What one look at the pending list did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// The managers (CRM user ids) of the leads handed out, one per lead.
    pub assigned: Vec<String>,
    /// Leads still waiting.
    pub still_waiting: usize,
}
