//! AdamW against the textbook form of decoupled-weight-decay Adam (Loshchilov & Hutter, as
//! torch.optim.AdamW documents it), and the pairwise gradient dot products.

use engine::device::Buffer;
use engine::optim::{Group, Optimizer, OptimizerConfig, Rule, pairwise_dots};
use engine::rng::Rng;
use engine::{Device, Tape};

/// The documented algorithm, written independently of src/optim.rs, in f64.
fn textbook(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64, c: &OptimizerConfig) {
    for i in 0..p.len() {
        p[i] -= lr * c.weight_decay * p[i];
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
        let m_hat = m[i] / (1.0 - c.beta1.powi(t));
        let v_hat = v[i] / (1.0 - c.beta2.powi(t));
        p[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
    }
}

#[test]
fn adamw_matches_the_documented_algorithm_over_steps() {
    let mut rng = Rng::new(4);
    let n = 1000;
    let init: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let w = tape.store.add_param("w", &[n], &init, true).unwrap();
    let c = OptimizerConfig { weight_decay: 0.01, ..Default::default() };
    let mut opt = Optimizer::new(&tape.store, c).unwrap();
    let (mut p, mut m, mut v) = (init.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=5 {
        let lr = 1e-3 * t as f64; // a schedule: the rate may change every step
        let g: Vec<f64> = (0..n).map(|_| rng.normal() * 0.1).collect();
        tape.store.write_grad(w, &g).unwrap();
        opt.update(&mut tape.store, lr).unwrap();
        textbook(&mut p, &g, &mut m, &mut v, t, lr, &c);
        let got = tape.store.read(w).unwrap();
        let worst = got.iter().zip(&p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-12, "step {t}: max |Δ| {worst:e}");
    }
}

/// Adamax as Kingma & Ba's Algorithm 2 (with torch.optim.Adamax's ε inside the max) and QHAdam
/// as Ma & Yarats' Algorithm 1, each after AdamW's decoupled decay; written independently of
/// src/optim.rs, in f64.
fn textbook_rule(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64, c: &OptimizerConfig) {
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * c.weight_decay;
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        match c.rule {
            Rule::Adamax => {
                v[i] = (c.beta2 * v[i]).max(g[i].abs() + c.eps); // u_t
                p[i] -= lr / (1.0 - c.beta1.powi(t)) * m[i] / v[i];
            }
            Rule::Qhadam => {
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let (m_hat, v_hat) = (m[i] / (1.0 - c.beta1.powi(t)), v[i] / (1.0 - c.beta2.powi(t)));
                let (nu1, nu2) = c.nu;
                let num = (1.0 - nu1) * g[i] + nu1 * m_hat;
                let den = ((1.0 - nu2) * g[i] * g[i] + nu2 * v_hat).sqrt() + c.eps;
                p[i] -= lr * num / den;
            }
            Rule::Adamw | Rule::Lamb => unreachable!("textbook() is AdamW's, the LAMB test its own"),
        }
    }
}

#[test]
fn adamax_and_qhadam_match_their_papers_over_steps() {
    for (rule, nu) in [(Rule::Adamax, (0.7, 1.0)), (Rule::Qhadam, (0.7, 1.0)), (Rule::Qhadam, (0.3, 0.6))] {
        let mut rng = Rng::new(11);
        let n = 700;
        let init: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mut tape = Tape::<f64>::new(Device::Cpu);
        let w = tape.store.add_param("w", &[n], &init, true).unwrap();
        let c = OptimizerConfig { rule, beta1: 0.95, beta2: 0.998, nu, weight_decay: 0.1, ..Default::default() };
        let mut opt = Optimizer::new(&tape.store, c).unwrap();
        let (mut p, mut m, mut v) = (init.clone(), vec![0.0; n], vec![0.0; n]);
        for t in 1..=6 {
            let lr = 1e-3 * t as f64;
            let g: Vec<f64> = (0..n).map(|_| rng.normal() * 0.1).collect();
            tape.store.write_grad(w, &g).unwrap();
            opt.update(&mut tape.store, lr).unwrap();
            textbook_rule(&mut p, &g, &mut m, &mut v, t, lr, &c);
            let got = tape.store.read(w).unwrap();
            let worst = got.iter().zip(&p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-12, "{rule:?} {nu:?} step {t}: max |Δ| {worst:e}");
        }
    }
    // QHAdam with ν1 = ν2 = 1 is Adam (here with decoupled decay: AdamW) up to rounding.
    let mut rng = Rng::new(12);
    let init: Vec<f64> = (0..50).map(|_| rng.normal()).collect();
    let run = |rule: Rule| {
        let mut tape = Tape::<f64>::new(Device::Cpu);
        let w = tape.store.add_param("w", &[50], &init, true).unwrap();
        let c = OptimizerConfig { rule, nu: (1.0, 1.0), ..Default::default() };
        let mut opt = Optimizer::new(&tape.store, c).unwrap();
        let mut rng = Rng::new(13);
        for _ in 0..3 {
            let g: Vec<f64> = (0..50).map(|_| rng.normal()).collect();
            tape.store.write_grad(w, &g).unwrap();
            opt.update(&mut tape.store, 1e-2).unwrap();
        }
        tape.store.read(w).unwrap()
    };
    let (a, q) = (run(Rule::Adamw), run(Rule::Qhadam));
    assert!(a.iter().zip(&q).all(|(x, y)| (x - y).abs() < 1e-12));
}

/// LAMB as You et al.'s Algorithm 2, per tensor, in f64 and written independently of
/// src/optim/lamb.rs: over three tensors (one starting at zero, whose trust ratio is 1) in
/// groups of their own rate factor and weight decay.
#[test]
fn lamb_matches_its_paper_per_tensor_over_steps() {
    let mut rng = Rng::new(21);
    let sizes = [300usize, 10, 590];
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let mut init = Vec::new();
    let mut ws = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let v: Vec<f64> = if i == 1 { vec![0.0; n] } else { (0..n).map(|_| rng.normal()).collect() };
        ws.push(tape.store.add_param(&format!("w{i}"), &[n], &v, true).unwrap());
        init.push(v);
    }
    let c = OptimizerConfig { rule: Rule::Lamb, beta1: 0.9, beta2: 0.999, eps: 1e-6, ..Default::default() };
    let settings = [(1.0, 0.01), (1.0, 0.0), (5.0, 0.01)];
    let mut start = 0;
    let groups = sizes
        .iter()
        .zip(settings)
        .map(|(&n, (f, d))| {
            start += n;
            Group { range: start - n..start, lr_factor: f, weight_decay: d }
        })
        .collect();
    let mut opt = Optimizer::with_groups(&tape.store, c, groups).unwrap();
    let mut state: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        init.iter().map(|p| (p.clone(), vec![0.0; p.len()], vec![0.0; p.len()])).collect();
    for t in 1..=5 {
        let lr = 1e-2 * t as f64;
        let grads: Vec<Vec<f64>> = sizes.iter().map(|&n| (0..n).map(|_| rng.normal() * 0.1).collect()).collect();
        for (w, g) in ws.iter().zip(&grads) {
            tape.store.write_grad(*w, g).unwrap();
        }
        opt.update(&mut tape.store, lr).unwrap();
        for (((p, m, v), g), (factor, wd)) in state.iter_mut().zip(&grads).zip(settings) {
            let mut u = vec![0.0; p.len()];
            for i in 0..p.len() {
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let (m_hat, v_hat) = (m[i] / (1.0 - c.beta1.powi(t)), v[i] / (1.0 - c.beta2.powi(t)));
                u[i] = m_hat / (v_hat.sqrt() + c.eps) + wd * p[i];
            }
            let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
            let (pn, un) = (norm(p), norm(&u));
            let ratio = if pn > 0.0 && un > 0.0 { pn / un } else { 1.0 };
            for i in 0..p.len() {
                p[i] -= lr * factor * ratio * u[i];
            }
        }
        for (w, (p, ..)) in ws.iter().zip(&state) {
            let got = tape.store.read(*w).unwrap();
            let worst = got.iter().zip(p).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f64::max);
            assert!(worst < 1e-12, "step {t}: max relative |Δ| {worst:e}");
        }
    }
}

