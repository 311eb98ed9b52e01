//! GPU suite: the fused AdamW step and PCGrad's pairwise dot products against the CPU path.

mod common;
use common::{F32_TOL, gpu, rel};
use engine::device::Buffer;
use engine::optim::{Group, Optimizer, OptimizerConfig, Rule, pairwise_dots};
use engine::rng::Rng;
use engine::train::pcgrad::{TaskGradients, shared_len};
use engine::{Device, Tape, Tensor};

fn adamw_run(device: &Device, n: usize) -> Vec<f32> {
    adamw_run_with(device, n, None, Rule::Adamw)
}

/// `groups`: the optimizer's parameter groups (None: one over the arena).
fn adamw_run_with(device: &Device, n: usize, groups: Option<Vec<Group>>, rule: Rule) -> Vec<f32> {
    let mut rng = Rng::new(8);
    let init: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let mut tape = Tape::<f32>::new(device.clone());
    let w = tape.store.add_param("w", &[n], &init, true).unwrap();
    let c = OptimizerConfig { rule, nu: (0.7, 0.9), ..OptimizerConfig::default() };
    let mut opt = match groups {
        Some(g) => Optimizer::with_groups(&tape.store, c, g).unwrap(),
        None => Optimizer::new(&tape.store, c).unwrap(),
    };
    for t in 1..=3 {
        let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.1).collect();
        tape.store.write_grad(w, &g).unwrap();
        opt.update(&mut tape.store, 1e-3 * t as f64).unwrap();
    }
    tape.store.read(w).unwrap()
}

#[test]
fn adamw_step() {
    let Some(g) = gpu() else { return };
    let n = 1_000_003;
    let (c, d) = (adamw_run(&Device::Cpu, n), adamw_run(&g, n));
    let worst = c.iter().zip(&d).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("adamw: max |Δ| {worst:e}, relative {:.2e}", rel(&d, &c));
    // The kernels compile with --fmad=false, so the device rounds every product and sum as the
    // CPU twin does (with contraction the step differed by up to 2.4e-7): bit for bit.
    let same = c.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "AdamW differs from the CPU's bits (max |Δ| {worst:e})");
}

/// Adamax and QHAdam: the same kernel's other rules, bit for bit against the CPU twin.
#[test]
fn adamax_and_qhadam_steps() {
    let Some(g) = gpu() else { return };
    let n = 100_003;
    for rule in [Rule::Adamax, Rule::Qhadam] {
        let (c, d) = (adamw_run_with(&Device::Cpu, n, None, rule), adamw_run_with(&g, n, None, rule));
        let same = c.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{rule:?} differs from the CPU's bits (relative {:.2e})", rel(&d, &c));
        assert!(c != adamw_run(&Device::Cpu, n), "{rule:?} stepped as AdamW");
    }
}

/// LAMB's three kernels against the CPU twin, bit for bit: several tensors (the norms are
/// per tensor), two groups, a tensor at zero, and the clip decided on the device.
#[test]
fn lamb_steps() {
    let Some(g) = gpu() else { return };
    let run = |device: &Device, clip: bool| -> Vec<f32> {
        let mut rng = Rng::new(31);
        let mut tape = Tape::<f32>::new(device.clone());
        let sizes = [70_001usize, 300, 5_000, 1];
        let ws: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let v: Vec<f32> = if i == 1 { vec![0.0; n] } else { (0..n).map(|_| rng.normal() as f32).collect() };
                tape.store.add_param(&format!("w{i}"), &[n], &v, true).unwrap()
            })
            .collect();
        let n = tape.store.num_trainable();
        let groups = vec![
            Group { range: 0..70_301, lr_factor: 1.0, weight_decay: 0.01 },
            Group { range: 70_301..n, lr_factor: 3.0, weight_decay: 0.0 },
        ];
        let c = OptimizerConfig { rule: Rule::Lamb, ..OptimizerConfig::default() };
        let mut opt = Optimizer::with_groups(&tape.store, c, groups).unwrap();
        for t in 1..=3 {
            for w in &ws {
                let gv: Vec<f32> = (0..w.numel()).map(|_| rng.normal() as f32 * 0.1).collect();
                tape.store.write_grad(*w, &gv).unwrap();
            }
            if clip {
                opt.update_clipped(&mut tape.store, 1e-2 * t as f64, 0.5).unwrap();
            } else {
                opt.update(&mut tape.store, 1e-2 * t as f64).unwrap();
            }
        }
        let n = tape.store.num_trainable();
        tape.store.params_and_grads_mut().0.read(0..n).unwrap()
    };
    for clip in [false, true] {
        let (c, d) = (run(&Device::Cpu, clip), run(&g, clip));
        let same = c.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "LAMB (clip {clip}) differs from the CPU's bits (relative {:.2e})", rel(&d, &c));
    }
}

