//! Penalised regression on indicator columns, fitted by Newton's method.
//!
//! Why this model: the seed warns that correlated features (nearly every legal entity
//! writes by e-mail) must not count twice. Points added per feature, or naive Bayes, do
//! count them twice; a logistic regression fits all the features jointly, so each gets
//! only the effect the others do not already explain, and its probabilities are calibrated
//! on the data it learned from. The L2 penalty pulls the effect of a thin category (three
//! past leads from a small shop) towards the average, which is what a careful analyst does
//! by hand.
//!
//! Every row switches on at most one column per feature, so a row is a short list of
//! column numbers and the Hessian is built in O(rows × features²).

use serde::{Deserialize, Serialize};

use super::encode::NONE;

/// What is learned, and so the link between the columns and the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A chance between 0 and 1 (won or not): logistic regression.
    Logistic,
    /// A positive amount's mean (how many times the first budget a client brings):
    /// log-linear (Poisson-type) regression.
    LogLinear,
}

/// The rows to learn from: `per_row` columns per row, [`NONE`] where a feature is off.
#[derive(Debug, Clone)]
pub struct Design {
    /// How many columns exist.
    pub width: usize,
    /// Columns per row (the number of features, or twice that with time slopes).
    pub per_row: usize,
    /// The rows' columns, row after row.
    pub cells: Vec<u32>,
    /// The cells' values, parallel to `cells`; empty when every cell is 1 (indicators).
    pub values: Vec<f64>,
    /// How many leading cells of a row are indicators (one per feature); the rest carry
    /// other values (a time slope's age).
    pub indicators: usize,
}

impl Design {
    /// Indicator rows: `per_row` columns each, every one worth 1.
    pub fn indicators(width: usize, per_row: usize, cells: Vec<u32>) -> Design {
        Design {
            width,
            per_row,
            cells,
            values: Vec::new(),
            indicators: per_row,
        }
    }

    /// Rows in the design.
    pub fn rows(&self) -> usize {
        self.cells.len().checked_div(self.per_row).unwrap_or(0)
    }

    fn row(&self, i: usize) -> &[u32] {
        &self.cells[i * self.per_row..(i + 1) * self.per_row]
    }

    fn value(&self, i: usize, k: usize) -> f64 {
        if self.values.is_empty() {
            1.0
        } else {
            self.values[i * self.per_row + k]
        }
    }

    /// The linear predictor of row `i`.
    fn eta(&self, beta: &Coefficients, i: usize) -> f64 {
        if self.values.is_empty() {
            return beta.eta(self.row(i));
        }
        let mut eta = beta.intercept;
        for (k, c) in self.row(i).iter().enumerate() {
            if *c != NONE {
                eta += beta.weights[*c as usize] * self.value(i, k);
            }
        }
        eta
    }
}

/// A fitted linear predictor: the intercept plus one weight per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// The value for a row with no column on.
    pub intercept: f64,
    /// Per column.
    pub weights: Vec<f64>,
}

impl Coefficients {
    /// All zero.
    pub fn zero(width: usize) -> Coefficients {
        Coefficients {
            intercept: 0.0,
            weights: vec![0.0; width],
        }
    }

    /// The linear predictor of a row's columns.
    #[inline]
    pub fn eta(&self, columns: &[u32]) -> f64 {
        let mut eta = self.intercept;
        for &c in columns {
            if c != NONE {
                eta += self.weights[c as usize];
            }
        }
        eta
    }
}

/// The logistic function, kept away from exactly 0 and 1.
#[inline]
pub fn sigmoid(eta: f64) -> f64 {
    (1.0 / (1.0 + (-eta).exp())).clamp(1e-9, 1.0 - 1e-9)
}

impl Family {
    /// The prediction for a linear predictor.
    #[inline]
    pub fn mean(self, eta: f64) -> f64 {
        match self {
            Family::Logistic => sigmoid(eta),
            Family::LogLinear => eta.min(30.0).exp(),
        }
    }

    /// The loss of predicting from `eta` when `y` happened.
    fn loss(self, eta: f64, y: f64) -> f64 {
        match self {
            // log(1 + e^eta) - y·eta, written to stay finite for large |eta|.
            Family::Logistic => eta.max(0.0) + (-eta.abs()).exp().ln_1p() - y * eta,
            Family::LogLinear => eta.min(30.0).exp() - y * eta,
        }
    }

    /// The loss's second derivative in `eta` at the mean `mu`.
    fn curvature(self, mu: f64) -> f64 {
        match self {
            Family::Logistic => mu * (1.0 - mu),
            Family::LogLinear => mu,
        }
    }
}

