//! Per-task gradient routing, for the methods that combine task gradients (train/methods/).
//!
//! Each task's backward passes accumulate into its own gradient slot, swapped in as the store's
//! gradient arena ([`TaskGradients::enter`] / [`TaskGradients::leave`]), so no gradient is ever
//! copied. Once per optimizer step [`TaskGradients::combine_with`] hands the slots written since
//! the last combine to a method, which combines their shared part; the heads' part is summed here
//! (each head has only its own task's gradient), and the result becomes the store's arena.
//!
//! Only the shared parameters (the encoder, or the LoRA adapters) are combined by a method: they
//! are registered before the task heads, so they are the prefix `[0, shared)` of the arena.

use crate::device::Buffer;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::optim::weighted_sum;
use crate::store::Store;

/// The most tasks a step can combine (the device kernels' fixed argument lists).
pub const MAX_TASKS: usize = 8;

/// One gradient slot per task, each shaped like the store's gradient arena.
pub struct TaskGradients<F: Float> {
    slots: Vec<Buffer<F>>,
    /// Slots written since the last combine, in first-use order.
    active: Vec<usize>,
    shared: usize,
}

impl<F: Float> TaskGradients<F> {
    /// `tasks` slots for `store`'s trainable parameters, of which the first `shared` values are
    /// the shared ones a method combines.
    pub fn new(store: &Store<F>, tasks: usize, shared: usize) -> Result<Self> {
        let n = store.num_trainable();
        if tasks == 0 || tasks > MAX_TASKS {
            return Err(Error::Config(format!("per-task gradients: 1 to {MAX_TASKS} tasks, got {tasks}")));
        }
        if shared > n {
            return Err(Error::Config(format!("per-task gradients: {shared} shared values of {n} trainable ones")));
        }
        let mut slots = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let mut b = Buffer::new(&store.device);
            b.grow_to(n)?;
            slots.push(b);
        }
        Ok(TaskGradients { slots, active: Vec::new(), shared })
    }

    /// The length of the shared prefix.
    pub fn shared(&self) -> usize {
        self.shared
    }

    /// Routes the backward passes that follow into task `t`'s slot (zeroed on its first use in a step).
    pub fn enter(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        let slot =
            self.slots.get_mut(t).ok_or_else(|| Error::Config(format!("per-task gradients: no slot for task {t}")))?;
        if !self.active.contains(&t) {
            let n = slot.len();
            slot.fill_zero(0..n)?;
            self.active.push(t);
        }
        store.swap_grads(slot)
    }

    /// Gives the store its own gradient arena back after task `t`'s backward passes.
    pub fn leave(&mut self, store: &mut Store<F>, t: usize) -> Result<()> {
        store.swap_grads(&mut self.slots[t])
    }

    /// Combines the task gradients written since the last call and leaves the result in the
    /// store's gradient arena (every value of it: no zeroing needed before). `shared_part(dst,
    /// others, tasks)` combines the shared prefix: `dst` holds the gradient of `tasks[0]` and
    /// takes the combination in place, `others` those of `tasks[1..]` (tasks in increasing order).
    pub fn combine_with(
        &mut self,
        store: &mut Store<F>,
        shared_part: impl FnOnce(&mut Buffer<F>, &[&Buffer<F>], &[usize]) -> Result<()>,
    ) -> Result<()> {
        let mut tasks = std::mem::take(&mut self.active);
        tasks.sort_unstable();
        let Some(&first) = tasks.first() else {
            return Err(Error::Config("per-task gradients: no task gradient to combine".into()));
        };
        let n = store.num_trainable();
        let device = store.device.clone();
        // The combination is written into the first slot, which then becomes the store's arena.
        let mut dst = std::mem::replace(&mut self.slots[first], Buffer::new(&device));
        let others: Vec<&Buffer<F>> = tasks[1..].iter().map(|&t| &self.slots[t]).collect();
        let result = shared_part(&mut dst, &others, &tasks)
            .and_then(|()| weighted_sum(&device, &mut dst, &others, &vec![1.0; tasks.len()], self.shared..n));
        let swapped = result.and_then(|()| store.swap_grads(&mut dst));
        self.slots[first] = dst;
        swapped
    }
}

/// The end of the shared prefix of the trainable arena: the offset of the first trainable
/// parameter named `head.*`, checked to be followed by heads only.
pub fn shared_len<F: Float>(store: &Store<F>) -> Result<usize> {
    let trainable: Vec<(&str, crate::tensor::Tensor)> =
        store.params().filter(|(_, t)| t.arena == crate::tensor::Arena::Param).collect();
    let first_head = trainable.iter().filter(|(n, _)| n.starts_with("head.")).map(|(_, t)| t.offset).min();
    let shared = first_head.unwrap_or(store.num_trainable());
    if let Some((name, _)) = trainable.iter().find(|(n, t)| !n.starts_with("head.") && t.offset >= shared) {
        return Err(Error::Config(format!("shared parameter {name} lies among the task heads")));
    }
    Ok(shared)
}