/// Parameter groups (--head-lr, --no-decay-norm-bias): each run of the arena steps as the
/// documented algorithm does at its own rate (the step's times its factor) and weight decay.
#[test]
fn groups_step_each_run_at_its_own_rate_and_decay() {
    let mut rng = Rng::new(9);
    let n = 900;
    let init: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let w = tape.store.add_param("w", &[n], &init, true).unwrap();
    let c = OptimizerConfig { weight_decay: 0.5, ..Default::default() };
    let runs = [(0..300, 1.0, 0.01), (300..310, 1.0, 0.0), (310..900, 7.5, 0.2)];
    let groups = runs.iter().map(|(r, f, d)| Group { range: r.clone(), lr_factor: *f, weight_decay: *d }).collect();
    let mut opt = Optimizer::with_groups(&tape.store, c, groups).unwrap();
    let (mut p, mut m, mut v) = (init.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=4 {
        let lr = 1e-3 * t as f64;
        let g: Vec<f64> = (0..n).map(|_| rng.normal() * 0.1).collect();
        tape.store.write_grad(w, &g).unwrap();
        opt.update(&mut tape.store, lr).unwrap();
        for (r, f, d) in &runs {
            let cg = OptimizerConfig { weight_decay: *d, ..c };
            let r = r.clone();
            textbook(&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()], &mut v[r], t, lr * f, &cg);
        }
        let got = tape.store.read(w).unwrap();
        let worst = got.iter().zip(&p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-12, "step {t}: max |Δ| {worst:e}");
    }
    // Groups must cover the arena in order, without gaps.
    let gap = vec![
        Group { range: 0..10, lr_factor: 1.0, weight_decay: 0.0 },
        Group { range: 20..900, lr_factor: 1.0, weight_decay: 0.0 },
    ];
    assert!(Optimizer::with_groups(&tape.store, c, gap).is_err());
    let short = vec![Group { range: 0..899, lr_factor: 1.0, weight_decay: 0.0 }];
    assert!(Optimizer::with_groups(&tape.store, c, short).is_err());
}

