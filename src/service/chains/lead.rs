//! What the engine reads of a lead: the facts chains decide on (the stage and the refusal
//! reason by their names, the outcome, the priority), the client's phones and e-mail, the
//! client's time zone, and what a template sees. The account's names (stages, refusal
//! reasons, users) are read from the CRM once and again when an unknown id shows up.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::RwLock;

use super::state;
use crate::adapters::crm::{Client, Crm, CrmError};
use crate::adapters::store::{Store, StoreError};
use crate::adapters::wazzup::send::whatsapp_chat_id;
use crate::domain::chains::facts::{LOSS_REASON, LOST, OUTCOME, PRIORITY, STAGE, WON};
use crate::domain::chains::{
    Calendar, CompanyView, ContactView, LeadView, ManagerView, MessageView, ProductView,
    PurchaseView, TemplateContext,
};
use crate::domain::condition::{Facts, TAGS};
use crate::domain::lead::{Closed, FieldValue, Lead, closed};
use crate::domain::manager::Manager;
use crate::domain::priority::Priority;
use crate::domain::product::{Analogue, Product, analogues_for};
use crate::domain::task::{Named, Stage};

/// The account's names the engine needs.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Every stage of every pipeline.
    pub stages: Vec<Stage>,
    /// The refusal reasons.
    pub reasons: Vec<Named>,
    /// The users.
    pub managers: Vec<Manager>,
}

impl Names {
    /// Reads them from the CRM.
    pub async fn read(crm: &dyn Crm) -> Result<Names, CrmError> {
        Ok(Names {
            stages: crm.stages().await?,
            reasons: crm.loss_reasons().await?,
            managers: crm.managers().await?,
        })
    }

    /// The name of the stage `id`.
    pub fn stage(&self, id: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.name.as_str())
    }

    /// The stage called `name`, in `pipeline` when it has one so called, else in any.
    pub fn stage_named(&self, name: &str, pipeline: &str) -> Option<&Stage> {
        let same = |s: &&Stage| same_name(&s.name, name);
        self.stages
            .iter()
            .filter(same)
            .find(|s| s.pipeline.id == pipeline)
            .or_else(|| self.stages.iter().find(same))
    }

    /// The refusal reason called `name`.
    pub fn reason_named(&self, name: &str) -> Option<&Named> {
        self.reasons.iter().find(|r| same_name(&r.name, name))
    }

    /// A refusal reason as a lead carries it (a name, or an id) turned into its name.
    pub fn reason(&self, given: &str) -> String {
        self.reasons
            .iter()
            .find(|r| r.id == given)
            .map_or_else(|| given.to_owned(), |r| r.name.clone())
    }

    /// The user `id`.
    pub fn manager(&self, id: &str) -> Option<&Manager> {
        self.managers.iter().find(|m| m.id == id)
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// The names, read once and again when a lead names a stage they do not have.
#[derive(Debug, Default)]
pub struct NamesCache {
    names: RwLock<Option<Arc<Names>>>,
}

impl NamesCache {
    /// The names, knowing the stage `stage_id` when the account has it.
    pub async fn get(&self, crm: &dyn Crm, stage_id: Option<&str>) -> Result<Arc<Names>, CrmError> {
        if let Some(names) = self.names.read().await.as_ref()
            && stage_id.is_none_or(|id| names.stage(id).is_some())
        {
            return Ok(names.clone());
        }
        let fresh = Arc::new(Names::read(crm).await?);
        *self.names.write().await = Some(fresh.clone());
        Ok(fresh)
    }
}

/// A lead as the engine reads it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The facts chains decide on.
    pub facts: Facts,
    /// The priority scoring wrote in the lead's `priority` field.
    pub priority: Option<Priority>,
    /// The client's zone: the contact's (or company's) region's, else the account's.
    pub zone: Tz,
    /// The client's WhatsApp numbers, digits with the country code, the main contact's
    /// first.
    pub phones: Vec<String>,
    /// The client's e-mail, the main contact's first.
    pub email: Option<String>,
    /// Who the client is for the one-message-a-day limit: the main contact, else the
    /// company, else the lead.
    pub client: String,
}

