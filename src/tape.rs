//! The tape: ops recorded in execution order as plain data ([`Op`]), over tensors in a [`Store`].
//! `backward` walks it in reverse; every op's backward accumulates (`+=`) into the gradients of
//! its inputs, so a value used twice collects both contributions. Parameter gradients are zeroed
//! explicitly ([`Store::zero_grads`]); activation gradients are zeroed by each `backward`.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::Op;
use crate::profile::{self, Phase};
use crate::store::Store;
use crate::tensor::{Shape, Tensor};
use std::time::Instant;

/// A place on the tape: its ops and activations up to there.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    ops: usize,
    acts: usize,
}

pub struct Tape<F: Float> {
    pub store: Store<F>,
    ops: Vec<Op>,
    training: bool,
    seed: u64,
    /// Dropout calls since the last reset: each gets its own random stream.
    streams: u64,
    /// When profiling: the last record (or reset), where the next op's forward time starts.
    mark: Option<Instant>,
}

impl<F: Float> Tape<F> {
    pub fn new(device: Device) -> Self {
        Tape {
            store: Store::new(device),
            ops: Vec::new(),
            training: false,
            seed: 0,
            streams: 0,
            mark: profile::enabled().then(Instant::now),
        }
    }

    /// Training mode turns dropout on.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The seed of the dropout masks of the passes that follow (a trainer sets one per step and task).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Forgets the recorded ops and releases activations; parameters and their gradients stay.
    pub fn reset(&mut self) {
        self.ops.clear();
        self.store.reset_acts();
        self.streams = 0;
        self.mark = profile::enabled().then(Instant::now);
    }

    /// Where the tape stands: what [`Tape::backward_since`] and [`Tape::rewind`] go back to.
    pub fn mark(&self) -> Mark {
        Mark { ops: self.ops.len(), acts: self.store.act_len() }
    }

    /// Forgets the ops and activations recorded since `mark` (the dropout streams stay where
    /// they are: see [`Tape::set_stream`]).
    pub fn rewind(&mut self, mark: Mark) {
        self.ops.truncate(mark.ops);
        self.store.release_acts_from(mark.acts);
    }

    /// The dropout streams drawn since the last reset.
    pub fn stream(&self) -> u64 {
        self.streams
    }

    /// Continues the dropout streams from `stream`: a pass that repeats an earlier one from
    /// there (SMART's perturbed passes) draws the same masks.
    pub fn set_stream(&mut self, stream: u64) {
        self.streams = stream;
    }

    pub(crate) fn record(&mut self, op: Op) {
        if let Some(mark) = self.mark {
            let now = Instant::now();
            profile::add_op(Phase::Forward, op.kind(), now - mark);
            self.mark = Some(now);
        }
        self.ops.push(op);
    }

    pub(crate) fn next_stream(&mut self) -> u64 {
        self.streams += 1;
        self.streams
    }

    /// A new activation that requires a gradient when any of `inputs` does.
    pub(crate) fn output(&mut self, shape: Shape, inputs: &[Tensor]) -> Result<Tensor> {
        let requires_grad = inputs.iter().any(|t| t.requires_grad);
        self.store.alloc_act(shape, requires_grad)
    }

    /// Records `op` if its output takes part in the gradient.
    pub(crate) fn push(&mut self, out: Tensor, op: Op) -> Tensor {
        if out.requires_grad {
            self.record(op);
        }
        out
    }

    pub fn constant(&mut self, data: &[F], dims: &[usize]) -> Result<Tensor> {
        self.store.constant(data, dims)
    }

    pub fn ints(&mut self, data: &[i32], dims: &[usize]) -> Result<Tensor> {
        self.store.ints(data, dims)
    }

    /// The gradient of `loss` through the ops recorded since `mark` only: what they read from
    /// before it is a constant to them. Their gradients land in the activations that take one
    /// (read them with [`Store::read_grad`](crate::store::Store::read_grad)) and in the
    /// parameters they read that take one (none, when the pass ran on constant parameters).
    /// Only the gradients of the activations since `mark` and of `wanted` (earlier ones whose
    /// gradient the caller reads) start from zero: zeroing the whole tape's would cost as much
    /// again as the pass's own (SMART's ascent, after a full clean pass). Any other earlier
    /// activation these ops read should be a constant (`Tensor::detached`); if not, its
    /// gradient is left holding stale values, which the next full backward zeroes.
    pub fn backward_since(&mut self, mark: Mark, loss: Tensor, wanted: &[Tensor]) -> Result<()> {
        for &t in wanted {
            self.store.zero_grad(t)?;
        }
        self.backward_ops(loss, F::ONE, mark.ops, mark.acts)
    }

    /// Accumulates d`loss`/d(parameter) into the parameter gradients.
    pub fn backward(&mut self, loss: Tensor) -> Result<()> {
        self.backward_scaled(loss, F::ONE)
    }

    /// Accumulates `scale` · d`loss`/d(parameter) (a task weight, or 1/accumulation steps).
    pub fn backward_scaled(&mut self, loss: Tensor, scale: F) -> Result<()> {
        self.backward_ops(loss, scale, 0, 0)
    }

    /// Backward from `loss` (times `scale`) through the ops from index `first` on, the gradients
    /// of the activations from offset `acts` on zeroed first.
    fn backward_ops(&mut self, loss: Tensor, scale: F, first: usize, acts: usize) -> Result<()> {
        if loss.numel() != 1 {
            return Err(Error::Tape(format!("backward needs a scalar loss, got shape {}", loss.shape)));
        }
        if loss.arena != crate::tensor::Arena::Act || !loss.requires_grad {
            return Err(Error::Tape("backward from a value that depends on no parameter".into()));
        }
        let started = profile::enabled().then(Instant::now);
        self.store.zero_act_grads_from(acts)?;
        if let Some(t) = started {
            profile::add_op(Phase::Backward, "(zero grads)", t.elapsed());
        }
        self.store.write_grad(loss, &[scale])?;
        let ops = std::mem::take(&mut self.ops);
        let result = ops[first.min(ops.len())..].iter().rev().try_for_each(|op| match started {
            None => op.backward(&mut self.store),
            Some(_) => {
                let t = Instant::now();
                let r = op.backward(&mut self.store);
                profile::add_op(Phase::Backward, op.kind(), t.elapsed());
                r
            }
        });
        self.ops = ops;
        if self.mark.is_some() {
            self.mark = Some(Instant::now());
        }
        result
    }
}
