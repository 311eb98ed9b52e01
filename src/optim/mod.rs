//! The optimizer over the flat parameter arena (one fused pass per parameter group: AdamW,
//! Adamax or QHAdam), and the pairwise dot products and weighted sums of task gradients that the
//! multi-task methods (train/methods/) and gradient clipping need. CUDA kernels: kernels/optim.cu.

pub mod lamb;

use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// The update rule (`--optimizer`). AdamW, Adamax and QHAdam decay weights as AdamW does,
/// decoupled from the gradient: θ ← θ·(1 − lr·λ) before their step; LAMB as its paper does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019), as `torch.optim.AdamW`.
    #[default]
    Adamw,
    /// Adam's ∞-norm variant (Kingma & Ba 2015, Algorithm 2), as `torch.optim.Adamax`:
    /// u ← max(β2·u, |g| + ε), θ ← θ − lr/(1 − β1^t) · m/u.
    Adamax,
    /// Quasi-hyperbolic Adam (Ma & Yarats 2019): θ ← θ − lr · ((1 − ν1)·g + ν1·m̂) /
    /// (√((1 − ν2)·g² + ν2·v̂) + ε), m̂ and v̂ Adam's bias-corrected moments.
    Qhadam,
    /// Layer-wise adaptive moments (You et al. 2020): Adam's direction plus λθ, scaled per
    /// parameter tensor by the trust ratio ‖θ‖/‖direction‖ (its weight decay is the paper's, inside
    /// the direction, not decoupled). See [`lamb`].
    Lamb,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub rule: Rule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// QHAdam's ν1, ν2 (the paper's recommended 0.7, 1.0).
    pub nu: (f64, f64),
}

impl Default for OptimizerConfig {
    /// AdamW with PyTorch's defaults, but for weight decay 0.01 (the reference recipe's).
    fn default() -> Self {
        OptimizerConfig { rule: Rule::Adamw, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, nu: (0.7, 1.0) }
    }
}

/// The optimizer of the trainable arena: its rule's two moment buffers (Adam's m and v; m and
/// the ∞-norm u for Adamax), mirroring the arena's layout, stepped in parameter groups.
pub struct Optimizer<F: Float> {
    pub config: OptimizerConfig,
    /// Steps taken so far (the bias corrections use step + 1 for the next one).
    pub step: u64,
    pub m: Buffer<F>,
    pub v: Buffer<F>,
    /// Runs of the arena with their own learning-rate factor and weight decay, as PyTorch's
    /// parameter groups (one covering the arena at `config.weight_decay` by default).
    groups: Vec<Group>,
    /// On a GPU, where the clipping norm ‖g‖² is computed and kept.
    clip_dots: Option<DeviceDots>,
    /// LAMB's segments and scratch (with `Rule::Lamb`).
    lamb: Option<lamb::Lamb<F>>,
}

/// A run of the trainable arena that steps at `lr_factor` × the step's learning rate, with its
/// own weight decay (PyTorch's parameter group).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub range: std::ops::Range<usize>,
    pub lr_factor: f64,
    pub weight_decay: f64,
}

impl Group {
    /// Consecutive runs of parameters with equal settings, in arena order: `params` are
    /// (offset, length, lr_factor, weight_decay) in arena order, covering it without gaps.
    pub fn runs(params: impl IntoIterator<Item = (usize, usize, f64, f64)>) -> Vec<Group> {
        let mut out: Vec<Group> = Vec::new();
        for (offset, len, lr_factor, weight_decay) in params {
            match out.last_mut() {
                Some(g) if g.range.end == offset && g.lr_factor == lr_factor && g.weight_decay == weight_decay => {
                    g.range.end = offset + len;
                }
                _ => out.push(Group { range: offset..offset + len, lr_factor, weight_decay }),
            }
        }
        out
    }
}

/// How a step scales the gradients: by a factor known on the host, or by the clipping factor of
/// the norm² that pairwise_dots left in device memory at `sumsq`.
#[derive(Clone, Copy, Debug)]
pub enum Scale {
    By(f64),
    ClipOnDevice { sumsq: u64, max_norm: f64 },
}

