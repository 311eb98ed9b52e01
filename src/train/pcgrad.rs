//! PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") over flat task gradients.
//!
//! Each task's backward passes accumulate into its own gradient slot ([`TaskGradients`]); once per
//! optimizer step the slots are combined into the store's gradient arena. The surgery itself runs on
//! the k×k Gram matrix of the shared part, not on the vectors: every projected gradient is a linear
//! combination of the original ones, g_i^PC = Σ_j a_ij g_j, and each projection step needs only
//! g_i^PC · g_j = Σ_l a_il G_lj. So the whole method costs one pass for the Gram matrix (one launch
//! on the GPU) and one pass that writes Σ_j w_j g_j with w_j = Σ_i a_ij, instead of k² vector passes
//! and k gradient copies; and the statistics (cosines, ‖g^PC‖/‖g‖) fall out of the same matrix.
//!
//! Only the shared parameters (the encoder, or the LoRA adapters) are projected: they are
//! registered before the task heads, so they are the prefix `[0, shared)` of the gradient arena.
//! Head gradients are summed as they are (each head has only its own task's gradient).

use crate::data::cs224n::Task;
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::optim::cuda as optim_cuda;
use crate::optim::{DeviceDots, pairwise_dots, weighted_sum};
use crate::rng::{Rng, mix64};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the projected task gradients are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// Σ_i g_i^PC (the paper's update).
    #[default]
    Sum,
    /// (1/k) Σ_i g_i^PC.
    Mean,
}

/// The outcome of one surgery over k task gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct Surgery {
    /// The update is Σ_j weights[j] · g_j over the original task gradients.
    pub weights: Vec<f64>,
    /// cos(g_i, g_j) for i < j, row by row (0 where either gradient is zero).
    pub cosines: Vec<f64>,
    /// Ordered pairs (i, j), i ≠ j, where g_i^PC was projected away from g_j.
    pub projected: usize,
    /// k(k − 1): the pairs visited.
    pub pairs: usize,
    /// ‖g_i^PC‖ / ‖g_i‖ per task (1 for a zero gradient).
    pub norm_ratio: Vec<f64>,
}

/// The order in which task `i` visits the others: a seeded shuffle, a function of (seed, step, i)
/// alone, so a resumed run draws the same orders.
pub fn visiting_orders(seed: u64, step: usize, k: usize) -> Vec<Vec<usize>> {
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

/// PCGrad on the Gram matrix `gram` (k×k, row-major, G_ij = g_i · g_j): for each task i, the
/// others j in `orders[i]`; whenever g_i^PC · g_j < 0, g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j,
/// always against the original g_j.
pub fn surgery(gram: &[f64], orders: &[Vec<usize>], reduction: Reduction) -> Result<Surgery> {
    let k = orders.len();
    if gram.len() != k * k {
        return Err(Error::Config(format!("pcgrad: a {k}-task surgery needs a {k}×{k} Gram matrix")));
    }
    check_orders(orders, k)?;
    let g = |i: usize, j: usize| gram[i * k + j];
    let mut weights = vec![0.0; k];
    let mut projected = 0;
    let mut norm_ratio = Vec::with_capacity(k);
    for (i, order) in orders.iter().enumerate() {
        // g_i^PC = Σ_l a[l] g_l
        let mut a = vec![0.0; k];
        a[i] = 1.0;
        for &j in order {
            let dot: f64 = (0..k).map(|l| a[l] * g(l, j)).sum();
            if dot < 0.0 && g(j, j) > 0.0 {
                a[j] -= dot / g(j, j);
                projected += 1;
            }
        }
        let norm2: f64 = (0..k).flat_map(|l| (0..k).map(move |m| (l, m))).map(|(l, m)| a[l] * a[m] * g(l, m)).sum();
        norm_ratio.push(if g(i, i) > 0.0 { (norm2.max(0.0) / g(i, i)).sqrt() } else { 1.0 });
        for (w, al) in weights.iter_mut().zip(&a) {
            *w += al;
        }
    }
    if reduction == Reduction::Mean {
        weights.iter_mut().for_each(|w| *w /= k as f64);
    }
    let mut cosines = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            let d = (g(i, i) * g(j, j)).sqrt();
            cosines.push(if d > 0.0 { g(i, j) / d } else { 0.0 });
        }
    }
    Ok(Surgery { weights, cosines, projected, pairs: k * k.saturating_sub(1), norm_ratio })
}

