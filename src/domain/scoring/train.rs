//! Learning the model from last year's leads, and saying honestly how good it is: the
//! newest part of the past is held out, predicted by a model that never saw it, and
//! compared with what happened.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::encode::{Encoder, NONE};
use super::feature::{Feature, History, Observation, Okved, observe};
use super::glm::{self, Coefficients, Design, Family};
use super::margin::Margins;
use super::metrics::{self, Decile};
use super::model::{Learn, Model, Trained};
use crate::domain::lead::{Closed, Lead, closed};

/// One past lead: what was known, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PastLead {
    /// When it came.
    pub created_at: DateTime<Utc>,
    /// Its feature values.
    pub observation: Observation,
    /// Its budget, when filled in.
    pub budget: Option<f64>,
    /// 0 when lost; when won, 1 or the won amount (one sale, or the client's revenue over
    /// the horizon when learning value).
    pub won: f64,
}

impl PastLead {
    /// A closed lead of the CRM as a past lead: its features as the robot sees them and
    /// its outcome by its stage (won is one sale); `None` while it is open.
    pub fn from_crm(
        features: &[Feature],
        okved: &Okved,
        lead: &Lead,
        history: History,
    ) -> Option<PastLead> {
        let won = closed(&lead.status_id)? == Closed::Won;
        Some(PastLead {
            created_at: DateTime::from_timestamp(lead.created_at, 0).unwrap_or_default(),
            observation: observe(features, lead, okved, history),
            budget: lead.budget,
            won: if won { 1.0 } else { 0.0 },
        })
    }

    /// Whether it was won.
    pub fn is_won(&self) -> bool {
        self.won > 0.0
    }

    /// The revenue it brought: the won amount, or the budget when `won` is just 1.
    pub fn revenue(&self, typical_budget: f64) -> f64 {
        if !self.is_won() {
            0.0
        } else if self.won == 1.0 {
            self.budget.unwrap_or(typical_budget)
        } else {
            self.won
        }
    }
}

/// How to train (`[model]` in `scoring.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// One sale or lifetime value.
    pub learn: Learn,
    /// A past lead this many days older than the newest counts half (markets drift);
    /// `None` weighs all alike.
    pub half_life_days: Option<f64>,
    /// The newest share of past leads held out to measure the model.
    pub holdout: f64,
    /// Training is refused with fewer past leads…
    pub min_leads: usize,
    /// …or fewer won ones.
    pub min_won: usize,
    /// Bands per number feature.
    pub bands: usize,
    /// Learn each value's drift over the period (a time slope) and score as of its end.
    pub drift: bool,
    /// The penalties tried; the best on held-out data is kept (with the best of the
    /// half-life, its half and its quarter).
    pub lambdas: Vec<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            learn: Learn::Sale,
            half_life_days: Some(365.0),
            holdout: 0.2,
            min_leads: 500,
            min_won: 30,
            bands: 32,
            drift: true,
            lambdas: vec![0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
        }
    }
}

/// Why a model could not be trained.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    /// Too few past leads for numbers anyone should trust.
    #[error(
        "{found} past leads are too few to learn from: at least {need} are needed (a year of \
         leads is best); export more, or lower min_leads in [model] of scoring.toml if you \
         accept a rougher model"
    )]
    TooFewLeads {
        /// How many were given.
        found: usize,
        /// How many are needed.
        need: usize,
    },
    /// Too few won ones: the chance of a sale cannot be learned from a handful of sales.
    #[error(
        "only {found} of the past leads were won: at least {need} won leads are needed to \
         learn what makes a sale"
    )]
    TooFewWon {
        /// How many were won.
        found: usize,
        /// How many are needed.
        need: usize,
    },
    /// All won or all lost.
    #[error("every past lead has the same outcome ({0}); there is nothing to learn from")]
    OneOutcome(&'static str),
}

/// How the model did on the held-out newest leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Leads learned from for the measurement.
    pub train_leads: usize,
    /// Leads held out.
    pub holdout_leads: usize,
    /// The first held-out lead's time.
    pub holdout_from: DateTime<Utc>,
    /// The penalty chosen.
    pub lambda: f64,
    /// The half-life chosen, in days.
    pub half_life_days: Option<f64>,
    /// Ranking quality, 0.5 to 1.
    pub auc: f64,
    /// Mean squared error of the chances.
    pub brier: f64,
    /// Mean log loss.
    pub log_loss: f64,
    /// Predicted against actual by decile.
    pub calibration: Vec<Decile>,
    /// The held-out leads' expected profit, summed…
    pub expected_profit: f64,
    /// …and the profit they actually brought.
    pub actual_profit: f64,
}

impl Evaluation {
    /// Actual ÷ expected profit of the held-out leads (1 is a perfect forecast).
    pub fn profit_ratio(&self) -> f64 {
        if self.expected_profit > 0.0 {
            self.actual_profit / self.expected_profit
        } else {
            0.0
        }
    }
}

