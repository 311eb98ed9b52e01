//! PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") over flat task gradients.
//!
//! The surgery runs on the k×k Gram matrix of the shared part, not on the vectors: every projected
//! gradient is a linear combination of the original ones, g_i^PC = Σ_j a_ij g_j, and each
//! projection step needs only g_i^PC · g_j = Σ_l a_il G_lj. So the whole method costs one pass for
//! the Gram matrix (one launch on the GPU) and one pass that writes Σ_j w_j g_j with
//! w_j = Σ_i a_ij, instead of k² vector passes and k gradient copies; and the statistics (cosines,
//! ‖g^PC‖/‖g‖) fall out of the same matrix. On a GPU the surgery itself runs on the device too
//! (kernels/pcgrad.cu), so a step never waits for the host.

use super::{GradientMethod, Stats, check_orders, named_pairs, quad};
use crate::data::cs224n::Task;
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::optim::{DeviceDots, pairwise_dots, weighted_sum};
use crate::store::Store;
use crate::train::report::{self, Record};
use crate::train::task_grads;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use super::visiting_orders;
pub use crate::train::task_grads::shared_len;

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
        let norm2 = quad(&a, gram, k);
        norm_ratio.push(if g(i, i) > 0.0 { (norm2.max(0.0) / g(i, i)).sqrt() } else { 1.0 });
        for (w, al) in weights.iter_mut().zip(&a) {
            *w += al;
        }
    }
    if reduction == Reduction::Mean {
        weights.iter_mut().for_each(|w| *w /= k as f64);
    }
    Ok(Surgery { weights, cosines: cosines(gram, k), projected, pairs: k * k.saturating_sub(1), norm_ratio })
}

/// cos(g_i, g_j) for i < j, row by row, from the Gram matrix (0 where either gradient is zero).
pub(crate) fn cosines(gram: &[f64], k: usize) -> Vec<f64> {
    let g = |i: usize, j: usize| gram[i * k + j];
    let mut out = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            let d = (g(i, i) * g(j, j)).sqrt();
            out.push(if d > 0.0 { g(i, j) / d } else { 0.0 });
        }
    }
    out
}

impl Stats {
    /// The statistics of `surgery` over `tasks` (in its order) at `step`.
    pub fn new(step: usize, tasks: &[Task], surgery: &Surgery) -> Stats {
        let norm_ratio = tasks.iter().zip(&surgery.norm_ratio).map(|(t, r)| (t.to_string(), *r)).collect();
        let projected_fraction = if surgery.pairs == 0 { 0.0 } else { surgery.projected as f64 / surgery.pairs as f64 };
        Stats {
            step,
            cosine: named_pairs(tasks, &surgery.cosines),
            projected_fraction,
            norm_ratio,
            target: Default::default(),
        }
    }

    /// One line for the progress output.
    pub fn describe(&self) -> String {
        self.describe_as("projected")
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
    /// RING records of cuda::RECORD_LEN doubles.
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
            records: Buffer::zeros(device, RING * cuda::RECORD_LEN)?,
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
        let record = Self::ptr(&self.records) + (self.waiting.len() * cuda::RECORD_LEN * 8) as u64;
        let (ord, w) = (Self::ptr(&self.orders), Self::ptr(&self.weights));
        cuda::pcgrad_surgery(&self.dev, tri, ord, k, reduction == Reduction::Mean, w, record)?;
        if shared > 0 {
            crate::optim::cuda::weighted_sum_dw(&self.dev, ptrs[0], &ptrs[1..], w, shared)?;
        }
        Ok(())
    }

