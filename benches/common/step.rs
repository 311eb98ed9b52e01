//! One training step of the trainer's own code on random batches, shared by the step benches
//! (`cpu_methods`, `gpu_step`): the model from `MultiTaskModel::build`, each task's forward and
//! backward through `train_task` (into its own gradient slot under a gradient-combining method;
//! with SMART's regulariser when the options ask),
//! the method's combine (train/methods/), AdamW.

use engine::data::Encoded;
use engine::data::cs224n::{Label, Task};
use engine::model::Checkpoint;
use engine::optim::{Optimizer, OptimizerConfig};
use engine::rng::Rng;
use engine::train::TrainOptions;
use engine::train::methods::Combiner;
use engine::train::model::{Batch, MultiTaskModel};
use engine::train::options::PairEncoding;
use engine::train::smart::Smart;
use engine::train::trainer::train_task;
use engine::{Device, Result, Tape};

/// `batch` rows of `len` random token ids, [CLS] … [SEP] (a second [SEP] mid-row, and type ids
/// 1 after it, for a joint pair), no padding.
pub fn encoded(rng: &mut Rng, vocab: usize, batch: usize, len: usize, pair: bool) -> Encoded {
    let mut ids: Vec<i32> = (0..batch * len).map(|_| 1000 + rng.below(vocab - 1000) as i32).collect();
    let mut type_ids = vec![0; batch * len];
    for b in 0..batch {
        ids[b * len] = 101;
        ids[b * len + len - 1] = 102;
        if pair {
            ids[b * len + len / 2] = 102;
            type_ids[b * len + len / 2 + 1..(b + 1) * len].fill(1);
        }
    }
    Encoded { ids, type_ids, mask: vec![1; batch * len], batch, len }
}

/// A random batch of `task` as `opts` reads it (pairs jointly or each side alone).
pub fn batch(task: Task, opts: &TrainOptions, rng: &mut Rng, vocab: usize, n: usize, len: usize) -> Batch {
    let labels = (0..n)
        .map(|_| match task {
            Task::Sst => Label::Class(rng.below(5) as u32),
            Task::Quora => Label::Binary(rng.below(2) as f32),
            _ => Label::Score(rng.range(0.0, 5.0) as f32),
        })
        .collect();
    let (joint, sides) = match task.is_pair() && opts.pair_encoding == PairEncoding::Separate {
        true => (None, Some((encoded(rng, vocab, n, len, false), encoded(rng, vocab, n, len, false)))),
        false => (Some(encoded(rng, vocab, n, len, task.is_pair())), None),
    };
    Batch { task, joint, sides, labels, ids: (0..n).map(|i| i.to_string()).collect() }
}

/// One method's model, gradients, optimizer and position.
pub struct Runner {
    pub tape: Tape<f32>,
    model: MultiTaskModel,
    grads: Option<Combiner>,
    smart: Option<Smart>,
    opt: Optimizer<f32>,
    opts: TrainOptions,
    rng: Rng,
    vocab: usize,
    batch: usize,
    len: usize,
    step: usize,
}

impl Runner {
    pub fn new(device: &Device, ckpt: &Checkpoint, opts: &TrainOptions, batch: usize, len: usize) -> Result<Runner> {
        let mut tape = Tape::<f32>::new(device.clone());
        let model = MultiTaskModel::build(&mut tape.store, ckpt, None, opts, true)?;
        let grads = Combiner::from_options(opts, &tape.store)?;
        let smart = opts.smart.clone().map(|c| Smart::new(c, &mut tape.store)).transpose()?;
        let opt = Optimizer::new(&tape.store, OptimizerConfig::default())?;
        tape.set_training(true);
        let (rng, vocab) = (Rng::new(7), ckpt.config.vocab_size);
        Ok(Runner { tape, model, grads, smart, opt, opts: opts.clone(), rng, vocab, batch, len, step: 0 })
    }

    /// This step's batches, one per task (made outside the timed step).
    pub fn batches(&mut self) -> Vec<Batch> {
        let (opts, n, len) = (&self.opts, self.batch, self.len);
        opts.tasks.iter().map(|&t| batch(t, opts, &mut self.rng, self.vocab, n, len)).collect()
    }

    /// One training step as the trainer takes it. Returns with the device's work queued, not
    /// necessarily done.
    pub fn step(&mut self, batches: &[Batch]) -> Result<()> {
        if self.grads.is_none() {
            self.tape.store.zero_grads()?;
        }
        for (ti, b) in batches.iter().enumerate() {
            self.tape.set_seed((self.step * batches.len() + ti) as u64);
            let grads = self.grads.as_mut().map(|c| &mut c.grads);
            train_task(&mut self.tape, &self.model, b, ti, grads, self.smart.as_mut(), 1.0)?;
        }
        if let Some(g) = &mut self.grads {
            let step = self.step;
            g.combine(&mut self.tape.store, step)?;
            if step % 64 == 63 {
                g.drain(&self.opts.tasks)?; // as the trainer reads its statistics when it logs
            }
        }
        self.opt.update(&mut self.tape.store, 1e-4)?;
        if let Some(s) = &mut self.smart {
            s.after_step(&mut self.tape.store)?;
        }
        self.step += 1;
        Ok(())
    }
}
