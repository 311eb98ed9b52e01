//! Gradient-combining multi-task methods: how the task gradients of the shared parameters become
//! one update. Each method is one file implementing [`GradientMethod`]; the trainer holds one
//! [`Combiner`] (the per-task gradient slots of [`super::task_grads`] and the method), built from
//! the options, or none for the plain sum of the task losses.
//!
//! Both methods here keep the update a linear combination Σ_j w_j g_j of the original task
//! gradients, so they run on the k×k Gram matrix of the shared part (one pass over the gradients)
//! and one weighted sum (one more), whatever k.
//!
//! Adding a method: its file here, one arm in [`Combiner::from_options`], its flags and options.

pub mod gradvac;
pub mod pcgrad;

use super::options::TrainOptions;
use super::records::Record;
pub use super::records::Stats;
use super::task_grads::{TaskGradients, shared_len};
use crate::data::cs224n::Task;
use crate::device::{Buffer, Device};
use crate::error::Result;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::Path;

/// One gradient-combining method over the k task gradients of a step.
pub trait GradientMethod {
    /// Combines the first `shared` values of the gradients of `tasks` (increasing task indices,
    /// at least one): `dst` holds the gradient of `tasks[0]` and takes the update in place,
    /// `others` those of `tasks[1..]`. `step` is the 0-based optimizer step.
    fn combine(
        &mut self,
        device: &Device,
        dst: &mut Buffer<f32>,
        others: &[&Buffer<f32>],
        shared: usize,
        tasks: &[usize],
        step: usize,
    ) -> Result<()>;

    /// The statistics of the steps combined since the last call, as metrics.jsonl records (on a
    /// GPU at most one device read); they also join the window of [`GradientMethod::summary`].
    fn drain(&mut self, tasks: &[Task]) -> Result<Vec<Record>>;

    /// The window's mean since the last summary, as a progress line and a record; the window is
    /// emptied. None when no step was combined since.
    fn summary(&mut self, step: usize) -> Option<(String, Record)>;

    /// Writes the method's plot (e.g. pcgrad.svg) into the run folder `out` from the run's records.
    fn write_plot(&self, out: &Path, records: &[Record]) -> Result<()>;

    /// State that a resumed run needs (saved in state.json), if any.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restores [`GradientMethod::state`] from a resumed checkpoint.
    fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// What the trainer holds when a method is on: the task gradients and the method.
pub struct Combiner {
    pub grads: TaskGradients<f32>,
    method: Box<dyn GradientMethod>,
}

impl Combiner {
    /// The method the options ask for, with its slots for `store`'s trainable parameters; None
    /// for the plain sum.
    pub fn from_options(opts: &TrainOptions, store: &Store<f32>) -> Result<Option<Combiner>> {
        let (k, shared) = (opts.tasks.len(), shared_len(store)?);
        let method: Box<dyn GradientMethod> = if opts.pcgrad {
            Box::new(pcgrad::PcGrad::new(&store.device, k, shared, opts.seed, opts.pcgrad_reduction)?)
        } else if opts.gradvac {
            Box::new(gradvac::GradVac::new(k, opts.seed, opts.gradvac_beta))
        } else {
            return Ok(None);
        };
        Ok(Some(Combiner { grads: TaskGradients::new(store, k, shared)?, method }))
    }

    /// Combines this step's task gradients (`step` 0-based) into the store's gradient arena.
    pub fn combine(&mut self, store: &mut Store<f32>, step: usize) -> Result<()> {
        let (device, shared) = (store.device.clone(), self.grads.shared());
        let method = &mut self.method;
        self.grads.combine_with(store, |dst, others, tasks| method.combine(&device, dst, others, shared, tasks, step))
    }

    pub fn drain(&mut self, tasks: &[Task]) -> Result<Vec<Record>> {
        self.method.drain(tasks)
    }

    pub fn summary(&mut self, step: usize) -> Option<(String, Record)> {
        self.method.summary(step)
    }

    pub fn write_plot(&self, out: &Path, records: &[Record]) -> Result<()> {
        self.method.write_plot(out, records)
    }

    pub fn state(&self) -> Option<serde_json::Value> {
        self.method.state()
    }

    pub fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.method.restore(state)
    }
}

/// The cosines of a step's pairs i < j (row by row, as `cosines`) named by their tasks.
pub(crate) fn named_pairs(tasks: &[Task], cosines: &[f64]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut q = 0;
    for i in 0..tasks.len() {
        for j in i + 1..tasks.len() {
            out.insert(format!("{}/{}", tasks[i], tasks[j]), cosines[q]);
            q += 1;
        }
    }
    out
}

/// aᵀ G a for the k×k Gram matrix `gram` (row-major): ‖Σ_l a_l g_l‖², summed over (l, m) in
/// row order (the order the device's surgery kernel follows).
pub(crate) fn quad(a: &[f64], gram: &[f64], k: usize) -> f64 {
    (0..k).flat_map(|l| (0..k).map(move |m| (l, m))).map(|(l, m)| a[l] * a[m] * gram[l * k + m]).sum()
}

/// Errors unless each of the k orders is a permutation of the other tasks.
pub(crate) fn check_orders(orders: &[Vec<usize>], k: usize) -> Result<()> {
    use crate::error::Error;
    if orders.len() != k {
        return Err(Error::Config(format!("task orders: {} visiting orders for {k} tasks", orders.len())));
    }
    for (i, order) in orders.iter().enumerate() {
        let mut seen = vec![false; k];
        if order.len() != k - 1 || order.iter().any(|&j| j == i || j >= k || std::mem::replace(&mut seen[j], true)) {
            return Err(Error::Config(format!("task {i}'s order {order:?} is not a permutation of the others")));
        }
    }
    Ok(())
}

/// The order in which task `i` visits the others: a seeded shuffle, a function of (seed, step, i)
/// alone, so a resumed run draws the same orders.
pub fn visiting_orders(seed: u64, step: usize, k: usize) -> Vec<Vec<usize>> {
    use crate::rng::{Rng, mix64};
    (0..k)
        .map(|i| {
            let mut others: Vec<usize> = (0..k).filter(|&j| j != i).collect();
            let mut rng = Rng::new(mix64(seed ^ 0x9c_9a_d5) ^ mix64(step as u64) ^ mix64(i as u64 + 1));
            for n in (1..others.len()).rev() {
                others.swap(n, rng.below(n + 1));
            }
            others
        })
        .collect()
}
