//! Thread-instructions per second of the emulator on one host thread (blocks in sequence), with
//! and without the shared-memory checker: the project's GEMM kernels from $PTXEMU_PTX_DIR if set,
//! else a handwritten loop kernel. `cargo bench -p ptxemu --bench emu_speed`.

use std::time::Instant;

use ptxemu::exec::{LaunchOptions, launch_with};
use ptxemu::{LaunchConfig, Memory, Module};

/// y[i] = y[i] * 0.5 + x[i] over a grid-stride loop, 64 rounds per element.
const LOOP: &str = "
.version 9.0
.target sm_90
.address_size 64
.visible .entry spin(.param .u64 spin_param_0, .param .u32 spin_param_1)
{
\t.reg .pred %p<3>;
\t.reg .b32 %r<10>;
\t.reg .f32 %f<4>;
\t.reg .b64 %rd<6>;
\tld.param.u64 %rd1, [spin_param_0];
\tld.param.u32 %r1, [spin_param_1];
\tmov.u32 %r2, %ctaid.x;
\tmov.u32 %r3, %ntid.x;
\tmov.u32 %r4, %tid.x;
\tmad.lo.s32 %r5, %r2, %r3, %r4;
\tsetp.ge.u32 %p1, %r5, %r1;
\t@%p1 bra $L__BB0_3;
\tmul.wide.u32 %rd2, %r5, 4;
\tadd.s64 %rd3, %rd1, %rd2;
\tld.global.f32 %f1, [%rd3];
\tmov.u32 %r6, 0;
$L__BB0_2:
\tfma.rn.f32 %f1, %f1, 0f3F000000, 0f3F800000;
\tadd.s32 %r6, %r6, 1;
\tsetp.lt.u32 %p2, %r6, 64;
\t@%p2 bra $L__BB0_2;
\tst.global.f32 [%rd3], %f1;
$L__BB0_3:
\tret;
}
";

fn gemm_params(a: u64, b: u64, c: u64, n: i32) -> Vec<Vec<u8>> {
    let l = |v: i64| v.to_le_bytes().to_vec();
    let i = |v: i32| v.to_le_bytes().to_vec();
    vec![
        l(a as i64),
        l(b as i64),
        l(c as i64),
        i(n),
        i(n),
        i(n),
        l(n as i64),
        l(n as i64),
        l(n as i64),
        l(0),
        l(0),
        l(0),
        i(1),
        i(0),
    ]
}

fn measure(label: &str, m: &Module, kernel: &str, mem: &mut Memory, cfg: &LaunchConfig, params: &[Vec<u8>]) {
    let refs: Vec<&[u8]> = params.iter().map(|v| v.as_slice()).collect();
    for check in [true, false] {
        let opts = LaunchOptions { check_shared: check, parallel: false };
        launch_with(m, kernel, mem, cfg, &refs, &opts).unwrap(); // warm-up
        let t = Instant::now();
        let mut instrs = 0;
        let mut runs = 0;
        while t.elapsed().as_secs_f64() < 1.0 {
            instrs += launch_with(m, kernel, mem, cfg, &refs, &opts).unwrap().thread_instructions;
            runs += 1;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{label:<32} shared checker {:<3}: {:>7.1} M thread-instructions/s on one core ({runs} launches, {:.1} ms each)",
            if check { "on" } else { "off" },
            instrs as f64 / s / 1e6,
            s * 1e3 / runs as f64
        );
    }
}

fn main() {
    let mut mem = Memory::new();
    match std::fs::read_to_string(format!("{}/matmul.ptx", ptx_dir())) {
        Ok(text) => {
            let m = Module::parse(&text).unwrap();
            let n = 256i32;
            let elems = (n * n) as usize;
            let a = mem.alloc(elems * 4).unwrap();
            let b = mem.alloc(elems * 4).unwrap();
            let c = mem.alloc(elems * 4).unwrap();
            let ones: Vec<u8> = (0..elems).flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes()).collect();
            mem.write(a, &ones).unwrap();
            mem.write(b, &ones).unwrap();
            let p = gemm_params(a, b, c, n);
            let cfg = |tiles: u32, threads: u32, smem: u32| LaunchConfig {
                grid: (tiles, 1, 1),
                block: (threads, 1, 1),
                dynamic_shared: smem,
                max_dynamic_shared: smem.max(48 * 1024),
            };
            measure("sgemm_128x128_nn 256^3", &m, "sgemm_128x128_nn", &mut mem, &cfg(4, 256, 0), &p);
            measure("tf32_gemm_128x128_nn 256^3", &m, "tf32_gemm_128x128_nn", &mut mem, &cfg(4, 256, 3 * 32768), &p);
            measure("bf16_gemm_128x128_nn 256^3", &m, "bf16_gemm_128x128_nn", &mut mem, &cfg(4, 128, 4 * 16384), &p);
        }
        Err(_) => {
            println!("no matmul.ptx in {} (PTXEMU_PTX_DIR): a handwritten loop kernel", ptx_dir());
            let m = Module::parse(LOOP).unwrap();
            let n = 1 << 16;
            let y = mem.alloc(n * 4).unwrap();
            let p = vec![y.to_le_bytes().to_vec(), (n as u32).to_le_bytes().to_vec()];
            let cfg = LaunchConfig {
                grid: (n as u32 / 256, 1, 1),
                block: (256, 1, 1),
                dynamic_shared: 0,
                max_dynamic_shared: 48 * 1024,
            };
            measure("loop kernel", &m, "spin", &mut mem, &cfg, &p);
        }
    }
}

/// The folder of NVRTC's PTX of the project's kernels ($PTXEMU_PTX_DIR; the engine's own tests
/// run every kernel through the emulator, these opt-in ones check it without the engine).
fn ptx_dir() -> String {
    std::env::var("PTXEMU_PTX_DIR").unwrap_or_else(|_| "(PTXEMU_PTX_DIR unset)".into())
}
