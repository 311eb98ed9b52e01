//! GradVac (Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task
//! Optimization in Massively Multilingual Models"; seed 004) over flat task gradients.
//!
//! Where PCGrad acts only on conflict (cos < 0), GradVac keeps for every ordered task pair an
//! exponential moving average φ̂_ij of their cosine, and whenever this step's cosine φ falls below
//! it, adds the multiple of g_j that lifts cos(g_i', g_j) to exactly φ̂_ij:
//!
//!   g_i' += ‖g_i'‖ (φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²)) · g_j,   φ̂_ij ← (1−β) φ̂_ij + β φ,
//!
//! for each task i and the others j in a seeded random order (as PCGrad visits them), the update
//! being Σ_i g_i'. φ̂ starts at 0 (the paper's), so at first GradVac acts where PCGrad would. Like
//! PCGrad it keeps g_i' a linear combination Σ_l a_l g_l, so it runs on the Gram matrix: one pass
//! for the dot products, one for the weighted sum. The paper applies it per layer; here, as the
//! issue defines it, over the whole shared vector.
//!
//! On a GPU the k×k matrix is read back (one small device read per step) and the weights go back
//! with the weighted sum's launch. φ̂ is saved with every out/last checkpoint and restored on
//! --resume, so a resumed run continues bit for bit.

use super::pcgrad::cosines;
use super::{GradientMethod, Stats, check_orders, named_pairs, quad, visiting_orders};
use crate::data::cs224n::Task;
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::optim::{DeviceDots, pairwise_dots_reusing, weighted_sum};
use crate::train::report::{self, Record};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The outcome of one step of GradVac over k task gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct Vaccination {
    /// The update is Σ_j weights[j] · g_j over the original task gradients.
    pub weights: Vec<f64>,
    /// cos(g_i, g_j) of the original gradients for i < j, row by row.
    pub cosines: Vec<f64>,
    /// Ordered pairs (i, j) where g_i' was adjusted towards g_j.
    pub adjusted: usize,
    /// k(k − 1): the pairs visited.
    pub pairs: usize,
    /// ‖g_i'‖ / ‖g_i‖ per task (1 for a zero gradient).
    pub norm_ratio: Vec<f64>,
}

/// One step of GradVac on the Gram matrix `gram` (k×k, row-major) with the targets `target`
/// (k×k, row-major, φ̂_ij at i·k + j; updated in place) and decay `beta`, each task i visiting
/// the others in `orders[i]`. A pair whose gradients include a zero one is skipped (no cosine),
/// and so is a target of ±1 (the correction's denominator vanishes).
pub fn vaccinate(gram: &[f64], target: &mut [f64], orders: &[Vec<usize>], beta: f64) -> Result<Vaccination> {
    let k = orders.len();
    if gram.len() != k * k || target.len() != k * k {
        return Err(Error::Config(format!("gradvac: a {k}-task step needs {k}×{k} Gram and target matrices")));
    }
    check_orders(orders, k)?;
    let g = |i: usize, j: usize| gram[i * k + j];
    let mut weights = vec![0.0; k];
    let mut adjusted = 0;
    let mut norm_ratio = Vec::with_capacity(k);
    for (i, order) in orders.iter().enumerate() {
        // g_i' = Σ_l a[l] g_l
        let mut a = vec![0.0; k];
        a[i] = 1.0;
        for &j in order {
            let (norm_i, norm_j) = (quad(&a, gram, k).max(0.0).sqrt(), g(j, j).max(0.0).sqrt());
            if norm_i == 0.0 || norm_j == 0.0 {
                continue;
            }
            let dot: f64 = (0..k).map(|l| a[l] * g(l, j)).sum();
            let phi = (dot / (norm_i * norm_j)).clamp(-1.0, 1.0);
            let t = target[i * k + j];
            let room = (1.0 - t * t).max(0.0).sqrt();
            if phi < t && room > 0.0 {
                a[j] += norm_i * (t * (1.0 - phi * phi).max(0.0).sqrt() - phi * room) / (norm_j * room);
                adjusted += 1;
            }
            target[i * k + j] = (1.0 - beta) * t + beta * phi;
        }
        norm_ratio.push(if g(i, i) > 0.0 { (quad(&a, gram, k).max(0.0) / g(i, i)).sqrt() } else { 1.0 });
        for (w, al) in weights.iter_mut().zip(&a) {
            *w += al;
        }
    }
    Ok(Vaccination { weights, cosines: cosines(gram, k), adjusted, pairs: k * k.saturating_sub(1), norm_ratio })
}

