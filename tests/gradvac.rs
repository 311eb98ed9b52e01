//! GradVac (train/methods/gradvac.rs): the Gram-matrix form against the textbook vector algorithm
//! (k = 2, 3, 5, random gradients, orders and targets, several steps so that the targets move), a
//! 2-task case worked by hand, and `engine finetune --gradvac` end to end: its statistics, its
//! plot, and a resumed run equal to the uninterrupted one bit for bit (the targets survive
//! --resume).

mod common;
use common::runs::{finetune_cpu as finetune, records, scratch, step_losses, tiny_data, tiny_model};
use engine::rng::Rng;
use engine::train::methods::gradvac::vaccinate;
use engine::train::methods::visiting_orders;
use std::path::Path;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The paper's algorithm on explicit vectors: for each task i, g_i' starts as g_i; for each j in
/// its order, φ = cos(g_i', g_j); if φ < φ̂_ij, g_i' += ‖g_i'‖(φ̂√(1−φ²) − φ√(1−φ̂²)) /
/// (‖g_j‖√(1−φ̂²)) · g_j; then φ̂_ij ← (1−β)φ̂_ij + βφ. Returns Σ_i g_i' and the adjusted count.
fn textbook(g: &[Vec<f64>], target: &mut [f64], orders: &[Vec<usize>], beta: f64) -> (Vec<f64>, usize) {
    let (k, n) = (g.len(), g[0].len());
    let mut sum = vec![0.0; n];
    let mut adjusted = 0;
    for i in 0..k {
        let mut gi = g[i].clone();
        for &j in &orders[i] {
            let phi = dot(&gi, &g[j]) / (norm(&gi) * norm(&g[j]));
            let t = target[i * k + j];
            if phi < t {
                let c = norm(&gi) * (t * (1.0 - phi * phi).sqrt() - phi * (1.0 - t * t).sqrt())
                    / (norm(&g[j]) * (1.0 - t * t).sqrt());
                for (x, y) in gi.iter_mut().zip(&g[j]) {
                    *x += c * y;
                }
                adjusted += 1;
            }
            target[i * k + j] = (1.0 - beta) * t + beta * phi;
        }
        for (s, x) in sum.iter_mut().zip(&gi) {
            *s += x;
        }
    }
    (sum, adjusted)
}

fn gram(g: &[Vec<f64>]) -> Vec<f64> {
    let k = g.len();
    (0..k * k).map(|q| dot(&g[q / k], &g[q % k])).collect()
}

/// Σ_j w_j g_j.
fn combine(g: &[Vec<f64>], w: &[f64]) -> Vec<f64> {
    (0..g[0].len()).map(|x| g.iter().zip(w).map(|(gj, wj)| wj * gj[x]).sum()).collect()
}

#[test]
fn the_gram_form_is_the_textbook_algorithm() {
    let mut rng = Rng::new(4);
    for k in [2, 3, 5] {
        for trial in 0..4 {
            let n = 7 + trial;
            let beta = [0.01, 0.5, 1.0, 0.2][trial];
            // Targets start from the paper's 0 on trial 0, random in (−1, 1) otherwise.
            let mut t_gram: Vec<f64> =
                (0..k * k).map(|_| if trial == 0 { 0.0 } else { 1.8 * rng.uniform() - 0.9 }).collect();
            let mut t_vec = t_gram.clone();
            for step in 0..6 {
                // Correlated gradients, so that some pairs sit below their targets and some above.
                let base: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                let g: Vec<Vec<f64>> = (0..k).map(|_| base.iter().map(|b| 0.7 * b + rng.normal()).collect()).collect();
                let orders = visiting_orders(trial as u64, step, k);
                let out = vaccinate(&gram(&g), &mut t_gram, &orders, beta).unwrap();
                let (want, adjusted) = textbook(&g, &mut t_vec, &orders, beta);
                let got = combine(&g, &out.weights);
                let scale = norm(&want).max(1.0);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-10 * scale, "k {k} trial {trial} step {step}: {got:?} vs {want:?}");
                }
                assert_eq!(out.adjusted, adjusted, "k {k} trial {trial} step {step}");
                assert_eq!(out.pairs, k * (k - 1));
                for (a, b) in t_gram.iter().zip(&t_vec) {
                    assert!((a - b).abs() <= 1e-12, "targets: {t_gram:?} vs {t_vec:?}");
                }
            }
        }
    }
}

