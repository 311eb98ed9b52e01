//! The records of metrics.jsonl: what a run logs (losses, evaluations, the methods' statistics),
//! apart from how it is written (report.rs) and who computes it (trainer, methods), so that
//! neither of those depends on the other for it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Running mean losses per task since the previous record.
    Train { step: usize, epoch: usize, lr: f64, loss: BTreeMap<String, f64>, elapsed_s: f64 },
    /// Dev metrics per task and the combined score.
    Eval { step: usize, epoch: usize, split: String, metrics: BTreeMap<String, f64>, combined: f64 },
    /// One step's PCGrad statistics.
    Pcgrad(Stats),
    /// PCGrad statistics averaged over the steps since the previous evaluation.
    PcgradSummary(Stats),
    /// One step's GradVac statistics (with its targets φ̂).
    Gradvac(Stats),
    /// GradVac statistics averaged over the steps since the previous evaluation.
    GradvacSummary(Stats),
    /// SMART's smoothness term ℓ_s per task (unweighted), the mean since the previous record.
    Smart { step: usize, smoothness: BTreeMap<String, f64> },
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Train { step, .. } | Record::Eval { step, .. } | Record::Smart { step, .. } => *step,
            Record::Pcgrad(s) | Record::PcgradSummary(s) | Record::Gradvac(s) | Record::GradvacSummary(s) => s.step,
        }
    }
}

/// One step's (or, averaged, one evaluation window's) statistics of a method, as metrics.jsonl
/// holds them: the measurements of Figure 2 of the CS224N report "MiniBERT: Training Jointly on
/// Multiple Tasks" (PCGrad), and GradVac's targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub step: usize,
    /// cos(g_a, g_b) per task pair, named "a/b".
    pub cosine: BTreeMap<String, f64>,
    /// The fraction of ordered task pairs the method changed (PCGrad: projected; GradVac:
    /// adjusted towards its target).
    pub projected_fraction: f64,
    /// ‖g'‖ / ‖g‖ per task.
    pub norm_ratio: BTreeMap<String, f64>,
    /// GradVac: the target cosine φ̂ per ordered task pair "a→b", after the step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target: BTreeMap<String, f64>,
}

impl Stats {
    /// The mean of each statistic over `window` (labelled `step`); None for an empty window.
    pub fn mean(step: usize, window: &[Stats]) -> Option<Stats> {
        if window.is_empty() {
            return None;
        }
        let mean_of = |get: &dyn Fn(&Stats) -> &BTreeMap<String, f64>| {
            let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            for s in window {
                for (k, v) in get(s) {
                    let e = sums.entry(k.clone()).or_default();
                    e.0 += v;
                    e.1 += 1;
                }
            }
            sums.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect()
        };
        Some(Stats {
            step,
            cosine: mean_of(&|s| &s.cosine),
            projected_fraction: window.iter().map(|s| s.projected_fraction).sum::<f64>() / window.len() as f64,
            norm_ratio: mean_of(&|s| &s.norm_ratio),
            target: mean_of(&|s| &s.target),
        })
    }

    /// One line for the progress output; `changed` says what the fraction counts ("projected").
    pub fn describe_as(&self, changed: &str) -> String {
        let cos: Vec<String> = self.cosine.iter().map(|(k, v)| format!("{k} {v:+.3}")).collect();
        let ratio: Vec<String> = self.norm_ratio.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        let mut line = format!(
            "{changed} {:.1}% of task pairs; mean cos {}; mean |g'|/|g| {}",
            100.0 * self.projected_fraction,
            cos.join(", "),
            ratio.join(", ")
        );
        if !self.target.is_empty() {
            let t: Vec<String> = self.target.iter().map(|(k, v)| format!("{k} {v:+.4}")).collect();
            line += &format!("; targets {}", t.join(", "));
        }
        line
    }
}
