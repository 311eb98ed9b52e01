//! The CPU path's GEMM, and only that: `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)` on
//! strided operands, in f32 or f64, through the fastest backend this process finds.
//!
//! Backends, picked once per process ([`backend`]):
//! - a BLAS loaded at run time (libloading; no link-time dependency), found like libnvrtc:
//!   `ENGINE_BLAS` (a library file), else `ENGINE_BLAS_DIR`, the checkout's and the working
//!   directory's `.cache/blas` (where `scripts/install-blas.sh` puts the PyPI wheel
//!   `scipy-openblas32`), the active venv (`VIRTUAL_ENV`, whose `lib/` holds the `mkl` wheel's
//!   libmkl_rt), and the executable's folder. Intel MKL (libmkl_rt) is preferred over OpenBLAS
//!   where both are found;
//! - the `gemm` crate (always there; AVX2/FMA kernels picked per CPU at run time), the fallback
//!   when no BLAS is found, and forced with `ENGINE_CPU_GEMM=builtin`.
//!
//! Threads: the BLAS runs single-threaded (`openblas_set_num_threads(1)`, MKL's sequential
//! layer) and a product large enough is split into `threads` blocks of rows (or columns) of
//! `dst`, one BLAS call each on rayon's pool, so that the BLAS's threads and rayon's never
//! compete for the cores. Each element of `dst` is then one BLAS dot product over the whole of k,
//! whatever the split; for a given backend, library, CPU and thread count the result is the same
//! bit for bit on every run (MKL is put in its run-to-run reproducible mode, `MKL_CBWR_AUTO`).

use crate::float::Float;
use std::any::TypeId;
use std::ffi::{CStr, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A strided matrix operand: data, (row stride, column stride).
pub type Operand<'a, F> = (&'a [F], (isize, isize));

/// Which code runs a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The `gemm` crate.
    Builtin,
    /// The BLAS found at run time ([`blas`]).
    Blas,
}

/// The backend [`gemm`] uses: the BLAS when one was found and `ENGINE_CPU_GEMM` is not `builtin`.
pub fn backend() -> Backend {
    static CHOICE: OnceLock<Backend> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let forced = std::env::var("ENGINE_CPU_GEMM").is_ok_and(|v| v.eq_ignore_ascii_case("builtin"));
        if !forced && blas().is_some() { Backend::Blas } else { Backend::Builtin }
    })
}

/// One line naming the backend [`gemm`] uses, e.g. for a bench's or the CLI's header.
pub fn describe() -> String {
    match (backend(), blas()) {
        (Backend::Blas, Some(b)) => format!("{} ({})", b.name, b.path.display()),
        _ => "gemm crate (built in)".to_string(),
    }
}

/// `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)`, multi-threaded over `threads` for large
/// products, through [`backend`].
pub fn gemm<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    lhs: Operand<F>,
    rhs: Operand<F>,
    accumulate: bool,
    threads: usize,
) {
    if !crate::profile::enabled() {
        return gemm_on(backend(), m, n, k, dst, lhs, rhs, accumulate, threads);
    }
    let started = Instant::now();
    gemm_on(backend(), m, n, k, dst, lhs, rhs, accumulate, threads);
    let mut nanos = started.elapsed().as_nanos() as u64;
    // A single-threaded call inside a parallel loop (the per-head products) runs beside the
    // others: its share of the wall time is about its time over the pool's threads.
    if threads == 1 && rayon::current_thread_index().is_some() {
        nanos /= rayon::current_num_threads().max(1) as u64;
    }
    crate::profile::add_gemm(nanos);
}

/// [`gemm`] through a given backend (`Blas` without one found runs the built-in one).
pub fn gemm_on<F: Float>(
    backend: Backend,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    lhs: Operand<F>,
    rhs: Operand<F>,
    accumulate: bool,
    threads: usize,
) {
    assert!(dst.len() >= m * n, "gemm: dst too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(F::ZERO);
        }
        return;
    }
    let reach = |(rs, cs): (isize, isize), r: usize, c: usize| (r - 1) * rs as usize + (c - 1) * cs as usize + 1;
    assert!(lhs.0.len() >= reach(lhs.1, m, k) && rhs.0.len() >= reach(rhs.1, k, n), "gemm: operand too small");
    let threads = if m * n * k >= 48 * 48 * 48 { threads.max(1) } else { 1 };
    if backend == Backend::Blas
        && let Some(b) = blas()
        && b.run(m, n, k, dst, lhs, rhs, accumulate, threads)
    {
        return;
    }
    builtin(m, n, k, dst, lhs, rhs, accumulate, threads);
}

