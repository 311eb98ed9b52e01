//! Matrix products: `out = op(a) · op(b)`, op = identity or transpose.
//!
//! Two forms: a rank-2 `b` shared by every row of `a` (a linear layer: `a` (…, K) folded into
//! (M, K)), and matching batch dimensions (attention: (B, NH, T, HS) · (B, NH, T, HS)ᵀ).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// The GEMM problem: `batch` products of (M, K) · (K, N), after transposes and folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl MatDims {
    /// Checks operands and returns the problem and the output shape.
    pub fn infer(a: Shape, b: Shape, trans_a: bool, trans_b: bool) -> Result<(MatDims, Shape)> {
        let t = |x: bool| if x { "ᵀ" } else { "" };
        let err = |why: &str| Error::shape("matmul", format!("a{} {a} and b{} {b}: {why}", t(trans_a), t(trans_b)));
        if a.rank() < 2 || b.rank() < 2 {
            return Err(err("both operands need rank ≥ 2"));
        }
        let (bk, n) =
            if trans_b { (b.dim_from_end(0), b.dim_from_end(1)) } else { (b.dim_from_end(1), b.dim_from_end(0)) };
        let (batch, m, k) = if b.rank() == 2 {
            if trans_a && a.rank() != 2 {
                return Err(err("a transposed a needs rank 2 when b is a shared matrix"));
            }
            if trans_a { (1, a.dim_from_end(0), a.dim_from_end(1)) } else { (1, a.rows(), a.last()) }
        } else {
            if a.batch_dims() != b.batch_dims() {
                return Err(err("batch dimensions differ"));
            }
            let batch = a.batch_dims().iter().product();
            let (m, k) =
                if trans_a { (a.dim_from_end(0), a.dim_from_end(1)) } else { (a.dim_from_end(1), a.dim_from_end(0)) };
            (batch, m, k)
        };
        if k != bk {
            return Err(err(&format!("inner dimensions {k} and {bk} differ")));
        }
        let mut out: Vec<usize> = if b.rank() == 2 && !trans_a {
            a.dims()[..a.rank() - 1].to_vec()
        } else {
            let mut d = a.batch_dims().to_vec();
            d.push(m);
            d
        };
        out.push(n);
        Ok((MatDims { batch, m, n, k, trans_a, trans_b }, Shape::new(&out)?))
    }

    /// (row stride, column stride) of op(a) within one batch item.
    fn a_strides(&self) -> (isize, isize) {
        if self.trans_a { (1, self.m as isize) } else { (self.k as isize, 1) }
    }
    fn b_strides(&self) -> (isize, isize) {
        if self.trans_b { (1, self.k as isize) } else { (self.n as isize, 1) }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

#[derive(Clone, Debug)]
pub struct Matmul {
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
    pub dims: MatDims,
}

impl<F: Float> Tape<F> {
    /// `op(a) · op(b)`; see the module doc for the accepted shapes.
    pub fn matmul(&mut self, a: Tensor, b: Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let (dims, shape) = MatDims::infer(a.shape, b.shape, trans_a, trans_b)?;
        let out = self.output(shape, &[a, b])?;
        let p = self.store.precision;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [ap, bp], [op]) =
                    self.store.cuda_io([], [Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cuda::forward(&dev, &dims, ap, bp, op, p)?;
            }
            Device::Cpu => {
                let ([av, bv], [ov]) = self.store.cpu_views([Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cpu::forward(&dims, av, bv, ov, p);
            }
        }
        Ok(self.push(out, Op::Matmul(Matmul { a, b, out, dims })))
    }
}

/// Whether `store`'s matmuls compute in full float32 (or wider): float32 operands on the CPU, and
/// on a GPU the float32 FMA kernels rather than tf32 or bf16 tensor cores.
pub fn exact_f32<F: Float>(store: &Store<F>) -> bool {
    use crate::device::Precision;
    match &store.device {
        _ if store.precision != Precision::F32 => false,
        Device::Cpu => true,
        Device::Cuda(dev) => dev.gemm_precision() == crate::device::cuda::GemmPrecision::F32,
    }
}

impl Matmul {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (a, b, out, d, p) = (self.a, self.b, self.out, &self.dims, s.precision);
        match s.device {
            Device::Cuda(_) => {
                if a.requires_grad {
                    let (dev, [], [bp, dy], [da]) = s.cuda_io([], [Slot::Val(b), Slot::Grad(out)], [Slot::Grad(a)])?;
                    cuda::backward_a(&dev, d, bp, dy, da, p)?;
                }
                if b.requires_grad {
                    let (dev, [], [ap, dy], [db]) = s.cuda_io([], [Slot::Val(a), Slot::Grad(out)], [Slot::Grad(b)])?;
                    cuda::backward_b(&dev, d, ap, dy, db, p)?;
                }
            }
            Device::Cpu => {
                if a.requires_grad {
                    let ([bv, dy], [da]) = s.cpu_views([Slot::Val(b), Slot::Grad(out)], [Slot::Grad(a)])?;
                    cpu::backward_a(d, bv, dy, da, p);
                }
                if b.requires_grad {
                    let ([av, dy], [db]) = s.cpu_views([Slot::Val(a), Slot::Grad(out)], [Slot::Grad(b)])?;
                    cpu::backward_b(d, av, dy, db, p);
                }
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/matmul.cu: one strided batched GEMM, `c[i] (+)= a[i] · b[i]`, in three
/// arithmetics (float32 FMA, tf32 and bf16 tensor cores), each in a few tile sizes, and the op's
/// forward and backward expressed through it exactly as the CPU path expresses them through
/// [`cpu::gemm`]. Pointers are device addresses.
pub mod cuda {
    use super::MatDims;
    use crate::device::Precision;
    use crate::device::cuda::{Arg, Cuda, GemmPrecision};
    use crate::error::{Error, Result};

    const FILE: &str = "matmul.cu";

    /// The largest M, N or K the kernels take: 2³¹ − 1 less the largest tile side (256), so that
    /// no 32-bit index of a partial last tile overflows.
    pub const MAX_SIZE: i32 = i32::MAX - 256;

    // Kernel flags (kernels/matmul.cu).
    const VEC_A: i32 = 1;
    const VEC_B: i32 = 2;
    const VEC_C: i32 = 4;
    const ACCUMULATE: i32 = 8;
    const OUT_BF16: i32 = 16;

    /// A batched matrix in device memory: element (r, c) of item i lies at
    /// `ptr + (i·bs + r·rs + c·cs) · element size`. One of `rs`, `cs` must be 1 (the kernels read
    /// along a contiguous dimension); `bs` = 0 shares one matrix between all items.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct View {
        pub ptr: u64,
        pub rs: usize,
        pub cs: usize,
        pub bs: usize,
    }

    impl View {
        /// Row-major items of `rows × cols`, one after the other.
        pub fn row_major(ptr: u64, rows: usize, cols: usize) -> View {
            View { ptr, rs: cols, cs: 1, bs: rows * cols }
        }
        /// The transpose of `row_major(ptr, cols, rows)`: items stored `cols × rows`, read as `rows × cols`.
        pub fn col_major(ptr: u64, rows: usize, cols: usize) -> View {
            View { ptr, rs: 1, cs: rows, bs: rows * cols }
        }
        pub fn shared(self) -> View {
            View { bs: 0, ..self }
        }
    }

    /// `c[i] (m×n) = a[i] (m×k) · b[i] (k×n)` (`+=` when accumulating) for i in 0..batch.
    #[derive(Clone, Copy, Debug)]
    pub struct Gemm {
        pub batch: usize,
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub a: View,
        pub b: View,
        pub c: View,
        pub accumulate: bool,
    }

    /// Element types and arithmetic: float32 in and out with FMA or tf32 tensor cores; bf16 in,
    /// float32 accumulation, float32 or bf16 out.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind {
        F32,
        Tf32,
        Bf16 {
            out_bf16: bool,
        },
        /// float32 operands and output in memory; the operands are rounded to compact bf16
        /// copies (one pass each) for the bf16 kernels (`Precision::Bf16`).
        Bf16Rounded,
    }

    impl Kind {
        /// The arithmetic of a float32 matmul under `p`: the device's float32 arithmetic
        /// (`Cuda::set_gemm_precision`), or its operands rounded to bf16 on the tensor cores.
        pub fn of(dev: &Cuda, p: Precision) -> Kind {
            match (p, dev.gemm_precision()) {
                (Precision::Bf16, _) => Kind::Bf16Rounded,
                (Precision::F32, GemmPrecision::F32) => Kind::F32,
                (Precision::F32, GemmPrecision::Tf32) => Kind::Tf32,
            }
        }
        fn input_bytes(self) -> usize {
            if let Kind::Bf16 { .. } = self { 2 } else { 4 }
        }
        fn output_bytes(self) -> usize {
            if let Kind::Bf16 { out_bf16: true } = self { 2 } else { 4 }
        }
    }

    /// One tile configuration: a kernel for each layout (`_nn _nt _tn _tt`: A then B, "t" =
    /// transposed in memory), its block tile, threads and dynamic shared memory, and its relative
    /// throughput on a full GPU (the tile choice weighs it against idle SMs).
    #[derive(Clone, Copy, Debug)]
    pub struct Config {
        pub name: &'static str,
        kernels: [&'static str; 4],
        pub bm: usize,
        pub bn: usize,
        pub threads: u32,
        pub smem: u32,
        efficiency: f64,
    }

    macro_rules! config {
        ($name:literal, $bm:expr, $bn:expr, $threads:expr, $smem:expr, $eff:expr) => {
            Config {
                name: $name,
                kernels: [concat!($name, "_nn"), concat!($name, "_nt"), concat!($name, "_tn"), concat!($name, "_tt")],
                bm: $bm,
                bn: $bn,
                threads: $threads,
                smem: $smem,
                efficiency: $eff,
            }
        };
    }

    // Shared memory as kernels/matmul.cu lays it out: stages × (A tile + B tile).
    const SGEMM: [Config; 2] =
        [config!("sgemm_128x128", 128, 128, 256, 0, 1.0), config!("sgemm_64x64", 64, 64, 256, 0, 0.7)];
    const TF32: [Config; 2] = [
        config!("tf32_gemm_128x128", 128, 128, 256, 3 * (128 + 128) * 32 * 4, 1.0),
        config!("tf32_gemm_64x64", 64, 64, 128, 3 * (64 + 64) * 32 * 4, 0.6),
    ];
    const BF16: [Config; 3] = [
        config!("bf16_gemm_128x256", 128, 256, 256, 4 * (128 + 256) * 32 * 2, 1.0),
        config!("bf16_gemm_128x128", 128, 128, 128, 4 * (128 + 128) * 32 * 2, 0.85),
        config!("bf16_gemm_64x64", 64, 64, 128, 4 * (64 + 64) * 32 * 2, 0.5),
    ];

    /// The tile configurations of `kind`, largest first.
    pub fn configs(kind: Kind) -> &'static [Config] {
        match kind {
            Kind::F32 => &SGEMM,
            Kind::Tf32 => &TF32,
            Kind::Bf16 { .. } | Kind::Bf16Rounded => &BF16,
        }
    }

    /// The configuration `gemm` uses: the least estimated time, counting a block tile's work at
    /// the configuration's throughput and the rounds of tiles each SM must run.
    pub fn pick(dev: &Cuda, g: &Gemm, kind: Kind) -> usize {
        let sms = dev.sm_count();
        let cost = |c: &Config| {
            let tiles = g.batch * g.m.div_ceil(c.bm) * g.n.div_ceil(c.bn);
            tiles.div_ceil(sms) as f64 * (c.bm * c.bn) as f64 / c.efficiency
        };
        let cs = configs(kind);
        (0..cs.len()).min_by(|&x, &y| cost(&cs[x]).total_cmp(&cost(&cs[y]))).unwrap_or(0)
    }

    /// Runs `g` in `kind` with the configuration [`pick`] chooses. Inputs and output are device
    /// addresses of float32 (bf16 inputs, and the output when `out_bf16`, for `Kind::Bf16`).
    pub fn gemm(dev: &Cuda, g: &Gemm, kind: Kind) -> Result<()> {
        gemm_with(dev, g, kind, pick(dev, g, kind))
    }

    /// `g` on float32 operands rounded to bf16: each operand is copied, rounded to nearest even,
    /// into a compact row-major bf16 matrix (one item when its batch stride is 0) in the device's
    /// scratch, then the bf16 kernels of configuration `config` run with float32 output.
    fn bf16_rounded_gemm(dev: &Cuda, g: &Gemm, config: usize) -> Result<()> {
        let items = |v: View| if v.bs == 0 { 1 } else { g.batch };
        let (na, nb) = (items(g.a) * g.m * g.k, items(g.b) * g.k * g.n);
        // (each copy starts on a 16-byte boundary for the kernels' vector loads)
        let a_bytes = (2 * na).next_multiple_of(16);
        let scratch = dev.scratch(a_bytes + 2 * nb)?;
        let (a16, b16) = (scratch, scratch + a_bytes as u64);
        to_bf16(dev, g.a, items(g.a), g.m, g.k, a16)?;
        to_bf16(dev, g.b, items(g.b), g.k, g.n, b16)?;
        let compact = |ptr: u64, v: View, rows: usize, cols: usize| {
            let r = View::row_major(ptr, rows, cols);
            if v.bs == 0 { r.shared() } else { r }
        };
        let g16 = Gemm { a: compact(a16, g.a, g.m, g.k), b: compact(b16, g.b, g.k, g.n), ..*g };
        gemm_with(dev, &g16, Kind::Bf16 { out_bf16: false }, config)
    }

    /// `items` matrices of rows × cols read through `v` (float32) → compact row-major bf16 at `out`.
    fn to_bf16(dev: &Cuda, v: View, items: usize, rows: usize, cols: usize, out: u64) -> Result<()> {
        let n = items * rows * cols;
        let (grid, block) = crate::device::cuda::grid_1d(n);
        let u = |x: usize| Arg::U64(x as u64);
        let args = [Arg::Ptr(v.ptr), u(v.rs), u(v.cs), u(v.bs), u(rows), u(cols), u(n), Arg::Ptr(out)];
        dev.launch(FILE, "to_bf16_compact", grid, block, 0, &args)
    }

    /// The bf16 tensor-core GEMM: `a`, `b` hold bf16 (as 16-bit patterns), products accumulate in
    /// float32, `c` holds float32, or bf16 when `out_bf16` (rounded to nearest even).
    pub fn bf16_gemm(dev: &Cuda, g: &Gemm, out_bf16: bool) -> Result<()> {
        gemm(dev, g, Kind::Bf16 { out_bf16 })
    }

    /// Runs `g` with configuration `config` of [`configs`]`(kind)` (benches and tests compare them).
    /// `Kind::Bf16Rounded` first rounds the float32 operands into bf16 copies (never hands float32
    /// buffers to the bf16 kernels).
    pub fn gemm_with(dev: &Cuda, g: &Gemm, kind: Kind, config: usize) -> Result<()> {
        let cs = configs(kind);
        let c = cs.get(config).ok_or_else(|| {
            Error::Cuda(format!("matmul: no tile configuration {config} for {kind:?} (there are {})", cs.len()))
        })?;
        // The kernels compute tile counts and the indices of a whole last tile (up to
        // ceil(M / BM)·BM) in 32-bit ints: a size within a tile of 2³¹ would overflow them.
        if let Some(big) = [g.m, g.n, g.k].into_iter().find(|&v| v > MAX_SIZE as usize) {
            return Err(misuse(c.name, g, &format!("{big} exceeds the kernels' 32-bit sizes (at most {MAX_SIZE})")));
        }
        if kind == Kind::Bf16Rounded {
            return bf16_rounded_gemm(dev, g, config);
        }
        let (a_t, lda) = layout(g.a)
            .ok_or_else(|| misuse(c.name, g, &format!("a's strides ({}, {}) have no unit stride", g.a.rs, g.a.cs)))?;
        let (b_t, ldb) = layout(g.b)
            .ok_or_else(|| misuse(c.name, g, &format!("b's strides ({}, {}) have no unit stride", g.b.rs, g.b.cs)))?;
        let name = c.kernels[a_t as usize * 2 + b_t as usize];
        if g.c.cs != 1 {
            return Err(misuse(name, g, &format!("c must be row-major (column stride {}, not 1)", g.c.cs)));
        }
        if g.batch == 0 || g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let (m, n, k) = (g.m as i32, g.n as i32, g.k as i32); // checked against MAX_SIZE above
        let batch = i32::try_from(g.batch)
            .map_err(|_| misuse(name, g, &format!("a batch of {} exceeds the kernels' 32-bit sizes", g.batch)))?;
        // The kernels index within one item with 32-bit offsets.
        let reach = |v: View, rows: usize, cols: usize| {
            if rows == 0 || cols == 0 { 0 } else { (rows - 1) * v.rs + (cols - 1) * v.cs }
        };
        for (what, v, rows, cols) in [("a", g.a, g.m, g.k), ("b", g.b, g.k, g.n), ("c", g.c, g.m, g.n)] {
            if reach(v, rows, cols) > u32::MAX as usize {
                return Err(misuse(name, g, &format!("{what} spans more than 2³² elements in one item")));
            }
            if v.ptr == 0 && (what == "c" || g.k > 0) {
                return Err(misuse(name, g, &format!("{what} is a null device pointer")));
            }
        }
        let tiles = g.m.div_ceil(c.bm) * g.n.div_ceil(c.bn);
        if tiles > i32::MAX as usize {
            return Err(misuse(name, g, &format!("{tiles} output tiles exceed the grid")));
        }
        let (gy, gz) = (g.batch.min(65535), g.batch.div_ceil(65535));
        if gz > 65535 {
            return Err(misuse(name, g, "the batch exceeds 65535² items"));
        }
        // 16-byte chunks along the contiguous dimension (tensor-core kernels), aligned pairs of C.
        let epc = 16 / kind.input_bytes();
        let chunks = |v: View, ld: usize| {
            v.ptr.is_multiple_of(16) && ld.is_multiple_of(epc) && (g.batch == 1 || v.bs.is_multiple_of(epc))
        };
        let out = kind.output_bytes() as u64;
        let pairs =
            g.c.ptr.is_multiple_of(2 * out) && g.c.rs.is_multiple_of(2) && (g.batch == 1 || g.c.bs.is_multiple_of(2));
        let mut flags = 0;
        if chunks(g.a, lda) {
            flags |= VEC_A;
        }
        if chunks(g.b, ldb) {
            flags |= VEC_B;
        }
        if pairs {
            flags |= VEC_C;
        }
        if g.accumulate {
            flags |= ACCUMULATE;
        }
        if kind == (Kind::Bf16 { out_bf16: true }) {
            flags |= OUT_BF16;
        }
        if c.smem > 48 * 1024 {
            // Past 48 KiB a kernel must opt in to its dynamic shared memory.
            dev.allow_dynamic_shared(FILE, name, c.smem)
                .map_err(|e| misuse(name, g, &format!("{} bytes of shared memory refused: {e}", c.smem)))?;
        }
        let u = |v: usize| Arg::U64(v as u64);
        dev.launch(
            FILE,
            name,
            (tiles as u32, gy as u32, gz as u32),
            (c.threads, 1, 1),
            c.smem,
            &[
                Arg::Ptr(g.a.ptr),
                Arg::Ptr(g.b.ptr),
                Arg::Ptr(g.c.ptr),
                Arg::I32(m),
                Arg::I32(n),
                Arg::I32(k),
                u(lda),
                u(ldb),
                u(g.c.rs),
                u(g.a.bs),
                u(g.b.bs),
                u(g.c.bs),
                Arg::I32(batch),
                Arg::I32(flags),
            ],
        )
    }

    /// (transposed in memory, leading stride) of an operand: "n" when columns are contiguous.
    pub(super) fn layout(v: View) -> Option<(bool, usize)> {
        if v.cs == 1 {
            Some((false, v.rs))
        } else if v.rs == 1 {
            Some((true, v.cs))
        } else {
            None
        }
    }

    fn misuse(kernel: &str, g: &Gemm, why: &str) -> Error {
        Error::Cuda(format!("{kernel}: batch {} of ({}×{}) · ({}×{}): {why}", g.batch, g.m, g.k, g.k, g.n))
    }

    fn view(ptr: u64, (rs, cs): (isize, isize), bs: usize) -> View {
        View { ptr, rs: rs as usize, cs: cs as usize, bs }
    }

    fn t((rs, cs): (isize, isize)) -> (isize, isize) {
        (cs, rs)
    }

    /// out (batch, M, N) = op(a) · op(b); as `cpu::forward`.
    pub fn forward(dev: &Cuda, d: &MatDims, a: u64, b: u64, out: u64, p: Precision) -> Result<()> {
        gemm(dev, &forward_gemm(d, a, b, out), Kind::of(dev, p))
    }

    pub(super) fn forward_gemm(d: &MatDims, a: u64, b: u64, out: u64) -> Gemm {
        let (sa, sb) = (d.m * d.k, if d.batch > 1 { d.k * d.n } else { 0 });
        Gemm {
            batch: d.batch,
            m: d.m,
            n: d.n,
            k: d.k,
            a: view(a, d.a_strides(), sa),
            b: view(b, d.b_strides(), sb),
            c: View::row_major(out, d.m, d.n),
            accumulate: false,
        }
    }

    /// da += dy · op(b)ᵀ (or its transpose when a is transposed); as `cpu::backward_a`.
    pub fn backward_a(dev: &Cuda, d: &MatDims, b: u64, dy: u64, da: u64, p: Precision) -> Result<()> {
        gemm(dev, &backward_a_gemm(d, b, dy, da), Kind::of(dev, p))
    }

    pub(super) fn backward_a_gemm(d: &MatDims, b: u64, dy: u64, da: u64) -> Gemm {
        let (sb, sy) = (if d.batch > 1 { d.k * d.n } else { 0 }, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        if d.trans_a {
            // a stored (K, M): da = op(b) · dyᵀ
            Gemm {
                batch: d.batch,
                m: d.k,
                n: d.m,
                k: d.n,
                a: view(b, d.b_strides(), sb),
                b: view(dy, t(dy_s), sy),
                c: View::row_major(da, d.k, d.m),
                accumulate: true,
            }
        } else {
            Gemm {
                batch: d.batch,
                m: d.m,
                n: d.k,
                k: d.n,
                a: view(dy, dy_s, sy),
                b: view(b, t(d.b_strides()), sb),
                c: View::row_major(da, d.m, d.k),
                accumulate: true,
            }
        }
    }

    /// db += op(a)ᵀ · dy (or its transpose when b is transposed); as `cpu::backward_b`.
    pub fn backward_b(dev: &Cuda, d: &MatDims, a: u64, dy: u64, db: u64, p: Precision) -> Result<()> {
        gemm(dev, &backward_b_gemm(d, a, dy, db), Kind::of(dev, p))
    }

    pub(super) fn backward_b_gemm(d: &MatDims, a: u64, dy: u64, db: u64) -> Gemm {
        let (sa, sy) = (d.m * d.k, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        if d.trans_b {
            // b stored (N, K): db = dyᵀ · op(a)
            Gemm {
                batch: d.batch,
                m: d.n,
                n: d.k,
                k: d.m,
                a: view(dy, t(dy_s), sy),
                b: view(a, d.a_strides(), sa),
                c: View::row_major(db, d.n, d.k),
                accumulate: true,
            }
        } else {
            Gemm {
                batch: d.batch,
                m: d.k,
                n: d.n,
                k: d.m,
                a: view(a, t(d.a_strides()), sa),
                b: view(dy, dy_s, sy),
                c: View::row_major(db, d.k, d.n),
                accumulate: true,
            }
        }
    }
}

pub mod cpu {
    use super::MatDims;
    use crate::device::Precision;
    use crate::float::Float;
    use rayon::prelude::*;

    /// A matmul operand as the CPU path reads it under `p`: itself, or a copy rounded to bf16 (to
    /// nearest even), the values the GPU's bf16 kernels read.
    pub(crate) fn operand<F: Float>(x: &[F], p: Precision) -> std::borrow::Cow<'_, [F]> {
        match p {
            Precision::F32 => std::borrow::Cow::Borrowed(x),
            Precision::Bf16 => {
                let round = |v: F| F::from_f64(half::bf16::from_f32(v.to_f64() as f32).to_f32() as f64);
                std::borrow::Cow::Owned(x.iter().map(|&v| round(v)).collect())
            }
        }
    }

    /// The CPU GEMM (its backends live in `crate::cpu_gemm`).
    pub use crate::cpu_gemm::gemm;

    fn t((rs, cs): (isize, isize)) -> (isize, isize) {
        (cs, rs)
    }

    /// Runs `f(item, dst_chunk)` over batch items: in parallel across items when there are many
    /// (attention), else one item with a multi-threaded GEMM.
    fn over_batch<F: Float>(batch: usize, dst: &mut [F], f: impl Fn(usize, &mut [F], usize) + Sync + Send) {
        let chunk = dst.len() / batch;
        if batch == 1 {
            f(0, dst, rayon::current_num_threads());
        } else {
            dst.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c, 1));
        }
    }

    /// out (batch, M, N) = op(a) · op(b).
    pub fn forward<F: Float>(d: &MatDims, a: &[F], b: &[F], out: &mut [F], p: Precision) {
        let (a, b) = (&*operand(a, p), &*operand(b, p));
        let (sa, sb) = (d.m * d.k, if d.batch > 1 { d.k * d.n } else { 0 });
        over_batch(d.batch, out, |i, o, th| {
            gemm(d.m, d.n, d.k, o, (&a[i * sa..], d.a_strides()), (&b[i * sb..], d.b_strides()), false, th)
        });
    }

    /// da += dy · op(b)ᵀ (or its transpose when a is transposed).
    pub fn backward_a<F: Float>(d: &MatDims, b: &[F], dy: &[F], da: &mut [F], p: Precision) {
        let (b, dy) = (&*operand(b, p), &*operand(dy, p));
        let (sb, sy) = (if d.batch > 1 { d.k * d.n } else { 0 }, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        over_batch(d.batch, da, |i, g, th| {
            let (bi, yi) = (&b[i * sb..], &dy[i * sy..]);
            if d.trans_a {
                // a stored (K, M): da = op(b) · dyᵀ
                gemm(d.k, d.m, d.n, g, (bi, d.b_strides()), (yi, t(dy_s)), true, th)
            } else {
                gemm(d.m, d.k, d.n, g, (yi, dy_s), (bi, t(d.b_strides())), true, th)
            }
        });
    }

    /// db += op(a)ᵀ · dy (or its transpose when b is transposed); a shared b sums over all rows.
    pub fn backward_b<F: Float>(d: &MatDims, a: &[F], dy: &[F], db: &mut [F], p: Precision) {
        let (a, dy) = (&*operand(a, p), &*operand(dy, p));
        let (sa, sy) = (d.m * d.k, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        over_batch(d.batch, db, |i, g, th| {
            let (ai, yi) = (&a[i * sa..], &dy[i * sy..]);
            if d.trans_b {
                // b stored (N, K): db = dyᵀ · op(a)
                gemm(d.n, d.k, d.m, g, (yi, t(dy_s)), (ai, d.a_strides()), true, th)
            } else {
                gemm(d.k, d.n, d.m, g, (ai, t(d.a_strides())), (yi, dy_s), true, th)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{MatDims, cpu, cuda};
    use crate::device::Precision;
    use crate::rng::Rng;
    use crate::tensor::Shape;

    /// Runs a launcher's GEMM description on the host: an operand's "address" names the input it
    /// reads (1, 2, 3 → `inputs[0..3]`), after the checks the kernels rely on.
    fn run(g: &cuda::Gemm, inputs: [&[f64]; 3], c: &mut [f64]) {
        assert!(cuda::layout(g.a).is_some() && cuda::layout(g.b).is_some() && g.c.cs == 1, "{g:?}");
        assert_eq!(g.c.ptr, 9, "{g:?}");
        let (a, b) = (inputs[g.a.ptr as usize - 1], inputs[g.b.ptr as usize - 1]);
        for i in 0..g.batch {
            for r in 0..g.m {
                for col in 0..g.n {
                    let mut s = 0.0;
                    for k in 0..g.k {
                        s += a[i * g.a.bs + r * g.a.rs + k * g.a.cs] * b[i * g.b.bs + k * g.b.rs + col * g.b.cs];
                    }
                    let o = i * g.c.bs + r * g.c.rs + col;
                    c[o] = if g.accumulate { c[o] + s } else { s };
                }
            }
        }
    }

    fn close(x: &[f64], y: &[f64]) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + q.abs()))
    }

    #[test]
    fn cuda_gemms_mirror_the_cpu_path() {
        let cases: [(&[usize], &[usize], bool, bool); 9] = [
            (&[5, 7], &[7, 3], false, false),
            (&[2, 5, 7], &[3, 7], false, true),
            (&[7, 5], &[7, 3], true, false),
            (&[7, 5], &[3, 7], true, true),
            (&[2, 3, 5, 7], &[2, 3, 6, 7], false, true),
            (&[2, 3, 5, 6], &[2, 3, 6, 7], false, false),
            (&[3, 6, 5], &[3, 6, 7], true, false),
            (&[3, 6, 5], &[3, 7, 6], true, true),
            (&[1, 4], &[4, 1], false, false),
        ];
        let mut rng = Rng::new(5);
        for (sa, sb, ta, tb) in cases {
            let (a_shape, b_shape) = (Shape::new(sa).unwrap(), Shape::new(sb).unwrap());
            let (d, out_shape): (MatDims, Shape) = MatDims::infer(a_shape, b_shape, ta, tb).unwrap();
            let mut draw = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
            let (a, b, dy) = (draw(a_shape.numel()), draw(b_shape.numel()), draw(out_shape.numel()));
            let (da0, db0) = (draw(a_shape.numel()), draw(b_shape.numel()));

            let mut want = vec![0.0; out_shape.numel()];
            cpu::forward(&d, &a, &b, &mut want, Precision::F32);
            let mut got = vec![f64::NAN; out_shape.numel()];
            run(&cuda::forward_gemm(&d, 1, 2, 9), [&a, &b, &dy], &mut got);
            assert!(close(&got, &want), "forward {sa:?} {sb:?} {ta} {tb}");

            let (mut want, mut got) = (da0.clone(), da0.clone());
            cpu::backward_a(&d, &b, &dy, &mut want, Precision::F32);
            let g = cuda::backward_a_gemm(&d, 2, 3, 9);
            run(&g, [&a, &b, &dy], &mut got);
            assert!(close(&got, &want), "backward_a {sa:?} {sb:?} {ta} {tb}: {g:?}");

            let (mut want, mut got) = (db0.clone(), db0.clone());
            cpu::backward_b(&d, &a, &dy, &mut want, Precision::F32);
            let g = cuda::backward_b_gemm(&d, 1, 3, 9);
            run(&g, [&a, &b, &dy], &mut got);
            assert!(close(&got, &want), "backward_b {sa:?} {sb:?} {ta} {tb}: {g:?}");
        }
    }
}
