//! `engine finetune`: the multi-task training loop. Each step trains the tasks the plan names,
//! each task's loss backward into the shared gradients (weighted), then one AdamW step at the
//! scheduled learning rate; evaluation after every epoch (and every --eval-every steps) keeps the
//! best checkpoint by combined dev score; predictions for dev and test come from the best one.

use super::analysis;
use super::checkpoint::{self, TrainState};
use super::evaluate::{self, write_predictions};
use super::loss_meter::LossMeter;
use super::methods::Combiner;
use super::metrics::{self, Score};
use super::model::{Batch, MultiTaskModel};
use super::options::{Schedule, TrainOptions};
use super::report::{self, Metrics, Progress, Record};
use super::run_dir::RunDir;
use super::schedule::{Plan, batch_indices, lr_factor};
use super::smart::{self, Smart};
use super::task_grads::TaskGradients;
use crate::data::Tokenizer;
use crate::data::cs224n::{self, DataFile, Dataset, Split, Task};
use crate::data::drop_longest::drop_longest;
use crate::data::eda::{Eda, Synonyms};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::Checkpoint;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::mix64;
use crate::tape::Tape;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct FinetuneArgs {
    pub opts: TrainOptions,
    /// The base checkpoint (or, with `resume`, ignored in favour of the checkpoint's own).
    pub model: PathBuf,
    pub files: Vec<DataFile>,
    /// Where a task without an entry in `files` is read from under its default names (a user
    /// task a resumed run knows only once its checkpoint's train.json is read).
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub device: Device,
    pub quiet: bool,
    pub strict: bool,
    /// Stop (saving out/last) after this many steps, as an interruption would.
    pub stop_after: Option<usize>,
    /// A fresh run may replace the run `out` holds (clearing it first); without, it refuses.
    pub overwrite: bool,
}

/// What a run reports when it ends.
#[derive(Clone, Debug)]
pub struct Summary {
    pub best: Vec<Score>,
    pub best_combined: f64,
    pub best_step: usize,
    pub steps: usize,
    pub seconds: f64,
    /// Every training loss recorded, (step, task, mean loss), for tests and reports.
    pub losses: Vec<(usize, String, f64)>,
    pub stopped_early: bool,
}

struct TaskData {
    train: Dataset,
    dev: Option<Dataset>,
    test: Option<Dataset>,
}

/// The data of `tasks` (the run's: a resumed run's come from its checkpoint, not the flags).
fn load_data(args: &FinetuneArgs, tasks: &[Task]) -> Result<Vec<TaskData>> {
    let defaults: Vec<DataFile> = match &args.data_dir {
        Some(dir) => tasks
            .iter()
            .flat_map(|&task| Split::ALL.map(|split| (task, split)))
            .map(|(task, split)| DataFile {
                task,
                split,
                path: task.path(dir, split),
                flag: format!("--{task}-{split} (default under --data-dir)"),
            })
            .collect(),
        None => Vec::new(),
    };
    let file = |task: Task, split: Split| {
        let given = args.files.iter().find(|f| f.task == task && f.split == split);
        given.or_else(|| defaults.iter().find(|f| f.task == task && f.split == split))
    };
    let mut out = Vec::new();
    for &task in tasks {
        let read = |split: Split, required: bool| -> Result<Option<Dataset>> {
            match file(task, split) {
                Some(f) => cs224n::read(task, &f.path, split, &f.flag, args.strict).map(Some),
                None if required => Err(Error::Config(format!("no {} {} file given", task, split.name()))),
                None => Ok(None),
            }
        };
        let train = read(Split::Train, true)?.expect("required");
        let dev = read(Split::Dev, true)?;
        // A missing test file only means no test predictions.
        let test = match file(task, Split::Test) {
            Some(f) if f.path.exists() => Some(cs224n::read(task, &f.path, Split::Test, &f.flag, args.strict)?),
            _ => None,
        };
        out.push(TaskData { train, dev, test });
    }
    Ok(out)
}

