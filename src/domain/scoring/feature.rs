//! What the scoring looks at: features declared in `scoring.toml`, and a lead's values of
//! them (an [`Observation`]).
//!
//! The seed's three groups: how the lead came (the shop, the channel), what was asked (the
//! category, the brand) and who the client is (person or company, the company's activity,
//! whether it is "profile" for the business, its turnover, its history with us).

use serde::{Deserialize, Serialize};

use crate::domain::lead::{FieldValue, Lead};

/// Whether a feature's values are labels or amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Labels: a shop, a channel, a brand. Each label learns its own effect.
    Category,
    /// Amounts: a turnover, a count. Cut into bands by the quantiles of past leads, so that
    /// the effect need not be a straight line.
    Number,
}

/// Values the robot derives itself rather than reads from one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derived {
    /// "Юрлицо" when the lead has a company, else "Физлицо".
    ClientType,
    /// "производство", "торговля" or "услуги", from the company's OKVED code.
    Activity,
    /// "профильная" or "непрофильная": whether the OKVED code starts with a profile prefix.
    Profile,
    /// How many requests the client made before this one.
    HistoryRequests,
    /// The share of the client's earlier requests that ended in a sale (absent when none).
    HistoryWonShare,
}

/// Where a feature's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A lead field, by the robot's name (`category`, `brand`, `channel`…).
    Field(String),
    /// A field of the lead's main contact.
    ContactField(String),
    /// A field of the lead's company (`turnover`, `okved`…).
    CompanyField(String),
    /// The first of these tags that the lead has.
    Tags(Vec<String>),
    /// Computed by the robot.
    Derived(Derived),
}

/// One feature of the scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// Its name: the column of the training file, and the fact name in conditions.
    pub name: String,
    /// How the head of sales calls it, for the reasons shown with a score.
    pub title: String,
    /// Labels or amounts.
    pub kind: FeatureKind,
    /// Where its value comes from.
    pub source: Source,
}

/// One value of a feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// An amount.
    Number(f64),
    /// A label.
    Category(String),
}

impl Value {
    /// The value as a fact for conditions.
    pub fn to_fact(&self) -> FieldValue {
        match self {
            Value::Number(n) => FieldValue::Number(*n),
            Value::Category(c) => FieldValue::Text(c.clone()),
        }
    }
}

/// A lead's values of the features, in the order the features are declared; `None` where
/// the value is unknown (a field not filled in), which the model treats as its own case.
pub type Observation = Vec<Option<Value>>;

/// The OKVED prefixes that the derived features read (from `scoring.toml`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Okved {
    /// The company field holding the OKVED code.
    pub field: String,
    /// Codes of the business's profile (metalworking for a welding distributor).
    pub profile: Vec<String>,
    /// Codes of production.
    pub production: Vec<String>,
    /// Codes of trade.
    pub trade: Vec<String>,
}

/// The client's earlier requests, as counted by the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// Requests before this one.
    pub requests: u32,
    /// How many of them ended in a sale.
    pub won: u32,
}

impl History {
    /// A client's history as of a lead created at `before` (Unix seconds): their other
    /// leads created earlier are the requests, the won ones among them the sales. Each
    /// item is a lead's creation time and whether it was won.
    pub fn before(before: i64, leads: impl IntoIterator<Item = (i64, bool)>) -> History {
        leads
            .into_iter()
            .filter(|(created, _)| *created < before)
            .fold(History::default(), |h, (_, won)| History {
                requests: h.requests + 1,
                won: h.won + u32::from(won),
            })
    }
}

/// A lead's value of `feature`, read as the feature's kind says: a number feature whose
/// field holds no number is unknown, and text is trimmed.
pub fn value_of(feature: &Feature, lead: &Lead, okved: &Okved, history: History) -> Option<Value> {
    let field = |fields: &crate::domain::lead::Fields, name: &str| fields.get(name).cloned();
    let raw: Option<FieldValue> = match &feature.source {
        Source::Field(name) => match name.as_str() {
            "budget" => lead.budget.map(FieldValue::Number),
            _ => field(&lead.fields, name),
        },
        Source::ContactField(name) => lead.contacts.first().and_then(|c| field(&c.fields, name)),
        Source::CompanyField(name) => lead.company.as_ref().and_then(|c| field(&c.fields, name)),
        Source::Tags(wanted) => wanted
            .iter()
            .find(|w| {
                let wanted = w.trim().to_lowercase();
                lead.tags.iter().any(|t| t.trim().to_lowercase() == wanted)
            })
            .map(|t| FieldValue::Text(t.clone())),
        Source::Derived(d) => derived(*d, lead, okved, history),
    };
    read_as(feature.kind, raw?)
}

/// A raw value read as `kind`: the form a training file's cell and a CRM field share.
pub fn read_as(kind: FeatureKind, raw: FieldValue) -> Option<Value> {
    match kind {
        FeatureKind::Number => raw.as_number().filter(|n| n.is_finite()).map(Value::Number),
        FeatureKind::Category => {
            let text = raw.as_text();
            let text = text.trim();
            (!text.is_empty()).then(|| Value::Category(text.to_owned()))
        }
    }
}

/// A lead's values of all the features.
pub fn observe(features: &[Feature], lead: &Lead, okved: &Okved, history: History) -> Observation {
    features
        .iter()
        .map(|f| value_of(f, lead, okved, history))
        .collect()
}