/// Parameter groups launch the step once per run of the arena, at an offset into each buffer.
#[test]
fn adamw_step_in_groups() {
    let Some(g) = gpu() else { return };
    let n = 10_007;
    let groups = vec![
        Group { range: 0..4_001, lr_factor: 1.0, weight_decay: 0.01 },
        Group { range: 4_001..4_100, lr_factor: 1.0, weight_decay: 0.0 },
        Group { range: 4_100..n, lr_factor: 10.0, weight_decay: 0.01 },
    ];
    let (c, d) = (
        adamw_run_with(&Device::Cpu, n, Some(groups.clone()), Rule::Adamw),
        adamw_run_with(&g, n, Some(groups), Rule::Adamw),
    );
    let plain = adamw_run(&Device::Cpu, n);
    assert!(c[4_100..] != plain[4_100..], "the head group's rate made no difference");
    let same = c.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "grouped AdamW differs from the CPU's bits");
}

#[test]
fn pairwise_dots_of_task_gradients() {
    let Some(g) = gpu() else { return };
    let n = 777_777;
    let mut rng = Rng::new(9);
    let data: Vec<Vec<f32>> = (0..5).map(|_| (0..n).map(|_| rng.normal() as f32).collect()).collect();
    let gram = |dev: &Device| {
        let bufs: Vec<Buffer<f32>> = data
            .iter()
            .map(|d| {
                let mut b = Buffer::new(dev);
                b.grow_to(n).unwrap();
                b.write(0, d).unwrap();
                b
            })
            .collect();
        let refs: Vec<&Buffer<f32>> = bufs.iter().collect();
        pairwise_dots(dev, &refs, n).unwrap()
    };
    let (c, d) = (gram(&Device::Cpu), gram(&g));
    let c32: Vec<f32> = c.iter().map(|&x| x as f32).collect();
    let d32: Vec<f32> = d.iter().map(|&x| x as f32).collect();
    let e = rel(&d32, &c32);
    println!("pairwise dots: relative {e:.2e}");
    assert!(e <= F32_TOL, "Gram matrix differs by {e:e}");
    // A second call reuses nothing stale (the completion counter resets).
    assert_eq!(gram(&g), d);
}

/// A store with one shared parameter (n values) and a head of `head_len` per task, and PCGrad's
/// slots for its k tasks.
fn pcgrad_store(
    dev: &Device,
    n: usize,
    k: usize,
    head_len: usize,
) -> (Tape<f32>, Tensor, Vec<Tensor>, TaskGradients<f32>) {
    let mut tape = Tape::<f32>::new(dev.clone());
    let w = tape.store.add_param("encoder.w", &[n], &vec![0.0; n], true).unwrap();
    let heads = (0..k)
        .map(|t| tape.store.add_param(&format!("head.t{t}.weight"), &[head_len], &vec![0.0; head_len], true).unwrap())
        .collect();
    let slots = TaskGradients::new(&tape.store, k, shared_len(&tape.store).unwrap()).unwrap();
    (tape, w, heads, slots)
}

/// Task t's gradients, (shared parameter, values) and (its head, values), into its slot.
fn write_task(
    tape: &mut Tape<f32>,
    slots: &mut TaskGradients<f32>,
    t: usize,
    w: (Tensor, &[f32]),
    head: (Tensor, &[f32]),
) {
    slots.enter(&mut tape.store, t).unwrap();
    tape.store.write_grad(w.0, w.1).unwrap();
    tape.store.write_grad(head.0, head.1).unwrap();
    slots.leave(&mut tape.store, t).unwrap();
}

/// PCGrad's whole combine on the GPU against the CPU: slots swapped into a store, the Gram matrix,
/// the surgery, the weighted sum over the shared part and the plain sum over the heads.
#[test]
fn pcgrad_combine() {
    use engine::train::pcgrad::{Reduction, visiting_orders};
    let Some(g) = gpu() else { return };
    let (n, k) = (300_007, 3);
    let mut rng = Rng::new(10);
    // Task gradients that conflict: a common part plus task-specific noise of either sign.
    let common: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let grads: Vec<Vec<f32>> = (0..k)
        .map(|t| common.iter().map(|c| c * (if t == 1 { -0.5 } else { 0.3 }) + rng.normal() as f32).collect())
        .collect();
    let combine = |dev: &Device| {
        let (mut tape, w, heads, mut slots) = pcgrad_store(dev, n, k, 5);
        for t in 0..k {
            write_task(&mut tape, &mut slots, t, (w, &grads[t]), (heads[t], &[t as f32 + 1.0; 5]));
        }
        slots.combine(&mut tape.store, Reduction::Sum, 1, |k| visiting_orders(3, 0, k)).unwrap();
        let s = slots.drain().unwrap().remove(0).surgery;
        let mut all = tape.store.read_grad(w).unwrap();
        for h in &heads {
            all.extend(tape.store.read_grad(*h).unwrap());
        }
        (all, s)
    };
    let ((c, sc), (d, sd)) = (combine(&Device::Cpu), combine(&g));
    let e = rel(&d, &c);
    println!("pcgrad combine: relative {e:.2e}, {} of {} pairs projected", sd.projected, sd.pairs);
    assert!(sc.projected > 0, "the test gradients should conflict");
    assert_eq!(sc.projected, sd.projected);
    // Elementwise products and sums without contraction (--fmad=false): the CPU's bits.
    assert!(e == 0.0, "combined gradient differs by {e:e}");
}

