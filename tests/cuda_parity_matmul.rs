//! GPU suite: the GEMM kernels of kernels/matmul.cu.
//! Through the tape (forward and both gradients against the CPU path, see tests/common) in float32
//! (F32_TOL) and tf32 (TF32_TOL), on shapes that divide no tile; then every kernel directly (each
//! tile configuration and layout, ragged and aligned shapes, shared operands, accumulation) against
//! a float64 host reference: float32 and tf32 inputs as given, bf16 inputs rounded to bf16.

mod common;
use common::{BF16_TOL, Build, F32_TOL, TF32_TOL, gpu, parity, rel};
use engine::device::cuda::GemmPrecision;
use engine::device::{Buffer, Cuda, Element};
use engine::ops::matmul::cuda::{Gemm, Kind, View, bf16_gemm, configs, gemm, gemm_with};
use engine::rng::Rng;
use engine::{Device, Tape, Tensor};
use std::sync::Arc;

/// Checks `build` in float32, then again with tf32 tensor cores.
fn both(name: &str, shapes: &[&[usize]], build: &Build<'_>) {
    let Some(g) = gpu() else { return };
    let Device::Cuda(dev) = &g else { unreachable!("gpu() returns a CUDA device") };
    dev.set_gemm_precision(GemmPrecision::F32);
    parity(&g, &format!("{name} f32"), shapes, F32_TOL, build);
    dev.set_gemm_precision(GemmPrecision::Tf32);
    parity(&g, &format!("{name} tf32"), shapes, TF32_TOL, build);
}

fn mm(ta: bool, tb: bool) -> impl Fn(&mut Tape<f32>, &[Tensor]) -> engine::Result<Tensor> {
    move |t, x| t.matmul(x[0], x[1], ta, tb)
}

#[test]
fn plain() {
    both("matmul 37×53·53×29", &[&[37, 53], &[53, 29]], &mm(false, false));
}

#[test]
fn linear_layout() {
    // x (B, T, IN) · W (OUT, IN)ᵀ: the forward of every linear layer.
    both("linear 3×37×384·(1000×384)ᵀ", &[&[3, 37, 384], &[1000, 384]], &mm(false, true));
}

#[test]
fn transposed_a() {
    both("matmul (53×37)ᵀ·53×29", &[&[53, 37], &[53, 29]], &mm(true, false));
}

#[test]
fn both_transposed() {
    both("matmul (53×37)ᵀ·(29×53)ᵀ", &[&[53, 37], &[29, 53]], &mm(true, true));
}

#[test]
fn attention_scores() {
    // q (B, NH, T, HS) · k (B, NH, T, HS)ᵀ
    both("scores", &[&[3, 5, 37, 64], &[3, 5, 37, 64]], &mm(false, true));
}

#[test]
fn attention_context() {
    // probs (B, NH, T, T) · v (B, NH, T, HS)
    both("context", &[&[3, 5, 37, 37], &[3, 5, 37, 64]], &mm(false, false));
}

#[test]
fn attention_at_full_length() {
    // T = 128, aligned everywhere: the vectorised loads.
    both("scores T=128", &[&[2, 3, 128, 64], &[2, 3, 128, 64]], &mm(false, true));
    both("context T=128", &[&[2, 3, 128, 128], &[2, 3, 128, 64]], &mm(false, false));
}

#[test]
fn batched_transposed_a() {
    both("bmm aᵀ (3,5,64,37)ᵀ·(3,5,64,29)", &[&[3, 5, 64, 37], &[3, 5, 64, 29]], &mm(true, false));
}

#[test]
fn same_operand_twice() {
    both("x·xᵀ", &[&[37, 53]], &|t, x| t.matmul(x[0], x[0], false, true));
}

#[test]
fn large() {
    // Ragged and aligned, many tiles in every grid dimension and many K-steps. On the emulator
    // the sizes are a half to a third as large (14× less work): still ragged or aligned, with
    // 5-8 tiles of 64 per dimension and 12 K-steps of the 3-stage tf32 ring; the rest of the
    // full sizes' work only repeats the same tiles.
    let Some(g) = gpu() else { return };
    let [(m, k, n), (m2, k2, n2)] =
        if common::emulated(&g) { [(257, 385, 289), (256, 384, 320)] } else { [(513, 769, 1025), (512, 768, 1024)] };
    both(&format!("matmul {m}×{k}·{k}×{n}"), &[&[m, k], &[k, n]], &mm(false, false));
    both(&format!("matmul {m2}×{k2}·{k2}×{n2}"), &[&[m2, k2], &[k2, n2]], &mm(false, false));
}

