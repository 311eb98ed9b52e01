//! BERT's embedding sum: word + position + token type, looked up per token; backward scatters
//! (adds) each token's gradient into the rows it read, so repeated ids accumulate.
//! Positions are 0..T of a padded (B, T) batch ([`Tape::embedding`]), or given per token
//! ([`Tape::embedding_at`]: a token-packed batch, where every sequence restarts at 0).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{MAX_RANK, Shape, Tensor};

/// ids, type_ids (B, T) int; word (V, C), pos (P, C), types (TV, C) → out (B, T, C), positions
/// 0..T as Hugging Face's absolute position embeddings. With `positions` (`embedding_at`): ids,
/// type_ids, positions of any one shape (…) → out (…, C).
#[derive(Clone, Debug)]
pub struct Embedding {
    pub ids: Tensor,
    pub type_ids: Tensor,
    /// The position of every token, shaped as `ids`; None: token (b, t) is at position t.
    pub positions: Option<Tensor>,
    pub word: Tensor,
    pub pos: Tensor,
    pub types: Tensor,
    pub out: Tensor,
    /// The tokens grouped by word id, for the race-free CUDA backward into the word table
    /// (None on the CPU, and when the word table takes no gradient).
    pub by_id: Option<IdGroups>,
    /// The tokens grouped by position, for the same backward into the position table when
    /// positions are explicit (None on the CPU, without `positions`, or without its gradient).
    pub by_pos: Option<IdGroups>,
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
        check_tables(word, pos, types)?;
        let t = ids.dims()[1];
        if t > pos.dims()[0] {
            return Err(Error::value(
                op,
                format!("sequence length {t} exceeds the {} positions of the model", pos.dims()[0]),
            ));
        }
        self.embed(ids, type_ids, None, word, pos, types)
    }

    /// The embedding sum with each token's position given: ids, type_ids, positions int tensors
    /// of one shape (…), rank 1 to 3 (a packed batch is (N)) → out (…, C) =
    /// word[id] + pos[position] + types[type]. Positions must lie in 0..P, the position rows.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_at(
        &mut self,
        ids: Tensor,
        type_ids: Tensor,
        positions: Tensor,
        word: Tensor,
        pos: Tensor,
        types: Tensor,
    ) -> Result<Tensor> {
        let r = ids.shape.rank();
        if r == 0 || r >= MAX_RANK || type_ids.shape != ids.shape || positions.shape != ids.shape {
            return Err(Error::shape(
                "embedding",
                format!(
                    "ids {}, type ids {} and positions {} must share one shape of rank 1 to {}",
                    ids.shape,
                    type_ids.shape,
                    positions.shape,
                    MAX_RANK - 1
                ),
            ));
        }
        check_tables(word, pos, types)?;
        self.embed(ids, type_ids, Some(positions), word, pos, types)
    }

    /// Both embeddings once their shapes are checked: reads and checks the ids, then runs.
    fn embed(
        &mut self,
        ids: Tensor,
        type_ids: Tensor,
        positions: Option<Tensor>,
        word: Tensor,
        pos: Tensor,
        types: Tensor,
    ) -> Result<Tensor> {
        let c = word.shape.last();
        let (ids_v, types_v) = (self.store.read_ints(ids)?, self.store.read_ints(type_ids)?);
        check_ids(&ids_v, word.dims()[0], "token id")?;
        check_ids(&types_v, types.dims()[0], "token type id")?;
        let pos_v = match positions {
            Some(p) => {
                let v = self.store.read_ints(p)?;
                check_ids(&v, pos.dims()[0], "position")?;
                Some(v)
            }
            None => None,
        };
        let mut dims = ids.dims().to_vec();
        dims.push(c);
        let out = self.output(Shape::new(&dims)?, &[word, pos, types])?;
        let (mut by_id, mut by_pos) = (None, None);
        match self.store.device {
            Device::Cuda(_) => {
                // Uploaded before `cuda_io`: a growing integer arena moves its device addresses.
                if word.requires_grad {
                    by_id = Some(IdGroups::upload(&mut self.store, &ids_v)?);
                }
                if let (Some(p), true) = (&pos_v, pos.requires_grad) {
                    by_pos = Some(IdGroups::upload(&mut self.store, p)?);
                }
                let tables = [Slot::Val(word), Slot::Val(pos), Slot::Val(types)];
                match positions {
                    None => {
                        let (b, t) = (ids.dims()[0], ids.dims()[1]);
                        let (dev, [ip, tp], [wp, pp, yp], [op]) =
                            self.store.cuda_io([ids, type_ids], tables, [Slot::Val(out)])?;
                        cuda::forward(&dev, ip, tp, wp, pp, yp, op, [b, t, c], pos.dims()[0])?;
                    }
                    Some(p) => {
                        let (dev, [ip, tp, qp], [wp, pp, yp], [op]) =
                            self.store.cuda_io([ids, type_ids, p], tables, [Slot::Val(out)])?;
                        cuda::forward_at(&dev, [ip, tp, qp], [wp, pp, yp], op, ids.numel(), c)?;
                    }
                }
            }
            Device::Cpu => {
                let ([w, p, ty], [o]) =
                    self.store.cpu_views([Slot::Val(word), Slot::Val(pos), Slot::Val(types)], [Slot::Val(out)])?;
                let at = match &pos_v {
                    Some(v) => Positions::At(v),
                    None => Positions::Padded(ids.dims()[1]),
                };
                cpu::forward(&ids_v, &types_v, at, w, p, ty, o);
            }
        }
        let rec = Embedding { ids, type_ids, positions, word, pos, types, out, by_id, by_pos };
        Ok(self.push(out, Op::Embedding(Box::new(rec))))
    }
}

