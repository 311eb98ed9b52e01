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
    /// The tokens grouped by word id, for the race-free CUDA backward into the word table
    /// (None on the CPU, and when the word table takes no gradient).
    pub by_id: Option<IdGroups>,
}

/// Token indices 0..B·T sorted by word id, stably (so each group keeps token order), and where
/// each group starts: group g is `order[starts[g]..starts[g + 1]]`, all the tokens of one id.
/// Built on the host from the ids the forward reads anyway; lives in the integer arena.
#[derive(Clone, Copy, Debug)]
pub struct IdGroups {
    /// (B·T) int
    pub order: Tensor,
    /// (G + 1) int, G = the number of distinct ids
    pub starts: Tensor,
}

impl IdGroups {
    fn upload<F: Float>(store: &mut Store<F>, ids: &[i32]) -> Result<IdGroups> {
        let (order, starts) = cpu::group_by_id(ids)?;
        Ok(IdGroups { order: store.ints(&order, &[order.len()])?, starts: store.ints(&starts, &[starts.len()])? })
    }

    /// The number of groups (distinct ids).
    pub fn groups(&self) -> usize {
        self.starts.numel().saturating_sub(1)
    }
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
        let mut by_id = None;
        match self.store.device {
            Device::Cuda(_) => {
                if word.requires_grad {
                    // Uploaded before `cuda_io`: a growing integer arena moves its device addresses.
                    by_id = Some(IdGroups::upload(&mut self.store, &ids_v)?);
                }
                let (dev, [ip, tp], [wp, pp, yp], [op]) = self.store.cuda_io(
                    [ids, type_ids],
                    [Slot::Val(word), Slot::Val(pos), Slot::Val(types)],
                    [Slot::Val(out)],
                )?;
                cuda::forward(&dev, ip, tp, wp, pp, yp, op, [b, t, c], pos.dims()[0])?;
            }
            Device::Cpu => {
                let ([iv, tv], [w, p, ty], [o]) = self.store.cpu_io(
                    [ids, type_ids],
                    [Slot::Val(word), Slot::Val(pos), Slot::Val(types)],
                    [Slot::Val(out)],
                )?;
                cpu::forward(iv, tv, t, w, p, ty, o);
            }
        }
        Ok(self.push(out, Op::Embedding(Embedding { ids, type_ids, word, pos, types, out, by_id })))
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
        let (b, t) = (self.ids.dims()[0], self.ids.dims()[1]);
        let c = self.out.shape.last();
        match s.device {
            Device::Cuda(_) => {
                if self.word.requires_grad {
                    let g = self.by_id.ok_or_else(|| {
                        Error::Tape("embedding: the CUDA backward needs the id groups of a CUDA forward".into())
                    })?;
                    let (dev, [ip, orp, stp], [dyp], [dwp]) =
                        s.cuda_io([self.ids, g.order, g.starts], [Slot::Grad(self.out)], [Slot::Grad(self.word)])?;
                    cuda::backward_word(&dev, ip, orp, stp, dyp, dwp, b * t, g.order.numel(), g.groups(), c)?;
                }
                if self.pos.requires_grad {
                    let (dev, [], [dyp], [dpp]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.pos)])?;
                    cuda::backward_pos(&dev, dyp, dpp, [b, t, c], self.pos.dims()[0])?;
                }
                if self.types.requires_grad {
                    let (dev, [tp], [dyp], [dtp]) =
                        s.cuda_io([self.type_ids], [Slot::Grad(self.out)], [Slot::Grad(self.types)])?;
                    cuda::backward_type(&dev, tp, dyp, dtp, b * t, self.types.dims()[0], c)?;
                }
            }
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

