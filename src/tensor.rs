//! A tensor is a handle: a shape and an offset into one of the arenas of a [`Store`](crate::store::Store).
//! It owns no memory, so it is `Copy`, and ops on the tape hold tensors by value.
//! Every tensor is contiguous and row-major; its gradient lives at the same offset in the
//! gradient arena that mirrors its own arena.

use crate::error::{Error, Result};
use std::fmt;

pub const MAX_RANK: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// A shape of rank ≤ 4 (rank 0 is a scalar).
    pub fn new(dims: &[usize]) -> Result<Shape> {
        if dims.len() > MAX_RANK {
            return Err(Error::shape("shape", format!("rank {} exceeds the maximum of {MAX_RANK}", dims.len())));
        }
        let mut d = [1; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Shape { dims: d, rank: dims.len() as u8 })
    }
    pub fn scalar() -> Shape {
        Shape { dims: [1; MAX_RANK], rank: 0 }
    }
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
    pub fn rank(&self) -> usize {
        self.rank as usize
    }
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }
    /// The last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }
    /// The product of all but the last dimension: the number of rows of the (rows, last) view.
    pub fn rows(&self) -> usize {
        self.numel() / self.last().max(1)
    }
    /// Dimension `i` counted from the end (0 = last).
    pub fn dim_from_end(&self, i: usize) -> usize {
        let r = self.rank();
        if i < r { self.dims[r - 1 - i] } else { 1 }
    }
    /// The dimensions before the last two (the batch dimensions of a matrix stack).
    pub fn batch_dims(&self) -> &[usize] {
        let r = self.rank();
        &self.dims[..r.saturating_sub(2)]
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Shape {
        const { assert!(N <= MAX_RANK, "rank exceeds MAX_RANK") };
        Shape::new(&dims).expect("rank checked at compile time")
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which arena of the store a tensor lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arena {
    /// Trainable parameters; gradients (and optimizer moments) mirror this arena's layout.
    Param,
    /// Frozen parameters (LoRA's base weights, frozen layers): no gradient slots.
    Frozen,
    /// Activations and constants of the current pass; activation gradients mirror it.
    Act,
    /// Integer inputs: token ids, token types, attention masks, class labels.
    Int,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub arena: Arena,
    pub offset: usize,
    pub shape: Shape,
    /// Whether the loss's gradient flows into this tensor: always for `Param`, never for
    /// `Frozen` and `Int`, and for `Act` when any input of the op that made it requires one.
    pub requires_grad: bool,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel()
    }
    /// The same values, taking no gradient (a parameter read as a constant).
    pub fn detached(self) -> Tensor {
        Tensor { requires_grad: false, ..self }
    }
    /// The same memory seen with another shape of equal size (free: tensors are contiguous).
    pub fn reshape(&self, dims: &[usize]) -> Result<Tensor> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {} ({} elements) as {}", self.shape, self.numel(), shape),
            ));
        }
        Ok(Tensor { shape, ..*self })
    }
}