    /// The surgeries of the records written since the last read (one device read).
    fn read(&mut self) -> Result<Vec<Combined>> {
        if self.waiting.is_empty() {
            return Ok(Vec::new());
        }
        use cuda::{RECORD_LEN, RECORD_PROJECTED, RECORD_RATIOS, RECORD_WEIGHTS};
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

/// PCGrad as a [`GradientMethod`]: the surgery's state (its device half on a GPU), the
/// surgeries not yet drained, and the window of statistics since the last summary.
pub struct PcGrad {
    reduction: Reduction,
    seed: u64,
    device: Option<DeviceSurgery>,
    done: Vec<Combined>,
    window: Vec<Stats>,
}

impl PcGrad {
    /// PCGrad over `tasks` task gradients of which the first `shared` values are projected.
    pub fn new(device: &Device, tasks: usize, shared: usize, seed: u64, reduction: Reduction) -> Result<PcGrad> {
        let device = DeviceSurgery::new(device, tasks, shared)?;
        Ok(PcGrad { reduction, seed, device, done: Vec::new(), window: Vec::new() })
    }

    /// The surgery of one step over `dst` (task `tasks[0]`, takes the result) and `others`,
    /// labelled `label`, with the visiting orders `orders`. The device surgery runs where the
    /// buffers are f32 on a GPU.
    fn project<F: Float>(
        reduction: Reduction,
        device_surgery: Option<&mut DeviceSurgery>,
        done: &mut Vec<Combined>,
        device: &Device,
        dst: &mut Buffer<F>,
        others: &[&Buffer<F>],
        shared: usize,
        tasks: &[usize],
        label: usize,
        orders: Vec<Vec<usize>>,
    ) -> Result<()> {
        let k = tasks.len();
        check_orders(&orders, k)?; // (the device's surgery kernel trusts them)
        match device_surgery.filter(|_| F::NAME == "f32") {
            Some(ds) => {
                if ds.waiting.len() == RING {
                    done.extend(ds.read()?);
                }
                let ptrs: Vec<u64> =
                    std::iter::once(&*dst).chain(others.iter().copied()).map(|g| g.device_ptr().unwrap_or(0)).collect();
                ds.run(&ptrs, shared, &orders, reduction)?;
                ds.waiting.push((label, tasks.to_vec()));
            }
            None => {
                let mut views: Vec<&Buffer<F>> = vec![dst];
                views.extend(others.iter().copied());
                let gram = if shared == 0 { vec![0.0; k * k] } else { pairwise_dots(device, &views, shared)? };
                let surgery = surgery(&gram, &orders, reduction)?;
                weighted_sum(device, dst, others, &surgery.weights, 0..shared)?;
                done.push(Combined { step: label, tasks: tasks.to_vec(), surgery });
            }
        }
        Ok(())
    }

    /// The surgeries combined since the last drain, oldest first (on a GPU, one device read).
    fn take_done(&mut self) -> Result<Vec<Combined>> {
        if let Some(ds) = &mut self.device {
            self.done.extend(ds.read()?);
        }
        Ok(std::mem::take(&mut self.done))
    }
}

impl GradientMethod for PcGrad {
    fn combine(
        &mut self,
        device: &Device,
        dst: &mut Buffer<f32>,
        others: &[&Buffer<f32>],
        shared: usize,
        tasks: &[usize],
        step: usize,
    ) -> Result<()> {
        let orders = visiting_orders(self.seed, step, tasks.len());
        let (reduction, ds) = (self.reduction, self.device.as_mut());
        Self::project(reduction, ds, &mut self.done, device, dst, others, shared, tasks, step + 1, orders)
    }

    fn drain(&mut self, tasks: &[Task]) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for c in self.take_done()? {
            let names: Vec<Task> = c.tasks.iter().map(|&t| tasks[t]).collect();
            let stats = Stats::new(c.step, &names, &c.surgery);
            self.window.push(stats.clone());
            records.push(Record::Pcgrad(stats));
        }
        Ok(records)
    }

    fn summary(&mut self, step: usize) -> Option<(String, Record)> {
        let mean = Stats::mean(step, &self.window)?;
        let line = format!("pcgrad over steps {}..={step}: {}", self.window[0].step, mean.describe());
        self.window.clear();
        Some((line, Record::PcgradSummary(mean)))
    }

    fn write_plot(&self, out: &Path, records: &[Record]) -> Result<()> {
        report::write_pcgrad(&out.join("pcgrad.svg"), records)
    }
}

/// PCGrad with its task gradients in one value, for tests and benches that drive the pieces by
/// hand (the trainer holds a [`super::Combiner`]): any float type, any visiting orders.
pub struct TaskGradients<F: Float> {
    slots: task_grads::TaskGradients<F>,
    pcgrad: PcGrad,
}

impl<F: Float> TaskGradients<F> {
    /// `tasks` slots for `store`'s trainable parameters, of which the first `shared` values are projected.
    pub fn new(store: &Store<F>, tasks: usize, shared: usize) -> Result<Self> {
        let slots = task_grads::TaskGradients::new(store, tasks, shared)?;
        let device = if F::NAME == "f32" { DeviceSurgery::new(&store.device, tasks, shared)? } else { None };
        let pcgrad = PcGrad { reduction: Reduction::Sum, seed: 0, device, done: Vec::new(), window: Vec::new() };
        Ok(TaskGradients { slots, pcgrad })
    }