/// EDA on the training examples of --eda-tasks (after --drop-longest); returns the progress
/// notes that say what it did.
fn augment(opts: &TrainOptions, data: &mut [TaskData]) -> Result<Vec<String>> {
    if opts.eda_tasks.is_empty() {
        return Ok(Vec::new());
    }
    let synonyms = opts.eda_synonyms.as_deref().map(Synonyms::read).transpose()?;
    let eda = Eda::new(opts.eda_alpha, opts.eda_num, synonyms);
    let mut notes = Vec::new();
    if eda.synonyms.is_none() {
        notes.push("--eda-tasks: no --eda-synonyms file, so no synonym replacement (SR) or insertion (RI)".into());
    }
    let ops: Vec<&str> = eda.operations().iter().map(|o| o.abbrev()).collect();
    for (task, d) in opts.tasks.iter().zip(data) {
        if opts.eda_tasks.contains(task) {
            let a = eda.augment(*task, opts.seed, &mut d.train.examples);
            notes.push(format!(
                "--eda-tasks: added {} augmented {task} training examples to {} ({} copies each, {} in turn; \
                 {} that came out the same as their original left out)",
                a.added,
                a.of,
                eda.num,
                ops.join(", "),
                a.unchanged
            ));
        }
    }
    Ok(notes)
}

/// Evaluates every task on its dev set; returns the scores and the combined score.
/// Dev predictions per task.
type TaskPredictions = Vec<(Task, evaluate::Predictions)>;

/// Every task's dev predictions and scores, and the combined score.
fn evaluate_dev(
    model: &MultiTaskModel,
    tape: &mut Tape<f32>,
    tok: &mut Tokenizer,
    data: &[TaskData],
    batch: usize,
) -> Result<(TaskPredictions, Vec<Score>, f64)> {
    let (mut preds, mut scores) = (Vec::new(), Vec::new());
    for (task, d) in model.tasks.iter().zip(data) {
        if let Some(dev) = &d.dev {
            let (p, s) = evaluate::predict(model, tape, tok, *task, &dev.examples, batch)?;
            preds.push((*task, p));
            scores.extend(s);
        }
    }
    let c = metrics::combined(&scores);
    Ok((preds, scores, c))
}

/// What one task pass recorded: the task's loss, and SMART's smoothness term when it ran.
pub struct TaskLosses {
    pub loss: crate::tensor::Tensor,
    pub smoothness: Option<crate::tensor::Tensor>,
}

/// One task's forward and backward on `batch` (task index `t`), its objective scaled by `scale`
/// (task weight over the accumulation steps): the task's loss, plus SMART's terms when `smart`
/// regularises the task; into task `t`'s own gradient slot under a gradient-combining method
/// (train/methods/), else into the shared gradients. The tape keeps the losses until the next reset.
pub fn train_task(
    tape: &mut Tape<f32>,
    model: &MultiTaskModel,
    batch: &Batch,
    t: usize,
    grads: Option<&mut TaskGradients<f32>>,
    smart: Option<&mut Smart>,
    scale: f64,
) -> Result<TaskLosses> {
    tape.reset();
    let (losses, objective) = match smart.filter(|s| s.weight(t) > 0.0) {
        Some(s) => {
            let o = s.objective(tape, model, batch, t)?;
            (TaskLosses { loss: o.task_loss, smoothness: Some(o.smoothness) }, o.total)
        }
        None => {
            let out = model.forward(tape, batch)?;
            let loss = model.loss(tape, batch, out)?;
            (TaskLosses { loss, smoothness: None }, loss)
        }
    };
    match grads {
        Some(g) => {
            g.enter(&mut tape.store, t)?;
            let backward = tape.backward_scaled(objective, scale as f32);
            g.leave(&mut tape.store, t)?;
            backward?;
        }
        None => tape.backward_scaled(objective, scale as f32)?,
    }
    Ok(losses)
}

/// Settles the interrupted saves beside the resumed checkpoint `dir` when it lies outside `out`
/// (whose own are settled under its lock).
fn recover_beside(dir: &Path, out: &Path, recovered: &mut super::swap::Recovery) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(parent, out) {
        recovered.absorb(super::swap::recover(parent)?);
    }
    Ok(())
}

/// Logs the method's statistics of the steps combined since the last call (one device read on
/// a GPU under PCGrad): a record each in metrics.jsonl.
fn log_method(combiner: &mut Option<Combiner>, tasks: &[Task], metrics: &mut Metrics) -> Result<()> {
    let Some(c) = combiner else { return Ok(()) };
    for record in c.drain(tasks)? {
        metrics.push(record)?;
    }
    Ok(())
}