/// GradVac's state: φ̂ for every ordered pair of the run's tasks, and the statistics not yet logged.
pub struct GradVac {
    k: usize,
    seed: u64,
    beta: f64,
    /// φ̂_ij at i·k + j, over the run's task indices.
    target: Vec<f64>,
    /// On a GPU, the Gram matrix's scratch, kept across steps.
    dots: Option<DeviceDots>,
    /// (step, tasks, outcome, targets after it) of the steps not yet drained.
    done: Vec<(usize, Vec<usize>, Vaccination, Vec<f64>)>,
    window: Vec<Stats>,
}

/// φ̂ as state.json keeps it.
#[derive(Serialize, Deserialize)]
struct Saved {
    gradvac_target: Vec<f64>,
}

impl GradVac {
    /// GradVac over the run's `k` tasks with decay `beta` (validated by the options).
    pub fn new(k: usize, seed: u64, beta: f64) -> GradVac {
        GradVac { k, seed, beta, target: vec![0.0; k * k], dots: None, done: Vec::new(), window: Vec::new() }
    }
}

impl GradientMethod for GradVac {
    fn combine(
        &mut self,
        device: &Device,
        dst: &mut Buffer<f32>,
        others: &[&Buffer<f32>],
        shared: usize,
        tasks: &[usize],
        step: usize,
    ) -> Result<()> {
        let k = tasks.len();
        let mut views: Vec<&Buffer<f32>> = vec![dst];
        views.extend(others.iter().copied());
        let gram = pairwise_dots_reusing(device, &views, shared, &mut self.dots)?;
        // This step's tasks may be a subset of the run's (one task per step under a sampling
        // schedule with --grad-accum): their own block of φ̂.
        let mut sub: Vec<f64> = tasks
            .iter()
            .flat_map(|&i| tasks.iter().map(move |&j| (i, j)))
            .map(|(i, j)| self.target[i * self.k + j])
            .collect();
        let out = vaccinate(&gram, &mut sub, &visiting_orders(self.seed, step, k), self.beta)?;
        for (q, (i, j)) in tasks.iter().flat_map(|&i| tasks.iter().map(move |&j| (i, j))).enumerate() {
            self.target[i * self.k + j] = sub[q];
        }
        weighted_sum(device, dst, others, &out.weights, 0..shared)?;
        self.done.push((step + 1, tasks.to_vec(), out, self.target.clone()));
        Ok(())
    }

    fn drain(&mut self, tasks: &[Task]) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for (step, idx, v, target) in std::mem::take(&mut self.done) {
            let names: Vec<Task> = idx.iter().map(|&t| tasks[t]).collect();
            let mut pairs = std::collections::BTreeMap::new();
            for &i in &idx {
                for &j in idx.iter().filter(|&&j| j != i) {
                    pairs.insert(format!("{}→{}", tasks[i], tasks[j]), target[i * self.k + j]);
                }
            }
            let stats = Stats {
                step,
                cosine: named_pairs(&names, &v.cosines),
                projected_fraction: if v.pairs == 0 { 0.0 } else { v.adjusted as f64 / v.pairs as f64 },
                norm_ratio: names.iter().zip(&v.norm_ratio).map(|(t, r)| (t.to_string(), *r)).collect(),
                target: pairs,
            };
            self.window.push(stats.clone());
            records.push(Record::Gradvac(stats));
        }
        Ok(records)
    }

    fn summary(&mut self, step: usize) -> Option<(String, Record)> {
        let mean = Stats::mean(step, &self.window)?;
        let line = format!("gradvac over steps {}..={step}: {}", self.window[0].step, mean.describe_as("adjusted"));
        self.window.clear();
        Some((line, Record::GradvacSummary(mean)))
    }

    fn write_plot(&self, out: &Path, records: &[Record]) -> Result<()> {
        let stats: Vec<&Stats> =
            records.iter().filter_map(|r| if let Record::Gradvac(s) = r { Some(s) } else { None }).collect();
        report::write_method_plot(&out.join("gradvac.svg"), &stats, "adjusted")
    }

    fn state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(Saved { gradvac_target: self.target.clone() }).ok()
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: Saved = serde_json::from_value(state.clone())
            .map_err(|e| Error::Config(format!("--resume: the saved GradVac state does not read: {e}")))?;
        if saved.gradvac_target.len() != self.k * self.k {
            return Err(Error::Config(format!(
                "--resume: the saved GradVac state holds {} targets, {} tasks need {}",
                saved.gradvac_target.len(),
                self.k,
                self.k * self.k
            )));
        }
        self.target = saved.gradvac_target;
        Ok(())
    }
}