/// One step's (or, averaged, one evaluation window's) statistics, as metrics.jsonl holds them:
/// the measurements of Figure 2 of the CS224N report "MiniBERT: Training Jointly on Multiple Tasks".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub step: usize,
    /// cos(g_a, g_b) per task pair, named "a/b".
    pub cosine: BTreeMap<String, f64>,
    /// The fraction of ordered task pairs whose gradients were projected.
    pub projected_fraction: f64,
    /// ‖g^PC‖ / ‖g‖ per task.
    pub norm_ratio: BTreeMap<String, f64>,
}

impl Stats {
    /// The statistics of `surgery` over `tasks` (in its order) at `step`.
    pub fn new(step: usize, tasks: &[Task], surgery: &Surgery) -> Stats {
        let mut cosine = BTreeMap::new();
        let mut q = 0;
        for i in 0..tasks.len() {
            for j in i + 1..tasks.len() {
                cosine.insert(format!("{}/{}", tasks[i], tasks[j]), surgery.cosines[q]);
                q += 1;
            }
        }
        let norm_ratio = tasks.iter().zip(&surgery.norm_ratio).map(|(t, r)| (t.to_string(), *r)).collect();
        let projected_fraction = if surgery.pairs == 0 { 0.0 } else { surgery.projected as f64 / surgery.pairs as f64 };
        Stats { step, cosine, projected_fraction, norm_ratio }
    }

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
        })
    }

    /// One line for the progress output.
    pub fn describe(&self) -> String {
        let cos: Vec<String> = self.cosine.iter().map(|(k, v)| format!("{k} {v:+.3}")).collect();
        let ratio: Vec<String> = self.norm_ratio.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        format!(
            "projected {:.1}% of task pairs; mean cos {}; mean |g_pc|/|g| {}",
            100.0 * self.projected_fraction,
            cos.join(", "),
            ratio.join(", ")
        )
    }
}

/// One optimizer step's surgery, as the trainer logs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    /// The step it was taken for (the caller's numbering).
    pub step: usize,
    /// The tasks combined, in the order of the surgery's vectors.
    pub tasks: Vec<usize>,
    pub surgery: Surgery,
}

/// One gradient slot per task, each shaped like the store's gradient arena. Backward passes of
/// task t run with slot t swapped in as the store's gradients ([`TaskGradients::enter`] /
/// [`TaskGradients::leave`]), so no gradient is ever copied.
pub struct TaskGradients<F: Float> {
    slots: Vec<Buffer<F>>,
    /// Slots written since the last combine, in first-use order.
    active: Vec<usize>,
    shared: usize,
    /// Surgeries taken and read, waiting for [`TaskGradients::drain`].
    done: Vec<Combined>,
    /// On a GPU: the surgery's device state.
    device: Option<DeviceSurgery>,
}

/// Steps of surgery records a GPU keeps before the host reads them (one read per this many
/// steps at most, when the caller drains less often).
const RING: usize = 256;

/// PCGrad on a GPU without the host: the Gram triangle, the surgery (one thread) and the weighted
/// sum all run on the device, reading each other's results from device memory; each step's
/// statistics go to a ring of records that the host reads when it logs.
struct DeviceSurgery {
    dev: std::sync::Arc<crate::device::Cuda>,
    /// The Gram triangle of the shared part, computed and kept on the device.
    dots: DeviceDots,
    /// This step's visiting orders, k × (k − 1).
    orders: Buffer<u32>,
    weights: Buffer<f64>,
    /// RING records of RECORD_LEN doubles.
    records: Buffer<f64>,
    /// (step, tasks) of the records written since the last read, in ring order.
    waiting: Vec<(usize, Vec<usize>)>,
}

impl DeviceSurgery {
    fn new(device: &Device, tasks: usize, shared: usize) -> Result<Option<DeviceSurgery>> {
        let (Device::Cuda(dev), Some(dots)) = (device, DeviceDots::new(device, shared, tasks)?) else {
            return Ok(None);
        };
        let mut orders = Buffer::new(device);
        orders.grow_to((tasks * tasks.saturating_sub(1)).max(1))?;
        Ok(Some(DeviceSurgery {
            dev: dev.clone(),
            dots,
            orders,
            weights: Buffer::zeros(device, tasks)?,
            records: Buffer::zeros(device, RING * optim_cuda::RECORD_LEN)?,
            waiting: Vec::new(),
        }))
    }