/// The surgery on the device (pairwise_dots into device memory, the one-thread surgery kernel,
/// the weighted sum reading its weights there, the ring of records read at drain) against the
/// CPU's: gradients of small integers, whose dot products are exact in float32 and float64 alike,
/// so the weights, cosines and ratios must agree bit for bit (the combined gradient to float32
/// rounding); for 2 to 8
/// tasks, both reductions, and more steps than the ring holds before a drain.
#[test]
fn pcgrad_surgery_on_the_device_is_the_cpus() {
    use engine::train::pcgrad::{Reduction, visiting_orders};
    let Some(g) = gpu() else { return };
    let n = 1000;
    for (k, reduction, steps) in
        [(2, Reduction::Sum, 3), (3, Reduction::Mean, 300), (5, Reduction::Sum, 4), (8, Reduction::Mean, 2)]
    {
        let run = |dev: &Device| {
            let (mut tape, w, heads, mut slots) = pcgrad_store(dev, n, k, 2);
            let mut rng = Rng::new(k as u64);
            let mut finals = Vec::new();
            for step in 0..steps {
                for (t, &head) in heads.iter().enumerate() {
                    let gt: Vec<f32> = (0..n).map(|_| rng.below(9) as f32 - 4.0).collect();
                    write_task(&mut tape, &mut slots, t, (w, &gt), (head, &[t as f32; 2]));
                }
                slots.combine(&mut tape.store, reduction, step + 1, |k| visiting_orders(9, step, k)).unwrap();
                if step + 1 == steps {
                    finals = tape.store.read_grad(w).unwrap();
                }
            }
            (slots.drain().unwrap(), finals)
        };
        let ((cpu, cg), (gpu_done, gg)) = (run(&Device::Cpu), run(&g));
        assert_eq!(cpu.len(), steps);
        assert_eq!(gpu_done, cpu, "k {k}: the device's surgeries differ");
        // (the kernel may fuse w·g + acc; the CPU rounds the product first)
        let e = rel(&gg, &cg);
        assert!(e <= F32_TOL, "k {k}: the combined gradient differs by {e:e}");
        println!(
            "k {k}: {steps} surgeries identical, {} pairs projected in the last",
            cpu[steps - 1].surgery.projected
        );
    }
}

/// Gradient clipping decided on the device (the norm from pairwise_dots, the factor inside the
/// AdamW kernel) against the CPU's host-side clipping, clipped and not.
#[test]
fn adamw_clipped_on_the_device() {
    let Some(g) = gpu() else { return };
    let n = 100_003;
    let mut rng = Rng::new(12);
    let init: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let grads: Vec<Vec<f32>> = (0..3).map(|_| (0..n).map(|_| rng.normal() as f32).collect()).collect();
    // ‖g‖ ≈ √n ≈ 316: a max norm of 10 clips, 1e4 does not.
    for max_norm in [10.0, 1e4] {
        let run = |dev: &Device| {
            let mut tape = Tape::<f32>::new(dev.clone());
            let w = tape.store.add_param("w", &[n], &init, true).unwrap();
            let mut opt = Optimizer::new(&tape.store, OptimizerConfig::default()).unwrap();
            for gr in &grads {
                tape.store.write_grad(w, gr).unwrap();
                opt.update_clipped(&mut tape.store, 1e-2, max_norm).unwrap();
            }
            let mut out = tape.store.read(w).unwrap();
            out.extend(opt.v.read(0..n).unwrap());
            out
        };
        let e = rel(&run(&g), &run(&Device::Cpu));
        println!("clipped Optimizer, max norm {max_norm}: relative {e:.2e}");
        // The norm's sum order differs, but the clip scale rounds to the same float: exact.
        assert!(e == 0.0, "max norm {max_norm}: differs by {e:e}");
    }
}
