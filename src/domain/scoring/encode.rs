//! Features into model columns: one column per label of a category, one per band of a
//! number, and one for "not filled in" where past leads had empty cells.
//!
//! A label never seen in training has no column, so it adds nothing: the lead scores as an
//! average one on that feature, neither 0 % nor 100 %.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::feature::{FeatureKind, Observation, Value};

/// No column: an unseen label, or an empty cell never seen in training.
pub const NONE: u32 = u32::MAX;

/// How one feature's values map to columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Columns {
    /// A column per label.
    Category {
        /// Label → column.
        levels: HashMap<String, u32>,
        /// The column of an empty value, when training had some.
        missing: Option<u32>,
    },
    /// A column per band: band `i` holds values below `edges[i]` and from `edges[i-1]`.
    Number {
        /// The bands' upper bounds, ascending; the last band is open.
        edges: Vec<f64>,
        /// The first band's column; the others follow.
        first: u32,
        /// The column of an empty value, when training had some.
        missing: Option<u32>,
    },
}

/// The mapping of every feature to columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Per feature, in declaration order.
    pub features: Vec<Columns>,
    /// How many columns in all.
    pub width: u32,
}

impl Encoder {
    /// Learns the labels and the bands from past observations: `bands` quantile bands per
    /// number feature (fewer when values repeat).
    pub fn fit(kinds: &[FeatureKind], rows: &[&Observation], bands: usize) -> Encoder {
        let mut width = 0u32;
        let mut take = |n: u32| {
            let at = width;
            width += n;
            at
        };
        let mut features = Vec::with_capacity(kinds.len());
        for (f, kind) in kinds.iter().enumerate() {
            let missing_seen = rows.iter().any(|r| r[f].is_none());
            let columns = match kind {
                FeatureKind::Category => {
                    let mut labels: Vec<&str> = rows
                        .iter()
                        .filter_map(|r| match &r[f] {
                            Some(Value::Category(c)) => Some(c.as_str()),
                            _ => None,
                        })
                        .collect();
                    labels.sort_unstable();
                    labels.dedup();
                    let levels = labels
                        .into_iter()
                        .map(|l| (l.to_owned(), take(1)))
                        .collect();
                    Columns::Category {
                        levels,
                        missing: missing_seen.then(|| take(1)),
                    }
                }
                FeatureKind::Number => {
                    let mut values: Vec<f64> = rows
                        .iter()
                        .filter_map(|r| match r[f] {
                            Some(Value::Number(n)) => Some(n),
                            _ => None,
                        })
                        .collect();
                    values.sort_unstable_by(f64::total_cmp);
                    let edges = quantile_edges(&values, bands);
                    let first = take(edges.len() as u32 + 1);
                    Columns::Number {
                        edges,
                        first,
                        missing: missing_seen.then(|| take(1)),
                    }
                }
            };
            features.push(columns);
        }
        Encoder { features, width }
    }

    /// The columns one observation switches on, one per feature ([`NONE`] for none),
    /// written into `out` (cleared first).
    pub fn encode_into(&self, row: &Observation, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            self.features
                .iter()
                .zip(row)
                .map(|(columns, value)| columns.column(value.as_ref())),
        );
    }

    /// The columns of one observation.
    pub fn encode(&self, row: &Observation) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.features.len());
        self.encode_into(row, &mut out);
        out
    }
}

impl Columns {
    /// The column of one value.
    pub fn column(&self, value: Option<&Value>) -> u32 {
        match (self, value) {
            (Columns::Category { missing, .. }, None) | (Columns::Number { missing, .. }, None) => {
                missing.unwrap_or(NONE)
            }
            (Columns::Category { levels, .. }, Some(Value::Category(c))) => {
                levels.get(c.as_str()).copied().unwrap_or(NONE)
            }
            (Columns::Number { edges, first, .. }, Some(Value::Number(n))) => {
                first + edges.partition_point(|e| *e <= *n) as u32
            }
            // A number where a label was learned, or the other way round: the file changed
            // its mind about the feature; treat it as unseen.
            _ => NONE,
        }
    }
}

/// Cut points between `bands` bands of equal count over sorted `values`, without repeats.
fn quantile_edges(sorted: &[f64], bands: usize) -> Vec<f64> {
    if sorted.is_empty() || bands < 2 {
        return Vec::new();
    }
    let mut edges: Vec<f64> = (1..bands)
        .map(|i| sorted[i * sorted.len() / bands])
        .collect();
    edges.dedup();
    // A cut at the smallest value would leave the first band empty.
    edges.retain(|e| *e > sorted[0]);
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_bands_and_empty_cells_get_columns_and_unseen_ones_none() {
        let cat = |s: &str| Some(Value::Category(s.into()));
        let num = |n: f64| Some(Value::Number(n));
        let rows: Vec<Observation> = (0..100)
            .map(|i| {
                vec![
                    if i % 2 == 0 {
                        cat("почта")
                    } else {
                        cat("телефон")
                    },
                    if i % 10 == 0 { None } else { num(f64::from(i)) },
                ]
            })
            .collect();
        let refs: Vec<&Observation> = rows.iter().collect();
        let enc = Encoder::fit(&[FeatureKind::Category, FeatureKind::Number], &refs, 4);
        // 2 labels, no empty label; 4 bands + empty.
        assert_eq!(enc.width, 2 + 4 + 1);
        let a = enc.encode(&vec![cat("почта"), num(1.0)]);
        let b = enc.encode(&vec![cat("почта"), num(99.0)]);
        assert_eq!(a[0], b[0]);
        assert_ne!(
            a[1], b[1],
            "the lowest and highest values fall in different bands"
        );
        let unseen = enc.encode(&vec![cat("факс"), None]);
        assert_eq!(unseen[0], NONE);
        assert_ne!(
            unseen[1], NONE,
            "empty cells were seen, so they have a column"
        );
        let never_empty = enc.encode(&vec![None, num(5.0)]);
        assert_eq!(never_empty[0], NONE);
    }

    #[test]
    fn repeated_values_make_fewer_bands() {
        let sorted = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        assert_eq!(quantile_edges(&sorted, 4), vec![2.0, 3.0]);
        assert!(quantile_edges(&[], 4).is_empty());
        assert!(quantile_edges(&[5.0; 10], 4).is_empty());
    }
}
