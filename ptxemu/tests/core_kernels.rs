//! The project's GEMM kernels (NVRTC's PTX in $PTXEMU_PTX_DIR, if set: scripts/dump-ptx.py) against references computed
//! here in the same arithmetic, so the comparison is exact.

use ptxemu::{LaunchConfig, Memory, Module, launch};

fn module(file: &str) -> Option<Module> {
    let Ok(text) = std::fs::read_to_string(format!("{}/{file}", ptx_dir())) else {
        println!("no {file} in {} (PTXEMU_PTX_DIR; scripts/dump-ptx.py makes it): skipped", ptx_dir());
        return None;
    };
    Some(Module::parse(&text).unwrap())
}

fn bytes<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

/// Parameters of the GEMM kernels: A, B, C, M, N, K, lda, ldb, ldc, sa, sb, sc, batch, flags.
fn gemm_params(a: u64, b: u64, c: u64, m: i32, n: i32, k: i32) -> Vec<Vec<u8>> {
    let l = |v: i64| v.to_le_bytes().to_vec();
    let i = |v: i32| v.to_le_bytes().to_vec();
    vec![
        a.to_le_bytes().to_vec(),
        b.to_le_bytes().to_vec(),
        c.to_le_bytes().to_vec(),
        i(m),
        i(n),
        i(k),
        l(k as i64),
        l(n as i64),
        l(n as i64),
        l(0),
        l(0),
        l(0),
        i(1),
        i(0),
    ]
}

