//! LAMB (You et al. 2020, Algorithm 2): Adam's direction plus the weight decay term,
//! u = m̂/(√v̂ + ε) + λθ, scaled per parameter tensor by the trust ratio ‖θ‖/‖u‖ (1 where either
//! is 0): θ ← θ − lr·(‖θ‖/‖u‖)·u. Three passes (the direction, each tensor's two norms, the step)
//! where the other rules take one, since the ratio needs its whole tensor. Launchers of
//! kernels/lamb.cu and their CPU twins, which sum the norms in the kernel's order (bit for bit).

use super::{Group, OptimizerConfig, Scale, StepConsts};
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;

/// Threads per block of `lamb_norms` (its LAMB_BLOCK), and so the stride of its partial sums.
const BLOCK: usize = 256;

/// LAMB's per-run state: the arena's tensors (segments), their groups' rate factors, the
/// direction u and the norms.
pub struct Lamb<F: Float> {
    /// Segment s is [starts[s], starts[s + 1]): one trainable tensor.
    starts: Vec<u64>,
    factors: Vec<f32>,
    u: Buffer<F>,
    /// On a GPU: starts, factors and the norms (2 per segment) in device memory.
    device: Option<(Buffer<u64>, Buffer<f32>, Buffer<f64>)>,
}

impl<F: Float> Lamb<F> {
    /// The segments of `store`'s trainable tensors, each with the rate factor of its group.
    pub fn new(store: &Store<F>, groups: &[Group]) -> Result<Lamb<F>> {
        let mut starts: Vec<u64> =
            store.trainable().filter(|(_, t)| t.numel() > 0).map(|(_, t)| t.offset as u64).collect();
        let n = store.num_trainable();
        starts.push(n as u64);
        let factors: Vec<f32> = starts[..starts.len() - 1]
            .iter()
            .map(|&s| groups.iter().find(|g| g.range.contains(&(s as usize))).map_or(1.0, |g| g.lr_factor as f32))
            .collect();
        let device = match &store.device {
            Device::Cpu => None,
            d @ Device::Cuda(_) => {
                let mut s = Buffer::zeros(d, starts.len())?;
                s.write(0, &starts)?;
                let mut f = Buffer::zeros(d, factors.len())?;
                f.write(0, &factors)?;
                Some((s, f, Buffer::zeros(d, 2 * factors.len())?))
            }
        };
        Ok(Lamb { starts, factors, u: Buffer::zeros(&store.device, n)?, device })
    }

