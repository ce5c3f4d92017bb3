//! `scoring.toml`: the features the scoring looks at, the brand margins, the priority
//! thresholds and the leads the company refuses, checked into [`ScoringRules`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::condition::{Checker, RawCondition};
use super::duration::Span;
use super::problem::{Problem, did_you_mean};
use super::rules;
use crate::domain::scoring::train::Settings;
pub use crate::domain::scoring::write_back::WriteBack;
use crate::domain::scoring::{
    Derived, Feature, FeatureKind, Learn, Margins, Okved, PriorityRules, Refusal, Source,
};

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "scoring.toml";

/// Facts every lead has, whatever the features: what conditions of `scoring.toml` can read
/// besides the features and the mapped lead fields.
pub const BUILT_IN_FACTS: [&str; 6] = [
    "budget",
    "tags",
    "probability",
    "expected_profit",
    "forecast_profit",
    "responsible",
];

/// The checked contents of `scoring.toml`.
#[derive(Debug, Clone)]
pub struct ScoringRules {
    /// The features, in order.
    pub features: Vec<Feature>,
    /// OKVED prefixes for the derived features.
    pub okved: Okved,
    /// Brand margins.
    pub margins: Margins,
    /// Thresholds and refusals.
    pub priority: PriorityRules,
    /// How to train.
    pub training: Settings,
    /// What the robot writes into the CRM.
    pub write: WriteBack,
    /// Which facts the reports group leads by.
    pub report: ReportNames,
}

/// `[report]`: the facts (features or lead fields) that the ledger keeps as a lead's
/// channel and source, for `report channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportNames {
    /// The channel (e-mail, WhatsApp, phone…).
    pub channel: String,
    /// The source (the shop, the site, the campaign).
    pub source: String,
}

