//! PCGrad against hand-computed cases, through the same path the trainer takes (per-task slots
//! swapped into a store, the Gram-matrix surgery, the weighted sum), and the Gram-matrix form
//! against the textbook vector algorithm.

use engine::rng::Rng;
use engine::store::Store;
use engine::train::pcgrad::{Combined, Reduction, TaskGradients, shared_len, surgery, visiting_orders};
use engine::{Device, Tensor};

/// A store with a shared parameter of `dim` values and one scalar head per task.
fn store(dim: usize, tasks: usize) -> (Store<f64>, Tensor, Vec<Tensor>) {
    let mut s = Store::<f64>::new(Device::Cpu);
    let shared = s.add_param("encoder.w", &[dim], &vec![0.0; dim], true).unwrap();
    let heads = (0..tasks).map(|t| s.add_param(&format!("head.t{t}.weight"), &[1], &[0.0], true).unwrap()).collect();
    (s, shared, heads)
}

/// Runs the surgery over task gradients `g` (shared part) with head gradients 10·(t+1); returns the
/// combined shared gradient, the combined head gradients and the surgery.
fn run(
    g: &[Vec<f64>],
    orders: Vec<Vec<usize>>,
    reduction: Reduction,
) -> (Vec<f64>, Vec<f64>, engine::train::pcgrad::Surgery) {
    let (mut s, shared, heads) = store(g[0].len(), g.len());
    assert_eq!(shared_len(&s).unwrap(), g[0].len());
    let mut slots = TaskGradients::new(&s, g.len(), shared_len(&s).unwrap()).unwrap();
    // Stale values in the store's own arena must not leak into the result.
    s.write_grad(shared, &vec![f64::NAN; g[0].len()]).unwrap();
    for (t, gt) in g.iter().enumerate() {
        slots.enter(&mut s, t).unwrap();
        s.write_grad(shared, gt).unwrap();
        s.write_grad(heads[t], &[10.0 * (t + 1) as f64]).unwrap();
        slots.leave(&mut s, t).unwrap();
    }
    slots.combine(&mut s, reduction, 5, |_| orders).unwrap();
    let mut done = slots.drain().unwrap();
    assert_eq!(done.len(), 1);
    let Combined { step, tasks, surgery } = done.remove(0);
    assert_eq!((step, tasks), (5, (0..g.len()).collect::<Vec<_>>()));
    assert!(slots.drain().unwrap().is_empty(), "a drain empties");
    let head_grads = heads.iter().map(|h| s.read_grad(*h).unwrap()[0]).collect();
    (s.read_grad(shared).unwrap(), head_grads, surgery)
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
}

#[test]
fn two_tasks_by_hand() {
    // g1 = (1, 0), g2 = (−1, 1): g1·g2 = −1 < 0.
    // g1^PC = g1 − (−1/‖g2‖²) g2 = (1, 0) + ½(−1, 1) = (½, ½)
    // g2^PC = g2 − (−1/‖g1‖²) g1 = (−1, 1) + (1, 0) = (0, 1)
    let g = vec![vec![1.0, 0.0], vec![-1.0, 1.0]];
    let (sum, heads, s) = run(&g, vec![vec![1], vec![0]], Reduction::Sum);
    assert!(close(&sum, &[0.5, 1.5]), "{sum:?}");
    assert_eq!(heads, vec![10.0, 20.0], "heads are summed, never projected");
    assert_eq!((s.projected, s.pairs), (2, 2));
    assert!((s.cosines[0] + 1.0 / 2f64.sqrt()).abs() < 1e-12);
    // ‖(½, ½)‖/‖(1, 0)‖ = 1/√2; ‖(0, 1)‖/‖(−1, 1)‖ = 1/√2
    assert!(s.norm_ratio.iter().all(|r| (r - 0.5f64.sqrt()).abs() < 1e-12), "{:?}", s.norm_ratio);
    let (mean, heads, _) = run(&g, vec![vec![1], vec![0]], Reduction::Mean);
    assert!(close(&mean, &[0.25, 0.75]), "{mean:?}");
    assert_eq!(heads, vec![10.0, 20.0], "heads are summed under mean too");
}