/// The `gemm` crate, as the CPU path has always run it.
fn builtin<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    lhs: Operand<F>,
    rhs: Operand<F>,
    accumulate: bool,
    threads: usize,
) {
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: gemm_on's asserts keep every strided access inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.1.1,
            lhs.1.0,
            rhs.0.as_ptr(),
            rhs.1.1,
            rhs.1.0,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            par,
        );
    }
}

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type CblasGemm<T> = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    T,
    *const T,
    c_int,
    *const T,
    c_int,
    T,
    *mut T,
    c_int,
);

/// A BLAS library loaded for the rest of the process: its `cblas_sgemm` and `cblas_dgemm`.
pub struct Blas {
    /// Library and version, e.g. "OpenBLAS 0.3.30 (SapphireRapids)".
    pub name: String,
    pub path: PathBuf,
    sgemm: CblasGemm<f32>,
    dgemm: CblasGemm<f64>,
    set_threads: Option<unsafe extern "C" fn(c_int)>,
    _lib: libloading::Library,
}

/// The BLAS found at run time (see the module's doc), loaded once; `None` when there is none.
pub fn blas() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(|| {
        if let Some(path) = std::env::var_os("ENGINE_BLAS") {
            return Blas::open(Path::new(&path));
        }
        candidates().iter().find_map(|p| if p.is_file() { Blas::open(p) } else { None })
    })
    .as_ref()
}

/// Library files that may be a BLAS, best first: MKL's in each folder, then OpenBLAS's.
fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("ENGINE_BLAS_DIR") {
        dirs.push(v.into());
    }
    let cache = Path::new(".cache/blas");
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(cache));
    dirs.push(cache.to_path_buf());
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        dirs.push(Path::new(&v).join("lib"));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.join("blas"));
        dirs.push(dir.to_path_buf());
    }
    let mut files = Vec::new();
    for dir in &dirs {
        for name in ["libmkl_rt.so.3", "libmkl_rt.so.2", "lib/libmkl_rt.so.3", "lib/libmkl_rt.so.2"] {
            files.push(dir.join(name));
        }
    }
    for dir in &dirs {
        files.push(dir.join("scipy_openblas32/lib/libscipy_openblas.so"));
        files.push(dir.join("libscipy_openblas.so"));
    }
    files
}

impl Blas {
    /// Loads `path` as MKL (`cblas_sgemm`) or scipy-openblas (`scipy_cblas_sgemm`) and sets it up:
    /// single-threaded, reproducible. `None` when it is neither or does not load.
    fn open(path: &Path) -> Option<Blas> {
        // SAFETY: loading a BLAS runs its initialisers (OpenBLAS starts its idle thread pool).
        let lib = unsafe { libloading::Library::new(path) }.ok()?;
        // SAFETY: each symbol is looked up with the C signature the library documents.
        unsafe {
            if let Ok(sgemm) = lib.get::<CblasGemm<f32>>(b"scipy_cblas_sgemm\0") {
                let (sgemm, dgemm) = (*sgemm, *lib.get::<CblasGemm<f64>>(b"scipy_cblas_dgemm\0").ok()?);
                let set = *lib.get::<unsafe extern "C" fn(c_int)>(b"scipy_openblas_set_num_threads\0").ok()?;
                set(1);
                let config = lib.get::<unsafe extern "C" fn() -> *const c_char>(b"scipy_openblas_get_config\0");
                let core = lib.get::<unsafe extern "C" fn() -> *const c_char>(b"scipy_openblas_get_corename\0");
                let text = |f: Option<unsafe extern "C" fn() -> *const c_char>| {
                    f.map(|f| CStr::from_ptr(f()).to_string_lossy().into_owned()).unwrap_or_default()
                };
                let version = text(config.ok().map(|f| *f));
                let version = version.split_whitespace().nth(1).unwrap_or("").to_string();
                let name = format!("OpenBLAS {version} ({})", text(core.ok().map(|f| *f)));
                let blas = Blas { name, path: path.into(), sgemm, dgemm, set_threads: Some(set), _lib: lib };
                return Some(blas).filter(Blas::works);
            }
            let sgemm = *lib.get::<CblasGemm<f32>>(b"cblas_sgemm\0").ok()?;
            let dgemm = *lib.get::<CblasGemm<f64>>(b"cblas_dgemm\0").ok()?;
            let mut name = "BLAS".to_string();
            if let Ok(layer) = lib.get::<unsafe extern "C" fn(c_int) -> c_int>(b"MKL_Set_Threading_Layer\0") {
                // libmkl_rt exits the process when it cannot load its parts at the first call:
                // take it only beside them (the wheel's layout).
                let beside =
                    |stem: &str| ["2", "3"].iter().any(|v| path.with_file_name(format!("{stem}.so.{v}")).is_file());
                if !beside("libmkl_core") || !beside("libmkl_sequential") {
                    return None;
                }
                // Before any other MKL call: the sequential layer (no OpenMP runtime needed, no
                // threads of its own), then run-to-run reproducible results (MKL_CBWR_AUTO = 2).
                const MKL_THREADING_SEQUENTIAL: c_int = 1;
                if layer(MKL_THREADING_SEQUENTIAL) != MKL_THREADING_SEQUENTIAL {
                    return None;
                }
                if let Ok(cbwr) = lib.get::<unsafe extern "C" fn(c_int) -> c_int>(b"MKL_CBWR_Set\0") {
                    cbwr(2);
                }
                let mut buf = [0 as c_char; 256];
                if let Ok(v) = lib.get::<unsafe extern "C" fn(*mut c_char, c_int)>(b"MKL_Get_Version_String\0") {
                    v(buf.as_mut_ptr(), buf.len() as c_int - 1);
                    name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().trim().to_string();
                }
            }
            Some(Blas { name, path: path.into(), sgemm, dgemm, set_threads: None, _lib: lib }).filter(Blas::works)
        }
    }