/// A GEMM kernel's launch shape: name, block tile (M, N), threads, dynamic shared bytes.
struct Shape(&'static str, (i32, i32), u32, u32);

fn run_gemm(m: &Module, shape: Shape, a: &[u8], b: &[u8], dims: (i32, i32, i32)) -> Vec<f32> {
    let Shape(name, tile, threads, smem) = shape;
    let (mm, nn, kk) = dims;
    let mut mem = Memory::new();
    let da = mem.alloc(a.len()).unwrap();
    mem.write(da, a).unwrap();
    let db = mem.alloc(b.len()).unwrap();
    mem.write(db, b).unwrap();
    let dc = mem.alloc((mm * nn * 4) as usize).unwrap();
    let p = gemm_params(da, db, dc, mm, nn, kk);
    let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
    let tiles = ((mm + tile.0 - 1) / tile.0) * ((nn + tile.1 - 1) / tile.1);
    let cfg = LaunchConfig {
        grid: (tiles as u32, 1, 1),
        block: (threads, 1, 1),
        dynamic_shared: smem,
        max_dynamic_shared: smem.max(48 * 1024),
    };
    launch(m, name, &mut mem, &cfg, &refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = vec![0u8; (mm * nn * 4) as usize];
    mem.read(dc, &mut out).unwrap();
    out.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn sgemm_matches_sequential_fma() {
    let Some(m) = module("matmul.ptx") else { return };
    let (mm, nn, kk) = (70, 50, 40);
    let a: Vec<f32> = (0..mm * kk).map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0 + 0.001 * i as f32).collect();
    let b: Vec<f32> = (0..kk * nn).map(|i| ((i * 53 % 89) as f32 - 44.0) / 8.0 - 0.0007 * i as f32).collect();
    let c = run_gemm(
        &m,
        Shape("sgemm_64x64_nn", (64, 64), 256, 0),
        &bytes(&a, |x| x.to_le_bytes().to_vec()),
        &bytes(&b, |x| x.to_le_bytes().to_vec()),
        (mm, nn, kk),
    );
    for i in 0..mm as usize {
        for j in 0..nn as usize {
            // The kernel: acc = fmaf(a, b, acc) over k in order.
            let mut acc = 0f32;
            for k in 0..kk as usize {
                acc = a[i * kk as usize + k].mul_add(b[k * nn as usize + j], acc);
            }
            assert_eq!(c[i * nn as usize + j], acc, "C[{i}][{j}]");
        }
    }
}

#[test]
fn bf16_mma_gemm_matches_exact_sums() {
    bf16_gemm(Shape("bf16_gemm_64x64_nn", (64, 64), 128, 4 * 8192), (80, 72, 64));
    // The widest tile: 8 warps, 96 KiB of dynamic shared memory, thousands of registers.
    bf16_gemm(Shape("bf16_gemm_128x256_nn", (128, 256), 256, 4 * 24576), (136, 264, 96));
}

fn bf16_gemm(shape: Shape, (mm, nn, kk): (i32, i32, i32)) {
    let Some(m) = module("matmul.ptx") else { return };
    // Small integers: exact in bf16 and in every sum, whatever the order.
    let a: Vec<i32> = (0..mm * kk).map(|i| (i * 7 % 9) - 4).collect();
    let b: Vec<i32> = (0..kk * nn).map(|i| (i * 5 % 7) - 3).collect();
    let bf = |v: i32| ((v as f32).to_bits() >> 16) as u16;
    let ab = bytes(&a, |x| bf(x).to_le_bytes().to_vec());
    let bb = bytes(&b, |x| bf(x).to_le_bytes().to_vec());
    let name = shape.0;
    let c = run_gemm(&m, shape, &ab, &bb, (mm, nn, kk));
    for i in 0..mm as usize {
        for j in 0..nn as usize {
            let want: i32 = (0..kk as usize).map(|k| a[i * kk as usize + k] * b[k * nn as usize + j]).sum();
            assert_eq!(c[i * nn as usize + j], want as f32, "{name}: C[{i}][{j}]");
        }
    }
}

#[test]
fn tf32_mma_gemm_matches_exact_sums() {
    let Some(m) = module("matmul.ptx") else { return };
    let (mm, nn, kk) = (64, 96, 40);
    let a: Vec<f32> = (0..mm * kk).map(|i| ((i * 7 % 11) - 5) as f32).collect();
    let b: Vec<f32> = (0..kk * nn).map(|i| ((i * 3 % 13) - 6) as f32).collect();
    let c = run_gemm(
        &m,
        Shape("tf32_gemm_64x64_nn", (64, 64), 128, 3 * 16384),
        &bytes(&a, |x| x.to_le_bytes().to_vec()),
        &bytes(&b, |x| x.to_le_bytes().to_vec()),
        (mm, nn, kk),
    );
    for i in 0..mm as usize {
        for j in 0..nn as usize {
            let want: f32 = (0..kk as usize).map(|k| a[i * kk as usize + k] * b[k * nn as usize + j]).sum();
            assert_eq!(c[i * nn as usize + j], want, "C[{i}][{j}]");
        }
    }
}

#[test]
fn pairwise_dots_last_block_reduces() {
    // Blocks communicate (membar, atomic counter, volatile reads): they run in block order, and
    // the last one to count itself in sums every block's partials.
    let Some(m) = module("optim.ptx") else { return };
    assert!(m.kernel("pairwise_dots").unwrap().communicates);
    let (k, n, grid) = (3usize, 3000usize, 4u32);
    let pairs = k * (k + 1) / 2;
    let mut mem = Memory::new();
    // Small integers: every partial and total is exact, whatever the order of summation.
    let g: Vec<Vec<f32>> = (0..k).map(|t| (0..n).map(|i| ((i * (t + 2) + t) % 7) as f32 - 3.0).collect()).collect();
    let mut ptrs = [0u64; 8];
    for t in 0..k {
        ptrs[t] = mem.alloc(n * 4).unwrap();
        mem.write(ptrs[t], &bytes(&g[t], |x| x.to_le_bytes().to_vec())).unwrap();
    }
    let partials = mem.alloc(grid as usize * pairs * 4).unwrap();
    let out = mem.alloc(pairs * 8).unwrap();
    let done = mem.alloc(4).unwrap();
    let mut p: Vec<Vec<u8>> = ptrs.iter().map(|a| a.to_le_bytes().to_vec()).collect();
    p.push((k as u32).to_le_bytes().to_vec());
    p.push((n as u64).to_le_bytes().to_vec());
    for a in [partials, out, done] {
        p.push(a.to_le_bytes().to_vec());
    }
    let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
    let cfg = LaunchConfig { grid: (grid, 1, 1), block: (256, 1, 1), dynamic_shared: 0, max_dynamic_shared: 48 * 1024 };
    launch(&m, "pairwise_dots", &mut mem, &cfg, &refs).unwrap();
    let mut o = vec![0u8; pairs * 8];
    mem.read(out, &mut o).unwrap();
    let got: Vec<f64> = o.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    let mut q = 0;
    for i in 0..k {
        for j in i..k {
            let want: f32 = (0..n).map(|e| g[i][e] * g[j][e]).sum();
            assert_eq!(got[q], want as f64, "pair ({i}, {j})");
            q += 1;
        }
    }
    let mut d = [0u8; 4];
    mem.read(done, &mut d).unwrap();
    assert_eq!(u32::from_le_bytes(d), 0, "the last block resets the counter");
}

/// The folder of NVRTC's PTX of the project's kernels ($PTXEMU_PTX_DIR; the engine's own tests
/// run every kernel through the emulator, these opt-in ones check it without the engine).
fn ptx_dir() -> String {
    std::env::var("PTXEMU_PTX_DIR").unwrap_or_else(|_| "(PTXEMU_PTX_DIR unset)".into())
}
