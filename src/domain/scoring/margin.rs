//! Brand margins: the share of a sale's budget that is profit, per brand (seed: "бюджет —
//! миллион, рентабельность по бренду 20%, значит, потенциальная прибыль — 200 тысяч").

use std::collections::HashMap;

use super::feature::{Feature, Observation, Value};

/// The margin table of `scoring.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Margins {
    /// Which feature holds the brand.
    pub feature: String,
    /// The margin of a brand not in the table, or of a lead without a brand.
    pub default: f64,
    /// By brand, keyed in lower case so that "FUBAG" and "Fubag" are one brand.
    by_brand: HashMap<String, f64>,
}

impl Margins {
    /// The table: `brands` as written in the file.
    pub fn new(
        feature: impl Into<String>,
        default: f64,
        brands: impl IntoIterator<Item = (String, f64)>,
    ) -> Margins {
        Margins {
            feature: feature.into(),
            default,
            by_brand: brands
                .into_iter()
                .map(|(b, m)| (b.trim().to_lowercase(), m))
                .collect(),
        }
    }

    /// The margin of one brand.
    pub fn of_brand(&self, brand: Option<&str>) -> f64 {
        brand
            .and_then(|b| self.by_brand.get(&b.trim().to_lowercase()))
            .copied()
            .unwrap_or(self.default)
    }

    /// The margin of a lead, by its value of the brand feature.
    pub fn of(&self, features: &[Feature], observation: &Observation) -> f64 {
        let brand = features
            .iter()
            .position(|f| f.name == self.feature)
            .and_then(|i| observation.get(i))
            .and_then(|v| match v {
                Some(Value::Category(b)) => Some(b.as_str()),
                _ => None,
            });
        self.of_brand(brand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_ignore_case_and_unknown_ones_take_the_default() {
        let m = Margins::new("brand", 0.15, [("Fubag".to_owned(), 0.2)]);
        assert_eq!(m.of_brand(Some("FUBAG ")), 0.2);
        assert_eq!(m.of_brand(Some("Сварог")), 0.15);
        assert_eq!(m.of_brand(None), 0.15);
    }
}