#[test]
fn three_tasks_where_the_order_matters() {
    // g1 = (2, 0), g2 = (−1, 1), g3 = (−1, −2); Gram [[4, −2, −2], [−2, 2, −1], [−2, −1, 5]]: every pair conflicts.
    // Task 1 visiting 2 then 3: (2, 0) + (−1, 1) = (1, 1); ·g3 = −3 → (1, 1) + ⅗(−1, −2) = (⅖, −⅕).
    // Task 1 visiting 3 then 2: (2, 0) + ⅖(−1, −2) = (8/5, −4/5); ·g2 = −12/5 → + 6/5(−1, 1) = (⅖, ⅖).
    // Task 2 visiting 1 then 3: (−1, 1) + ½(2, 0) = (0, 1); ·g3 = −2 → (0, 1) + ⅖(−1, −2) = (−⅖, ⅕).
    // Task 3 visiting 1 then 2: (−1, −2) + ½(2, 0) = (0, −2); ·g2 = −2 → (0, −2) + (−1, 1) = (−1, −1).
    let g = vec![vec![2.0, 0.0], vec![-1.0, 1.0], vec![-1.0, -2.0]];
    let (a, _, s) = run(&g, vec![vec![1, 2], vec![0, 2], vec![0, 1]], Reduction::Sum);
    assert!(close(&a, &[0.4 - 0.4 - 1.0, -0.2 + 0.2 - 1.0]), "{a:?}");
    assert_eq!(s.projected, 6);
    let (b, _, _) = run(&g, vec![vec![2, 1], vec![0, 2], vec![0, 1]], Reduction::Sum);
    assert!(close(&b, &[0.4 - 0.4 - 1.0, 0.4 + 0.2 - 1.0]), "{b:?}");
}

#[test]
fn no_projection_when_no_pair_conflicts() {
    let g = vec![vec![1.0, 2.0, 0.0], vec![0.5, 0.0, 1.0], vec![0.0, 1.0, 3.0]];
    let (sum, _, s) = run(&g, vec![vec![1, 2], vec![2, 0], vec![0, 1]], Reduction::Sum);
    assert_eq!(sum, vec![1.5, 3.0, 4.0], "Σ g_i exactly");
    assert_eq!(s.projected, 0);
    assert_eq!(s.norm_ratio, vec![1.0; 3]);
}

#[test]
fn a_zero_gradient_task_gives_no_nan() {
    // Task 2 saw no shared gradient (e.g. a head-only loss): nothing projects onto or away from it.
    let g = vec![vec![1.0, 0.0], vec![0.0, 0.0], vec![-1.0, 1.0]];
    let (sum, _, s) = run(&g, vec![vec![1, 2], vec![0, 2], vec![0, 1]], Reduction::Sum);
    assert!(sum.iter().all(|v| v.is_finite()));
    assert!(close(&sum, &[0.5, 1.5]), "{sum:?}"); // the two-task case plus zero
    assert_eq!(s.norm_ratio[1], 1.0);
    assert_eq!((s.cosines[0], s.cosines[2]), (0.0, 0.0), "cosines with a zero gradient are 0");
    assert_eq!(s.projected, 2);
}

/// The textbook algorithm on explicit vectors.
fn pcgrad_vectors(g: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut total = vec![0.0; g[0].len()];
    for (i, order) in orders.iter().enumerate() {
        let mut p = g[i].clone();
        for &j in order {
            let d = dot(&p, &g[j]);
            if d < 0.0 {
                let c = d / dot(&g[j], &g[j]);
                p.iter_mut().zip(&g[j]).for_each(|(x, y)| *x -= c * y);
            }
        }
        total.iter_mut().zip(&p).for_each(|(t, x)| *t += x);
    }
    total
}

#[test]
fn the_gram_form_equals_the_vector_algorithm() {
    let mut rng = Rng::new(4);
    for (k, dim) in [(2, 3), (3, 7), (5, 11), (8, 13)] {
        for step in 0..20 {
            let g: Vec<Vec<f64>> = (0..k).map(|_| (0..dim).map(|_| rng.normal()).collect()).collect();
            let orders = visiting_orders(9, step, k);
            let (got, _, _) = run(&g, orders.clone(), Reduction::Sum);
            let want = pcgrad_vectors(&g, &orders);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "k={k} step {step}: {err:e}");
        }
    }
}

#[test]
fn surgery_refuses_a_bad_order() {
    let gram = vec![1.0, 0.0, 0.0, 1.0];
    assert!(surgery(&gram, &[vec![0], vec![0]], Reduction::Sum).is_err());
    assert!(surgery(&gram, &[vec![1]], Reduction::Sum).is_err());
}