/// The facts of a lead: its mapped fields, tags, budget and manager, its stage and refusal
/// reason by name, and how it ended.
pub fn facts_of(lead: &Lead, names: &Names) -> Facts {
    let mut facts: Facts = lead.fields.clone();
    if !lead.tags.is_empty() {
        facts.insert(TAGS.into(), FieldValue::Many(lead.tags.clone()));
    }
    if let Some(b) = lead.budget {
        facts.insert("budget".into(), FieldValue::Number(b));
    }
    if let Some(r) = &lead.responsible_user_id {
        facts.insert("responsible".into(), FieldValue::Text(r.clone()));
    }
    set_stage(&mut facts, &lead.status_id, names);
    if let Some(reason) = &lead.loss_reason {
        facts.insert(LOSS_REASON.into(), FieldValue::Text(names.reason(reason)));
    }
    facts
}

/// Sets the stage (by name) and the outcome of `status_id` in `facts`.
pub fn set_stage(facts: &mut Facts, status_id: &str, names: &Names) {
    let name = names.stage(status_id).unwrap_or(status_id);
    facts.insert(STAGE.into(), FieldValue::Text(name.to_owned()));
    match closed(status_id) {
        Some(Closed::Won) => {
            facts.insert(OUTCOME.into(), FieldValue::Text(WON.into()));
        }
        Some(Closed::Lost) => {
            facts.insert(OUTCOME.into(), FieldValue::Text(LOST.into()));
        }
        None => {
            facts.remove(OUTCOME);
        }
    }
}

/// What the engine reads of `lead`.
pub fn seen(lead: &Lead, names: &Names, calendar: &Calendar) -> Seen {
    let facts = facts_of(lead, names);
    let priority = facts
        .get(PRIORITY)
        .and_then(FieldValue::as_number)
        .filter(|n| (1.0..=5.0).contains(n))
        .and_then(|n| Priority::new(n.round() as u8).ok());
    let main = lead.main_contact();
    let contacts = main.into_iter().chain(lead.contacts.iter());
    let mut phones: Vec<String> = Vec::new();
    for phone in contacts.clone().flat_map(|c| c.phones.iter()) {
        if let Some(id) = whatsapp_chat_id(phone)
            && !phones.contains(&id)
        {
            phones.push(id);
        }
    }
    let email = contacts
        .flat_map(|c| c.emails.iter())
        .find(|e| e.contains('@'))
        .cloned();
    let region = main
        .and_then(|c| c.fields.get("region"))
        .or_else(|| lead.company.as_ref().and_then(|c| c.fields.get("region")))
        .map(FieldValue::as_text);
    let client = match (main, &lead.company) {
        (Some(c), _) => format!("contact:{}", c.id),
        (None, Some(c)) => format!("company:{}", c.id),
        (None, None) => format!("lead:{}", lead.id),
    };
    Seen {
        facts,
        priority,
        zone: calendar.zone_for(region.as_deref()),
        phones,
        email,
        client,
    }
}

fn text_fields(fields: &crate::domain::lead::Fields) -> std::collections::BTreeMap<String, String> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), v.as_text()))
        .collect()
}

/// The lists a template shows that cost a read: the client's earlier purchases (the CRM),
/// the products of the request and their analogues (the CRM), the last messages (the
/// store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// `purchases`.
    pub purchases: bool,
    /// `products` or `analogues`.
    pub products: bool,
    /// `messages`.
    pub messages: bool,
}

impl Needs {
    /// What the placeholders of one or more templates ask for ("purchases", "lead.name"…).
    pub fn of<'a>(placeholders: impl IntoIterator<Item = &'a String>) -> Needs {
        let mut needs = Needs::default();
        for p in placeholders {
            match p.split('.').next() {
                Some("purchases") => needs.purchases = true,
                Some("products" | "analogues") => needs.products = true,
                Some("messages") => needs.messages = true,
                _ => {}
            }
        }
        needs
    }
}

