//! How good the chances are, in the measures an analyst checks: ranking (AUC), accuracy
//! (Brier score, log loss) and calibration (do the leads given 30 % win 30 % of the time).

use serde::Serialize;

/// The area under the ROC curve: the chance that a random won lead got a higher
/// probability than a random lost one (0.5 is a coin, 1 is perfect). Ties count half.
pub fn auc(p: &[f64], won: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_unstable_by(|a, b| p[*a].total_cmp(&p[*b]));
    let (mut rank_sum, mut positives) = (0.0, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        // Ranks are 1-based; a run of ties shares their mean rank.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if won[k] {
                rank_sum += rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = p.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    let pos = positives as f64;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * negatives as f64)
}

/// The mean squared error of the probabilities (0 is perfect; lower is better).
pub fn brier(p: &[f64], won: &[bool]) -> f64 {
    mean(p.iter().zip(won).map(|(p, w)| {
        let y = f64::from(u8::from(*w));
        (p - y) * (p - y)
    }))
}

/// The mean negative log-likelihood (lower is better); punishes confident mistakes.
pub fn log_loss(p: &[f64], won: &[bool]) -> f64 {
    mean(p.iter().zip(won).map(|(p, w)| {
        let p = p.clamp(1e-15, 1.0 - 1e-15);
        if *w { -p.ln() } else { -(1.0 - p).ln() }
    }))
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// One tenth of the leads, by predicted chance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decile {
    /// 1 (the lowest chances) to 10.
    pub decile: usize,
    /// Leads in it.
    pub leads: usize,
    /// Their mean predicted chance.
    pub predicted: f64,
    /// The share of them that was won.
    pub actual: f64,
}

/// The calibration table: leads sorted by predicted chance, cut into ten equal groups.
pub fn calibration(p: &[f64], won: &[bool]) -> Vec<Decile> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_unstable_by(|a, b| p[*a].total_cmp(&p[*b]));
    let n = order.len();
    (0..10)
        .filter_map(|d| {
            let part = &order[d * n / 10..(d + 1) * n / 10];
            (!part.is_empty()).then(|| Decile {
                decile: d + 1,
                leads: part.len(),
                predicted: mean(part.iter().map(|i| p[*i])),
                actual: mean(part.iter().map(|i| f64::from(u8::from(won[*i])))),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_tied_rankings() {
        let won = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &won), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &won), 0.0);
        assert_eq!(auc(&[0.5; 4], &won), 0.5);
        // One won lead ties one lost lead: half a pair.
        assert_eq!(auc(&[0.1, 0.5, 0.5, 0.9], &won), 0.875);
    }

    #[test]
    fn brier_and_log_loss_of_known_cases() {
        let won = [true, false];
        assert_eq!(brier(&[1.0, 0.0], &won), 0.0);
        assert_eq!(brier(&[0.5, 0.5], &won), 0.25);
        assert!((log_loss(&[0.5, 0.5], &won) - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn calibration_has_ten_groups_of_rising_chance() {
        let p: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let won: Vec<bool> = (0..100).map(|i| i % 10 < i / 10).collect();
        let table = calibration(&p, &won);
        assert_eq!(table.len(), 10);
        assert!(table.iter().all(|d| d.leads == 10));
        assert!(table.windows(2).all(|w| w[0].predicted < w[1].predicted));
        assert_eq!(table[9].actual, 0.9);
    }
}