/// Launchers of kernels/embedding.cu; pointers are device addresses (f32 buffers, i32 ids).
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "embedding.cu";

    fn bad(kernel: &str, detail: String) -> Error {
        Error::Cuda(format!("{FILE}:{kernel}: {detail}"))
    }

    /// ids, type_ids (B, T) int; word (V, C), pos (P, C) with P ≥ T, types (TV, C) → out (B, T, C).
    /// The ids must lie inside their tables (the tape checks them on the host).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        dev: &Cuda,
        ids: u64,
        type_ids: u64,
        word: u64,
        pos: u64,
        types: u64,
        out: u64,
        [b, t, c]: [usize; 3],
        pos_rows: usize,
    ) -> Result<()> {
        let name = "embedding_forward";
        if t > pos_rows {
            return Err(bad(name, format!("B={b} T={t} C={c}: T exceeds the {pos_rows} position rows")));
        }
        let (grid, block) = grid_1d(b * t * c);
        let args = [
            Arg::Ptr(ids),
            Arg::Ptr(type_ids),
            Arg::Ptr(word),
            Arg::Ptr(pos),
            Arg::Ptr(types),
            Arg::Ptr(out),
            Arg::U64((b * t) as u64),
            Arg::U64(t as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// dword (V, C) += the gradient dy (N, C) of every token, added into the row of its id.
    /// order (N) int: token indices sorted by id; starts (G + 1) int: where each id's group starts
    /// (as [`super::cpu::group_by_id`] builds them). One block per group, threads over channels.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_word(
        dev: &Cuda,
        ids: u64,
        order: u64,
        starts: u64,
        dy: u64,
        dword: u64,
        tokens: usize,
        order_len: usize,
        groups: usize,
        c: usize,
    ) -> Result<()> {
        let name = "embedding_backward_word";
        if order_len != tokens || groups > tokens || (tokens > 0 && groups == 0) || tokens > i32::MAX as usize {
            return Err(bad(
                name,
                format!("{tokens} tokens (C={c}) with an order of {order_len} and {groups} groups do not fit"),
            ));
        }
        let grid = (groups.min(65535) as u32, 1, 1);
        let block = (c.div_ceil(32).clamp(1, 8) as u32 * 32, 1, 1);
        let args = [
            Arg::Ptr(ids),
            Arg::Ptr(order),
            Arg::Ptr(starts),
            Arg::Ptr(dy),
            Arg::Ptr(dword),
            Arg::U64(groups as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// dpos (P, C) rows 0..T += Σ_b dy (B, T, C)[b, p]. One thread per (p, channel).
    pub fn backward_pos(dev: &Cuda, dy: u64, dpos: u64, [b, t, c]: [usize; 3], pos_rows: usize) -> Result<()> {
        let name = "embedding_backward_pos";
        if t > pos_rows {
            return Err(bad(name, format!("B={b} T={t} C={c}: T exceeds the {pos_rows} position rows")));
        }
        let (grid, block) = grid_1d(t * c);
        dev.launch(
            FILE,
            name,
            grid,
            block,
            0,
            &[Arg::Ptr(dy), Arg::Ptr(dpos), Arg::U64(b as u64), Arg::U64(t as u64), Arg::U64(c as u64)],
        )
    }

    /// dtypes (TV, C) += the gradient dy (N, C) of every token, added into the row of its type id
    /// (type_ids (N) int). One thread per (row, channel), each scanning all N tokens: TV is tiny,
    /// so blocks are small (64 threads) to spread the rows over more multiprocessors.
    pub fn backward_type(
        dev: &Cuda,
        type_ids: u64,
        dy: u64,
        dtypes: u64,
        tokens: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let name = "embedding_backward_type";
        let grid = ((rows * c).div_ceil(64).min(65535) as u32, 1, 1);
        dev.launch(
            FILE,
            name,
            grid,
            (64, 1, 1),
            0,
            &[
                Arg::Ptr(type_ids),
                Arg::Ptr(dy),
                Arg::Ptr(dtypes),
                Arg::U64(tokens as u64),
                Arg::U64(rows as u64),
                Arg::U64(c as u64),
            ],
        )
    }
}

pub mod cpu {
    use super::Table;
    use crate::error::{Error, Result};
    use crate::float::Float;

    /// The grouping of the CUDA word-table backward: token indices sorted by id, stably, and the
    /// start of each id's group in that order, closed by the token count.
    pub fn group_by_id(ids: &[i32]) -> Result<(Vec<i32>, Vec<i32>)> {
        let n = i32::try_from(ids.len()).map_err(|_| {
            Error::value("embedding", format!("{} tokens exceed the i32 indices of the CUDA backward", ids.len()))
        })?;
        let mut order: Vec<i32> = (0..n).collect();
        order.sort_by_key(|&i| ids[i as usize]); // stable
        let mut starts: Vec<i32> = (0..n)
            .filter(|&k| k == 0 || ids[order[k as usize] as usize] != ids[order[k as usize - 1] as usize])
            .collect();
        starts.push(n);
        Ok((order, starts))
    }

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

#[cfg(test)]
mod tests {
    use super::{Table, cpu};

    /// The grouped sum of the CUDA word backward, run on the host as the kernel runs it, equals
    /// the CPU's scatter-add bit for bit.
    #[test]
    fn grouped_word_backward_matches_the_scatter_add() {
        let (v, c) = (13, 5);
        let ids: Vec<i32> = (0..97).map(|i: i32| if i % 3 == 0 { 7 } else { (i * 31 + 5) % 11 }).collect();
        let dy: Vec<f32> = (0..ids.len() * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let init: Vec<f32> = (0..v * c).map(|i| i as f32 * 0.25).collect();
        let mut want = init.clone();
        cpu::backward(Table::Word, &ids, &vec![0; ids.len()], ids.len(), &dy, &mut want);

        let (order, starts) = cpu::group_by_id(&ids).unwrap();
        assert_eq!(starts.len() - 1, 11, "one group per distinct id");
        let mut got = init;
        for g in starts.windows(2) {
            let row = ids[order[g[0] as usize] as usize] as usize;
            for j in 0..c {
                let mut acc = got[row * c + j];
                for &tok in &order[g[0] as usize..g[1] as usize] {
                    assert_eq!(ids[tok as usize] as usize, row, "a group holds one id");
                    acc += dy[tok as usize * c + j];
                }
                got[row * c + j] = acc;
            }
        }
        assert_eq!(got, want);
        assert_eq!(cpu::group_by_id(&[]).unwrap(), (vec![], vec![0]));
    }
}