    /// Routes the backward passes that follow into task `t`'s slot (zeroed on its first use in a step).
    pub fn enter(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        self.slots.enter(store, t)
    }

    /// Gives the store its own gradient arena back after task `t`'s backward passes.
    pub fn leave(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        self.slots.leave(store, t)
    }

    /// The routing alone (for the trainer's single-task passes, `train_task`).
    pub fn slots(&mut self) -> &mut task_grads::TaskGradients<F> {
        &mut self.slots
    }

    /// Projects the task gradients written since the last combine and leaves their combination in
    /// the store's gradient arena. `orders(k)` gives the visiting orders; the surgery, labelled
    /// `step`, comes out of [`TaskGradients::drain`]. On a GPU nothing here waits for the device.
    pub fn combine(
        &mut self,
        store: &mut Store<F>,
        reduction: Reduction,
        step: usize,
        orders: impl FnOnce(usize) -> Vec<Vec<usize>>,
    ) -> Result<()> {
        let (device, shared) = (store.device.clone(), self.slots.shared());
        let p = &mut self.pcgrad;
        self.slots.combine_with(store, |dst, others, tasks| {
            let orders = orders(tasks.len());
            PcGrad::project(
                reduction,
                p.device.as_mut(),
                &mut p.done,
                &device,
                dst,
                others,
                shared,
                tasks,
                step,
                orders,
            )
        })
    }

    /// The surgeries combined since the last drain, oldest first (on a GPU, one device read).
    pub fn drain(&mut self) -> Result<Vec<Combined>> {
        self.pcgrad.take_done()
    }
}

/// Launchers of kernels/pcgrad.cu.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::Result;

    const FILE: &str = "pcgrad.cu";

    /// Doubles in one record of `pcgrad_surgery`, and where its parts start.
    pub const RECORD_LEN: usize = 45;
    pub const RECORD_PROJECTED: usize = 28;
    pub const RECORD_RATIOS: usize = 29;
    pub const RECORD_WEIGHTS: usize = 37;

    /// PCGrad's surgery on the device from the Gram triangle `tri` and the visiting `orders`
    /// (k × (k − 1) u32): writes `weights` (k doubles) and one record (RECORD_LEN doubles).
    pub fn pcgrad_surgery(
        dev: &Cuda,
        tri: u64,
        orders: u64,
        k: usize,
        mean: bool,
        weights: u64,
        record: u64,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(tri),
            Arg::Ptr(orders),
            Arg::U32(k as u32),
            Arg::U32(mean as u32),
            Arg::Ptr(weights),
            Arg::Ptr(record),
        ];
        dev.launch(FILE, "pcgrad_surgery", (1, 1, 1), (32, 1, 1), 0, &args)
    }
}
