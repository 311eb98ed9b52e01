//! The arenas behind every tensor: trainable parameters and their gradients (same layout),
//! frozen parameters, activations and their gradients (same layout), and integer inputs.
//! Parameters are named ranges, registered once; activations are bump-allocated per pass and
//! released all at once by [`Store::reset_acts`].

use crate::device::{Buffer, Cuda, Device, Precision};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::tensor::{Arena, Shape, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// What an op reads or writes: a tensor's values, or its gradient.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Val(Tensor),
    Grad(Tensor),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufId {
    Params,
    Frozen,
    Acts,
    Grads,
    ActGrads,
}

pub struct Store<F: Float> {
    pub device: Device,
    /// How the matrix products read their operands.
    pub precision: Precision,
    params: Buffer<F>,
    grads: Buffer<F>,
    frozen: Buffer<F>,
    acts: Buffer<F>,
    act_grads: Buffer<F>,
    ints: Buffer<i32>,
    act_len: usize,
    /// The activations that take a gradient, as merged ranges: only their gradients are zeroed
    /// before a backward pass (dropout masks, constants and frozen-path values never get one).
    grad_ranges: Vec<Range<usize>>,
    int_len: usize,
    /// On a CUDA device, the integer inputs as written (`ints[..int_len]`): every integer tensor
    /// comes from the host and no kernel writes one, so reading one back (the embedding checks
    /// and groups its ids) is a host copy, not a wait on the device's stream.
    int_host: Vec<i32>,
    names: Vec<(String, Tensor)>,
}

impl<F: Float> Store<F> {
    pub fn new(device: Device) -> Self {
        Store {
            params: Buffer::new(&device),
            grads: Buffer::new(&device),
            frozen: Buffer::new(&device),
            acts: Buffer::new(&device),
            act_grads: Buffer::new(&device),
            ints: Buffer::new(&device),
            act_len: 0,
            grad_ranges: Vec::new(),
            int_len: 0,
            int_host: Vec::new(),
            names: Vec::new(),
            precision: Precision::F32,
            device,
        }
    }

    /// Registers a named parameter holding `data`; trainable ones get a gradient slot.
    pub fn add_param(&mut self, name: &str, dims: &[usize], data: &[F], trainable: bool) -> Result<Tensor> {
        let shape = Shape::new(dims)?;
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "add_param",
                format!("{name}: shape {shape} needs {} values, got {}", shape.numel(), data.len()),
            ));
        }
        if self.param(name).is_some() {
            return Err(Error::Config(format!("parameter {name} registered twice")));
        }
        let (arena, buf) = if trainable { (Arena::Param, &mut self.params) } else { (Arena::Frozen, &mut self.frozen) };
        let offset = buf.len();
        buf.grow_to(offset + data.len())?;
        buf.write(offset, data)?;
        let len = self.params.len();
        self.grads.grow_to(len)?;
        let t = Tensor { arena, offset, shape, requires_grad: trainable };
        self.names.push((name.to_string(), t));
        Ok(t)
    }

    pub fn param(&self, name: &str) -> Option<Tensor> {
        self.names.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// All parameters in registration order.
    pub fn params(&self) -> impl Iterator<Item = (&str, Tensor)> {
        self.names.iter().map(|(n, t)| (n.as_str(), *t))
    }

    /// The trainable parameters in arena order: `add_param` appends each to the arena, so they
    /// tile the gradient arena back to back, without gaps.
    pub fn trainable(&self) -> impl Iterator<Item = (&str, Tensor)> {
        self.params().filter(|(_, t)| t.arena == Arena::Param)
    }

    /// Number of trainable parameter values (the length of the gradient arena).
    pub fn num_trainable(&self) -> usize {
        self.params.len()
    }

    /// A fresh activation; its contents are unspecified until an op writes all of it.
    pub fn alloc_act(&mut self, shape: Shape, requires_grad: bool) -> Result<Tensor> {
        let offset = self.act_len;
        self.acts.grow_to(offset + shape.numel())?;
        self.act_len += shape.numel();
        if requires_grad {
            match self.grad_ranges.last_mut() {
                Some(last) if last.end == offset => last.end = self.act_len,
                _ => self.grad_ranges.push(offset..self.act_len),
            }
        }
        Ok(Tensor { arena: Arena::Act, offset, shape, requires_grad })
    }

    /// A constant (labels, targets): an activation that takes no gradient.
    pub fn constant(&mut self, data: &[F], dims: &[usize]) -> Result<Tensor> {
        let shape = Shape::new(dims)?;
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "constant",
                format!("shape {shape} needs {} values, got {}", shape.numel(), data.len()),
            ));
        }
        let t = self.alloc_act(shape, false)?;
        self.acts.write(t.offset, data)?;
        Ok(t)
    }

    /// Integer inputs (ids, token types, masks, class labels).
    pub fn ints(&mut self, data: &[i32], dims: &[usize]) -> Result<Tensor> {
        let shape = Shape::new(dims)?;
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "ints",
                format!("shape {shape} needs {} values, got {}", shape.numel(), data.len()),
            ));
        }
        let offset = self.int_len;
        self.ints.grow_to(offset + data.len())?;
        self.ints.write(offset, data)?;
        if !matches!(self.device, Device::Cpu) {
            self.int_host.truncate(offset);
            self.int_host.extend_from_slice(data);
        }
        self.int_len += data.len();
        Ok(Tensor { arena: Arena::Int, offset, shape, requires_grad: false })
    }

    /// Releases every activation and integer input (parameters stay).
    pub fn reset_acts(&mut self) {
        self.act_len = 0;
        self.grad_ranges.clear();
        self.int_len = 0;
        self.int_host.clear();
    }

    /// Releases the activations allocated after the first `len` values (a pass rewound: SMART's
    /// ascent pass), keeping those before.
    pub fn release_acts_from(&mut self, len: usize) {
        self.act_len = self.act_len.min(len);
        self.grad_ranges.retain(|r| r.start < len);
        if let Some(last) = self.grad_ranges.last_mut() {
            last.end = last.end.min(len);
        }
    }

    pub fn act_len(&self) -> usize {
        self.act_len
    }

    /// Zeroes the gradients of the current pass's activations that take one (called once before
    /// each backward; no op reads or writes the gradient of an activation that takes none).
    pub fn zero_act_grads(&mut self) -> Result<()> {
        self.zero_act_grads_from(0)
    }

    /// [`Store::zero_act_grads`] for the activations allocated from offset `from` on only (a
    /// backward through the ops since a mark: see [`Tape::backward_since`](crate::tape::Tape::backward_since)).
    pub fn zero_act_grads_from(&mut self, from: usize) -> Result<()> {
        self.act_grads.grow_to(self.act_len)?;
        for r in &self.grad_ranges {
            if r.end > from {
                self.act_grads.fill_zero(r.start.max(from)..r.end)?;
            }
        }
        Ok(())
    }

    /// Zeroes the gradient of activation `t`.
    pub fn zero_grad(&mut self, t: Tensor) -> Result<()> {
        self.act_grads.grow_to(self.act_len)?;
        let (id, r) = self.locate(Slot::Grad(t))?;
        self.buf_mut(id).fill_zero(r)
    }

    /// Zeroes the values of `t`: an op's saved buffer whose kernels write only part of it (the
    /// recurrence's rows outside every sequence).
    pub fn zero(&mut self, t: Tensor) -> Result<()> {
        let (id, r) = self.locate(Slot::Val(t))?;
        self.buf_mut(id).fill_zero(r)
    }

    /// Fills every activation and activation gradient, in use or not, with `value`: tests poison
    /// them with NaN so that an op that leaves part of its output unwritten is caught.
    pub fn poison_acts(&mut self, value: F) -> Result<()> {
        let (a, g) = (self.acts.len(), self.act_grads.len());
        self.acts.fill(0..a, value)?;
        self.act_grads.fill(0..g, value)
    }

    /// Zeroes every parameter gradient.
    pub fn zero_grads(&mut self) -> Result<()> {
        let n = self.grads.len();
        self.grads.fill_zero(0..n)
    }

    pub fn read(&self, t: Tensor) -> Result<Vec<F>> {
        let (id, r) = self.locate(Slot::Val(t))?;
        self.buf(id).read(r)
    }

    pub fn read_grad(&self, t: Tensor) -> Result<Vec<F>> {
        let (id, r) = self.locate(Slot::Grad(t))?;
        self.buf(id).read(r)
    }

    pub fn read_ints(&self, t: Tensor) -> Result<Vec<i32>> {
        self.check_int(t)?;
        match self.device {
            Device::Cpu => self.ints.read(t.range()),
            _ => self.int_host.get(t.range()).map(<[i32]>::to_vec).ok_or_else(|| {
                Error::Tape(format!("integer tensor {} at {} lies past the inputs written", t.shape, t.offset))
            }),
        }
    }

    pub fn write(&mut self, t: Tensor, data: &[F]) -> Result<()> {
        self.write_slot(Slot::Val(t), data)
    }

    pub fn write_grad(&mut self, t: Tensor, data: &[F]) -> Result<()> {
        self.write_slot(Slot::Grad(t), data)
    }

    fn write_slot(&mut self, slot: Slot, data: &[F]) -> Result<()> {
        let (id, r) = self.locate(slot)?;
        if data.len() != r.len() {
            return Err(Error::shape("write", format!("tensor has {} elements, data {}", r.len(), data.len())));
        }
        self.buf_mut(id).write(r.start, data)
    }

    /// The whole gradient arena (flat, in parameter layout).
    pub fn grads(&self) -> &Buffer<F> {
        &self.grads
    }

    /// Exchanges the gradient arena with `other` (same length): PCGrad routes each task's backward
    /// passes into its own buffer this way, without copying.
    pub fn swap_grads(&mut self, other: &mut Buffer<F>) -> Result<()> {
        if other.len() != self.grads.len() {
            return Err(Error::Config(format!(
                "a gradient buffer of {} values swapped for the arena of {}",
                other.len(),
                self.grads.len()
            )));
        }
        std::mem::swap(&mut self.grads, other);
        Ok(())
    }

    /// Exchanges the trainable parameter arena with `other` (same length): SMART's teacher runs
    /// its forward on the model's own tensors this way.
    pub fn swap_params(&mut self, other: &mut Buffer<F>) -> Result<()> {
        if other.len() != self.params.len() {
            return Err(Error::Config(format!(
                "a parameter buffer of {} values swapped for the arena of {}",
                other.len(),
                self.params.len()
            )));
        }
        std::mem::swap(&mut self.params, other);
        Ok(())
    }

    /// The trainable parameter arena and its gradients, for an optimizer step over both.
    pub fn params_and_grads_mut(&mut self) -> (&mut Buffer<F>, &mut Buffer<F>) {
        (&mut self.params, &mut self.grads)
    }

    fn buf(&self, id: BufId) -> &Buffer<F> {
        match id {
            BufId::Params => &self.params,
            BufId::Frozen => &self.frozen,
            BufId::Acts => &self.acts,
            BufId::Grads => &self.grads,
            BufId::ActGrads => &self.act_grads,
        }
    }

    fn buf_mut(&mut self, id: BufId) -> &mut Buffer<F> {
        match id {
            BufId::Params => &mut self.params,
            BufId::Frozen => &mut self.frozen,
            BufId::Acts => &mut self.acts,
            BufId::Grads => &mut self.grads,
            BufId::ActGrads => &mut self.act_grads,
        }
    }

    fn check_int(&self, t: Tensor) -> Result<()> {
        if t.arena != Arena::Int {
            return Err(Error::Tape(format!("expected an integer tensor, got a {:?} tensor {}", t.arena, t.shape)));
        }
        Ok(())
    }

    fn locate(&self, slot: Slot) -> Result<(BufId, Range<usize>)> {
        let (id, t) = match slot {
            Slot::Val(t) => match t.arena {
                Arena::Param => (BufId::Params, t),
                Arena::Frozen => (BufId::Frozen, t),
                Arena::Act => (BufId::Acts, t),
                Arena::Int => return Err(Error::Tape(format!("integer tensor {} used as float", t.shape))),
            },
            Slot::Grad(t) => match t.arena {
                Arena::Param => (BufId::Grads, t),
                Arena::Act => (BufId::ActGrads, t),
                Arena::Frozen | Arena::Int => {
                    return Err(Error::Tape(format!("a {:?} tensor {} has no gradient", t.arena, t.shape)));
                }
            },
        };
        let r = t.range();
        let len = self.buf(id).len();
        if r.end > len {
            return Err(Error::Tape(format!(
                "tensor {} at {}..{} lies outside its arena ({len} elements): a stale handle?",
                t.shape, r.start, r.end
            )));
        }
        Ok((id, r))
    }

    /// Locates every slot of an op's I/O and checks that no write overlaps another slot.
    #[allow(clippy::type_complexity)]
    fn check_io(
        &self,
        ints: &[Tensor],
        reads: &[Slot],
        writes: &[Slot],
    ) -> Result<(Vec<(BufId, Range<usize>)>, Vec<(BufId, Range<usize>)>)> {
        for t in ints {
            self.check_int(*t)?;
            if t.range().end > self.ints.len() {
                return Err(Error::Tape(format!("integer tensor {} lies outside its arena", t.shape)));
            }
        }
        let rl: Vec<(BufId, Range<usize>)> = reads.iter().map(|s| self.locate(*s)).collect::<Result<_>>()?;
        let wl: Vec<(BufId, Range<usize>)> = writes.iter().map(|s| self.locate(*s)).collect::<Result<_>>()?;
        for (i, (wid, wr)) in wl.iter().enumerate() {
            let overlaps = |(id, r): &(BufId, Range<usize>)| id == wid && r.start < wr.end && wr.start < r.end;
            let clash = rl.iter().any(overlaps) || wl.iter().enumerate().any(|(j, l)| j != i && overlaps(l));
            if clash {
                return Err(Error::Tape(format!("op writes {:?} while it reads or writes the same memory", writes[i])));
            }
        }
        Ok((rl, wl))
    }

    /// Host views for a CPU op: integer inputs, float reads and float writes, all at once.
    /// Each write must overlap no other slot; reads may share memory.
    #[allow(clippy::type_complexity)]
    pub fn cpu_io<const I: usize, const R: usize, const W: usize>(
        &mut self,
        ints: [Tensor; I],
        reads: [Slot; R],
        writes: [Slot; W],
    ) -> Result<([&[i32]; I], [&[F]; R], [&mut [F]; W])> {
        let (rl, wl) = self.check_io(&ints, &reads, &writes)?;
        let host = |b: &mut Buffer<F>| -> Result<*mut F> {
            b.cpu_mut()
                .map(|s| s.as_mut_ptr())
                .ok_or_else(|| Error::Tape("cpu_io on a buffer that is not in host memory".into()))
        };
        let bases = [
            host(&mut self.params)?,
            host(&mut self.frozen)?,
            host(&mut self.acts)?,
            host(&mut self.grads)?,
            host(&mut self.act_grads)?,
        ];
        let base = |id: BufId| bases[id as usize];
        let int_base = self
            .ints
            .cpu()
            .ok_or_else(|| Error::Tape("cpu_io on a buffer that is not in host memory".into()))?
            .as_ptr();
        // SAFETY: every range was checked to lie inside its buffer (`locate`), no write overlaps
        // any other slot, and the views borrow `self` mutably for their whole lifetime, so no
        // other access to the buffers can happen while they live.
        unsafe {
            let iv = std::array::from_fn(|i| std::slice::from_raw_parts(int_base.add(ints[i].offset), ints[i].numel()));
            let rv = std::array::from_fn(|i| {
                let (id, r) = &rl[i];
                std::slice::from_raw_parts(base(*id).add(r.start) as *const F, r.len())
            });
            let wv = std::array::from_fn(|i| {
                let (id, r) = &wl[i];
                std::slice::from_raw_parts_mut(base(*id).add(r.start), r.len())
            });
            Ok((iv, rv, wv))
        }
    }

    /// Device addresses for a CUDA op's integer inputs, float reads and float writes, checked as
    /// [`Store::cpu_io`] checks host views. The CUDA path computes in float32 only.
    #[allow(clippy::type_complexity)]
    pub fn cuda_io<const I: usize, const R: usize, const W: usize>(
        &self,
        ints: [Tensor; I],
        reads: [Slot; R],
        writes: [Slot; W],
    ) -> Result<(Arc<Cuda>, [u64; I], [u64; R], [u64; W])> {
        let Device::Cuda(dev) = &self.device else {
            return Err(Error::Tape("cuda_io on a store that is not on a GPU".into()));
        };
        if F::NAME != "f32" {
            return Err(Error::Cuda(format!("the CUDA path computes in f32; a {} tape runs on the CPU only", F::NAME)));
        }
        let (rl, wl) = self.check_io(&ints, &reads, &writes)?;
        let fsize = std::mem::size_of::<F>() as u64;
        let addr = |id: BufId, start: usize| self.buf(id).device_ptr().unwrap_or(0) + start as u64 * fsize;
        let int_base = self.ints.device_ptr().unwrap_or(0);
        let iv = std::array::from_fn(|i| int_base + ints[i].offset as u64 * 4);
        let rv = std::array::from_fn(|i| addr(rl[i].0, rl[i].1.start));
        let wv = std::array::from_fn(|i| addr(wl[i].0, wl[i].1.start));
        Ok((dev.clone(), iv, rv, wv))
    }

    /// [`Store::cpu_io`] without integer inputs.
    #[allow(clippy::type_complexity)]
    pub fn cpu_views<const R: usize, const W: usize>(
        &mut self,
        reads: [Slot; R],
        writes: [Slot; W],
    ) -> Result<([&[F]; R], [&mut [F]; W])> {
        let ([], r, w) = self.cpu_io([], reads, writes)?;
        Ok((r, w))
    }
}