/// Where a template's lists come from, beside the lead.
pub struct Sources<'a> {
    /// The CRM, for the purchases and the products.
    pub crm: &'a dyn Crm,
    /// The store, for the last messages.
    pub store: &'a Store,
    /// `[[analogues]]` of `chains.toml`.
    pub analogues: &'a [Analogue],
    /// The client's WhatsApp numbers and time zone.
    pub seen: &'a Seen,
}

/// Why a template's context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The CRM did not answer.
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a template sees of `lead`. The lists that cost a read are read only when `needs`
/// says a template shows them; dates are on the client's clock.
pub async fn context_of(
    lead: &Lead,
    names: &Names,
    from: &Sources<'_>,
    needs: Needs,
) -> Result<TemplateContext, ContextError> {
    let zone = from.seen.zone;
    let stage = names.stage(&lead.status_id).unwrap_or_default().to_owned();
    let contact = lead.main_contact().map_or_else(ContactView::default, |c| {
        let field = |name: &str| c.fields.get(name).map(FieldValue::as_text);
        ContactView {
            name: c.name.clone(),
            first_name: field("first_name")
                .or_else(|| c.first_name.clone())
                .unwrap_or_default(),
            phone: c.phones.first().cloned().unwrap_or_default(),
            email: c.emails.first().cloned().unwrap_or_default(),
        }
    });
    let manager = lead
        .responsible_user_id
        .as_deref()
        .and_then(|id| names.manager(id))
        .map_or_else(ManagerView::default, |m| ManagerView {
            name: m.name.clone(),
            phone: String::new(),
            email: m.email.clone().unwrap_or_default(),
        });
    let mut context = TemplateContext {
        lead: LeadView {
            id: lead.id.clone(),
            name: lead.name.clone(),
            budget: lead.budget,
            stage,
            loss_reason: lead
                .loss_reason
                .as_deref()
                .map(|r| names.reason(r))
                .unwrap_or_default(),
            request: lead
                .fields
                .get("request")
                .map(FieldValue::as_text)
                .unwrap_or_default(),
            fields: text_fields(&lead.fields),
        },
        contact,
        company: lead
            .company
            .as_ref()
            .map_or_else(CompanyView::default, |c| CompanyView {
                name: c.name.clone(),
                fields: text_fields(&c.fields),
            }),
        manager,
        ..TemplateContext::default()
    };
    if needs.products {
        let products = from.crm.lead_products(&lead.id).await?;
        context.analogues = analogues_for(&products, from.analogues)
            .iter()
            .map(product_view)
            .collect();
        context.products = products.iter().map(product_view).collect();
    }
    if needs.messages {
        context.messages = state::messages_of(from.store, &from.seen.phones)
            .await?
            .into_iter()
            .map(|m| MessageView {
                at: m
                    .at
                    .with_timezone(&zone)
                    .format("%d.%m.%Y %H:%M")
                    .to_string(),
                from_client: m.from_client,
                text: m.text,
            })
            .collect();
    }
    if needs.purchases
        && let Some(client) = Client::of(lead)
    {
        let mut won: Vec<Lead> = from
            .crm
            .client_leads(&client)
            .await?
            .into_iter()
            .filter(|l| l.id != lead.id && closed(&l.status_id) == Some(Closed::Won))
            .collect();
        won.sort_by_key(|l| std::cmp::Reverse(l.updated_at.max(l.created_at)));
        context.purchases = won
            .iter()
            .map(|l| PurchaseView {
                date: DateTime::<Utc>::from_timestamp(l.updated_at.max(l.created_at), 0)
                    .map(|d| d.with_timezone(&zone).format("%d.%m.%Y").to_string())
                    .unwrap_or_default(),
                name: l.name.clone(),
                amount: l.budget,
            })
            .collect();
    }
    Ok(context)
}

fn product_view(p: &Product) -> ProductView {
    ProductView {
        name: p.name.clone(),
        brand: p.brand.clone().unwrap_or_default(),
        quantity: p.quantity,
        price: p.price,
    }
}