#[test]
fn tiny_inner_dimension() {
    both("matmul K=1", &[&[37, 1], &[1, 29]], &mm(false, false));
    both("matmul K=3", &[&[37, 3], &[3, 29]], &mm(false, false));
    both("matmul K=3 aᵀbᵀ", &[&[3, 37], &[29, 3]], &mm(true, true));
}

// ---- the kernels directly ------------------------------------------------------------------------

fn bf16_bits(x: f32) -> u16 {
    // round to nearest even (inputs are finite)
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

fn bf16_value(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// One problem for the direct tests: (batch, m, n, k, b shared, accumulate).
type Case = (usize, usize, usize, usize, bool, bool);

/// Host matrices of one case, a device copy of each, and the float64 reference.
struct Problem {
    g: Gemm,
    a: Vec<f32>,
    b: Vec<f32>,
    c0: Vec<f32>,
}

impl Problem {
    /// Random operands in layout (a transposed, b transposed), dense items.
    fn new(case: Case, ta: bool, tb: bool, bf16: bool, seed: u64) -> Problem {
        let (batch, m, n, k, shared_b, accumulate) = case;
        let mut rng = Rng::new(seed);
        let mut draw = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    let v = rng.normal() as f32;
                    if bf16 { bf16_value(bf16_bits(v)) } else { v }
                })
                .collect()
        };
        let a = draw(batch * m * k);
        let b = draw(if shared_b { k * n } else { batch * k * n });
        let c0 = draw(batch * m * n);
        let av = if ta { View::col_major(0, m, k) } else { View::row_major(0, m, k) };
        let bv = if tb { View::col_major(0, k, n) } else { View::row_major(0, k, n) };
        let g = Gemm {
            batch,
            m,
            n,
            k,
            a: av,
            b: if shared_b { bv.shared() } else { bv },
            c: View::row_major(0, m, n),
            accumulate,
        };
        Problem { g, a, b, c0 }
    }

    fn reference(&self) -> Vec<f64> {
        let g = &self.g;
        let mut out = vec![0.0; g.batch * g.m * g.n];
        for i in 0..g.batch {
            for r in 0..g.m {
                for c in 0..g.n {
                    let mut s = 0.0f64;
                    for k in 0..g.k {
                        let a = self.a[i * g.a.bs + r * g.a.rs + k * g.a.cs] as f64;
                        let b = self.b[i * g.b.bs + k * g.b.rs + c * g.b.cs] as f64;
                        s += a * b;
                    }
                    let o = i * g.c.bs + r * g.c.rs + c;
                    out[o] = s + if g.accumulate { self.c0[o] as f64 } else { 0.0 };
                }
            }
        }
        out
    }

    /// Runs configuration `config` of `kind` (None: the launcher's choice) on the GPU.
    fn run(&self, dev: &Arc<Cuda>, kind: Kind, config: Option<usize>) -> Vec<f32> {
        let device = Device::Cuda(dev.clone());
        // Engine buffers, so that the test runs on a GPU and on the emulator alike.
        fn upload<T: Element>(device: &Device, v: &[T]) -> Buffer<T> {
            let mut b = Buffer::new(device);
            b.grow_to(v.len()).unwrap();
            b.write(0, v).unwrap();
            b
        }
        let c_init: Vec<f32> = if self.g.accumulate { self.c0.clone() } else { vec![f32::NAN; self.c0.len()] };
        let to16 = |v: &[f32]| v.iter().map(|&x| bf16_bits(x)).collect::<Vec<u16>>();
        let run = |a: u64, b: u64, c: u64| {
            let g = Gemm {
                a: View { ptr: a, ..self.g.a },
                b: View { ptr: b, ..self.g.b },
                c: View { ptr: c, ..self.g.c },
                ..self.g
            };
            match (config, kind) {
                (Some(i), _) => gemm_with(dev, &g, kind, i).unwrap(),
                (None, Kind::Bf16 { out_bf16 }) => bf16_gemm(dev, &g, out_bf16).unwrap(),
                (None, _) => gemm(dev, &g, kind).unwrap(),
            }
            dev.synchronize().unwrap();
        };
        let (a16, b16);
        let (a32, b32);
        let (ap, bp) = if let Kind::Bf16 { .. } = kind {
            a16 = upload(&device, &to16(&self.a));
            b16 = upload(&device, &to16(&self.b));
            (a16.device_ptr().unwrap(), b16.device_ptr().unwrap())
        } else {
            a32 = upload(&device, &self.a);
            b32 = upload(&device, &self.b);
            (a32.device_ptr().unwrap(), b32.device_ptr().unwrap())
        };
        if kind == (Kind::Bf16 { out_bf16: true }) {
            let c = upload(&device, &to16(&c_init));
            run(ap, bp, c.device_ptr().unwrap());
            c.read(0..c_init.len()).unwrap().into_iter().map(bf16_value).collect()
        } else {
            let c = upload(&device, &c_init);
            run(ap, bp, c.device_ptr().unwrap());
            c.read(0..c_init.len()).unwrap()
        }
    }
}