/// The per-step constants: the host computes them in f64, both paths use them as F.
#[derive(Clone, Copy, Debug)]
pub struct StepConsts {
    /// lr / (1 − β1^t)
    pub step_size: f64,
    /// √(1 − β2^t)
    pub bc2_sqrt: f64,
    /// 1 − β1^t and 1 − β2^t (QHAdam's m̂ and v̂)
    pub bc1: f64,
    pub bc2: f64,
}

impl StepConsts {
    pub fn new(c: &OptimizerConfig, lr: f64, t: i32) -> StepConsts {
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        StepConsts { step_size: lr / bc1, bc2_sqrt: bc2.sqrt(), bc1, bc2 }
    }
}

impl<F: Float> Optimizer<F> {
    pub fn new(store: &Store<F>, config: OptimizerConfig) -> Result<Self> {
        let n = store.num_trainable();
        let groups = vec![Group { range: 0..n, lr_factor: 1.0, weight_decay: config.weight_decay }];
        Self::with_groups(store, config, groups)
    }

    /// The optimizer whose `groups` (covering the trainable arena in order, without gaps) step
    /// with their own learning-rate factor and weight decay; `config.weight_decay` is then unused.
    pub fn with_groups(store: &Store<F>, config: OptimizerConfig, groups: Vec<Group>) -> Result<Self> {
        let n = store.num_trainable();
        let mut end = 0;
        for g in &groups {
            if g.range.start != end || !(g.lr_factor.is_finite() && g.lr_factor >= 0.0) {
                return Err(Error::Config(format!("optimizer groups: {g:?} does not follow on at {end}")));
            }
            end = g.range.end;
        }
        if end != n {
            return Err(Error::Config(format!("optimizer groups cover {end} of {n} trainable values")));
        }
        let (m, v) = (Buffer::zeros(&store.device, n)?, Buffer::zeros(&store.device, n)?);
        let lamb = (config.rule == Rule::Lamb).then(|| lamb::Lamb::new(store, &groups)).transpose()?;
        Ok(Optimizer { config, step: 0, m, v, groups, clip_dots: None, lamb })
    }

    /// One step at learning rate `lr` over every trainable parameter, from the gradients in the store.
    pub fn update(&mut self, store: &mut Store<F>, lr: f64) -> Result<()> {
        self.update_scaled(store, lr, 1.0)
    }

    /// One step with every gradient multiplied by `grad_scale` first (gradient clipping).
    pub fn update_scaled(&mut self, store: &mut Store<F>, lr: f64, grad_scale: f64) -> Result<()> {
        self.step_with(store, lr, Scale::By(grad_scale))
    }

    /// One step with the gradients clipped to L2 norm `max_norm` (scaled by max_norm / (‖g‖ + 1e-6)
    /// when ‖g‖ > max_norm; no clipping when max_norm ≤ 0). On a GPU the norm never leaves the
    /// device: the step does not wait for it.
    pub fn update_clipped(&mut self, store: &mut Store<F>, lr: f64, max_norm: f64) -> Result<()> {
        if max_norm <= 0.0 {
            return self.update(store, lr);
        }
        match (&store.device, F::NAME) {
            (Device::Cuda(_), "f32") => {
                let n = store.num_trainable();
                if self.clip_dots.is_none() {
                    self.clip_dots = DeviceDots::new(&store.device, n, 1)?;
                }
                let dots = self.clip_dots.as_mut().expect("a CUDA store");
                let sumsq = dots.run(&[store.grads().device_ptr().unwrap_or(0)], n)?;
                self.step_with(store, lr, Scale::ClipOnDevice { sumsq, max_norm })
            }
            _ => {
                let norm = grad_norm(store)?;
                self.update_scaled(store, lr, if norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 })
            }
        }
    }

    fn step_with(&mut self, store: &mut Store<F>, lr: f64, scale: Scale) -> Result<()> {
        let n = store.num_trainable();
        if self.m.len() != n {
            return Err(Error::Config(format!("the optimizer's moments hold {} values, the model {n}", self.m.len())));
        }
        self.step += 1;
        let t = self.step as i32;
        if let Some(l) = &mut self.lamb {
            return l.step(store, &mut self.m, &mut self.v, &self.groups, &self.config, lr, t, scale);
        }
        let device = store.device.clone();
        let (params, grads) = store.params_and_grads_mut();
        for group in &self.groups {
            let (r, lr) = (group.range.clone(), lr * group.lr_factor);
            if r.is_empty() {
                continue;
            }
            let c = OptimizerConfig { weight_decay: group.weight_decay, ..self.config };
            let k = StepConsts::new(&c, lr, t);
            match &device {
                Device::Cpu => {
                    let (p, g) = (params.cpu_mut().expect("cpu buffer"), grads.cpu().expect("cpu buffer"));
                    let (m, v) = (self.m.cpu_mut().expect("cpu buffer"), self.v.cpu_mut().expect("cpu buffer"));
                    let Scale::By(grad_scale) = scale else {
                        return Err(Error::Config("optimizer: a device-side clip on the CPU".into()));
                    };
                    let (p, g, m, v) = (&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()], &mut v[r]);
                    cpu::step(p, g, m, v, lr, &c, &k, grad_scale);
                }
                Device::Cuda(dev) => {
                    // The group's run of each arena: its first element's address.
                    let at = |b: &Buffer<F>| b.device_ptr().unwrap_or(0) + (r.start * std::mem::size_of::<F>()) as u64;
                    let ptrs = [at(params), at(grads), at(&self.m), at(&self.v)];
                    cuda::step(dev, ptrs, r.len(), lr, &c, &k, scale)?;
                }
            }
        }
        Ok(())
    }
}