    /// A 2×2 product in f32 and f64 gives the exact answer.
    fn works(&self) -> bool {
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
        let (mut c, mut c32) = ([0f64; 4], [0f32; 4]);
        self.run(2, 2, 2, &mut c, (&a, (2, 1)), (&b, (1, 2)), false, 1);
        let (a32, b32) = (a.map(|v| v as f32), b.map(|v| v as f32));
        self.run(2, 2, 2, &mut c32, (&a32, (2, 1)), (&b32, (1, 2)), false, 1);
        c == [17.0, 23.0, 39.0, 53.0] && c32 == [17.0, 23.0, 39.0, 53.0]
    }

    /// Sets the BLAS's own thread count (1 as loaded; benches compare its own threading); false
    /// when it cannot (MKL runs its sequential layer).
    pub fn set_threads(&self, n: usize) -> bool {
        // SAFETY: a plain setter.
        self.set_threads.map(|f| unsafe { f(n as c_int) }).is_some()
    }

    /// Runs the product through the BLAS split into `threads` blocks; false (nothing done) when
    /// an operand's strides are not a BLAS layout or a size does not fit its 32-bit integers.
    fn run<F: Float>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [F],
        lhs: Operand<F>,
        rhs: Operand<F>,
        accumulate: bool,
        threads: usize,
    ) -> bool {
        let (Some(la), Some(lb)) = (layout(m, k, lhs.1), layout(k, n, rhs.1)) else {
            return false;
        };
        if [m, n, k].iter().any(|&d| d > c_int::MAX as usize) {
            return false;
        }
        let f32 = TypeId::of::<F>() == TypeId::of::<f32>();
        if !f32 && TypeId::of::<F>() != TypeId::of::<f64>() {
            return false;
        }
        // Blocks of whole rows of dst when there are enough rows, else of columns; block edges on
        // multiples of 16 (the micro-kernels' tile), so blocks do not end in ragged tiles.
        let by_rows = m >= n || m >= 128;
        let len = if by_rows { m } else { n };
        let step = len.div_ceil(threads).next_multiple_of(16).min(len);
        let blocks = len.div_ceil(step);
        let (pa, pb, pc) = (Ptr(lhs.0.as_ptr() as *mut F), Ptr(rhs.0.as_ptr() as *mut F), Ptr(dst.as_mut_ptr()));
        let one_block = |i: usize| {
            let (start, size) = (i * step, step.min(len - i * step));
            let (rows, cols) = if by_rows { (size, n) } else { (m, size) };
            // SAFETY: the block's operands are sub-matrices of the asserted ones, and blocks
            // write disjoint parts of dst.
            unsafe {
                let (a, b, c) = if by_rows {
                    (pa.at(start as isize * lhs.1.0), pb.0, pc.at((start * n) as isize))
                } else {
                    (pa.0, pb.at(start as isize * rhs.1.1), pc.at(start as isize))
                };
                let (ta, tb) = (la.0, lb.0);
                let (lda, ldb, ldc) = (la.1, lb.1, n as c_int);
                let (m, n, k) = (rows as c_int, cols as c_int, k as c_int);
                if f32 {
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
                    (self.sgemm)(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
                } else {
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    let (a, b, c) = (a as *const f64, b as *const f64, c as *mut f64);
                    (self.dgemm)(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
                }
            }
        };
        // The calling thread runs the first block itself while rayon's threads take the others;
        // blocks are claimed from a counter, so that the caller also runs those no pool thread
        // has started (a busy machine: it does not wait for a thread to be scheduled). Which
        // thread runs a block does not change its result.
        let next = AtomicUsize::new(1);
        let rest = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= blocks {
                    break;
                }
                one_block(i);
            }
        };
        let rest = &rest;
        rayon::in_place_scope(|s| {
            for _ in 1..blocks {
                s.spawn(move |_| rest());
            }
            one_block(0);
            rest();
        });
        true
    }
}

