//! Lead scoring (seed interview `004_…`): the chance of a sale learned from last year's
//! leads, the expected profit = budget × the brand's margin × that chance, and a priority
//! from 1 to 5.
//!
//! - [`feature`]: what is looked at, and a lead's values ([`feature::Observation`]);
//! - [`encode`] and [`glm`]: the model (a penalised logistic regression; why, in `glm`);
//! - [`train`]: learning, with a held-out measurement ([`metrics`]);
//! - [`model`]: scoring one lead and saying why;
//! - [`margin`] and [`priorities`]: from chance to money to priority;
//! - [`assessment`]: all of it for one lead, and [`write_back`]: what goes into the CRM.

pub mod assessment;
pub mod encode;
pub mod feature;
pub mod glm;
pub mod margin;
pub mod metrics;
pub mod model;
pub mod priorities;
pub mod train;
pub mod write_back;

pub use assessment::{Assessment, Scorer};
pub use feature::{
    Derived, Feature, FeatureKind, History, Observation, Okved, Source, Value, observe,
};
pub use margin::Margins;
pub use model::{Learn, Model, Score};
pub use priorities::{Decision, PriorityRules, Refusal};
pub use train::{Evaluation, PastLead, Settings, TrainError, train};
