//! BERT's embedding sum: word + position + token type, looked up per token; backward scatters
//! (adds) each token's gradient into the rows it read, so repeated ids accumulate.

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// ids, type_ids (B, T) int; word (V, C), pos (P, C), types (TV, C) → out (B, T, C).
/// Positions are 0..T, as Hugging Face's absolute position embeddings.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub word: Tensor,
    pub pos: Tensor,
    pub types: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn embedding(
        &mut self,
        ids: Tensor,
        type_ids: Tensor,
        word: Tensor,
        pos: Tensor,
        types: Tensor,
    ) -> Result<Tensor> {
        let op = "embedding";
        if ids.shape.rank() != 2 || type_ids.shape != ids.shape {
            return Err(Error::shape(
                op,
                format!("ids {} and type ids {} must both be (B, T)", ids.shape, type_ids.shape),
            ));
        }
        let (b, t) = (ids.dims()[0], ids.dims()[1]);
        let c = word.shape.last();
        for (name, table) in [("word", word), ("position", pos), ("token type", types)] {
            if table.shape.rank() != 2 || table.shape.last() != c {
                return Err(Error::shape(op, format!("{name} table {} must be (rows, {c})", table.shape)));
            }
        }
        if t > pos.dims()[0] {
            return Err(Error::value(
                op,
                format!("sequence length {t} exceeds the {} positions of the model", pos.dims()[0]),
            ));
        }
        let (ids_v, types_v) = (self.store.read_ints(ids)?, self.store.read_ints(type_ids)?);
        check_ids(&ids_v, word.dims()[0], "token id")?;
        check_ids(&types_v, types.dims()[0], "token type id")?;
        let out = self.output(Shape::new(&[b, t, c])?, &[word, pos, types])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("embedding")),
            Device::Cpu => {
                let ([iv, tv], [w, p, ty], [o]) = self.store.cpu_io(
                    [ids, type_ids],
                    [Slot::Val(word), Slot::Val(pos), Slot::Val(types)],
                    [Slot::Val(out)],
                )?;
                cpu::forward(iv, tv, t, w, p, ty, o);
            }
        }
        Ok(self.push(out, Op::Embedding(Embedding { ids, type_ids, word, pos, types, out })))
    }
}

fn check_ids(ids: &[i32], rows: usize, what: &str) -> Result<()> {
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id < 0 || id as usize >= rows) {
        return Err(Error::value("embedding", format!("{what} {id} at position {i} is outside 0..{rows}")));
    }
    Ok(())
}

impl Embedding {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let t = self.ids.dims()[1];
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("embedding")),
            Device::Cpu => {
                for (table, which) in [(self.word, Table::Word), (self.pos, Table::Position), (self.types, Table::Type)]
                {
                    if table.requires_grad {
                        let ([iv, tv], [dy], [dt]) =
                            s.cpu_io([self.ids, self.type_ids], [Slot::Grad(self.out)], [Slot::Grad(table)])?;
                        cpu::backward(which, iv, tv, t, dy, dt);
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Word,
    Position,
    Type,
}

pub mod cpu {
    use super::Table;
    use crate::float::Float;

    pub fn forward<F: Float>(ids: &[i32], types: &[i32], t: usize, word: &[F], pos: &[F], ty: &[F], out: &mut [F]) {
        let c = out.len() / ids.len().max(1);
        for (i, o) in out.chunks_exact_mut(c).enumerate() {
            let (w, p, y) = (ids[i] as usize * c, (i % t) * c, types[i] as usize * c);
            for j in 0..c {
                o[j] = word[w + j] + pos[p + j] + ty[y + j];
            }
        }
    }

    /// d(table) += the gradient of every token that read a row of it.
    pub fn backward<F: Float>(table: Table, ids: &[i32], types: &[i32], t: usize, dy: &[F], dt: &mut [F]) {
        let c = dy.len() / ids.len().max(1);
        for (i, g) in dy.chunks_exact(c).enumerate() {
            let row = match table {
                Table::Word => ids[i] as usize,
                Table::Position => i % t,
                Table::Type => types[i] as usize,
            };
            let d = &mut dt[row * c..(row + 1) * c];
            d.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
        }
    }
}
