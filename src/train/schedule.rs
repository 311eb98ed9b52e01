//! What each step trains on, and at what learning rate. The whole task schedule is drawn up front
//! from the seed, and a task's k-th batch is a pure function of (seed, task, k), so a run resumed
//! at step s sees exactly the batches the uninterrupted run would have.

use super::options::{LrSchedule, Schedule, TrainOptions};
use crate::rng::{Rng, mix64};

/// The micro-steps of a run: which tasks each one trains (indices into the run's task list),
/// where epochs end, and where stages (sequential schedule) end.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub micro_steps: Vec<Vec<usize>>,
    /// Micro-step counts at which an epoch (or, sequentially, a task's stage) ends.
    pub epoch_ends: Vec<usize>,
    /// The epoch number (1-based) of each epoch end.
    pub epoch_numbers: Vec<usize>,
}

/// Batches per pass over a task of `n` examples.
pub fn batches_per_pass(n: usize, batch: usize) -> usize {
    n.div_ceil(batch).max(1)
}

impl Plan {
    /// The plan of a run with `opts` over tasks of `sizes[i]` examples:
    /// - with `--individual-epochs N`, first each task alone for N epochs, in order (seed 004's
    ///   "individual pretraining"), its epochs numbered 1..=N; then the joint schedule, its epochs
    ///   numbered on from N + 1. One plan, so the LR schedule spans both and --resume crosses the
    ///   boundary like any other step;
    /// - under a sampling schedule (proportional, annealed) with a gradient-combining method,
    ///   "Gradient Compromise" (seed 004: PAL scheduling with GradVac): each micro-step draws as
    ///   many batches as there are tasks, each by the schedule's probabilities, so a step holds
    ///   several task gradients for the method to combine; a task drawn twice trains twice (its
    ///   two batches' gradients add up in its slot). An epoch keeps its number of batches.
    pub fn for_run(opts: &TrainOptions, sizes: &[usize]) -> Plan {
        let sampled = matches!(opts.schedule, Schedule::Proportional | Schedule::Annealed);
        let draws = if opts.combines_gradients() && sampled { opts.tasks.len() } else { 1 };
        let batches = opts.batch_sizes();
        let joint = Plan::with_draws(opts.schedule, sizes, &batches, opts.epochs, opts.seed, draws);
        if opts.individual_epochs == 0 {
            return joint;
        }
        let mut plan = Plan::with_draws(Schedule::Sequential, sizes, &batches, opts.individual_epochs, opts.seed, 1);
        let warm = plan.micro_steps.len();
        plan.micro_steps.extend(joint.micro_steps);
        plan.epoch_ends.extend(joint.epoch_ends.iter().map(|e| e + warm));
        plan.epoch_numbers.extend(joint.epoch_numbers.iter().map(|e| e + opts.individual_epochs));
        plan
    }

    /// `sizes[i]`: examples of task i.
    pub fn new(schedule: Schedule, sizes: &[usize], batch: usize, epochs: usize, seed: u64) -> Plan {
        Plan::with_draws(schedule, sizes, &vec![batch; sizes.len()], epochs, seed, 1)
    }