/// Learns a model from past leads; returns it with its measurement on the newest ones.
///
/// Steps: sort by time; hold out the newest `holdout` share; on the rest, pick the
/// penalty that predicts its own newest fifth best; measure on the held-out leads; then
/// learn again from everything with that penalty.
pub fn train(
    features: &[Feature],
    margins: &Margins,
    settings: &Settings,
    leads: &[PastLead],
) -> Result<(Model, Evaluation), TrainError> {
    check_enough(settings, leads)?;
    let mut sorted: Vec<&PastLead> = leads.iter().collect();
    sorted.sort_by_key(|l| l.created_at);
    let cut = ((sorted.len() as f64) * (1.0 - settings.holdout)).round() as usize;
    let cut = cut.clamp(1, sorted.len() - 1);
    let (past, held) = sorted.split_at(cut);

    let chosen = choose(features, settings, past);
    let measured = fit_on(features, settings, past, chosen);
    let evaluation = evaluate(&measured, features, margins, past.len(), held);
    let model = fit_on(features, settings, &sorted, chosen);
    Ok((model, evaluation))
}

fn check_enough(settings: &Settings, leads: &[PastLead]) -> Result<(), TrainError> {
    let need = settings.min_leads.max(10);
    if leads.len() < need {
        return Err(TrainError::TooFewLeads {
            found: leads.len(),
            need,
        });
    }
    let won = leads.iter().filter(|l| l.is_won()).count();
    if won == 0 {
        return Err(TrainError::OneOutcome("all lost"));
    }
    if won == leads.len() {
        return Err(TrainError::OneOutcome("all won"));
    }
    if won < settings.min_won {
        return Err(TrainError::TooFewWon {
            found: won,
            need: settings.min_won,
        });
    }
    Ok(())
}

/// The penalty and the half-life whose model, learned on the older 80 % of `past`, best
/// predicts the newest 20 % (by log loss): a market that drifts shows itself there and
/// earns a shorter memory.
fn choose(features: &[Feature], settings: &Settings, past: &[&PastLead]) -> (f64, Option<f64>) {
    let default = (
        settings.lambdas.first().copied().unwrap_or(1.0),
        settings.half_life_days,
    );
    let cut = past.len() * 4 / 5;
    if cut == 0 || cut == past.len() {
        return default;
    }
    let (fit_part, check) = past.split_at(cut);
    let kinds: Vec<_> = features.iter().map(|f| f.kind).collect();
    let rows: Vec<&Observation> = fit_part.iter().map(|l| &l.observation).collect();
    let encoder = Encoder::fit(&kinds, &rows, settings.bands);
    let check_columns: Vec<Vec<u32>> = check
        .iter()
        .map(|l| encoder.encode(&l.observation))
        .collect();
    let won: Vec<bool> = check.iter().map(|l| l.is_won()).collect();
    let mut best = (f64::INFINITY, default);
    let mut lambdas = settings.lambdas.clone();
    // From the strongest penalty down: each fit starts from the previous answer.
    lambdas.sort_by(|a, b| b.total_cmp(a));
    for half_life in half_lives(settings.half_life_days, settings.drift) {
        let (design, y, w) = design_of(&encoder, fit_part, half_life, settings.drift);
        let mut start: Option<Coefficients> = None;
        for &lambda in &lambdas {
            let beta = glm::fit(&design, &y, &w, Family::Logistic, lambda, start.as_ref());
            let p: Vec<f64> = check_columns
                .iter()
                .map(|c| Family::Logistic.mean(beta.eta(c)))
                .collect();
            let loss = metrics::log_loss(&p, &won);
            if loss < best.0 {
                best = (loss, (lambda, half_life));
            }
            start = Some(beta);
        }
    }
    best.1
}

/// The memories tried: the file's, and shorter ones down to a quarter of it; with time
/// slopes, which follow a drift themselves, only the file's and its half.
fn half_lives(configured: Option<f64>, slopes: bool) -> Vec<Option<f64>> {
    match configured {
        Some(h) if h > 0.0 && slopes => vec![Some(h), Some(h / 2.0)],
        Some(h) if h > 0.0 => vec![Some(h), Some(h / 2.0), Some(h / 4.0)],
        _ => vec![None],
    }
}