/// A raw pointer that blocks of one product share across rayon's threads.
#[derive(Clone, Copy)]
struct Ptr<F>(*mut F);
// SAFETY: the blocks read shared operands and write disjoint parts of dst.
unsafe impl<F> Send for Ptr<F> {}
unsafe impl<F> Sync for Ptr<F> {}
impl<F> Ptr<F> {
    /// SAFETY: the caller keeps the offset inside the allocation.
    unsafe fn at(self, offset: isize) -> *mut F {
        unsafe { self.0.offset(offset) }
    }
}

/// A (rows × cols) operand's CBLAS row-major form: (transposed?, leading dimension), or `None`
/// when neither stride is 1 with the other at least the row's length.
fn layout(rows: usize, cols: usize, (rs, cs): (isize, isize)) -> Option<(c_int, c_int)> {
    let ld = |s: isize, min: usize| if s >= min.max(1) as isize { c_int::try_from(s).ok() } else { None };
    if cs == 1 || cols == 1 {
        // row-major: row r at r·rs
        let l = if rows == 1 { c_int::try_from(cols).ok() } else { ld(rs, cols) };
        if let Some(l) = l {
            return Some((NO_TRANS, l));
        }
    }
    if rs == 1 || rows == 1 {
        // column-major (a transposed row-major matrix): column c at c·cs
        let l = if cols == 1 { c_int::try_from(rows).ok() } else { ld(cs, rows) };
        if let Some(l) = l {
            return Some((TRANS, l));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{Backend, gemm_on, layout};
    use crate::rng::Rng;

    #[test]
    fn layouts() {
        assert_eq!(layout(3, 4, (4, 1)), Some((111, 4)));
        assert_eq!(layout(3, 4, (1, 3)), Some((112, 3)));
        assert_eq!(layout(3, 4, (9, 1)), Some((111, 9)));
        assert_eq!(layout(3, 4, (2, 1)), None);
        assert_eq!(layout(3, 4, (2, 3)), None);
        assert_eq!(layout(1, 4, (0, 1)), Some((111, 4)));
        assert_eq!(layout(4, 1, (1, 0)), Some((111, 1)));
        assert_eq!(layout(4, 1, (0, 7)), None);
        assert_eq!(layout(4, 2, (1, 4)), Some((112, 4)));
    }

    /// Every backend, on every layout, split or not, against a plain triple loop in f64.
    #[test]
    fn backends_agree_with_a_triple_loop() {
        let mut rng = Rng::new(3);
        for (m, n, k) in [(1, 1, 1), (5, 7, 3), (70, 3, 50), (3, 90, 50), (100, 60, 70), (130, 33, 17)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
                let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
                let c0: Vec<f64> = (0..m * n).map(|_| rng.normal()).collect();
                let sa = if ta { (1, m as isize) } else { (k as isize, 1) };
                let sb = if tb { (1, k as isize) } else { (n as isize, 1) };
                let at = |r: usize, c: usize| a[r * sa.0 as usize + c * sa.1 as usize];
                let bt = |r: usize, c: usize| b[r * sb.0 as usize + c * sb.1 as usize];
                for accumulate in [false, true] {
                    let want: Vec<f64> = (0..m * n)
                        .map(|i| {
                            let s: f64 = (0..k).map(|p| at(i / n, p) * bt(p, i % n)).sum();
                            if accumulate { c0[i] + s } else { s }
                        })
                        .collect();
                    for backend in [Backend::Builtin, Backend::Blas] {
                        for threads in [1, 2, 3] {
                            let mut got = c0.clone();
                            gemm_on(backend, m, n, k, &mut got, (&a, sa), (&b, sb), accumulate, threads);
                            let ok = got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-12 * (1.0 + w.abs()));
                            assert!(ok, "{backend:?} {m}×{n}×{k} {ta} {tb} acc {accumulate} threads {threads}");
                            let mut got32 = c0.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                            let (a32, b32): (Vec<f32>, Vec<f32>) =
                                (a.iter().map(|&v| v as f32).collect(), b.iter().map(|&v| v as f32).collect());
                            gemm_on(backend, m, n, k, &mut got32, (&a32, sa), (&b32, sb), accumulate, threads);
                            let ok =
                                got32.iter().zip(&want).all(|(g, w)| (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()));
                            assert!(ok, "f32 {backend:?} {m}×{n}×{k} {ta} {tb} acc {accumulate} threads {threads}");
                        }
                    }
                }
            }
        }
    }
}