/// The L2 norm of the whole gradient arena (for clipping).
pub fn grad_norm<F: Float>(store: &Store<F>) -> Result<f64> {
    let n = store.num_trainable();
    if n == 0 {
        return Ok(0.0);
    }
    Ok(pairwise_dots(&store.device, &[store.grads()], n)?[0].sqrt())
}

/// Every dot product g_i · g_j (i ≤ j) of the first `n` values of each buffer, as a symmetric
/// k×k matrix (row-major), accumulated in f64 on the CPU and as f32 block sums added in f64 on
/// the GPU. At most 8 buffers (tasks).
pub fn pairwise_dots<F: Float>(device: &Device, grads: &[&Buffer<F>], n: usize) -> Result<Vec<f64>> {
    pairwise_dots_reusing(device, grads, n, &mut None)
}

/// [`pairwise_dots`] keeping its GPU scratch in `kept` between calls (made on the first, remade
/// when too small), for a caller that needs the matrix on the host every step (GradVac): no
/// device allocation per call.
pub fn pairwise_dots_reusing<F: Float>(
    device: &Device,
    grads: &[&Buffer<F>],
    n: usize,
    kept: &mut Option<DeviceDots>,
) -> Result<Vec<f64>> {
    let k = grads.len();
    if k == 0 || k > 8 {
        return Err(Error::Config(format!("pairwise_dots takes 1 to 8 gradients, got {k}")));
    }
    if let Some(g) = grads.iter().find(|g| g.len() < n) {
        return Err(Error::Config(format!("pairwise_dots: a gradient holds {} values, fewer than {n}", g.len())));
    }
    let triangle = match device {
        Device::Cpu => {
            let views: Vec<&[F]> = grads.iter().map(|g| &g.cpu().expect("cpu buffer")[..n]).collect();
            cpu::pairwise_dots(&views)
        }
        Device::Cuda(_) => {
            let ptrs: Vec<u64> = grads.iter().map(|g| g.device_ptr().unwrap_or(0)).collect();
            if kept.as_ref().is_none_or(|d| n > d.max.0 || k > d.max.1) {
                *kept = DeviceDots::new(device, n, k)?;
            }
            let dots = kept.as_mut().expect("a CUDA device");
            dots.run(&ptrs, n)?;
            dots.triangle.read(0..k * (k + 1) / 2)?
        }
    };
    let mut full = vec![0.0; k * k];
    let mut q = 0;
    for i in 0..k {
        for j in i..k {
            full[i * k + j] = triangle[q];
            full[j * k + i] = triangle[q];
            q += 1;
        }
    }
    Ok(full)
}

/// [`pairwise_dots`] on a GPU with its scratch kept and its result left in device memory, where
/// the kernels that need it (PCGrad's surgery, the clipped AdamW step) read it: no host read, no
/// allocation per call.
pub struct DeviceDots {
    dev: std::sync::Arc<crate::device::Cuda>,
    /// Per-block partial sums, dot_blocks(n) × k(k+1)/2.
    partials: Buffer<f32>,
    /// The upper triangle of the Gram matrix (row by row), k(k+1)/2 doubles.
    pub triangle: Buffer<f64>,
    /// The kernel's block counter, left at zero by each launch.
    counter: Buffer<u32>,
    max: (usize, usize),
}

