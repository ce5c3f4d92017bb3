//! Synthetic past leads with a known true chance of sale, for the scoring's quality test
//! and benchmarks: a stand-in for a year's CRM export, shaped like the seed company's.
//!
//! What makes it hard in the ways the interview warns about:
//! - legal entities nearly always write by e-mail, so channel and client type are
//!   correlated (a model that adds points for both double-counts);
//! - twelve shops of very different traffic, and brands with a handful of leads (thin
//!   categories);
//! - empty cells: persons have no company data, and a third of companies no turnover;
//! - the turnover's effect is a hump, not a line;
//! - drift: over the months WhatsApp grows and one brand the team learns to sell converts
//!   better and better.
//!
//! Every lead carries the chance it was drawn with (the oracle), so a model's Brier score
//! can be compared with the best possible one.

pub mod forecast;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::scoring::{Observation, PastLead, Value};

/// The columns of a synthetic lead, in order: the shipped `scoring.toml`'s features.
pub const FEATURES: [&str; 10] = [
    "site",
    "channel",
    "category",
    "brand",
    "client_type",
    "activity",
    "profile",
    "turnover",
    "history_requests",
    "history_won_share",
];

const SITES: [(&str, f64, f64); 12] = [
    // (site, share of traffic, effect on log-odds)
    ("svarka-market.ru", 0.22, 0.25),
    ("weldshop.ru", 0.16, 0.10),
    ("svarochnik.pro", 0.12, -0.10),
    ("generator-opt.ru", 0.10, 0.00),
    ("kompressor-store.ru", 0.09, -0.25),
    ("elektrody.shop", 0.08, -0.30),
    ("tig-mig.ru", 0.07, 0.35),
    ("plazma-rez.ru", 0.06, 0.15),
    ("svarka-spb.ru", 0.05, 0.05),
    ("weld-pro.ru", 0.03, 0.40),
    ("apparaty-svarki.ru", 0.015, -0.40),
    ("svar-shop24.ru", 0.005, 0.60),
];

const CATEGORIES: [(&str, f64, f64, f64); 5] = [
    // (category, share, effect, median budget ₽)
    ("Сварочное оборудование", 0.35, 0.45, 120_000.0),
    ("Расходные материалы", 0.30, -0.20, 15_000.0),
    ("Компрессоры", 0.15, -0.35, 180_000.0),
    ("Генераторы", 0.15, -0.10, 250_000.0),
    ("Газовые электростанции", 0.05, -0.55, 600_000.0),
];

const BRANDS: [(&str, f64, f64); 9] = [
    // (brand, share, effect); the last two are thin
    ("Сварог", 0.25, 0.30),
    ("Fubag", 0.20, 0.15),
    ("Kemppi", 0.12, 0.05),
    ("Lincoln Electric", 0.12, -0.05),
    ("ESAB", 0.12, 0.00),
    ("Aurora", 0.10, -0.20),
    ("Собственная марка", 0.08, 0.20),
    ("Telwin", 0.007, 0.50),
    ("Ресанта", 0.003, -0.60),
];

/// The brand whose effect drifts upwards over the months.
const DRIFTING_BRAND: usize = 5;

/// One synthetic lead: what a CRM export would hold, and the true chance.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthLead {
    /// The past lead.
    pub lead: PastLead,
    /// The chance it was drawn with.
    pub true_chance: f64,
    /// The brand's margin.
    pub margin: f64,
}

/// The margins of the synthetic brands (the shipped `scoring.toml` has the same).
pub fn margin_of(brand: &str) -> f64 {
    match brand {
        "Собственная марка" => 0.35,
        "Сварог" => 0.22,
        "Fubag" | "Aurora" => 0.2,
        "Kemppi" | "ESAB" | "Lincoln Electric" => 0.15,
        _ => 0.18,
    }
}

/// A stream of synthetic leads.
pub struct Generator {
    rng: StdRng,
    start: DateTime<Utc>,
    /// Months over which the drift runs its course; later leads stay at its end.
    drift_months: f64,
    /// Learn lifetime value: `won` is the revenue over a year.
    pub lifetime: bool,
}

