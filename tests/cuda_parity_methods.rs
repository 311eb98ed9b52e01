//! GPU suite: the gradient-combining methods' whole combine (train/methods/, through the
//! trainer's `Combiner`: per-task slots swapped into a store, the Gram matrix, the method's
//! weights, the weighted sum over the shared part, the plain sum over the heads) on the device
//! against the CPU, over several steps so that GradVac's targets move; SMART's noise and ascent step.

mod common;
use common::{F32_TOL, gpu, rel};
use engine::data::cs224n::Task;
use engine::rng::Rng;
use engine::train::TrainOptions;
use engine::train::methods::Combiner;
use engine::train::smart::SmartNorm;
use engine::{Device, Tape};

/// Three steps of `opts`' method over k = 3 task gradients of n shared values and 5-value heads:
/// the combined gradient of each step, and the statistics records.
fn run(dev: &Device, opts: &TrainOptions, n: usize) -> (Vec<Vec<f32>>, Vec<serde_json::Value>) {
    let k = opts.tasks.len();
    let mut tape = Tape::<f32>::new(dev.clone());
    let w = tape.store.add_param("encoder.w", &[n], &vec![0.0; n], true).unwrap();
    let heads: Vec<_> =
        (0..k).map(|t| tape.store.add_param(&format!("head.t{t}.weight"), &[5], &[0.0; 5], true).unwrap()).collect();
    let mut c = Combiner::from_options(opts, &tape.store).unwrap().expect("a method");
    let mut rng = Rng::new(12);
    let (mut out, mut records) = (Vec::new(), Vec::new());
    for step in 0..3 {
        // A common direction plus task noise, one task pulling the other way: cosines on both
        // sides of the targets.
        let common: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        for (t, &head) in heads.iter().enumerate() {
            let sign = if t == 1 { -0.4 } else { 0.6 };
            let g: Vec<f32> = common.iter().map(|c| c * sign + rng.normal() as f32).collect();
            c.grads.enter(&mut tape.store, t).unwrap();
            tape.store.write_grad(w, &g).unwrap();
            tape.store.write_grad(head, &[t as f32 + 1.0; 5]).unwrap();
            c.grads.leave(&mut tape.store, t).unwrap();
        }
        c.combine(&mut tape.store, step).unwrap();
        let mut all = tape.store.read_grad(w).unwrap();
        for h in &heads {
            all.extend(tape.store.read_grad(*h).unwrap());
        }
        out.push(all);
        records.extend(c.drain(&opts.tasks).unwrap().iter().map(|r| serde_json::to_value(r).unwrap()));
    }
    (out, records)
}

#[test]
fn gradvac_combine() {
    let Some(g) = gpu() else { return };
    let opts = TrainOptions {
        tasks: vec![Task::Sst, Task::Quora, Task::Sts],
        gradvac: true,
        gradvac_beta: 0.5,
        ..TrainOptions::default()
    };
    let n = 200_003;
    let ((c, rc), (d, rd)) = (run(&Device::Cpu, &opts, n), run(&g, &opts, n));
    for (step, (cs, ds)) in c.iter().zip(&d).enumerate() {
        let e = rel(ds, cs);
        println!("gradvac step {step}: combined gradient relative {e:.2e}");
        assert!(e <= F32_TOL, "step {step}: the combined gradient differs by {e:e}");
    }
    // The Gram matrix is summed in another order on the device: the statistics agree to float
    // rounding, and the same pairs are adjusted.
    assert_eq!(rc.len(), 3);
    for (a, b) in rc.iter().zip(&rd) {
        assert_eq!(a["projected_fraction"], b["projected_fraction"], "{a} vs {b}");
        for (key, v) in a["target"].as_object().unwrap() {
            let (x, y) = (v.as_f64().unwrap(), b["target"][key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5, "target {key}: {x} vs {y}");
        }
    }
    assert!(rc.iter().any(|r| r["projected_fraction"].as_f64().unwrap() > 0.0), "some pairs should be adjusted");
}

/// SMART's ascent step (kernels/smart.cu) against its CPU twin, bit for bit: rows wider than a
/// block, a row of zero gradient (δ only projected), elements clamped on both sides and left inside.
#[test]
fn smart_ascent_matches_the_cpu_bit_for_bit() {
    let Some(g) = gpu() else { return };
    let (rows, c) = (37, 300);
    let mut rng = Rng::new(8);
    let delta: Vec<f32> = (0..rows * c).map(|_| (rng.normal() * 0.02) as f32).collect();
    let mut grad: Vec<f32> = (0..rows * c).map(|_| (rng.normal() * 1e-3) as f32).collect();
    grad[5 * c..6 * c].fill(0.0);
    let run = |dev: &Device, norm: SmartNorm, eps: f64| {
        let mut tape = Tape::<f32>::new(dev.clone());
        let d = tape.store.alloc_act(engine::tensor::Shape::new(&[rows, c]).unwrap(), true).unwrap();
        tape.store.write(d, &delta).unwrap();
        tape.store.zero_act_grads().unwrap();
        tape.store.write_grad(d, &grad).unwrap();
        engine::train::smart::ascend(&mut tape.store, d, norm, 0.03, eps).unwrap();
        tape.store.read(d).unwrap()
    };
    // Normalizing: each row's ∞-norm is 1 (within ε's share), on both devices bit for bit.
    let (cpu, dev) = (run(&Device::Cpu, SmartNorm::Normalize, 1e-6), run(&g, SmartNorm::Normalize, 1e-6));
    for row in cpu.chunks(c) {
        let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((m - 1.0).abs() < 1e-4, "row ∞-norm {m}");
    }
    let differ = cpu.iter().zip(&dev).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "normalizing: {differ} of {} values differ", cpu.len());
    let (cpu, dev) = (run(&Device::Cpu, SmartNorm::Project, 0.04), run(&g, SmartNorm::Project, 0.04));
    let projected: Vec<f32> = delta[5 * c..6 * c].iter().map(|v| v.clamp(-0.04, 0.04)).collect();
    assert_eq!(cpu[5 * c..6 * c], projected[..], "a zero-gradient row is only projected");
    assert!(cpu.contains(&0.04) && cpu.contains(&-0.04), "some elements clamp");
    assert!(cpu.iter().any(|&v| v.abs() < 0.04), "some do not");
    let differ = cpu.iter().zip(&dev).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {} values differ", cpu.len());
}

/// SMART's starting noise (kernels/smart.cu) against its CPU twin, bit for bit: an odd length
/// (a last pair of one), several of the CPU's parallel chunks.
#[test]
fn smart_noise_matches_the_cpu_bit_for_bit() {
    let Some(g) = gpu() else { return };
    let n = 300_001;
    let key = engine::rng::hash_key(3, 17);
    let run = |dev: &Device| {
        let mut tape = Tape::<f32>::new(dev.clone());
        let d = tape.store.alloc_act(engine::tensor::Shape::new(&[n]).unwrap(), true).unwrap();
        tape.store.write(d, &vec![f32::NAN; n]).unwrap();
        engine::train::smart::fill_noise(&mut tape.store, d, key, 0.5).unwrap();
        tape.store.read(d).unwrap()
    };
    let (cpu, dev) = (run(&Device::Cpu), run(&g));
    let sd = (cpu.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64).sqrt();
    assert!((sd - 0.5).abs() < 0.005, "standard deviation {sd}");
    let differ = cpu.iter().zip(&dev).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {n} values differ");
}