impl DeviceDots {
    /// Scratch for up to `k` gradients of up to `n` values; None on the CPU.
    pub fn new(device: &Device, n: usize, k: usize) -> Result<Option<DeviceDots>> {
        let Device::Cuda(dev) = device else { return Ok(None) };
        let pairs = k * (k + 1) / 2;
        let mut partials = Buffer::new(device);
        partials.grow_to(cuda::dot_blocks(n.max(1)) * pairs)?;
        let (triangle, counter) = (Buffer::zeros(device, pairs)?, Buffer::zeros(device, 1)?);
        Ok(Some(DeviceDots { dev: dev.clone(), partials, triangle, counter, max: (n, k) }))
    }

    /// Queues the dot products of the first `n` values of `grads` (device addresses); returns the
    /// address of the triangle they go to. With n = 0 the triangle is zero.
    pub fn run(&mut self, grads: &[u64], n: usize) -> Result<u64> {
        if n > self.max.0 || grads.len() > self.max.1 {
            return Err(Error::Config(format!(
                "DeviceDots for {} gradients of {} values got {} of {n}",
                self.max.1,
                self.max.0,
                grads.len()
            )));
        }
        if n == 0 {
            self.triangle.fill_zero(0..grads.len() * (grads.len() + 1) / 2)?;
        } else {
            let (p, t, c) = (self.partials.device_ptr(), self.triangle.device_ptr(), self.counter.device_ptr());
            let (p, t, c) = (p.expect("allocated"), t.expect("allocated"), c.expect("allocated"));
            cuda::pairwise_dots_into(&self.dev, grads, n, p, t, c)?;
        }
        let triangle = self.triangle.device_ptr().expect("allocated on the device");
        Ok(triangle)
    }
}

/// dst[x] = weights[0]·dst[x] + Σ_j weights[j+1]·others[j][x] for x in `range` (a multi-task method's combination;
/// at most 7 others).
pub fn weighted_sum<F: Float>(
    device: &Device,
    dst: &mut Buffer<F>,
    others: &[&Buffer<F>],
    weights: &[f64],
    range: std::ops::Range<usize>,
) -> Result<()> {
    if weights.len() != others.len() + 1 || others.len() > 7 {
        return Err(Error::Config(format!("weighted_sum: {} weights for {} buffers", weights.len(), others.len() + 1)));
    }
    if range.end > dst.len() || others.iter().any(|o| o.len() < range.end) {
        return Err(Error::Config(format!("weighted_sum: range {range:?} exceeds a buffer")));
    }
    if range.is_empty() {
        return Ok(());
    }
    match device {
        Device::Cpu => {
            let srcs: Vec<&[F]> = others.iter().map(|o| &o.cpu().expect("cpu buffer")[range.clone()]).collect();
            cpu::weighted_sum(&mut dst.cpu_mut().expect("cpu buffer")[range], &srcs, weights);
        }
        Device::Cuda(dev) => {
            let size = std::mem::size_of::<F>() as u64;
            let at = |b: &Buffer<F>| b.device_ptr().unwrap_or(0) + range.start as u64 * size;
            let srcs: Vec<u64> = others.iter().map(|o| at(o)).collect();
            cuda::weighted_sum(dev, at(dst), &srcs, weights, range.len())?;
        }
    }
    Ok(())
}

pub mod cpu {
    use super::{OptimizerConfig, Rule, StepConsts};
    use crate::float::Float;