    /// [`Plan::new`] with task i's batches of `batches[i]` examples, and `draws` batches drawn
    /// per micro-step under a sampling schedule (the same random sequence: one draw per
    /// micro-step is exactly `new`'s plan). A round-robin epoch is the largest task's number of
    /// batches, whatever each task's batch size.
    pub fn with_draws(
        schedule: Schedule,
        sizes: &[usize],
        batches: &[usize],
        epochs: usize,
        seed: u64,
        draws: usize,
    ) -> Plan {
        let passes: Vec<usize> = sizes.iter().zip(batches).map(|(&n, &b)| batches_per_pass(n, b)).collect();
        let total: usize = passes.iter().sum();
        let mut micro_steps = Vec::new();
        let (mut epoch_ends, mut epoch_numbers) = (Vec::new(), Vec::new());
        match schedule {
            Schedule::RoundRobin => {
                let per_epoch = *passes.iter().max().unwrap_or(&1);
                for e in 1..=epochs {
                    micro_steps.extend((0..per_epoch).map(|_| (0..sizes.len()).collect()));
                    epoch_ends.push(micro_steps.len());
                    epoch_numbers.push(e);
                }
            }
            Schedule::Proportional | Schedule::Annealed => {
                let mut rng = Rng::new(mix64(seed ^ 0x5eed_7a5c));
                for e in 1..=epochs {
                    let alpha = match schedule {
                        Schedule::Annealed if epochs > 1 => 1.0 - 0.8 * (e - 1) as f64 / (epochs - 1) as f64,
                        _ => 1.0,
                    };
                    let weights: Vec<f64> = sizes.iter().map(|&n| (n as f64).powf(alpha)).collect();
                    let sum: f64 = weights.iter().sum();
                    let mut draw = || {
                        let mut u = rng.uniform() * sum;
                        let mut pick = weights.len() - 1;
                        for (i, w) in weights.iter().enumerate() {
                            if u < *w {
                                pick = i;
                                break;
                            }
                            u -= w;
                        }
                        pick
                    };
                    let draws = draws.max(1);
                    for _ in 0..total.div_ceil(draws) {
                        micro_steps.push((0..draws).map(|_| draw()).collect());
                    }
                    epoch_ends.push(micro_steps.len());
                    epoch_numbers.push(e);
                }
            }
            Schedule::Sequential => {
                for (i, &p) in passes.iter().enumerate() {
                    for e in 1..=epochs {
                        micro_steps.extend((0..p).map(|_| vec![i]));
                        epoch_ends.push(micro_steps.len());
                        epoch_numbers.push(e);
                    }
                }
            }
        }
        Plan { micro_steps, epoch_ends, epoch_numbers }
    }

    /// The epoch (1-based) of micro-step `micro`; a run longer than the plan (--max-steps)
    /// repeats it, counting on.
    pub fn epoch_at(&self, micro: usize, epochs: usize) -> usize {
        let len = self.micro_steps.len().max(1);
        let (repeat, m) = (micro / len, micro % len);
        let i = self.epoch_ends.iter().position(|&e| m < e).unwrap_or(0);
        self.epoch_numbers.get(i).copied().unwrap_or(1) + repeat * epochs
    }

    /// Whether an epoch (or stage) ends after micro-step `prev` and by micro-step `now`.
    pub fn crosses_epoch_end(&self, prev: usize, now: usize) -> bool {
        let len = self.micro_steps.len().max(1);
        (prev / len..=now / len).any(|r| self.epoch_ends.iter().any(|&e| prev < r * len + e && r * len + e <= now))
    }

    /// How many batches of each task the first `micro` micro-steps consumed.
    pub fn consumed(&self, micro: usize, tasks: usize) -> Vec<usize> {
        let mut counts = vec![0; tasks];
        for step in &self.micro_steps[..micro.min(self.micro_steps.len())] {
            for &t in step {
                counts[t] += 1;
            }
        }
        counts
    }
}

/// The examples (indices) of task `task`'s `k`-th batch: passes over the data in an order
/// reshuffled every pass, from the seed alone.
pub fn batch_indices(seed: u64, task: usize, n: usize, batch: usize, k: usize) -> Vec<usize> {
    let per_pass = batches_per_pass(n, batch);
    let (pass, pos) = (k / per_pass, k % per_pass);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(mix64(seed ^ mix64(task as u64 + 1) ^ mix64(0xba7c_0000 + pass as u64)));
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order[pos * batch..((pos + 1) * batch).min(n)].to_vec()
}

