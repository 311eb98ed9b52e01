//! The data options of `engine finetune`: `--drop-longest F` leaves the longest fraction of each
//! task's training inputs out (noted on stderr, kept in train.json, resumed bit for bit);
//! `--batch-size sst=2,quora=8,sts=4` gives each task its own batch size, a round-robin epoch
//! being the largest task's number of batches; bad values are refused in one line.

mod common;
use common::runs::{
    assert_resumes_exactly, finetune_cpu as finetune, finetune_refused, scratch, step_losses, tiny_data, tiny_model,
};

#[test]
fn drop_longest_leaves_out_the_longest_inputs_and_resumes_exactly() {
    let (model, data) = (tiny_model("drop-longest"), tiny_data(24, "drop-longest"));
    let steps = ["--max-steps", "4", "--drop-longest", "0.25"];
    let full = scratch("drop-longest-full");
    let notes = finetune(&model, &data, &full, &steps);
    for task in ["sst", "quora", "sts"] {
        let line = notes
            .lines()
            .find(|l| l.contains("--drop-longest") && l.contains(&format!(" {task} ")))
            .unwrap_or_else(|| panic!("no note for {task}: {notes}"));
        assert!(line.contains("left out 6 of 24"), "{line}");
    }
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(opts["drop_longest"], serde_json::json!(0.25));
    // Fewer examples, other batches: the losses differ from the whole data's.
    let whole = scratch("drop-longest-none");
    finetune(&model, &data, &whole, &steps[..2]);
    assert_ne!(step_losses(&full), step_losses(&whole));
    // Resumed (the filter runs again on the same data): the same run.
    assert_resumes_exactly(&model, &data, &full, "drop-longest-part", &steps);
}

#[test]
fn bad_drop_longest_is_refused_in_one_line() {
    let (model, data) = (tiny_model("drop-bad"), tiny_data(8, "drop-bad"));
    for v in ["1", "-0.1", "nan", "1.5"] {
        let e = finetune_refused(&model, &data, "drop-bad-run", &["--drop-longest", v]);
        assert!(e.contains("--drop-longest"), "{v}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{v}: {e}");
    }
}

#[test]
fn per_task_batch_sizes_plan_by_the_largest_task_and_resume_exactly() {
    use engine::train::TrainOptions;
    use engine::train::schedule::Plan;
    // The plan: 24 examples each at 2, 8, 4 per batch: 12, 3 and 6 batches; an epoch is 12 steps
    // of all three tasks (those with fewer batches start a new pass).
    let opts = TrainOptions { task_batch_sizes: vec![2, 8, 4], epochs: 2, ..TrainOptions::default() };
    let plan = Plan::for_run(&opts, &[24, 24, 24]);
    assert_eq!(plan.epoch_ends, vec![12, 24]);
    assert!(plan.micro_steps.iter().all(|s| s == &vec![0, 1, 2]));

    let (model, data) = (tiny_model("task-batches"), tiny_data(24, "task-batches"));
    let steps = ["--batch-size", "sst=2,quora=8", "--batch-size", "sts=4", "--max-steps", "5"];
    let full = scratch("task-batches-full");
    let notes = finetune(&model, &data, &full, &steps);
    assert!(notes.contains("(12 per epoch)"), "{notes}");
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(opts["task_batch_sizes"], serde_json::json!([2, 8, 4]), "{opts}");
    assert_resumes_exactly(&model, &data, &full, "task-batches-part", &steps);
    // One size for every task is the plain run.
    let one = scratch("task-batches-one");
    finetune(&model, &data, &one, &["--batch-size", "4", "--max-steps", "2"]);
    let same = scratch("task-batches-same");
    finetune(&model, &data, &same, &["--batch-size", "sst=4,quora=4,sts=4", "--max-steps", "2"]);
    assert_eq!(step_losses(&one), step_losses(&same));
}

#[test]
fn bad_batch_sizes_are_refused_in_one_line() {
    let (model, data) = (tiny_model("batch-bad"), tiny_data(8, "batch-bad"));
    for v in ["sst=0", "2.5", "quora=-1", "cfimdb=4", "sst=x"] {
        let e = finetune_refused(&model, &data, "batch-bad-run", &["--batch-size", v]);
        assert!(e.contains("--batch-size") || e.contains("cfimdb"), "{v}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{v}: {e}");
    }
}