    /// The arithmetic of kernels/optim.cu `optimizer_step`, element by element, for `c.rule`.
    #[allow(clippy::too_many_arguments)]
    pub fn step<F: Float>(
        p: &mut [F],
        g: &[F],
        m: &mut [F],
        v: &mut [F],
        lr: f64,
        c: &OptimizerConfig,
        k: &StepConsts,
        grad_scale: f64,
    ) {
        use rayon::prelude::*;
        let f = F::from_f64;
        let scale = f(grad_scale);
        let (decay, b1, b2, eps) = (f(1.0 - lr * c.weight_decay), f(c.beta1), f(c.beta2), f(c.eps));
        let (step_size, bc2_sqrt, bc1, bc2) = (f(k.step_size), f(k.bc2_sqrt), f(k.bc1), f(k.bc2));
        let (lr, nu1, nu2) = (f(lr), f(c.nu.0), f(c.nu.1));
        let rule = c.rule;
        // Element by element, so the parallel chunks change nothing; one loop per rule, so that
        // each vectorises without a branch per element.
        const CHUNK: usize = 1 << 16;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| match rule {
                Rule::Adamw => {
                    for i in 0..p.len() {
                        let gi = g[i] * scale;
                        let pi = p[i] * decay;
                        let mi = m[i] + (F::ONE - b1) * (gi - m[i]);
                        let vi = v[i] * b2 + (F::ONE - b2) * gi * gi;
                        let denom = vi.sqrt() / bc2_sqrt + eps;
                        p[i] = pi - step_size * (mi / denom);
                        m[i] = mi;
                        v[i] = vi;
                    }
                }
                Rule::Adamax => {
                    for i in 0..p.len() {
                        let gi = g[i] * scale;
                        let pi = p[i] * decay;
                        let mi = m[i] + (F::ONE - b1) * (gi - m[i]);
                        let ui = (v[i] * b2).max(gi.abs() + eps);
                        p[i] = pi - step_size * (mi / ui);
                        m[i] = mi;
                        v[i] = ui;
                    }
                }
                Rule::Lamb => unreachable!("LAMB steps in optim::lamb"),
                Rule::Qhadam => {
                    for i in 0..p.len() {
                        let gi = g[i] * scale;
                        let pi = p[i] * decay;
                        let mi = m[i] + (F::ONE - b1) * (gi - m[i]);
                        let vi = v[i] * b2 + (F::ONE - b2) * gi * gi;
                        let num = (F::ONE - nu1) * gi + nu1 * (mi / bc1);
                        let den = ((F::ONE - nu2) * gi * gi + nu2 * (vi / bc2)).sqrt() + eps;
                        p[i] = pi - lr * (num / den);
                        m[i] = mi;
                        v[i] = vi;
                    }
                }
            });
    }

    /// Elements per parallel chunk: k chunks of this size stay in L2 while every pair reads them.
    const DOT_CHUNK: usize = 1 << 12;

    /// The upper triangle (row by row) of the Gram matrix of `grads`, in f64: chunk sums in
    /// parallel, added in chunk order, so the result does not depend on the thread count.
    pub fn pairwise_dots<F: Float>(grads: &[&[F]]) -> Vec<f64> {
        use rayon::prelude::*;
        let k = grads.len();
        let n = grads.iter().map(|g| g.len()).min().unwrap_or(0);
        let pairs: Vec<(usize, usize)> = (0..k).flat_map(|i| (i..k).map(move |j| (i, j))).collect();
        let partials: Vec<Vec<f64>> = (0..n.div_ceil(DOT_CHUNK))
            .into_par_iter()
            .map(|c| {
                let r = c * DOT_CHUNK..((c + 1) * DOT_CHUNK).min(n);
                pairs.iter().map(|&(i, j)| dot(&grads[i][r.clone()], &grads[j][r.clone()])).collect()
            })
            .collect();
        let mut out = vec![0.0; pairs.len()];
        for p in partials {
            out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
        }
        out
    }

    /// a · b in f64 with eight independent accumulators (so that it vectorises).
    fn dot<F: Float>(a: &[F], b: &[F]) -> f64 {
        let mut acc = [0.0f64; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                acc[l] += x[l].to_f64() * y[l].to_f64();
            }
        }
        let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        acc.iter().sum::<f64>() + tail
    }

    /// dst = w[0]·dst + Σ_j w[j+1]·srcs[j], element by element, in parallel chunks.
    pub fn weighted_sum<F: Float>(dst: &mut [F], srcs: &[&[F]], weights: &[f64]) {
        use rayon::prelude::*;
        let w: Vec<F> = weights.iter().map(|&x| F::from_f64(x)).collect();
        const CHUNK: usize = 1 << 15;
        dst.par_chunks_mut(CHUNK).enumerate().for_each(|(c, d)| {
            let start = c * CHUNK;
            d.iter_mut().for_each(|x| *x *= w[0]);
            for (s, &wj) in srcs.iter().zip(&w[1..]) {
                let s = &s[start..start + d.len()];
                d.iter_mut().zip(s).for_each(|(x, &y)| *x += wj * y);
            }
        });
    }
}