    fn ptr<T: crate::device::Element>(b: &Buffer<T>) -> u64 {
        b.device_ptr().expect("allocated on the device")
    }

    /// Queues the surgery of the gradients at `ptrs` (their first `shared` floats) and the
    /// weighted sum of that part into the first of them, in place.
    fn run(&mut self, ptrs: &[u64], shared: usize, orders: &[Vec<usize>], reduction: Reduction) -> Result<()> {
        let k = ptrs.len();
        let tri = self.dots.run(ptrs, shared)?;
        let flat: Vec<u32> = orders.iter().flatten().map(|&j| j as u32).collect();
        if !flat.is_empty() {
            self.orders.write(0, &flat)?;
        }
        let record = Self::ptr(&self.records) + (self.waiting.len() * optim_cuda::RECORD_LEN * 8) as u64;
        let (ord, w) = (Self::ptr(&self.orders), Self::ptr(&self.weights));
        optim_cuda::pcgrad_surgery(&self.dev, tri, ord, k, reduction == Reduction::Mean, w, record)?;
        if shared > 0 {
            optim_cuda::weighted_sum_dw(&self.dev, ptrs[0], &ptrs[1..], w, shared)?;
        }
        Ok(())
    }

    /// The surgeries of the records written since the last read (one device read).
    fn read(&mut self) -> Result<Vec<Combined>> {
        if self.waiting.is_empty() {
            return Ok(Vec::new());
        }
        use optim_cuda::{RECORD_LEN, RECORD_PROJECTED, RECORD_RATIOS, RECORD_WEIGHTS};
        let values = self.records.read(0..self.waiting.len() * RECORD_LEN)?;
        let out = self
            .waiting
            .drain(..)
            .zip(values.chunks_exact(RECORD_LEN))
            .map(|((step, tasks), r)| {
                let k = tasks.len();
                let surgery = Surgery {
                    weights: r[RECORD_WEIGHTS..RECORD_WEIGHTS + k].to_vec(),
                    cosines: r[..k * k.saturating_sub(1) / 2].to_vec(),
                    projected: r[RECORD_PROJECTED] as usize,
                    pairs: k * k.saturating_sub(1),
                    norm_ratio: r[RECORD_RATIOS..RECORD_RATIOS + k].to_vec(),
                };
                Combined { step, tasks, surgery }
            })
            .collect();
        Ok(out)
    }
}