/// Saves `last/`: the weights, the optimizer, the counters, the gradient method's state and
/// SMART's teacher (beside the optimizer's moments). `files`: (the tokenizer's folder, the base
/// model's).
#[allow(clippy::too_many_arguments)]
fn save_last(
    dir: &Path,
    store: &crate::store::Store<f32>,
    files: (&Path, &Path),
    opts: &TrainOptions,
    opt: &Optimizer<f32>,
    state: &mut TrainState,
    (combiner, smart): (&Option<Combiner>, &Option<Smart>),
) -> Result<()> {
    state.method = combiner.as_ref().and_then(|c| c.state());
    let teacher = smart.as_ref().map(|s| s.state()).transpose()?.flatten();
    let extra: Vec<(String, Vec<f32>)> = teacher.into_iter().map(|t| (smart::TEACHER.to_string(), t)).collect();
    checkpoint::save(dir, store, files.0, files.1, opts, Some((opt, state, &extra)))
}

/// Fine-tunes; see the module doc.
pub fn finetune(args: &FinetuneArgs) -> Result<Summary> {
    let started = Instant::now();
    if args.stop_after == Some(0) {
        return Err(Error::Config("--stop-after 0 would stop before the first step: give at least 1".into()));
    }
    // Locked for the run's life; a crash's half-done saves are settled before anything is read.
    let run = RunDir::lock(&args.out)?;
    let mut recovered = run.recover()?;
    if let Some(dir) = &args.resume {
        recover_beside(dir, &args.out, &mut recovered)?;
    }
    if args.resume.is_none() {
        run.check_fresh(args.overwrite)?;
    }
    // With --resume, the checkpoint's options and weights win; the data files still come from the flags.
    let (opts, base) = match &args.resume {
        Some(dir) => (checkpoint::load_options(dir)?, dir.clone()),
        None => (args.opts.clone(), args.model.clone()),
    };
    opts.validate()?;
    let mut data = load_data(args, &opts.tasks)?;
    // The encoder's checkpoint and, when resuming, the saved heads (and adapters).
    let (ckpt, trained) = match &args.resume {
        Some(dir) => {
            let (c, t) = checkpoint::open_weights(dir)?;
            (c, Some(t))
        }
        None => (Checkpoint::open(&base)?, None),
    };
    if opts.max_len > ckpt.config.max_position_embeddings {
        return Err(Error::Config(format!(
            "--max-len {} exceeds the checkpoint's {} positions (max_position_embeddings in {})",
            opts.max_len,
            ckpt.config.max_position_embeddings,
            base.join("config.json").display()
        )));
    }
    super::memory::check_fits(&opts, &ckpt.config, &args.device)?;
    let mut tok = Tokenizer::from_dir(&base)?;
    let mut dropped = Vec::new();
    if opts.drop_longest > 0.0 {
        for (task, d) in opts.tasks.iter().zip(&mut data) {
            dropped.push((*task, drop_longest(&mut tok, &mut d.train.examples, opts.drop_longest)?));
        }
    }
    let augmented = augment(&opts, &mut data)?;
    let mut tape = Tape::<f32>::new(args.device.clone());
    let model = MultiTaskModel::build(&mut tape.store, &ckpt, trained.as_ref(), &opts, true)?;
    let mut combiner = Combiner::from_options(&opts, &tape.store)?;
    let adam = OptimizerConfig {
        rule: opts.optimizer,
        beta1: opts.beta1,
        beta2: opts.beta2,
        eps: opts.eps,
        weight_decay: opts.weight_decay,
        nu: (opts.qh_nu[0], opts.qh_nu[1]),
    };
    let mut opt = Optimizer::with_groups(&tape.store, adam, super::param_groups::groups(&tape.store, &opts))?;
    let mut state = match &args.resume {
        Some(dir) => checkpoint::load_state(dir, &mut opt)?,
        None => TrainState::default(),
    };
    if let (Some(c), Some(saved)) = (&mut combiner, &state.method) {
        c.restore(saved)?;
    }
    let mut smart = opts.smart.clone().map(|c| Smart::new(c, &mut tape.store)).transpose()?;
    if let (Some(s), Some(dir)) = (&mut smart, &args.resume)
        && s.config.bregman > 0.0
    {
        s.restore(&checkpoint::load_extra(dir, smart::TEACHER)?)?;
    }

    let sizes: Vec<usize> = data.iter().map(|d| d.train.examples.len()).collect();
    let plan = Plan::for_run(&opts, &sizes);
    let batches = opts.batch_sizes();
    let micro_per_run = plan.micro_steps.len();
    let planned_steps = micro_per_run.div_ceil(opts.grad_accum);
    let total_steps = if opts.max_steps > 0 { opts.max_steps } else { planned_steps };
    let warmup = (opts.warmup_ratio * total_steps as f64).round() as usize;
    let (best_dir, last_dir, pred_dir) = checkpoint::out_paths(&args.out);
    if args.resume.is_none() && args.overwrite {
        run.clear()?;
    }
    let mut metrics = Metrics::open(&args.out.join("metrics.jsonl"), args.resume.as_ref().map(|_| state.step))?;
    let progress = Progress::new(total_steps, state.step, args.quiet, opts.log_every);
    progress.note(&format!(
        "finetune: {} on {:?}, {} steps ({} per epoch), {} trainable parameters",
        opts.tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        args.device,
        total_steps,
        planned_steps.div_ceil(opts.epochs),
        tape.store.num_trainable()
    ));
    if !recovered.is_empty() {
        progress.note(&format!("{}: {}", args.out.display(), recovered.describe()));
    }
    for (task, d) in &dropped {
        progress.note(&format!(
            "--drop-longest {}: left out {} of {} {task} training inputs (those kept: at most {} tokens)",
            opts.drop_longest, d.dropped, d.of, d.longest_kept
        ));
    }
    for note in &augmented {
        progress.note(note);
    }

    if opts.combines_gradients() && opts.schedule == Schedule::Sequential {
        progress.note(&format!(
            "note: --schedule {} trains one task per micro-batch; {} combines only where a step \
             (with --grad-accum) gathers several tasks",
            clap::ValueEnum::to_possible_value(&opts.schedule).map_or_else(String::new, |v| v.get_name().to_string()),
            if opts.pcgrad { "PCGrad" } else { "GradVac" }
        ));
    }
    if opts.combines_gradients() && matches!(opts.schedule, Schedule::Proportional | Schedule::Annealed) {
        progress.note(&format!(
            "Gradient Compromise: each step draws {} batches by the schedule's task probabilities; {} combines \
             the gradients of the tasks drawn",
            opts.tasks.len(),
            if opts.pcgrad { "PCGrad" } else { "GradVac" }
        ));
    }
    if opts.individual_epochs > 0 {
        let warm = plan.epoch_ends.get(opts.tasks.len() * opts.individual_epochs - 1).copied().unwrap_or(0);
        progress.note(&format!(
            "per-task warm start: {} epoch(s) of each task alone ({} steps), then the joint schedule",
            opts.individual_epochs,
            warm.div_ceil(opts.grad_accum)
        ));
    }
    // The batches each task has consumed so far: a function of the position alone.
    let micro_at = |step: usize| step * opts.grad_accum;
    let mut consumed = vec![0usize; opts.tasks.len()];
    for m in 0..micro_at(state.step) {
        for &t in &plan.micro_steps[m % micro_per_run] {
            consumed[t] += 1;
        }
    }
    // Each task's losses since the last log, summed where they lie (no host read inside a step),
    // and the last means read, for the progress line.
    let mut meter = LossMeter::new(&tape.store.device, opts.tasks.len())?;
    // SMART's smoothness terms likewise.
    let mut smooth_meter = LossMeter::new(&tape.store.device, opts.tasks.len())?;
    let mut shown: Vec<(String, f64)> = Vec::new();
    let mut logged_step = state.step;
    let mut losses = Vec::new();
    let mut stopped_early = false;
    // The best evaluation of this process: its dev predictions need not be computed again.
    let mut best_dev: Option<(TaskPredictions, Vec<Score>)> = None;
    tape.set_training(true);
    while state.step < total_steps {
        if combiner.is_none() {
            tape.store.zero_grads()?;
        }
        for a in 0..opts.grad_accum {
            let micro = micro_at(state.step) + a;
            if opts.max_steps == 0 && micro >= micro_per_run {
                break;
            }
            let tasks_now = &plan.micro_steps[micro % micro_per_run];
            for (slot, &ti) in tasks_now.iter().enumerate() {
                // A task drawn twice in one micro-step (Gradient Compromise) gets a dropout seed per draw.
                let again = tasks_now[..slot].iter().filter(|&&t| t == ti).count() as u64;
                let task = opts.tasks[ti];
                let examples = &data[ti].train.examples;
                let idx = batch_indices(opts.seed, ti, examples.len(), batches[ti], consumed[ti]);
                consumed[ti] += 1;
                let refs: Vec<_> = idx.iter().map(|&i| &examples[i]).collect();
                let batch = model.batch(&mut tok, task, &refs)?;
                tape.set_seed(mix64(opts.seed ^ mix64(micro as u64) ^ (ti as u64) << 56 ^ again << 48));
                let scale = opts.weight(task) / opts.grad_accum as f64;
                let grads = combiner.as_mut().map(|c| &mut c.grads);
                let losses = train_task(&mut tape, &model, &batch, ti, grads, smart.as_mut(), scale)?;
                meter.add(&tape.store, losses.loss, ti)?;
                if let Some(l) = losses.smoothness {
                    smooth_meter.add(&tape.store, l, ti)?;
                }
            }
        }
        if let Some(c) = &mut combiner {
            c.combine(&mut tape.store, state.step)?;
        }
        let lr = opts.lr * lr_factor(opts.lr_schedule, state.step, warmup, total_steps);
        opt.update_clipped(&mut tape.store, lr, opts.grad_clip)?;
        if let Some(s) = &mut smart {
            s.after_step(&mut tape.store)?;
        }
        state.step += 1;
        state.adam_step = opt.step;
        failpoint::reach("step");
        let micro_done = micro_at(state.step);
        let epoch = plan.epoch_at(micro_done.saturating_sub(1), opts.epochs);
        let epoch_end = plan.crosses_epoch_end(micro_at(state.step - 1), micro_done);
        let periodic = opts.eval_every > 0 && state.step.is_multiple_of(opts.eval_every);
        let stopping = args.stop_after == Some(state.step);
        // Logged also before every evaluation and checkpoint, so that no checkpoint is written
        // after a non-finite loss that its steps had.
        let log =
            state.step.is_multiple_of(opts.log_every) || state.step == total_steps || epoch_end || periodic || stopping;
        if log {
            log_method(&mut combiner, &opts.tasks, &mut metrics)?;
            let current: Vec<(String, f64)> = opts
                .tasks
                .iter()
                .zip(meter.take()?)
                .filter_map(|(t, mean)| Some((t.name().to_string(), mean?)))
                .collect();
            if let Some((task, value)) = current.iter().find(|(_, v)| !v.is_finite()) {
                return Err(Error::Config(format!(
                    "{task} loss became {value} in steps {}..={}: lower --lr or set --grad-clip",
                    logged_step + 1,
                    state.step
                )));
            }
            for (t, l) in &current {
                losses.push((state.step, t.clone(), *l));
            }
            metrics.push(Record::Train {
                step: state.step,
                epoch,
                lr,
                loss: current.iter().cloned().collect(),
                elapsed_s: started.elapsed().as_secs_f64(),
            })?;
            if smart.is_some() {
                let terms: Vec<(String, f64)> = opts
                    .tasks
                    .iter()
                    .zip(smooth_meter.take()?)
                    .filter_map(|(t, mean)| Some((t.name().to_string(), mean?)))
                    .collect();
                metrics.push(Record::Smart { step: state.step, smoothness: terms.into_iter().collect() })?;
            }
            shown = current;
            logged_step = state.step;
        }
        progress.update(state.step, &shown);
        if epoch_end || periodic || state.step == total_steps {
            let dev_examples: usize = data.iter().filter_map(|d| d.dev.as_ref()).map(|d| d.examples.len()).sum();
            progress.note(&format!("step {}: evaluating on dev ({dev_examples} examples)", state.step));
            let (preds, scores, combined) = evaluate_dev(&model, &mut tape, &mut tok, &data, opts.batch_size * 2)?;
            let named: Vec<(String, f64)> = scores.iter().map(|s| (s.task.name().to_string(), s.value)).collect();
            progress.note(&format!(
                "step {} (epoch {epoch}): dev {} combined {combined:.4}",
                state.step,
                named.iter().map(|(t, v)| format!("{t} {v:.4}")).collect::<Vec<_>>().join(" ")
            ));
            metrics.push(Record::Eval {
                step: state.step,
                epoch,
                split: "dev".into(),
                metrics: named.into_iter().collect(),
                combined,
            })?;
            if let Some(c) = &mut combiner
                && let Some((line, summary)) = c.summary(state.step)
            {
                progress.note(&line);
                metrics.push(summary)?;
                c.write_plot(&args.out, &metrics.records)?;
            }
            let saving = Instant::now();
            let mut saved = Vec::new();
            if state.best_combined.is_none_or(|b| combined > b) {
                state.best_combined = Some(combined);
                state.best_step = state.step;
                checkpoint::save(&best_dir, &tape.store, &base, &ckpt.dir, &opts, None)?;
                best_dev = Some((preds, scores.clone()));
                saved.push("best/");
            }
            save_last(&last_dir, &tape.store, (&base, &ckpt.dir), &opts, &opt, &mut state, (&combiner, &smart))?;
            saved.push("last/");
            report::write_curves(&args.out.join("curves.svg"), &metrics.records, &opts.tasks)?;
            progress.note(&format!(
                "step {}: saved {} in {:.1} s",
                state.step,
                saved.join(" and "),
                saving.elapsed().as_secs_f64()
            ));
        }
        if args.stop_after == Some(state.step) && state.step < total_steps {
            metrics.flush()?; // a resumed run reads this step's records back
            save_last(&last_dir, &tape.store, (&base, &ckpt.dir), &opts, &opt, &mut state, (&combiner, &smart))?;
            progress.note(&format!("stopped after step {}; continue with --resume {}", state.step, last_dir.display()));
            stopped_early = true;
            break;
        }
    }

    metrics.flush()?;
    let mut best = Vec::new();
    if !stopped_early {
        // Predictions for dev and test come from the best checkpoint; dev's are kept from its
        // evaluation when this process made it, and the weights reloaded only when they moved on.
        if state.best_step != state.step {
            checkpoint::load_params(&best_dir, &mut tape.store)?;
        }
        let mut sets: Vec<(Task, &Dataset)> = Vec::new();
        for (task, d) in opts.tasks.iter().zip(&data) {
            if best_dev.is_none() {
                sets.extend(d.dev.iter().map(|s| (*task, s)));
            }
            sets.extend(d.test.iter().map(|s| (*task, s)));
        }
        let predicting = Instant::now();
        let examples: usize = sets.iter().map(|(_, d)| d.examples.len()).sum();
        progress.note(&format!(
            "predicting with best/ (step {}): {examples} examples into {}",
            state.best_step,
            pred_dir.display()
        ));
        let (scores, mut analyses) =
            write_predictions(&model, &mut tape, &mut tok, &sets, &pred_dir, opts.batch_size * 2)?;
        best = scores;
        if let Some((preds, scores)) = best_dev {
            // In the order evaluate_dev visited the dev sets.
            for ((task, p), d) in preds.iter().zip(data.iter().filter_map(|d| d.dev.as_ref())) {
                let name = task.prediction_file_name(Split::Dev).expect("dev has a prediction file");
                cs224n::write_predictions(*task, &pred_dir.join(name), p)?;
                analyses.extend(analysis::analyse(*task, &d.examples, p)?);
            }
            best = scores;
        }
        report::write_curves(&args.out.join("curves.svg"), &metrics.records, &opts.tasks)?;
        // Beside curves.svg: the best checkpoint's dev confusion matrices and STS scatter.
        let text = analysis::write(&args.out, &analyses)?;
        progress.note(&format!(
            "predictions and {} written in {:.1} s",
            text.display(),
            predicting.elapsed().as_secs_f64()
        ));
    }
    drop(run);
    Ok(Summary {
        best_combined: metrics::combined(&best),
        best,
        best_step: state.best_step,
        steps: state.step,
        seconds: started.elapsed().as_secs_f64(),
        losses,
        stopped_early,
    })
}