/// Launchers of kernels/optim.cu.
pub mod cuda {
    use super::{OptimizerConfig, Rule, StepConsts};
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "optim.cu";

    /// [p, g, m, v] (n each): one fused step of `c.rule` (`optimizer_step`, or
    /// `optimizer_step_clip` when the clipping factor comes from device memory).
    pub fn step(
        dev: &Cuda,
        [p, g, m, v]: [u64; 4],
        n: usize,
        lr: f64,
        c: &OptimizerConfig,
        k: &StepConsts,
        scale: super::Scale,
    ) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let f = |x: f64| Arg::F32(x as f32);
        let rule = match c.rule {
            Rule::Adamw => 0,
            Rule::Adamax => 1,
            Rule::Qhadam => 2,
            Rule::Lamb => return Err(crate::error::Error::Config("LAMB steps in optim::lamb".into())),
        };
        let mut args = vec![
            Arg::Ptr(p),
            Arg::Ptr(g),
            Arg::Ptr(m),
            Arg::Ptr(v),
            Arg::U64(n as u64),
            Arg::U32(rule),
            f(lr),
            f(c.beta1),
            f(c.beta2),
            f(c.eps),
            f(c.weight_decay),
            f(k.step_size),
            f(k.bc2_sqrt),
            f(k.bc1),
            f(k.bc2),
            f(c.nu.0),
            f(c.nu.1),
        ];
        match scale {
            super::Scale::By(s) => {
                args.push(f(s));
                dev.launch(FILE, "optimizer_step", grid, block, 0, &args)
            }
            super::Scale::ClipOnDevice { sumsq, max_norm } => {
                args.extend([Arg::Ptr(sumsq), Arg::F64(max_norm)]);
                dev.launch(FILE, "optimizer_step_clip", grid, block, 0, &args)
            }
        }
    }

    /// dst = w[0]·dst + Σ_j w[j+1]·srcs[j] over n floats (up to 7 sources), one launch.
    pub fn weighted_sum(dev: &Cuda, dst: u64, srcs: &[u64], weights: &[f64], n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let mut args = vec![Arg::Ptr(dst)];
        args.extend((0..7).map(|i| Arg::Ptr(srcs.get(i).copied().unwrap_or(0))));
        args.extend((0..8).map(|i| Arg::F32(weights.get(i).copied().unwrap_or(0.0) as f32)));
        args.push(Arg::U32(srcs.len() as u32));
        args.push(Arg::U64(n as u64));
        dev.launch(FILE, "weighted_sum", grid, block, 0, &args)
    }

    /// Blocks of a `pairwise_dots` launch over n values, and so the rows of its partials.
    pub fn dot_blocks(n: usize) -> usize {
        n.div_ceil(256).clamp(1, 1024)
    }

    /// The upper triangle of the Gram matrix of up to 8 gradients (n floats each), one launch,
    /// into `out` (k(k+1)/2 doubles), with the caller's scratch: `partials` (dot_blocks(n) ·
    /// k(k+1)/2 floats) and `done` (one zeroed u32, left zero). See [`super::DeviceDots`].
    pub fn pairwise_dots_into(dev: &Cuda, grads: &[u64], n: usize, partials: u64, out: u64, done: u64) -> Result<()> {
        let mut args: Vec<Arg> = (0..8).map(|i| Arg::Ptr(grads.get(i).copied().unwrap_or(0))).collect();
        args.extend([
            Arg::U32(grads.len() as u32),
            Arg::U64(n as u64),
            Arg::Ptr(partials),
            Arg::Ptr(out),
            Arg::Ptr(done),
        ]);
        dev.launch(FILE, "pairwise_dots", (dot_blocks(n) as u32, 1, 1), (256, 1, 1), 0, &args)
    }

    /// [`weighted_sum`] with the k = srcs.len() + 1 weights read from device memory (doubles).
    pub fn weighted_sum_dw(dev: &Cuda, dst: u64, srcs: &[u64], weights: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let mut args = vec![Arg::Ptr(dst)];
        args.extend((0..7).map(|i| Arg::Ptr(srcs.get(i).copied().unwrap_or(0))));
        args.extend([Arg::Ptr(weights), Arg::U32(srcs.len() as u32), Arg::U64(n as u64)]);
        dev.launch(FILE, "weighted_sum_dw", grid, block, 0, &args)
    }
}