#[test]
fn first_step_moves_each_parameter_by_the_learning_rate() {
    // Adam's first step is lr·g/|g| (up to eps) before decay: the sign of the gradient, scaled.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let w = tape.store.add_param("w", &[4], &[1.0, -2.0, 0.5, 0.0], true).unwrap();
    let c = OptimizerConfig { weight_decay: 0.0, ..Default::default() };
    let mut opt = Optimizer::new(&tape.store, c).unwrap();
    tape.store.write_grad(w, &[3.0, -0.01, 1e-3, 0.0]).unwrap();
    opt.update(&mut tape.store, 0.1).unwrap();
    let got = tape.store.read(w).unwrap();
    let want = [0.9, -1.9, 0.4, 0.0];
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() < 1e-4, "{got:?} vs {want:?}");
    }
}

#[test]
fn weight_decay_alone_shrinks_parameters() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let w = tape.store.add_param("w", &[2], &[2.0, -4.0], true).unwrap();
    let mut opt = Optimizer::new(&tape.store, OptimizerConfig { weight_decay: 0.5, ..Default::default() }).unwrap();
    opt.update(&mut tape.store, 0.1).unwrap(); // zero gradients
    assert_eq!(tape.store.read(w).unwrap(), vec![2.0 * 0.95, -4.0 * 0.95]);
}

#[test]
fn pairwise_dots_form_the_gram_matrix() {
    let dev = Device::Cpu;
    let mut bufs: Vec<Buffer<f32>> = (0..3).map(|_| Buffer::new(&dev)).collect();
    let data = [[1.0f32, 2.0, 3.0, 9.0], [-1.0, 0.5, 2.0, 9.0], [0.0, 0.0, 1.0, 9.0]];
    for (b, d) in bufs.iter_mut().zip(&data) {
        b.grow_to(4).unwrap();
        b.write(0, d).unwrap();
    }
    let refs: Vec<&Buffer<f32>> = bufs.iter().collect();
    let g = pairwise_dots(&dev, &refs, 3).unwrap(); // the last value is outside n = 3
    assert_eq!(g, vec![14.0, 6.0, 3.0, 6.0, 5.25, 2.0, 3.0, 2.0, 1.0]);
    assert!(pairwise_dots(&dev, &refs, 5).is_err());
}

#[test]
fn clipping_scales_by_max_norm_over_the_norm_when_it_exceeds() {
    // ‖(3, 4)‖ = 5: clipped to 2 the step sees g·2/(5 + 1e-6); to 10 it sees g itself.
    for (max_norm, scale) in [(2.0, 2.0 / (5.0 + 1e-6)), (10.0, 1.0), (0.0, 1.0)] {
        let run = |clip: Option<f64>| {
            let mut tape = Tape::<f64>::new(Device::Cpu);
            let w = tape.store.add_param("w", &[2], &[1.0, -1.0], true).unwrap();
            let mut opt = Optimizer::new(&tape.store, OptimizerConfig::default()).unwrap();
            for _ in 0..2 {
                tape.store.write_grad(w, &[3.0, 4.0]).unwrap();
                match clip {
                    Some(c) => opt.update_clipped(&mut tape.store, 0.1, c).unwrap(),
                    None => opt.update_scaled(&mut tape.store, 0.1, scale).unwrap(),
                }
            }
            (tape.store.read(w).unwrap(), opt.v.read(0..2).unwrap())
        };
        assert_eq!(run(Some(max_norm)), run(None), "max norm {max_norm}");
    }
}