/// Minimises Σ wᵢ·loss(ηᵢ, yᵢ) + λ/2·Σ βⱼ² (the intercept is not penalised), starting
/// from `start` (a neighbouring λ's answer converges in a few steps).
pub fn fit(
    design: &Design,
    y: &[f64],
    w: &[f64],
    family: Family,
    lambda: f64,
    start: Option<&Coefficients>,
) -> Coefficients {
    let d = design.width + 1;
    let mut beta = start
        .filter(|s| s.weights.len() == design.width)
        .cloned()
        .unwrap_or_else(|| Coefficients::zero(design.width));
    if start.is_none() {
        beta.intercept = initial_intercept(y, w, family);
    }
    let mut current = objective(design, y, w, family, lambda, &beta);
    let mut hessian = vec![0.0; d * d];
    let mut gradient = vec![0.0; d];
    let mut index = Vec::with_capacity(design.per_row + 1);
    for _ in 0..50 {
        hessian.iter_mut().for_each(|h| *h = 0.0);
        gradient.iter_mut().for_each(|g| *g = 0.0);
        for i in 0..design.rows() {
            if w[i] == 0.0 {
                continue;
            }
            let row = design.row(i);
            let mu = family.mean(design.eta(&beta, i));
            let g = w[i] * (mu - y[i]);
            let h = w[i] * family.curvature(mu);
            index.clear();
            index.push((0usize, 1.0));
            index.extend(
                row.iter()
                    .enumerate()
                    .filter(|(_, c)| **c != NONE)
                    .map(|(k, c)| (*c as usize + 1, design.value(i, k))),
            );
            for (a, &(j, vj)) in index.iter().enumerate() {
                gradient[j] += g * vj;
                let line = &mut hessian[j * d..(j + 1) * d];
                for &(k, vk) in &index[a..] {
                    line[k] += h * vj * vk;
                }
            }
        }
        for j in 1..d {
            gradient[j] += lambda * beta.weights[j - 1];
            hessian[j * d + j] += lambda;
        }
        // Only the upper triangle was summed (rows' columns are distinct per feature, but
        // their order is not sorted): mirror it into the lower before solving.
        for j in 0..d {
            for k in (j + 1)..d {
                let s = hessian[j * d + k] + hessian[k * d + j];
                hessian[j * d + k] = s;
                hessian[k * d + j] = s;
            }
        }
        // A tiny ridge keeps a column that no row switches on solvable.
        for j in 0..d {
            hessian[j * d + j] += 1e-9;
        }
        let Some(step) = solve(&mut hessian, &gradient, d) else {
            break;
        };
        // Halve the step until the objective does not rise.
        let mut scale = 1.0;
        let mut accepted = None;
        for _ in 0..30 {
            let trial = Coefficients {
                intercept: beta.intercept - scale * step[0],
                weights: beta
                    .weights
                    .iter()
                    .zip(&step[1..])
                    .map(|(b, s)| b - scale * s)
                    .collect(),
            };
            let value = objective(design, y, w, family, lambda, &trial);
            if value <= current + 1e-12 * current.abs().max(1.0) {
                accepted = Some((trial, value));
                break;
            }
            scale /= 2.0;
        }
        let Some((next, value)) = accepted else { break };
        let moved = step.iter().map(|s| (s * scale).abs()).fold(0.0, f64::max);
        let improved = current - value;
        beta = next;
        current = value;
        if moved < 1e-7 || improved < 1e-10 * current.abs().max(1.0) {
            break;
        }
    }
    beta
}

fn initial_intercept(y: &[f64], w: &[f64], family: Family) -> f64 {
    let total: f64 = w.iter().sum();
    let mean = if total > 0.0 {
        y.iter().zip(w).map(|(y, w)| y * w).sum::<f64>() / total
    } else {
        0.5
    };
    match family {
        Family::Logistic => {
            let m = mean.clamp(1e-6, 1.0 - 1e-6);
            (m / (1.0 - m)).ln()
        }
        Family::LogLinear => mean.max(1e-6).ln(),
    }
}

fn objective(
    design: &Design,
    y: &[f64],
    w: &[f64],
    family: Family,
    lambda: f64,
    beta: &Coefficients,
) -> f64 {
    let data: f64 = (0..design.rows())
        .filter(|i| w[*i] != 0.0)
        .map(|i| w[i] * family.loss(design.eta(beta, i), y[i]))
        .sum();
    data + lambda / 2.0 * beta.weights.iter().map(|b| b * b).sum::<f64>()
}