/// Errors unless the three tables are (rows, C) with the word table's C.
fn check_tables(word: Tensor, pos: Tensor, types: Tensor) -> Result<()> {
    let c = word.shape.last();
    for (name, table) in [("word", word), ("position", pos), ("token type", types)] {
        if table.shape.rank() != 2 || table.shape.last() != c {
            return Err(Error::shape("embedding", format!("{name} table {} must be (rows, {c})", table.shape)));
        }
    }
    Ok(())
}

fn check_ids(ids: &[i32], rows: usize, what: &str) -> Result<()> {
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id < 0 || id as usize >= rows) {
        return Err(Error::value("embedding", format!("{what} {id} at index {i} is outside 0..{rows}")));
    }
    Ok(())
}

impl Embedding {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let n = self.ids.numel();
        let c = self.out.shape.last();
        match s.device {
            Device::Cuda(_) => {
                let missing = |table: &str| {
                    Error::Tape(format!(
                        "embedding: the CUDA backward of the {table} table needs the groups of a CUDA forward"
                    ))
                };
                if self.word.requires_grad {
                    let g = self.by_id.ok_or_else(|| missing("word"))?;
                    let (dev, [ip, orp, stp], [dyp], [dwp]) =
                        s.cuda_io([self.ids, g.order, g.starts], [Slot::Grad(self.out)], [Slot::Grad(self.word)])?;
                    cuda::backward_word(&dev, ip, orp, stp, dyp, dwp, n, g.order.numel(), g.groups(), c)?;
                }
                if self.pos.requires_grad {
                    match self.positions {
                        None => {
                            let (b, t) = (self.ids.dims()[0], self.ids.dims()[1]);
                            let (dev, [], [dyp], [dpp]) =
                                s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.pos)])?;
                            cuda::backward_pos(&dev, dyp, dpp, [b, t, c], self.pos.dims()[0])?;
                        }
                        // Explicit positions repeat across sequences: the word table's grouped
                        // scatter, with positions as the ids, keeps one writer per row element.
                        Some(p) => {
                            let g = self.by_pos.ok_or_else(|| missing("position"))?;
                            let (dev, [qp, orp, stp], [dyp], [dpp]) =
                                s.cuda_io([p, g.order, g.starts], [Slot::Grad(self.out)], [Slot::Grad(self.pos)])?;
                            cuda::backward_word(&dev, qp, orp, stp, dyp, dpp, n, g.order.numel(), g.groups(), c)?;
                        }
                    }
                }
                if self.types.requires_grad {
                    let (dev, [tp], [dyp], [dtp]) =
                        s.cuda_io([self.type_ids], [Slot::Grad(self.out)], [Slot::Grad(self.types)])?;
                    cuda::backward_type(&dev, tp, dyp, dtp, n, self.types.dims()[0], c)?;
                }
            }
            Device::Cpu => {
                // The ids stand in for the positions tensor when there is none (then unread).
                let positions = self.positions.unwrap_or(self.ids);
                for (table, which) in [(self.word, Table::Word), (self.pos, Table::Position), (self.types, Table::Type)]
                {
                    if table.requires_grad {
                        let ([iv, tv, pv], [dy], [dt]) = s.cpu_io(
                            [self.ids, self.type_ids, positions],
                            [Slot::Grad(self.out)],
                            [Slot::Grad(table)],
                        )?;
                        let at = match self.positions {
                            Some(_) => Positions::At(pv),
                            None => Positions::Padded(self.ids.dims()[1]),
                        };
                        cpu::backward(which, iv, tv, at, dy, dt);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where each token's row of the position table is.
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// Token i of a (B, T) batch is at position i mod T.
    Padded(usize),
    /// Token i is at position p[i].
    At(&'a [i32]),
}

impl Positions<'_> {
    #[inline]
    pub fn row(&self, i: usize) -> usize {
        match *self {
            Positions::Padded(t) => i % t,
            Positions::At(p) => p[i] as usize,
        }
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

    /// ids, type_ids, positions (N) int; word (V, C), pos (P, C), types (TV, C) → out (N, C),
    /// token i at position row positions[i]. Every index must lie inside its table (the tape
    /// checks them on the host).
    pub fn forward_at(
        dev: &Cuda,
        [ids, type_ids, positions]: [u64; 3],
        [word, pos, types]: [u64; 3],
        out: u64,
        tokens: usize,
        c: usize,
    ) -> Result<()> {
        let (grid, block) = grid_1d(tokens * c);
        let args = [
            Arg::Ptr(ids),
            Arg::Ptr(type_ids),
            Arg::Ptr(positions),
            Arg::Ptr(word),
            Arg::Ptr(pos),
            Arg::Ptr(types),
            Arg::Ptr(out),
            Arg::U64(tokens as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, "embedding_forward_at", grid, block, 0, &args)
    }

    /// dword (V, C) += the gradient dy (N, C) of every token, added into the row of its id.
    /// order (N) int: token indices sorted by id; starts (G + 1) int: where each id's group starts
    /// (as [`super::cpu::group_by_id`] builds them). One block per group, threads over channels.
    /// Any table read by a per-token row index takes this backward: `embedding_at`'s position
    /// table passes the positions as `ids`.
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
    use super::{Positions, Table};
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

    pub fn forward<F: Float>(
        ids: &[i32],
        types: &[i32],
        at: Positions<'_>,
        word: &[F],
        pos: &[F],
        ty: &[F],
        out: &mut [F],
    ) {
        if ids.is_empty() {
            return; // no tokens (and C unknown from the lengths)
        }
        let c = out.len() / ids.len();
        for (i, o) in out.chunks_exact_mut(c).enumerate() {
            let (w, p, y) = (ids[i] as usize * c, at.row(i) * c, types[i] as usize * c);
            for j in 0..c {
                o[j] = word[w + j] + pos[p + j] + ty[y + j];
            }
        }
    }

    /// d(table) += the gradient of every token that read a row of it.
    pub fn backward<F: Float>(table: Table, ids: &[i32], types: &[i32], at: Positions<'_>, dy: &[F], dt: &mut [F]) {
        if ids.is_empty() {
            return;
        }
        let c = dy.len() / ids.len();
        for (i, g) in dy.chunks_exact(c).enumerate() {
            let row = match table {
                Table::Word => ids[i] as usize,
                Table::Position => at.row(i),
                Table::Type => types[i] as usize,
            };
            let d = &mut dt[row * c..(row + 1) * c];
            d.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Positions, Table, cpu};

    /// The grouped sum of the CUDA word backward, run on the host as the kernel runs it, equals
    /// the CPU's scatter-add bit for bit.
    #[test]
    fn grouped_word_backward_matches_the_scatter_add() {
        let (v, c) = (13, 5);
        let ids: Vec<i32> = (0..97).map(|i: i32| if i % 3 == 0 { 7 } else { (i * 31 + 5) % 11 }).collect();
        let dy: Vec<f32> = (0..ids.len() * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let init: Vec<f32> = (0..v * c).map(|i| i as f32 * 0.25).collect();
        let mut want = init.clone();
        cpu::backward(Table::Word, &ids, &vec![0; ids.len()], Positions::Padded(ids.len()), &dy, &mut want);

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