/// Every configuration of `kind`, every layout, ragged and aligned shapes, against float64.
fn direct(kind: Kind, tol: f64) {
    let Some(Device::Cuda(dev)) = gpu() else { return };
    let bf16 = matches!(kind, Kind::Bf16 { .. });
    for (ci, cfg) in configs(kind).iter().enumerate() {
        let cases: [Case; 3] = [
            // ragged edges, element-wise loads, one b for all items, accumulating
            (2, cfg.bm + 37, cfg.bn + 29, 70, true, true),
            // aligned: 16-byte loads
            (3, cfg.bm + 16, cfg.bn + 40, 96, false, false),
            // one row, small k
            (2, 1, cfg.bn - 3, 5, false, true),
        ];
        for (li, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)].into_iter().enumerate() {
            for (i, &case) in cases.iter().enumerate() {
                let p = Problem::new(case, ta, tb, bf16, (ci * 16 + li * 4 + i) as u64 + 1);
                let want = p.reference();
                let got = p.run(&dev, kind, Some(ci));
                let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                assert!(got.iter().all(|v| v.is_finite()), "{} layout {li} case {case:?}: non-finite output", cfg.name);
                let e = rel(&got, &want32);
                println!("{} layout {li} case {case:?}: {e:.2e}", cfg.name);
                assert!(e <= tol, "{} layout {li} case {case:?}: relative error {e:.3e} > {tol:e}", cfg.name);
            }
        }
    }
}

#[test]
fn sgemm_kernels() {
    direct(Kind::F32, F32_TOL);
}

#[test]
fn tf32_kernels() {
    direct(Kind::Tf32, TF32_TOL);
}

#[test]
fn bf16_kernels_f32_out() {
    direct(Kind::Bf16 { out_bf16: false }, BF16_TOL);
}

#[test]
fn bf16_kernels_bf16_out() {
    direct(Kind::Bf16 { out_bf16: true }, BF16_TOL);
}

/// `Kind::Bf16Rounded` (the `--precision bf16` path): float32 operands in any layout, shared or
/// batched, copied to bf16 (rounded to nearest even) by the launcher, then the bf16 kernels with
/// float32 output; against float64 on the operands rounded on the host, so only the float32
/// accumulation differs.
#[test]
fn bf16_rounded_operands() {
    let Some(Device::Cuda(dev)) = gpu() else { return };
    let cases: [Case; 3] = [(2, 150, 99, 70, true, true), (3, 128, 256, 96, false, false), (1, 1, 61, 5, false, true)];
    for (li, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)].into_iter().enumerate() {
        for (i, &case) in cases.iter().enumerate() {
            let p = Problem::new(case, ta, tb, false, (li * 4 + i) as u64 + 100);
            let round = |v: &[f32]| v.iter().map(|&x| bf16_value(bf16_bits(x))).collect::<Vec<f32>>();
            let rounded = Problem { a: round(&p.a), b: round(&p.b), c0: p.c0.clone(), ..p };
            let want: Vec<f32> = rounded.reference().iter().map(|&v| v as f32).collect();
            let got = p.run(&dev, Kind::Bf16Rounded, None);
            let e = rel(&got, &want);
            println!("bf16-rounded layout {li} case {case:?}: {e:.2e}");
            assert!(e <= F32_TOL, "layout {li} case {case:?}: relative error {e:.3e}");
        }
    }
}