/// The rows as a design, with the outcome and the time weights.
///
/// With `slopes`, every column gets a twin (column + width) worth the lead's age in years
/// before the newest one (0 for the newest, negative before): a value whose effect drifts
/// over the months learns a slope, and the model keeps only the effects as of the newest
/// leads (scoring never switches the twins on). A market that moved during the year is
/// then predicted as it is now, not as it was on average.
fn design_of(
    encoder: &Encoder,
    leads: &[&PastLead],
    half_life_days: Option<f64>,
    slopes: bool,
) -> (Design, Vec<f64>, Vec<f64>) {
    let features = encoder.features.len();
    let width = encoder.width;
    let per_row = if slopes { 2 * features } else { features };
    let newest = leads.iter().map(|l| l.created_at).max().unwrap_or_default();
    let mut cells = Vec::with_capacity(leads.len() * per_row);
    let mut values = Vec::with_capacity(if slopes { leads.len() * per_row } else { 0 });
    let mut row = Vec::with_capacity(features);
    for lead in leads {
        encoder.encode_into(&lead.observation, &mut row);
        cells.extend_from_slice(&row);
        if slopes {
            let years = -((newest - lead.created_at).num_seconds() as f64) / (365.0 * 86_400.0);
            cells.extend(
                row.iter()
                    .map(|c| if *c == NONE { NONE } else { c + width }),
            );
            values.extend(std::iter::repeat_n(1.0, features));
            values.extend(std::iter::repeat_n(years, features));
        }
    }
    let y = leads
        .iter()
        .map(|l| f64::from(u8::from(l.is_won())))
        .collect();
    let w = leads
        .iter()
        .map(|l| match half_life_days {
            Some(h) if h > 0.0 => {
                let age_days = (newest - l.created_at).num_seconds() as f64 / 86_400.0;
                0.5f64.powf(age_days / h)
            }
            _ => 1.0,
        })
        .collect();
    (
        Design {
            width: width as usize * if slopes { 2 } else { 1 },
            per_row,
            cells,
            values,
            indicators: features,
        },
        y,
        w,
    )
}

fn fit_on(
    features: &[Feature],
    settings: &Settings,
    leads: &[&PastLead],
    (lambda, half_life_days): (f64, Option<f64>),
) -> Model {
    let kinds: Vec<_> = features.iter().map(|f| f.kind).collect();
    let rows: Vec<&Observation> = leads.iter().map(|l| &l.observation).collect();
    let encoder = Encoder::fit(&kinds, &rows, settings.bands);
    let (design, y, w) = design_of(&encoder, leads, half_life_days, settings.drift);
    let mut chance = glm::fit(&design, &y, &w, Family::Logistic, lambda, None);
    glm::center(&design, &w, &mut chance);
    // The slopes' twins served the fit; the model scores as of the newest leads.
    chance.weights.truncate(encoder.width as usize);
    let typical_budget = median(leads.iter().filter_map(|l| l.budget).filter(|b| *b > 0.0));
    let value = match settings.learn {
        Learn::Sale => None,
        Learn::Value { .. } => {
            let mut value = fit_value(&design, leads, &w, lambda);
            value.weights.truncate(encoder.width as usize);
            Some(value)
        }
    };
    Model {
        learn: settings.learn,
        features: features
            .iter()
            .map(|f| Trained {
                name: f.name.clone(),
                title: f.title.clone(),
                kind: f.kind,
            })
            .collect(),
        encoder,
        chance,
        value,
        typical_budget,
        trained_on: leads.len(),
        trained_until: leads.iter().map(|l| l.created_at).max().unwrap_or_default(),
        lambda,
        half_life_days,
    }
}

/// Learns, from the won leads with a budget, how many times its first budget a client
/// brings over the horizon.
fn fit_value(design: &Design, leads: &[&PastLead], w: &[f64], lambda: f64) -> Coefficients {
    let (y, weights): (Vec<f64>, Vec<f64>) = leads
        .iter()
        .zip(w)
        .map(|(l, w)| match l.budget.filter(|b| *b > 0.0) {
            Some(b) if l.is_won() => ((l.revenue(b) / b).min(1_000.0), *w),
            _ => (0.0, 0.0),
        })
        .unzip();
    let mut value = glm::fit(design, &y, &weights, Family::LogLinear, lambda, None);
    glm::center(design, &weights, &mut value);
    value
}

fn evaluate(
    model: &Model,
    features: &[Feature],
    margins: &Margins,
    train_leads: usize,
    held: &[&PastLead],
) -> Evaluation {
    let mut p = Vec::with_capacity(held.len());
    let mut won = Vec::with_capacity(held.len());
    let (mut expected, mut actual) = (0.0, 0.0);
    for lead in held {
        let score = model.score(features, margins, &lead.observation, lead.budget);
        p.push(score.probability);
        won.push(lead.is_won());
        expected += score.expected_profit;
        actual += lead.revenue(model.typical_budget) * score.margin;
    }
    Evaluation {
        train_leads,
        holdout_leads: held.len(),
        holdout_from: held.first().map(|l| l.created_at).unwrap_or_default(),
        lambda: model.lambda,
        half_life_days: model.half_life_days,
        auc: metrics::auc(&p, &won),
        brier: metrics::brier(&p, &won),
        log_loss: metrics::log_loss(&p, &won),
        calibration: metrics::calibration(&p, &won),
        expected_profit: expected,
        actual_profit: actual,
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}