impl Generator {
    /// Leads from `start`, with the drift running over `drift_months`.
    pub fn new(seed: u64, start: DateTime<Utc>, drift_months: f64) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            start,
            drift_months,
            lifetime: false,
        }
    }

    /// `per_month` leads a month for `months` months from the start, oldest first.
    pub fn leads(&mut self, months: u32, per_month: usize) -> Vec<SynthLead> {
        let mut out = Vec::with_capacity(months as usize * per_month);
        for month in 0..months {
            for i in 0..per_month {
                let offset =
                    f64::from(month) + (i as f64 + self.rng.random::<f64>()) / per_month as f64;
                out.push(self.lead(offset));
            }
        }
        out
    }

    /// One lead, `months` after the start.
    pub fn lead(&mut self, months: f64) -> SynthLead {
        let progress = (months / self.drift_months).clamp(0.0, 1.0);
        let rng = &mut self.rng;
        let legal = rng.random::<f64>() < 0.6 - 0.1 * progress;
        let channel = {
            let whatsapp = 0.15 + 0.20 * progress;
            let u = rng.random::<f64>();
            if legal {
                if u < 0.8 {
                    "почта"
                } else if u < 0.8 + whatsapp / 2.0 {
                    "WhatsApp"
                } else {
                    "телефон"
                }
            } else if u < 0.15 {
                "почта"
            } else if u < 0.15 + whatsapp * 1.6 {
                "WhatsApp"
            } else if u < 0.85 {
                "телефон"
            } else {
                "форма на сайте"
            }
        };
        let site = pick(rng, &SITES.map(|s| s.1));
        let category = pick(rng, &CATEGORIES.map(|c| c.1));
        let brand = pick(rng, &BRANDS.map(|b| b.1));
        let (activity, profile, turnover) = if legal {
            let activity = pick(rng, &[0.45, 0.3, 0.25]);
            let profile = if rng.random::<f64>() < 0.1 {
                None
            } else {
                Some(rng.random::<f64>() < if activity == 0 { 0.7 } else { 0.25 })
            };
            // Turnover in millions of roubles, log-normal around 150 million.
            let t = (150.0 * normal(rng).mul_add(1.2, 0.0).exp()).max(1.0);
            let known = rng.random::<f64>() < 0.67;
            (Some(activity), profile, known.then_some(t * 1e6))
        } else {
            (None, None, None)
        };
        let requests: u32 = poisson(rng, if legal { 1.5 } else { 0.4 });
        let loyal = rng.random::<f64>() < 0.5;
        let won_before = (0..requests)
            .filter(|_| rng.random::<f64>() < if loyal { 0.55 } else { 0.15 })
            .count() as u32;

        let mut logit = -2.0;
        logit += SITES[site].2 + CATEGORIES[category].2 + BRANDS[brand].2;
        if brand == DRIFTING_BRAND {
            logit += 0.6 * progress;
        }
        logit += match channel {
            "почта" => 0.1,
            "WhatsApp" => -0.15,
            "телефон" => 0.2,
            _ => -0.3,
        };
        if legal {
            logit += 0.6;
            logit += [0.5, -0.1, -0.45][activity.unwrap_or(0)];
            logit += match profile {
                Some(true) => 0.55,
                Some(false) => -0.35,
                None => 0.0,
            };
            if let Some(t) = turnover {
                // A hump: mid-sized companies (about 100–500 million) buy best.
                let x = (t / 1e6).ln() - 200f64.ln();
                logit += 0.4 - 0.25 * x * x;
            }
        }
        if requests > 0 {
            logit += 1.6 * (f64::from(won_before) / f64::from(requests) - 0.3);
        }
        let chance = 1.0 / (1.0 + (-logit).exp());
        let won = rng.random::<f64>() < chance;

        let median = CATEGORIES[category].3 * if legal { 1.5 } else { 0.5 };
        let budget = (median * (0.5 * normal(rng)).exp()).round().max(500.0);
        let brand_name = BRANDS[brand].0;
        let won_value = if !won {
            0.0
        } else if self.lifetime {
            // Production buys again and again; trade and persons rarely.
            let repeat_rate = match (legal, activity) {
                (true, Some(0)) => 4.0,
                (true, Some(1)) => 1.5,
                (true, _) => 0.3,
                _ => 0.2,
            };
            budget * (1.0 + f64::from(poisson(rng, repeat_rate)) * 0.6)
        } else {
            1.0
        };
        let cat = |s: &str| Some(Value::Category(s.to_owned()));
        let observation: Observation = vec![
            cat(SITES[site].0),
            cat(channel),
            cat(CATEGORIES[category].0),
            cat(brand_name),
            cat(if legal {
                "Юрлицо"
            } else {
                "Физлицо"
            }),
            activity.and_then(|a| cat(["производство", "услуги", "торговля"][a])),
            profile.and_then(|p| {
                cat(if p {
                    "профильная"
                } else {
                    "непрофильная"
                })
            }),
            turnover.map(Value::Number),
            Some(Value::Number(f64::from(requests))),
            (requests > 0).then(|| Value::Number(f64::from(won_before) / f64::from(requests))),
        ];
        let created_at = self.start + Duration::seconds((months * 30.4375 * 86_400.0) as i64);
        SynthLead {
            lead: PastLead {
                created_at,
                observation,
                budget: Some(budget),
                won: won_value,
            },
            true_chance: chance,
            margin: margin_of(brand_name),
        }
    }
}