/// Reads `dir/scoring.toml`; `Ok(None)` when there is none (the robot then does not
/// score). `lead_fields` are the robot's names of the lead fields mapped in `robot.toml`,
/// `None` when that file could not be read (then they are not checked).
pub fn load(
    dir: &Path,
    lead_fields: Option<&[String]>,
) -> Result<Option<ScoringRules>, Vec<Problem>> {
    let file = dir.join(FILE_NAME);
    let text = match rules::read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(p) => return Err(vec![p]),
    };
    let raw: RawScoring = rules::parse(&file, &text).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let rules = raw.check(&file, &text, lead_fields, &mut problems);
    match rules {
        Some(rules) if problems.is_empty() => Ok(Some(rules)),
        _ => {
            problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
            Err(problems)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScoring {
    #[serde(default)]
    model: RawModel,
    #[serde(default)]
    features: Vec<Spanned<RawFeature>>,
    #[serde(default)]
    okved: RawOkved,
    margins: RawMargins,
    priority: Spanned<RawPriority>,
    #[serde(default)]
    refuse: Vec<RawRefusal>,
    #[serde(default)]
    crm: RawWrite,
    #[serde(default)]
    report: RawReport,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReport {
    channel: Spanned<String>,
    source: Spanned<String>,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            channel: Spanned::new(0..0, "channel".into()),
            source: Spanned::new(0..0, "site".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawModel {
    learn: Option<Spanned<String>>,
    months: u32,
    half_life: Option<Spanned<Span>>,
    holdout: Option<Spanned<Share>>,
    min_leads: usize,
    min_won: usize,
    bands: usize,
    drift: bool,
}

impl Default for RawModel {
    fn default() -> Self {
        let d = Settings::default();
        RawModel {
            learn: None,
            months: 12,
            half_life: None,
            holdout: None,
            min_leads: d.min_leads,
            min_won: d.min_won,
            bands: d.bands,
            drift: d.drift,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    title: Option<String>,
    kind: FeatureKind,
    field: Option<String>,
    contact_field: Option<String>,
    company_field: Option<String>,
    tags: Option<Vec<String>>,
    derived: Option<Derived>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOkved {
    field: String,
    profile: Vec<String>,
    production: Vec<String>,
    trade: Vec<String>,
}

impl Default for RawOkved {
    fn default() -> Self {
        RawOkved {
            field: "okved".into(),
            profile: Vec::new(),
            production: Vec::new(),
            trade: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMargins {
    #[serde(default = "brand")]
    brand_feature: Spanned<String>,
    default: Spanned<Share>,
    #[serde(default)]
    brands: BTreeMap<String, Spanned<Share>>,
}

fn brand() -> Spanned<String> {
    Spanned::new(0..0, "brand".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    thresholds: BTreeMap<String, Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefusal {
    name: String,
    when: Spanned<RawCondition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWrite {
    probability: Option<Spanned<String>>,
    expected_profit: Option<Spanned<String>>,
    priority: Option<Spanned<String>>,
    priority_tag: Option<String>,
}

/// A share written as a fraction (`0.2`) or a percent string (`"20%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share(f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "a share is a fraction like 0.2 or a percent in quotes like \"20%\"",
            )
        };
        let value = match Written::deserialize(d)? {
            Written::Number(n) => n,
            Written::Text(t) => {
                let number = t.trim().strip_suffix('%').ok_or_else(bad)?;
                number
                    .trim()
                    .replace(',', ".")
                    .parse::<f64>()
                    .map_err(|_| bad())?
                    / 100.0
            }
        };
        if (0.0..=1.0).contains(&value) {
            Ok(Share(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "a share is between 0 and 1 (0 % and 100 %), not {value}"
            )))
        }
    }
}

impl RawScoring {
    fn check(
        self,
        file: &Path,
        text: &str,
        lead_fields: Option<&[String]>,
        problems: &mut Vec<Problem>,
    ) -> Option<ScoringRules> {
        let at =
            |offset: usize, message: String| Problem::error(file, message).at_offset(text, offset);
        let features = self.features(file, text, problems);
        let names: Vec<String> = features.iter().map(|f| f.name.clone()).collect();

        // The model.
        let learn = match self
            .model
            .learn
            .as_ref()
            .map(|l| (l.span().start, l.get_ref().as_str()))
        {
            None | Some((_, "sale")) => Learn::Sale,
            Some((_, "value")) => Learn::Value {
                months: self.model.months,
            },
            Some((offset, other)) => {
                problems.push(
                    at(offset, format!("`learn` in [model] is \"sale\" or \"value\", not \"{other}\""))
                        .with_hint("\"sale\" learns one sale; \"value\" learns the client's revenue over `months`"),
                );
                Learn::Sale
            }
        };
        let half_life_days = match &self.model.half_life {
            None => Settings::default().half_life_days,
            Some(s) => match s.get_ref().as_std() {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d.as_secs_f64() / 86_400.0),
                None => {
                    problems.push(at(
                        s.span().start,
                        "`half_life` in [model] is calendar time, like \"365d\"".into(),
                    ));
                    None
                }
            },
        };
        let holdout = match &self.model.holdout {
            None => Settings::default().holdout,
            Some(h) if h.get_ref().0 > 0.0 && h.get_ref().0 < 0.5 => h.get_ref().0,
            Some(h) => {
                problems.push(at(
                    h.span().start,
                    "`holdout` in [model] is a share above 0 and below 50 %, like \"20%\"".into(),
                ));
                0.2
            }
        };
        let training = Settings {
            learn,
            half_life_days,
            holdout,
            min_leads: self.model.min_leads,
            min_won: self.model.min_won,
            bands: self.model.bands.max(1),
            drift: self.model.drift,
            ..Settings::default()
        };

        // Margins.
        let brand_feature = self.margins.brand_feature.get_ref().clone();
        if !names.contains(&brand_feature) {
            let span = self.margins.brand_feature.span();
            let message = format!(
                "`brand_feature` in [margins] names `{brand_feature}`, which is not a feature"
            );
            let p = if span.is_empty() {
                Problem::error(file, format!("{message} (the default)"))
            } else {
                at(span.start, message)
            };
            problems.push(
                p.with_hint_opt(
                    did_you_mean(&brand_feature, names.iter().map(String::as_str))
                        .map(|m| format!("did you mean `{m}`?")),
                ),
            );
        }
        let margins = Margins::new(
            brand_feature,
            self.margins.default.get_ref().0,
            self.margins
                .brands
                .iter()
                .map(|(b, m)| (b.clone(), m.get_ref().0)),
        );

        // Priorities.
        let priority_at = self.priority.span().start;
        let raw = self.priority.into_inner().thresholds;
        let mut thresholds = [0.0; 4];
        for (key, value) in &raw {
            match key.as_str() {
                "1" | "2" | "3" | "4" => {
                    let i: usize = key.parse().unwrap_or(1);
                    thresholds[i - 1] = *value.get_ref();
                }
                other => problems.push(
                    at(value.span().start, format!("[priority.thresholds] has thresholds for priorities 1 to 4, not `{other}`"))
                        .with_hint("priority 5 has no threshold: it is what falls below the 4th, and the [[refuse]] list"),
                ),
            }
        }
        let missing: Vec<&str> = ["1", "2", "3", "4"]
            .into_iter()
            .filter(|k| !raw.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            problems.push(at(
                priority_at,
                format!(
                    "[priority.thresholds] needs the expected profit for priorities {}",
                    missing.join(", ")
                ),
            ));
        } else if !thresholds.windows(2).all(|w| w[0] > w[1]) {
            problems.push(
                at(
                    raw["1"].span().start,
                    "the thresholds of [priority.thresholds] must fall from 1 to 4".into(),
                )
                .with_hint("priority 1 needs the most expected profit"),
            );
        }

        // Refusals.
        let mut known: Vec<String> = BUILT_IN_FACTS.iter().map(|s| (*s).to_owned()).collect();
        known.extend(names.iter().cloned());
        known.extend(lead_fields.unwrap_or_default().iter().cloned());
        known.sort();
        known.dedup();
        let checker = Checker {
            file,
            text,
            known: &known,
        };
        let refusals: Vec<Refusal> = self
            .refuse
            .iter()
            .filter_map(|r| {
                checker.check(&r.when, problems).map(|when| Refusal {
                    name: r.name.clone(),
                    when,
                })
            })
            .collect();

        // What is written back.
        let mapped = |f: &Option<Spanned<String>>, key: &str, problems: &mut Vec<Problem>| {
            let f = f.as_ref()?;
            let name = f.get_ref();
            if lead_fields.is_some_and(|mapped| !mapped.contains(name)) {
                problems.push(
                    at(f.span().start, format!("`{key}` in [crm] names the lead field `{name}`, which robot.toml's [fields.leads] does not map"))
                        .with_hint(format!("add `{name} = \"<the field's name in the CRM>\"` under [fields.leads] in robot.toml")),
                );
            }
            Some(name.clone())
        };
        let write = WriteBack {
            probability: mapped(&self.crm.probability, "probability", problems),
            expected_profit: mapped(&self.crm.expected_profit, "expected_profit", problems),
            priority: mapped(&self.crm.priority, "priority", problems),
            priority_tag: self.crm.priority_tag.clone(),
        };

        for (key, name) in [
            ("channel", &self.report.channel),
            ("source", &self.report.source),
        ] {
            if !known.contains(name.get_ref()) {
                let message = format!(
                    "`{key}` in [report] names `{}`, which is neither a feature nor a mapped lead field",
                    name.get_ref()
                );
                problems.push(if name.span().is_empty() {
                    Problem::error(file, format!("{message} (the default)"))
                } else {
                    at(name.span().start, message)
                });
            }
        }
        let report = ReportNames {
            channel: self.report.channel.into_inner(),
            source: self.report.source.into_inner(),
        };

        Some(ScoringRules {
            report,
            features,
            okved: Okved {
                field: self.okved.field,
                profile: self.okved.profile,
                production: self.okved.production,
                trade: self.okved.trade,
            },
            margins,
            priority: PriorityRules {
                thresholds,
                refusals,
            },
            training,
            write,
        })
    }

    fn features(&self, file: &Path, text: &str, problems: &mut Vec<Problem>) -> Vec<Feature> {
        let mut out: Vec<Feature> = Vec::new();
        if self.features.is_empty() {
            problems.push(
                Problem::error(file, "no [[features]]: the scoring needs at least one").with_hint(
                    "declare each as [[features]] with name, kind and where it comes from",
                ),
            );
        }
        for raw in &self.features {
            let at = raw.span().start;
            let f = raw.get_ref();
            let name = f.name.get_ref().trim().to_owned();
            if out.iter().any(|o| o.name == name) {
                problems.push(
                    Problem::error(file, format!("feature `{name}` is declared twice"))
                        .at_offset(text, f.name.span().start),
                );
                continue;
            }
            let sources: Vec<Source> = [
                f.field.clone().map(Source::Field),
                f.contact_field.clone().map(Source::ContactField),
                f.company_field.clone().map(Source::CompanyField),
                f.tags.clone().map(Source::Tags),
                f.derived.map(Source::Derived),
            ]
            .into_iter()
            .flatten()
            .collect();
            if sources.len() != 1 {
                problems.push(
                    Problem::error(
                        file,
                        format!(
                            "feature `{name}` needs exactly one source: `field`, `contact_field`, \
                         `company_field`, `tags` or `derived` ({} given)",
                            sources.len()
                        ),
                    )
                    .at_offset(text, at),
                );
                continue;
            }
            out.push(Feature {
                title: f.title.clone().unwrap_or_else(|| name.clone()),
                name,
                kind: f.kind,
                source: sources
                    .into_iter()
                    .next()
                    .unwrap_or(Source::Field(String::new())),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