/// The learning rate multiplier after `step` optimizer steps of `total`, as Hugging Face's
/// schedulers compute it: linear warmup from 0 over `warmup` steps, then constant, linear decay
/// to 0, or half a cosine to 0.
pub fn lr_factor(kind: LrSchedule, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match kind {
        LrSchedule::Constant => 1.0,
        LrSchedule::Linear => (1.0 - progress).max(0.0),
        LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_task_each_step_for_the_largest_task() {
        let p = Plan::new(Schedule::RoundRobin, &[100, 35, 10], 16, 2, 1);
        assert_eq!(p.micro_steps.len(), 2 * 7);
        assert!(p.micro_steps.iter().all(|s| s == &[0, 1, 2]));
        assert_eq!(p.epoch_ends, [7, 14]);
        assert_eq!(p.consumed(9, 3), [9, 9, 9]);
    }

    #[test]
    fn proportional_follows_sizes_and_annealed_flattens() {
        let sizes = [8000, 2000, 1000];
        let p = Plan::new(Schedule::Proportional, &sizes, 10, 3, 5);
        let c = p.consumed(p.micro_steps.len(), 3);
        let total: usize = c.iter().sum();
        assert_eq!(total, 3 * 1100);
        assert!((c[0] as f64 / total as f64 - 8.0 / 11.0).abs() < 0.03, "{c:?}");
        let a = Plan::new(Schedule::Annealed, &sizes, 10, 3, 5);
        // The last epoch draws with alpha = 0.2: far flatter than the sizes.
        let last: Vec<usize> = a.micro_steps[2200..].iter().map(|s| s[0]).collect();
        let share0 = last.iter().filter(|&&t| t == 0).count() as f64 / last.len() as f64;
        let want = 8000f64.powf(0.2) / (8000f64.powf(0.2) + 2000f64.powf(0.2) + 1000f64.powf(0.2));
        assert!((share0 - want).abs() < 0.04, "{share0} vs {want}");
    }

    #[test]
    fn epochs_are_counted_across_repeats() {
        let p = Plan::new(Schedule::RoundRobin, &[30, 20], 10, 2, 1); // 3 micro-steps an epoch
        assert_eq!((0..8).map(|m| p.epoch_at(m, 2)).collect::<Vec<_>>(), [1, 1, 1, 2, 2, 2, 3, 3]);
        assert!(p.crosses_epoch_end(2, 3) && !p.crosses_epoch_end(3, 5) && p.crosses_epoch_end(5, 6));
        assert!(p.crosses_epoch_end(8, 9), "the repeated plan's first epoch end");
    }

    #[test]
    fn sequential_runs_task_after_task() {
        let p = Plan::new(Schedule::Sequential, &[30, 20], 10, 2, 1);
        let tasks: Vec<usize> = p.micro_steps.iter().map(|s| s[0]).collect();
        assert_eq!(tasks, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(p.epoch_ends, [3, 6, 8, 10]);
    }

    #[test]
    fn batches_cover_each_pass_once_and_reshuffle() {
        let (n, b) = (37, 8);
        let mut seen: Vec<usize> = (0..5).flat_map(|k| batch_indices(3, 1, n, b, k)).collect();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_ne!(batch_indices(3, 1, n, b, 0), batch_indices(3, 1, n, b, 5), "the second pass is reshuffled");
        assert_eq!(batch_indices(3, 1, n, b, 7), batch_indices(3, 1, n, b, 7));
    }

    #[test]
    fn lr_factor_matches_hugging_face() {
        assert_eq!(lr_factor(LrSchedule::Linear, 0, 10, 100), 0.0);
        assert_eq!(lr_factor(LrSchedule::Linear, 5, 10, 100), 0.5);
        assert_eq!(lr_factor(LrSchedule::Linear, 10, 10, 100), 1.0);
        assert!((lr_factor(LrSchedule::Linear, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(lr_factor(LrSchedule::Linear, 100, 10, 100), 0.0);
        assert!((lr_factor(LrSchedule::Cosine, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(lr_factor(LrSchedule::Constant, 70, 10, 100), 1.0);
    }
}