#[test]
fn bf16_launcher_choice() {
    // The bf16 launcher's own tile choice on BERT-like shapes: a linear forward and an attention
    // product, float32 and bf16 out.
    let Some(Device::Cuda(dev)) = gpu() else { return };
    for kind in [Kind::Bf16 { out_bf16: false }, Kind::Bf16 { out_bf16: true }] {
        for (case, ta, tb) in
            [((1, 300, 520, 136, false, false), false, true), ((24, 128, 128, 64, false, false), false, true)]
        {
            let p = Problem::new(case, ta, tb, true, 7);
            let want: Vec<f32> = p.reference().iter().map(|&v| v as f32).collect();
            let e = rel(&p.run(&dev, kind, None), &want);
            println!("{kind:?} {case:?}: {e:.2e}");
            assert!(e <= BF16_TOL, "{kind:?} {case:?}: relative error {e:.3e} > {BF16_TOL:e}");
        }
    }
}

#[test]
fn more_items_than_a_grid_dimension() {
    // 70 000 items fold into grid y and z.
    let Some(Device::Cuda(dev)) = gpu() else { return };
    for kind in [Kind::F32, Kind::Tf32, Kind::Bf16 { out_bf16: false }] {
        let p = Problem::new((70_000, 3, 5, 4, false, false), false, false, kind != Kind::F32 && kind != Kind::Tf32, 3);
        let want: Vec<f32> = p.reference().iter().map(|&v| v as f32).collect();
        let e = rel(&p.run(&dev, kind, None), &want);
        let tol = if kind == Kind::F32 { F32_TOL } else { TF32_TOL };
        assert!(e <= tol, "{kind:?} with 70 000 items: relative error {e:.3e} > {tol:e}");
    }
}

#[test]
fn misuse_is_an_error() {
    let Some(Device::Cuda(dev)) = gpu() else { return };
    let p = Problem::new((1, 4, 4, 4, false, false), false, false, false, 1);
    let strided = Gemm { a: View { ptr: 256, rs: 8, cs: 2, bs: 32 }, ..p.g };
    let err = gemm(&dev, &strided, Kind::F32).expect_err("an operand without a unit stride is refused");
    assert!(err.to_string().contains("sgemm") && err.to_string().contains("(4×4)"), "{err}");
    let fake = |v: View| View { ptr: 256, ..v };
    let null = Gemm { a: fake(p.g.a), b: fake(p.g.b), ..p.g };
    assert!(gemm(&dev, &null, Kind::Tf32).is_err(), "a null output is refused");
    assert!(gemm_with(&dev, &p.g, Kind::F32, 9).is_err(), "an unknown configuration is refused");
    // Sizes within a tile of 2³¹ would overflow the kernels' 32-bit tile indices: refused before
    // anything is allocated or launched, for every kind.
    let max = engine::ops::matmul::cuda::MAX_SIZE as usize;
    for big in [Gemm { m: max + 1, ..p.g }, Gemm { n: max + 1, ..p.g }, Gemm { k: max + 1, ..p.g }] {
        for kind in [Kind::F32, Kind::Tf32, Kind::Bf16Rounded, Kind::Bf16 { out_bf16: false }] {
            let err = gemm_with(&dev, &big, kind, 0).expect_err("a size past the cap is refused");
            assert!(err.to_string().contains("32-bit sizes"), "{kind:?}: {err}");
        }
    }
}

/// `gemm_with` in `Kind::Bf16Rounded` on float32 buffers, every configuration: the operands are
/// rounded into bf16 copies first (it once handed the float32 buffers to the bf16 kernels).
#[test]
fn bf16_rounded_with_a_chosen_configuration() {
    let Some(Device::Cuda(dev)) = gpu() else { return };
    for ci in 0..configs(Kind::Bf16Rounded).len() {
        let p = Problem::new((2, 70, 45, 40, false, true), false, true, false, 40 + ci as u64);
        let round = |v: &[f32]| v.iter().map(|&x| bf16_value(bf16_bits(x))).collect::<Vec<f32>>();
        let rounded = Problem { g: p.g, a: round(&p.a), b: round(&p.b), c0: p.c0.clone() };
        assert!(rounded.a != p.a, "the operands are not bf16 values already");
        let want: Vec<f32> = rounded.reference().iter().map(|&v| v as f32).collect();
        let e = rel(&p.run(&dev, Kind::Bf16Rounded, Some(ci)), &want);
        assert!(e <= F32_TOL, "configuration {ci}: relative error {e:.3e} against the rounded operands' product");
    }
}

#[test]
fn linear_layer_fused() {
    let Some(g) = gpu() else { return };
    // x (B, T, IN) · w (OUT, IN)ᵀ + b in one op, at sizes that divide no tile.
    parity(&g, "linear", &[&[3, 37, 384], &[1000, 384], &[1000]], F32_TOL, &|t, x| t.linear(x[0], x[1], x[2]));
}