impl<F: Float> TaskGradients<F> {
    /// `tasks` slots for `store`'s trainable parameters, of which the first `shared` values are projected.
    pub fn new(store: &Store<F>, tasks: usize, shared: usize) -> Result<Self> {
        let n = store.num_trainable();
        if tasks == 0 || tasks > 8 {
            return Err(Error::Config(format!("--pcgrad takes 2 to 8 tasks, got {tasks}")));
        }
        if shared > n {
            return Err(Error::Config(format!("pcgrad: {shared} shared values of {n} trainable ones")));
        }
        let mut slots = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let mut b = Buffer::new(&store.device);
            b.grow_to(n)?;
            slots.push(b);
        }
        let device = if F::NAME == "f32" { DeviceSurgery::new(&store.device, tasks, shared)? } else { None };
        Ok(TaskGradients { slots, active: Vec::new(), shared, done: Vec::new(), device })
    }

    /// Routes the backward passes that follow into task `t`'s slot (zeroed on its first use in a step).
    pub fn enter(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        let slot = self.slots.get_mut(t).ok_or_else(|| Error::Config(format!("pcgrad: no slot for task {t}")))?;
        if !self.active.contains(&t) {
            let n = slot.len();
            slot.fill_zero(0..n)?;
            self.active.push(t);
        }
        store.swap_grads(slot)
    }

    /// Gives the store its own gradient arena back after task `t`'s backward passes.
    pub fn leave(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        store.swap_grads(&mut self.slots[t])
    }

    /// Projects the task gradients written since the last combine and leaves their combination in
    /// the store's gradient arena (every value of it: no zeroing needed before). `orders(k)` gives
    /// the visiting orders; the surgery, labelled `step`, comes out of [`TaskGradients::drain`].
    /// On a GPU nothing here waits for the device.
    pub fn combine(
        &mut self,
        store: &mut Store<F>,
        reduction: Reduction,
        step: usize,
        orders: impl FnOnce(usize) -> Vec<Vec<usize>>,
    ) -> Result<()> {
        let mut tasks = std::mem::take(&mut self.active);
        tasks.sort_unstable();
        let Some(&first) = tasks.first() else {
            return Err(Error::Config("pcgrad: no task gradient to combine".into()));
        };
        let k = tasks.len();
        let n = store.num_trainable();
        let orders = orders(k);
        check_orders(&orders, k)?; // (the device's surgery kernel trusts them)
        let device = store.device.clone();
        // The combination is written into the first slot, which then becomes the store's arena.
        let mut dst = std::mem::replace(&mut self.slots[first], Buffer::new(&device));
        let others: Vec<&Buffer<F>> = tasks[1..].iter().map(|&t| &self.slots[t]).collect();
        match &mut self.device {
            Some(ds) => {
                if ds.waiting.len() == RING {
                    self.done.extend(ds.read()?);
                }
                // dst holds task `first`'s gradient and takes the combination in place.
                let ptrs: Vec<u64> =
                    std::iter::once(&dst).chain(others.iter().copied()).map(|g| g.device_ptr().unwrap_or(0)).collect();
                ds.run(&ptrs, self.shared, &orders, reduction)?;
                ds.waiting.push((step, tasks.clone()));
            }
            None => {
                let mut views: Vec<&Buffer<F>> = vec![&dst];
                views.extend(others.iter().copied());
                let gram =
                    if self.shared == 0 { vec![0.0; k * k] } else { pairwise_dots(&device, &views, self.shared)? };
                let surgery = surgery(&gram, &orders, reduction)?;
                weighted_sum(&device, &mut dst, &others, &surgery.weights, 0..self.shared)?;
                self.done.push(Combined { step, tasks: tasks.clone(), surgery });
            }
        }
        weighted_sum(&device, &mut dst, &others, &vec![1.0; k], self.shared..n)?;
        store.swap_grads(&mut dst)?;
        self.slots[first] = dst;
        Ok(())
    }

    /// The surgeries combined since the last drain, oldest first (on a GPU, one device read).
    pub fn drain(&mut self) -> Result<Vec<Combined>> {
        if let Some(ds) = &mut self.device {
            self.done.extend(ds.read()?);
        }
        Ok(std::mem::take(&mut self.done))
    }
}

/// Errors unless each of the k orders is a permutation of the other tasks.
fn check_orders(orders: &[Vec<usize>], k: usize) -> Result<()> {
    if orders.len() != k {
        return Err(Error::Config(format!("pcgrad: {} visiting orders for {k} tasks", orders.len())));
    }
    for (i, order) in orders.iter().enumerate() {
        let mut seen = vec![false; k];
        if order.len() != k - 1 || order.iter().any(|&j| j == i || j >= k || std::mem::replace(&mut seen[j], true)) {
            return Err(Error::Config(format!(
                "pcgrad: task {i}'s order {order:?} is not a permutation of the others"
            )));
        }
    }
    Ok(())
}

/// The end of the shared prefix of the trainable arena: the offset of the first trainable
/// parameter named `head.*`, checked to be followed by heads only.
pub fn shared_len<F: Float>(store: &Store<F>) -> Result<usize> {
    let trainable: Vec<(&str, crate::tensor::Tensor)> =
        store.params().filter(|(_, t)| t.arena == crate::tensor::Arena::Param).collect();
    let first_head = trainable.iter().filter(|(n, _)| n.starts_with("head.")).map(|(_, t)| t.offset).min();
    let shared = first_head.unwrap_or(store.num_trainable());
    if let Some((name, _)) = trainable.iter().find(|(n, t)| !n.starts_with("head.") && t.offset >= shared) {
        return Err(Error::Config(format!("pcgrad: shared parameter {name} lies among the task heads")));
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_that_depend_on_the_step() {
        let a = visiting_orders(1, 0, 5);
        for (i, o) in a.iter().enumerate() {
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, (0..5).filter(|&j| j != i).collect::<Vec<_>>());
        }
        assert_eq!(a, visiting_orders(1, 0, 5));
        assert!((1..20).any(|step| visiting_orders(1, step, 5) != a));
    }
}