    /// One LAMB step: the direction of each group (at its weight decay), then every tensor's
    /// trust ratio and step at `lr` times its group's factor.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        store: &mut Store<F>,
        m: &mut Buffer<F>,
        v: &mut Buffer<F>,
        groups: &[Group],
        config: &OptimizerConfig,
        lr: f64,
        t: i32,
        scale: Scale,
    ) -> Result<()> {
        let k = StepConsts::new(config, lr, t);
        let device = store.device.clone();
        let (params, grads) = store.params_and_grads_mut();
        let n = params.len().min(self.u.len());
        match &device {
            Device::Cpu => {
                let Scale::By(grad_scale) = scale else {
                    return Err(Error::Config("LAMB: a device-side clip on the CPU".into()));
                };
                let (p, g) = (params.cpu_mut().expect("cpu buffer"), grads.cpu().expect("cpu buffer"));
                let (m, v, u) = (m.cpu_mut().expect("cpu"), v.cpu_mut().expect("cpu"), self.u.cpu_mut().expect("cpu"));
                for group in groups {
                    let r = group.range.clone();
                    let c = OptimizerConfig { weight_decay: group.weight_decay, ..*config };
                    cpu::direction(
                        &p[r.clone()],
                        &g[r.clone()],
                        &mut m[r.clone()],
                        &mut v[r.clone()],
                        &mut u[r],
                        &c,
                        &k,
                        grad_scale,
                    );
                }
                let sums = cpu::norms(p, u, &self.starts);
                cpu::apply(p, u, &self.starts, &sums, &self.factors, lr);
            }
            Device::Cuda(dev) => {
                let (starts, factors, sums) = self.device.as_ref().expect("device buffers on a GPU");
                let ptr = |b: &Buffer<F>| b.device_ptr().unwrap_or(0);
                let (p, g, mp, vp, u) = (ptr(params), ptr(grads), ptr(m), ptr(v), ptr(&self.u));
                let size = std::mem::size_of::<F>() as u64;
                for group in groups {
                    let (r, at) = (group.range.clone(), group.range.start as u64 * size);
                    let c = OptimizerConfig { weight_decay: group.weight_decay, ..*config };
                    cuda::direction(dev, [p + at, g + at, mp + at, vp + at, u + at], r.len(), &c, &k, scale)?;
                }
                let segments = self.factors.len();
                let (s, f, sm) = (
                    starts.device_ptr().unwrap_or(0),
                    factors.device_ptr().unwrap_or(0),
                    sums.device_ptr().unwrap_or(0),
                );
                cuda::norms(dev, p, u, s, segments, sm)?;
                cuda::apply(dev, p, u, n, s, segments, sm, f, lr)?;
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use super::{BLOCK, OptimizerConfig, StepConsts};
    use crate::float::Float;
    use rayon::prelude::*;

    /// kernels/lamb.cu `lamb_direction`, element by element.
    #[allow(clippy::too_many_arguments)]
    pub fn direction<F: Float>(
        p: &[F],
        g: &[F],
        m: &mut [F],
        v: &mut [F],
        u: &mut [F],
        c: &OptimizerConfig,
        k: &StepConsts,
        grad_scale: f64,
    ) {
        let f = F::from_f64;
        let (s, b1, b2, eps, wd, bc1, bc2) =
            (f(grad_scale), f(c.beta1), f(c.beta2), f(c.eps), f(c.weight_decay), f(k.bc1), f(k.bc2));
        const CHUNK: usize = 1 << 16;
        u.par_chunks_mut(CHUNK)
            .zip(p.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((u, (p, g)), (m, v))| {
                for i in 0..u.len() {
                    let gi = g[i] * s;
                    let mi = m[i] + (F::ONE - b1) * (gi - m[i]);
                    let vi = v[i] * b2 + (F::ONE - b2) * gi * gi;
                    u[i] = (mi / bc1) / ((vi / bc2).sqrt() + eps) + wd * p[i];
                    m[i] = mi;
                    v[i] = vi;
                }
            });
    }

    /// kernels/lamb.cu `lamb_norms`: (‖p‖², ‖u‖²) per segment in double, summed as the kernel's
    /// block does (strided partial sums, then a pairwise tree over the block).
    pub fn norms<F: Float>(p: &[F], u: &[F], starts: &[u64]) -> Vec<(f64, f64)> {
        starts
            .par_windows(2)
            .map(|w| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                let mut part = vec![(0.0f64, 0.0f64); BLOCK];
                for (t, acc) in part.iter_mut().enumerate() {
                    let mut i = a + t;
                    while i < b {
                        let (pi, ui) = (p[i].to_f64(), u[i].to_f64());
                        acc.0 += pi * pi;
                        acc.1 += ui * ui;
                        i += BLOCK;
                    }
                }
                let mut w = BLOCK / 2;
                while w > 0 {
                    for t in 0..w {
                        part[t] = (part[t].0 + part[t + w].0, part[t].1 + part[t + w].1);
                    }
                    w /= 2;
                }
                part[0]
            })
            .collect()
    }

    /// kernels/lamb.cu `lamb_apply`: p ← p − (lr·factor_s)·r_s·u per segment s.
    pub fn apply<F: Float>(p: &mut [F], u: &[F], starts: &[u64], sums: &[(f64, f64)], factors: &[f32], lr: f64) {
        let mut rest = p;
        let mut parts = Vec::with_capacity(sums.len());
        for w in starts.windows(2) {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut((w[1] - w[0]) as usize);
            parts.push((w[0] as usize, part));
            rest = tail;
        }
        parts.into_par_iter().zip(sums).zip(factors).for_each(|(((a, part), &(pn, un)), &factor)| {
            let r = if pn > 0.0 && un > 0.0 { F::from_f64(pn.sqrt() / un.sqrt()) } else { F::ONE };
            let step = (F::from_f64(lr) * F::from_f64(factor as f64)) * r;
            for (x, &ui) in part.iter_mut().zip(&u[a..]) {
                *x -= step * ui;
            }
        });
    }
}

/// Launchers of kernels/lamb.cu.
pub mod cuda {
    use super::super::{OptimizerConfig, Scale, StepConsts};
    use super::BLOCK;
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "lamb.cu";

    /// [p, g, m, v, u] of one group's run (n each).
    pub fn direction(
        dev: &Cuda,
        [p, g, m, v, u]: [u64; 5],
        n: usize,
        c: &OptimizerConfig,
        k: &StepConsts,
        scale: Scale,
    ) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let f = |x: f64| Arg::F32(x as f32);
        let (grad_scale, sumsq, clip) = match scale {
            Scale::By(s) => (s, 0, 0.0),
            Scale::ClipOnDevice { sumsq, max_norm } => (1.0, sumsq, max_norm),
        };
        let args = [
            Arg::Ptr(p),
            Arg::Ptr(g),
            Arg::Ptr(m),
            Arg::Ptr(v),
            Arg::Ptr(u),
            Arg::U64(n as u64),
            f(c.beta1),
            f(c.beta2),
            f(c.eps),
            f(c.weight_decay),
            f(k.bc1),
            f(k.bc2),
            f(grad_scale),
            Arg::Ptr(sumsq),
            Arg::F64(clip),
        ];
        dev.launch(FILE, "lamb_direction", grid, block, 0, &args)
    }

    pub fn norms(dev: &Cuda, p: u64, u: u64, starts: u64, segments: usize, sums: u64) -> Result<()> {
        let args = [Arg::Ptr(p), Arg::Ptr(u), Arg::Ptr(starts), Arg::U32(segments as u32), Arg::Ptr(sums)];
        dev.launch(FILE, "lamb_norms", (segments.max(1) as u32, 1, 1), (BLOCK as u32, 1, 1), 0, &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        dev: &Cuda,
        p: u64,
        u: u64,
        n: usize,
        starts: u64,
        segments: usize,
        sums: u64,
        factors: u64,
        lr: f64,
    ) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [
            Arg::Ptr(p),
            Arg::Ptr(u),
            Arg::U64(n as u64),
            Arg::Ptr(starts),
            Arg::U32(segments as u32),
            Arg::Ptr(sums),
            Arg::Ptr(factors),
            Arg::F32(lr as f32),
        ];
        dev.launch(FILE, "lamb_apply", grid, block, 0, &args)
    }
}