/// Moves each feature's average weight over the rows (weighted by `w`) into the
/// intercept. Every row the model learned from switches on one column per feature, so its
/// predictions do not change; but a value never seen (no column) now adds nothing, which
/// makes it score as an average lead rather than as wherever the penalty left the
/// intercept.
pub fn center(design: &Design, w: &[f64], beta: &mut Coefficients) {
    let mut sums = vec![0.0; design.per_row];
    let mut totals = vec![0.0; design.per_row];
    for (i, weight) in w.iter().enumerate() {
        for (f, c) in design.row(i)[..design.indicators].iter().enumerate() {
            if *c != NONE {
                sums[f] += weight * beta.weights[*c as usize];
                totals[f] += weight;
            }
        }
    }
    // Which feature each indicator column belongs to.
    let mut owner = vec![usize::MAX; design.width];
    for i in 0..design.rows() {
        for (f, c) in design.row(i)[..design.indicators].iter().enumerate() {
            if *c != NONE {
                owner[*c as usize] = f;
            }
        }
    }
    let means: Vec<f64> = sums
        .iter()
        .zip(&totals)
        .map(|(s, t)| if *t > 0.0 { s / t } else { 0.0 })
        .collect();
    for (c, weight) in beta.weights.iter_mut().enumerate() {
        if let Some(m) = means.get(owner[c]) {
            *weight -= m;
        }
    }
    beta.intercept += means.iter().sum::<f64>();
}

/// Solves `a·x = b` for a symmetric positive-definite `a` (overwritten) by Cholesky.
fn solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in (j + 1)..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / diag;
        }
    }
    let mut x = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= a[i * n + k] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in (i + 1)..n {
            x[i] -= a[k * n + i] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two perfectly correlated columns (e-mail and legal entity, always together): the
    /// fit shares the effect between them instead of counting it twice, so the predicted
    /// rate matches the observed one.
    #[test]
    fn correlated_columns_do_not_double_count() {
        // Column 0 = e-mail, 1 = legal entity; a row of both converts 40 %, of neither 20 %.
        let mut cells = Vec::new();
        let mut y = Vec::new();
        for i in 0..1000 {
            let both = i % 2 == 0;
            cells.extend(if both { [0, 1] } else { [NONE, NONE] });
            let won = if both { i % 10 < 4 } else { i % 10 == 1 };
            y.push(if won { 1.0 } else { 0.0 });
        }
        let design = Design::indicators(2, 2, cells);
        let w = vec![1.0; y.len()];
        let beta = fit(&design, &y, &w, Family::Logistic, 0.01, None);
        let p_both = sigmoid(beta.eta(&[0, 1]));
        let p_none = sigmoid(beta.eta(&[NONE, NONE]));
        assert!((p_both - 0.4).abs() < 0.01, "{p_both}");
        assert!((p_none - 0.2).abs() < 0.01, "{p_none}");
        assert!(
            (beta.weights[0] - beta.weights[1]).abs() < 1e-6,
            "shared equally"
        );
    }

    #[test]
    fn the_penalty_pulls_a_thin_category_towards_the_average() {
        // 500 rows of column 0 at 20 %, and 2 rows of column 1, both won.
        let mut cells = Vec::new();
        let mut y = Vec::new();
        for i in 0..500 {
            cells.push(0);
            y.push(if i % 5 == 0 { 1.0 } else { 0.0 });
        }
        cells.extend([1, 1]);
        y.extend([1.0, 1.0]);
        let design = Design::indicators(2, 1, cells);
        let w = vec![1.0; y.len()];
        let mut beta = fit(&design, &y, &w, Family::Logistic, 1.0, None);
        center(&design, &w, &mut beta);
        let thin = sigmoid(beta.eta(&[1]));
        assert!(thin > 0.2 && thin < 0.9, "not 100 %: {thin}");
        let unseen = sigmoid(beta.eta(&[NONE]));
        assert!(
            unseen > 0.15 && unseen < 0.3,
            "an unseen value scores near the average: {unseen}"
        );
    }

    #[test]
    fn log_linear_learns_a_mean_multiple() {
        let cells = vec![0, 0, 1, 1];
        let y = vec![1.0, 3.0, 10.0, 14.0];
        let design = Design::indicators(2, 1, cells);
        let beta = fit(&design, &y, &[1.0; 4], Family::LogLinear, 1e-6, None);
        assert!((Family::LogLinear.mean(beta.eta(&[0])) - 2.0).abs() < 1e-3);
        assert!((Family::LogLinear.mean(beta.eta(&[1])) - 12.0).abs() < 1e-3);
    }
}