#[test]
fn two_tasks_by_hand() {
    // g1 = (1, 0), g2 = (0, 1): cos 0. With targets 0.5 both ways (√(1−φ̂²) = √3/2):
    // g1' = g1 + 1·(0.5·1 − 0)/(1·√3/2) g2 = (1, 1/√3), whose cosine with g2 is (1/√3)/√(4/3) = ½;
    // g2' = (1/√3, 1) likewise. Targets then move to (1 − β)·0.5 + β·0 = 0.25 at β = ½.
    let gram = [1.0, 0.0, 0.0, 1.0];
    let mut target = [0.0, 0.5, 0.5, 0.0];
    let out = vaccinate(&gram, &mut target, &[vec![1], vec![0]], 0.5).unwrap();
    let c = 1.0 / 3f64.sqrt();
    assert!((out.weights[0] - (1.0 + c)).abs() < 1e-12 && (out.weights[1] - (1.0 + c)).abs() < 1e-12, "{out:?}");
    assert_eq!((out.adjusted, out.pairs), (2, 2));
    assert!((target[1] - 0.25).abs() < 1e-15 && (target[2] - 0.25).abs() < 1e-15, "{target:?}");
    assert!((out.norm_ratio[0] - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
    // Above its target a pair is left alone, and only the target moves.
    let mut target = [0.0, -0.5, -0.5, 0.0];
    let out = vaccinate(&gram, &mut target, &[vec![1], vec![0]], 0.5).unwrap();
    assert_eq!((out.weights.clone(), out.adjusted), (vec![1.0, 1.0], 0));
    assert!((target[1] + 0.25).abs() < 1e-15);
    // A zero gradient has no cosine: nothing changes, not even the target.
    let mut target = [0.0, 0.5, 0.5, 0.0];
    let out = vaccinate(&[1.0, 0.0, 0.0, 0.0], &mut target, &[vec![1], vec![0]], 0.5).unwrap();
    assert_eq!((out.weights, target), (vec![1.0, 1.0], [0.0, 0.5, 0.5, 0.0]));
    // Bad shapes and orders are refused.
    assert!(vaccinate(&gram, &mut [0.0; 4], &[vec![0], vec![0]], 0.5).is_err());
    assert!(vaccinate(&gram[..3], &mut [0.0; 4], &[vec![1], vec![0]], 0.5).is_err());
}

#[test]
fn finetune_with_gradvac_logs_its_targets_and_resumes_exactly() {
    let (model, data) = (tiny_model("gradvac"), tiny_data(24, "gradvac"));
    // β = 0.5 so that the targets move visibly within six steps.
    let steps = ["--max-steps", "6", "--eval-every", "3", "--gradvac", "--gradvac-beta", "0.5"];
    let full = scratch("gradvac-full");
    finetune(&model, &data, &full, &steps);
    let stats = records(&full, "gradvac");
    assert_eq!(stats.len(), 6, "one record per step");
    for s in &stats {
        assert_eq!(s["cosine"].as_object().unwrap().len(), 3, "three task pairs: {s}");
        assert_eq!(s["target"].as_object().unwrap().len(), 6, "six ordered pairs: {s}");
        let f = s["projected_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f) && (f * 6.0 - (f * 6.0).round()).abs() < 1e-9, "k(k−1) = 6 pairs: {f}");
    }
    // φ̂ starts at 0, so step 1's targets are β·cos: half the step's cosine.
    let first = &stats[0];
    let cos = first["cosine"]["sst/quora"].as_f64().unwrap();
    let target = first["target"]["sst→quora"].as_f64().unwrap();
    assert!(target.abs() > 0.0 && target.abs() <= 0.5, "{first}");
    let _ = cos; // (g_sst' may differ from g_sst when sst was adjusted towards sts first)
    assert_eq!(records(&full, "gradvac_summary").len(), 2, "a summary at each evaluation");
    assert!(std::fs::read_to_string(full.join("gradvac.svg")).unwrap().contains("<polyline"));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/state.json")).unwrap()).unwrap();
    assert_eq!(state["method"]["gradvac_target"].as_array().unwrap().len(), 9, "{state}");

    // Stopped after step 2 and resumed: the same losses and statistics, so the targets came back.
    let part = scratch("gradvac-part");
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "2"]);
    finetune(&model, &data, &part, &stop);
    finetune(&model, &data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(step_losses(&full), step_losses(&part), "the resumed run's losses differ");
    assert_eq!(records(&full, "gradvac"), records(&part, "gradvac"), "the resumed run's statistics differ");
    let weights = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "final weights differ");
}
