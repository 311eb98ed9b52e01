//! The tasks' metrics: accuracy for classes and yes/no, Pearson's r for a score, and the CS224N
//! combined score.

use crate::data::cs224n::{Example, Kind, Label, Prediction, Task};

/// One task's dev (or test) metric: accuracy for classes and Quora, Pearson r for STS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub task: Task,
    pub value: f64,
}

impl Score {
    /// The metric's name in reports.
    pub fn metric(&self) -> &'static str {
        match self.task.kind() {
            Kind::Regression => "pearson",
            _ => "accuracy",
        }
    }

    /// Its part of the combined score: accuracy as is, Pearson mapped to (r + 1)/2.
    pub fn normalised(&self) -> f64 {
        match self.task.kind() {
            Kind::Regression => (self.value + 1.0) / 2.0,
            _ => self.value,
        }
    }
}

/// The CS224N combined score: the mean over tasks of accuracy, or (r + 1)/2 for STS.
pub fn combined(scores: &[Score]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().map(Score::normalised).sum::<f64>() / scores.len() as f64
}

/// Pearson's correlation coefficient (0 when either side is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 { 0.0 } else { sxy / (sxx * syy).sqrt() }
}

/// The metric of `predictions` against the examples' labels (None without labels).
pub fn score(task: Task, examples: &[Example], predictions: &[Prediction]) -> Option<Score> {
    let labels: Vec<Label> = examples.iter().filter_map(|e| e.label).collect();
    if labels.len() != examples.len() || labels.is_empty() {
        return None;
    }
    let value = match task.kind() {
        Kind::Regression => {
            let p: Vec<f64> = predictions.iter().map(|p| if let Prediction::Score(s) = p { *s } else { 0.0 }).collect();
            let y: Vec<f64> = labels.iter().map(|l| l.as_f32() as f64).collect();
            pearson(&p, &y)
        }
        _ => {
            let right = predictions
                .iter()
                .zip(&labels)
                .filter(|(p, l)| match (p, l) {
                    (Prediction::Class(c), Label::Class(y)) => c == y,
                    (Prediction::Binary(b), Label::Binary(y)) => *b == (*y > 0.5),
                    _ => false,
                })
                .count();
            right as f64 / labels.len() as f64
        }
    };
    Some(Score { task, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_known_series() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        assert_eq!(pearson(&[1.0, 1.0], &[2.0, 3.0]), 0.0);
    }

    #[test]
    fn combined_maps_pearson_to_zero_one() {
        let s = [
            Score { task: Task::Sst, value: 0.5 },
            Score { task: Task::Quora, value: 0.8 },
            Score { task: Task::Sts, value: 0.6 },
        ];
        assert!((combined(&s) - (0.5 + 0.8 + 0.8) / 3.0).abs() < 1e-12);
    }
}