fn derived(d: Derived, lead: &Lead, okved: &Okved, history: History) -> Option<FieldValue> {
    let code = || {
        lead.company
            .as_ref()
            .and_then(|c| c.fields.get(&okved.field))
            .map(|v| v.as_text().trim().to_owned())
            .filter(|c| !c.is_empty())
    };
    let text = |s: &str| Some(FieldValue::Text(s.to_owned()));
    match d {
        Derived::ClientType => {
            if lead.company.is_some() {
                text("Юрлицо")
            } else {
                text("Физлицо")
            }
        }
        Derived::Activity => {
            let code = code()?;
            if starts_with_any(&code, &okved.production) {
                text("производство")
            } else if starts_with_any(&code, &okved.trade) {
                text("торговля")
            } else {
                text("услуги")
            }
        }
        Derived::Profile => {
            let code = code()?;
            text(if starts_with_any(&code, &okved.profile) {
                "профильная"
            } else {
                "непрофильная"
            })
        }
        Derived::HistoryRequests => Some(FieldValue::Number(history.requests.into())),
        Derived::HistoryWonShare => (history.requests > 0)
            .then(|| FieldValue::Number(f64::from(history.won) / f64::from(history.requests))),
    }
}

/// Whether an OKVED code falls under one of the prefixes: "25" covers "25.62" but not
/// "2.5" or "250", since OKVED groups by the dotted parts.
fn starts_with_any(code: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim();
        code == p
            || code
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::Company;

    fn okved() -> Okved {
        Okved {
            field: "okved".into(),
            profile: vec!["25".into(), "28.4".into()],
            production: (10..=33).map(|n| n.to_string()).collect(),
            trade: vec!["45".into(), "46".into(), "47".into()],
        }
    }

    fn feature(name: &str, kind: FeatureKind, source: Source) -> Feature {
        Feature {
            name: name.into(),
            title: name.into(),
            kind,
            source,
        }
    }

    fn company(okved: &str) -> Company {
        Company {
            id: "7".into(),
            name: "ООО Металл".into(),
            fields: [("okved".into(), FieldValue::Text(okved.into()))].into(),
            ..Company::default()
        }
    }

    #[test]
    fn the_company_s_okved_gives_activity_and_profile() {
        let activity = feature(
            "activity",
            FeatureKind::Category,
            Source::Derived(Derived::Activity),
        );
        let profile = feature(
            "profile",
            FeatureKind::Category,
            Source::Derived(Derived::Profile),
        );
        let mut lead = Lead {
            company: Some(company("25.62")),
            ..Lead::default()
        };
        let cat = |s: &str| Some(Value::Category(s.into()));
        assert_eq!(
            value_of(&activity, &lead, &okved(), History::default()),
            cat("производство")
        );
        assert_eq!(
            value_of(&profile, &lead, &okved(), History::default()),
            cat("профильная")
        );
        lead.company = Some(company("10.51"));
        assert_eq!(
            value_of(&profile, &lead, &okved(), History::default()),
            cat("непрофильная")
        );
        lead.company = Some(company("46.69"));
        assert_eq!(
            value_of(&activity, &lead, &okved(), History::default()),
            cat("торговля")
        );
        lead.company = Some(company("250.1"));
        assert_eq!(
            value_of(&activity, &lead, &okved(), History::default()),
            cat("услуги")
        );
        lead.company = None;
        assert_eq!(
            value_of(&activity, &lead, &okved(), History::default()),
            None
        );
    }

    #[test]
    fn history_counts_only_earlier_requests() {
        let h = History::before(
            100,
            [
                (10, true),
                (20, false),
                (30, true),
                (100, true),
                (150, false),
            ],
        );
        assert_eq!(
            h,
            History {
                requests: 3,
                won: 2
            }
        );
        assert_eq!(History::before(0, []), History::default());
    }

    #[test]
    fn fields_tags_and_history_read_as_their_kind() {
        let lead = Lead {
            budget: Some(120_000.0),
            tags: vec!["WhatsApp".into(), "СРОЧНО".into()],
            fields: [
                ("brand".into(), FieldValue::Text(" Сварог ".into())),
                ("turnover".into(), FieldValue::Text("не знаю".into())),
            ]
            .into(),
            ..Lead::default()
        };
        let features = [
            feature(
                "brand",
                FeatureKind::Category,
                Source::Field("brand".into()),
            ),
            feature(
                "turnover",
                FeatureKind::Number,
                Source::Field("turnover".into()),
            ),
            feature(
                "channel",
                FeatureKind::Category,
                Source::Tags(vec!["почта".into(), "whatsapp".into()]),
            ),
            feature(
                "urgency",
                FeatureKind::Category,
                Source::Tags(vec!["Срочно".into()]),
            ),
            feature(
                "budget",
                FeatureKind::Number,
                Source::Field("budget".into()),
            ),
            feature(
                "share",
                FeatureKind::Number,
                Source::Derived(Derived::HistoryWonShare),
            ),
            feature(
                "client",
                FeatureKind::Category,
                Source::Derived(Derived::ClientType),
            ),
        ];
        let seen = observe(
            &features,
            &lead,
            &okved(),
            History {
                requests: 4,
                won: 1,
            },
        );
        assert_eq!(
            seen,
            vec![
                Some(Value::Category("Сварог".into())),
                None,
                Some(Value::Category("whatsapp".into())),
                Some(Value::Category("Срочно".into())),
                Some(Value::Number(120_000.0)),
                Some(Value::Number(0.25)),
                Some(Value::Category("Физлицо".into())),
            ]
        );
        let first_time = observe(&features[5..6], &lead, &okved(), History::default());
        assert_eq!(
            first_time,
            vec![None],
            "no history is unknown, not a 0 % share"
        );
    }
}