/// An index drawn with the given shares.
fn pick(rng: &mut StdRng, shares: &[f64]) -> usize {
    let total: f64 = shares.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, s) in shares.iter().enumerate() {
        if u < *s {
            return i;
        }
        u -= s;
    }
    shares.len() - 1
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random::<f64>().max(1e-12);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A Poisson draw (Knuth's method; the means here are small).
fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// The synthetic leads' features, as the shipped `scoring.toml` declares them (the test
/// of the shipped file checks that they agree).
pub fn features() -> Vec<crate::domain::scoring::Feature> {
    use crate::domain::scoring::{Derived, Feature, FeatureKind, Source};
    let feature = |name: &str, title: &str, kind, source| Feature {
        name: name.into(),
        title: title.into(),
        kind,
        source,
    };
    let field = |n: &str| Source::Field(n.into());
    vec![
        feature(
            "site",
            "Интернет-магазин",
            FeatureKind::Category,
            field("site"),
        ),
        feature("channel", "Канал", FeatureKind::Category, field("channel")),
        feature(
            "category",
            "Категория товара",
            FeatureKind::Category,
            field("category"),
        ),
        feature("brand", "Бренд", FeatureKind::Category, field("brand")),
        feature(
            "client_type",
            "Клиент",
            FeatureKind::Category,
            Source::Derived(Derived::ClientType),
        ),
        feature(
            "activity",
            "Деятельность компании",
            FeatureKind::Category,
            Source::Derived(Derived::Activity),
        ),
        feature(
            "profile",
            "Профильная компания",
            FeatureKind::Category,
            Source::Derived(Derived::Profile),
        ),
        feature(
            "turnover",
            "Оборот компании",
            FeatureKind::Number,
            Source::CompanyField("turnover".into()),
        ),
        feature(
            "history_requests",
            "Обращений раньше",
            FeatureKind::Number,
            Source::Derived(Derived::HistoryRequests),
        ),
        feature(
            "history_won_share",
            "Доля обращений с покупкой",
            FeatureKind::Number,
            Source::Derived(Derived::HistoryWonShare),
        ),
    ]
}

/// The margin table of the synthetic brands.
pub fn margins() -> crate::domain::scoring::Margins {
    let brands = BRANDS.iter().map(|b| (b.0.to_owned(), margin_of(b.0)));
    crate::domain::scoring::Margins::new("brand", 0.18, brands)
}
