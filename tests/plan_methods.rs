//! The plan of steps that the seeds' methods need (train/schedule.rs `Plan::for_run`): per-task
//! warm start (`--individual-epochs`) before the joint schedule, and "Gradient Compromise" (a
//! sampling schedule with a gradient-combining method draws one batch per task each step), in the
//! plan and end to end through `engine finetune`, resume across the warm start's boundary included.

mod common;
use common::runs::{finetune_cpu as finetune, records, scratch, step_losses, tiny_data, tiny_model};
use engine::data::cs224n::Task;
use engine::train::TrainOptions;
use engine::train::options::Schedule;
use engine::train::schedule::{Plan, batches_per_pass};
use std::path::Path;

fn opts(schedule: Schedule, epochs: usize) -> TrainOptions {
    TrainOptions { schedule, epochs, batch_size: 4, ..TrainOptions::default() }
}

#[test]
fn one_draw_per_step_is_the_old_plan() {
    let sizes = [40, 13, 27];
    for s in [Schedule::Proportional, Schedule::Annealed, Schedule::RoundRobin, Schedule::Sequential] {
        assert_eq!(Plan::with_draws(s, &sizes, &[4; 3], 3, 9, 1), Plan::new(s, &sizes, 4, 3, 9));
        // Without a method, for_run is the schedule's own plan.
        assert_eq!(Plan::for_run(&TrainOptions { seed: 9, ..opts(s, 3) }, &sizes), Plan::new(s, &sizes, 4, 3, 9));
    }
}

#[test]
fn gradient_compromise_draws_one_batch_per_task_each_step() {
    let sizes = [400, 40, 120];
    let total: usize = sizes.iter().map(|&n| batches_per_pass(n, 4)).sum();
    for method in ["pcgrad", "gradvac"] {
        let mut o = opts(Schedule::Annealed, 3);
        o.pcgrad = method == "pcgrad";
        o.gradvac = method == "gradvac";
        let plan = Plan::for_run(&o, &sizes);
        assert!(plan.micro_steps.iter().all(|m| m.len() == 3), "three draws per step");
        assert_eq!(plan.micro_steps.len(), 3 * total.div_ceil(3), "an epoch keeps its batches");
        assert_eq!(plan.epoch_numbers, vec![1, 2, 3]);
        // Epoch 1 samples ∝ N (α = 1), epoch 3 ∝ N^0.2: the small task gains share.
        let share = |e: usize| {
            let steps = &plan.micro_steps[(e - 1) * total.div_ceil(3)..e * total.div_ceil(3)];
            let n: usize = steps.iter().flatten().filter(|&&t| t == 1).count();
            n as f64 / (3 * steps.len()) as f64
        };
        let want = |a: f64| 40f64.powf(a) / sizes.iter().map(|&n| (n as f64).powf(a)).sum::<f64>();
        assert!((share(1) - want(1.0)).abs() < 0.05, "epoch 1: {} vs {}", share(1), want(1.0));
        assert!((share(3) - want(0.2)).abs() < 0.05, "epoch 3: {} vs {}", share(3), want(0.2));
        assert!(share(3) > share(1) + 0.1);
    }
}

#[test]
fn individual_epochs_come_first_then_the_joint_schedule() {
    let sizes = [24, 8, 12];
    let o = TrainOptions { individual_epochs: 2, ..opts(Schedule::RoundRobin, 1) };
    let plan = Plan::for_run(&o, &sizes);
    let passes: Vec<usize> = sizes.iter().map(|&n| batches_per_pass(n, 4)).collect(); // 6, 2, 3
    let warm: usize = 2 * passes.iter().sum::<usize>();
    let mut at = 0;
    for (t, &p) in passes.iter().enumerate() {
        for _ in 0..2 * p {
            assert_eq!(plan.micro_steps[at], vec![t], "step {at}: task {t} alone");
            at += 1;
        }
    }
    assert_eq!(at, warm);
    assert!(plan.micro_steps[warm..].iter().all(|m| m == &vec![0, 1, 2]), "then round-robin");
    assert_eq!(plan.micro_steps.len(), warm + 6);
    // Two epochs per task, then the joint epoch numbered on.
    assert_eq!(plan.epoch_numbers, vec![1, 2, 1, 2, 1, 2, 3]);
    assert_eq!(*plan.epoch_ends.last().unwrap(), warm + 6);
}

#[test]
fn annealed_gradvac_combines_the_tasks_it_draws() {
    let (model, data) = (tiny_model("compromise"), tiny_data(24, "compromise"));
    let out = scratch("compromise");
    let log = finetune(&model, &data, &out, &["--schedule", "annealed", "--gradvac", "--epochs", "3"]);
    assert!(log.contains("Gradient Compromise"), "{log}");
    let stats = records(&out, "gradvac");
    // 18 batches an epoch, 3 a step: 6 steps an epoch, one combine each.
    assert_eq!(stats.len(), 18);
    assert!(stats.iter().any(|s| s["cosine"].as_object().unwrap().len() == 3), "some step drew all three tasks");
    assert_eq!(records(&out, "eval").len(), 3, "an evaluation per epoch");
    let _ = Task::Sst;
}

#[test]
fn individual_epochs_resume_across_the_boundary() {
    let (model, data) = (tiny_model("warm"), tiny_data(24, "warm"));
    // 6 batches per task: 18 warm-up steps of one task each, then 6 joint steps.
    let args = ["--individual-epochs", "1", "--pcgrad"];
    let full = scratch("warm-full");
    let log = finetune(&model, &data, &full, &args);
    assert!(log.contains("per-task warm start: 1 epoch(s) of each task alone (18 steps)"), "{log}");
    let train = records(&full, "train");
    assert_eq!(train.len(), 24);
    // Warm-up steps train one task: one loss per record; joint steps all three.
    assert_eq!(train[0]["loss"].as_object().unwrap().keys().collect::<Vec<_>>(), ["sst"]);
    assert_eq!(train[17]["loss"].as_object().unwrap().keys().collect::<Vec<_>>(), ["sts"]);
    assert_eq!(train[18]["loss"].as_object().unwrap().len(), 3);
    assert_eq!(records(&full, "eval").len(), 4, "after each task's epoch and the joint one");
    assert_eq!(records(&full, "pcgrad").len(), 24, "a combine every step (one task: nothing to project)");

    let part = scratch("warm-part");
    let mut stop = args.to_vec();
    stop.extend(["--stop-after", "16"]);
    finetune(&model, &data, &part, &stop);
    finetune(&model, &data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(step_losses(&full), step_losses(&part), "the resumed run differs");
    let weights = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "final weights differ");
}
