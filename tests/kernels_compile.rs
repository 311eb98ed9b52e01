//! Compiles every kernels/*.cu through NVRTC to cubin for sm_80 and sm_90, without a GPU, and
//! fails on any compile error or on a register spill its author did not declare. A kernel that
//! is allowed to spill says so in its file: `// expect-spill: <kernel name> <bytes>`.
//! Needs libnvrtc (scripts/test.sh installs the PyPI wheel into .cache/nvrtc).

use engine::device::cuda::{headers, kernel_files};
use engine::device::nvrtc;

const ARCHS: [u32; 2] = [80, 90];

/// Declared spill allowances of one kernel file: (kernel, bytes).
fn allowances(source: &str) -> Vec<(String, u32)> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("// expect-spill:"))
        .filter_map(|rest| {
            let mut it = rest.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_kernel_compiles_without_unexpected_spills() {
    let (major, minor) = nvrtc::version().expect("libnvrtc is needed to compile the kernels");
    println!("NVRTC {major}.{minor}");
    let files = kernel_files();
    assert!(!files.is_empty(), "no kernels embedded");
    let mut failures = Vec::new();
    let mut kernels = 0;
    for (file, source) in &files {
        let allowed = allowances(source);
        for arch in ARCHS {
            let compiled = match nvrtc::compile(file, source, &headers(), arch) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            assert!(!compiled.cubin.is_empty(), "{file}: empty cubin");
            let report = nvrtc::parse_resources(&compiled.log);
            assert!(!report.is_empty(), "{file} sm_{arch}: no ptxas report in the log:\n{}", compiled.log);
            for k in report {
                kernels += 1;
                let spill = k.spill_stores.max(k.spill_loads);
                let limit = allowed.iter().find(|(n, _)| *n == k.name).map_or(0, |(_, b)| *b);
                println!(
                    "{file:<16} sm_{arch} {:<36} {:>3} registers, {:>4} B spill stores, {:>4} B spill loads",
                    k.name, k.registers, k.spill_stores, k.spill_loads
                );
                if spill > limit {
                    failures.push(format!("{file} sm_{arch}: {} spills {spill} bytes (allowed {limit})", k.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "kernel problems:\n{}", failures.join("\n"));
    println!("{kernels} kernel builds checked across {} files", files.len());
}

#[test]
fn compile_errors_show_the_log_and_the_file() {
    nvrtc::version().expect("libnvrtc is needed to compile the kernels");
    let err = nvrtc::compile("broken.cu", "extern \"C\" __global__ void k() { undefined_thing(); }", &[], 80)
        .err()
        .expect("a broken kernel must not compile")
        .to_string();
    assert!(err.contains("broken.cu") && err.contains("undefined_thing"), "{err}");
}

/// Every kernel file's PTX (what the emulator runs) parses in the PTX emulator, with every kernel
/// of the file found and its parameter list read: an instruction form the emulator does not know
/// fails here, naming the kernel and the PTX line, before any test launches it.
#[test]
fn every_kernel_parses_in_the_emulator() {
    let mut kernels = 0;
    for (file, _) in kernel_files() {
        let ptx = engine::device::cuda::compiled_ptx(file, engine::device::cuda::KERNEL_ARCH).unwrap();
        let module = ptxemu::Module::parse(&ptx).unwrap_or_else(|e| panic!("{file}: {e}"));
        let entries = ptx.lines().filter(|l| l.starts_with(".visible .entry ")).count();
        assert_eq!(module.kernels.len(), entries, "{file}: kernels parsed");
        for k in &module.kernels {
            assert!(!k.params.is_empty(), "{file}: {} has no parameters", k.name);
        }
        kernels += module.kernels.len();
        println!("{file:<16} {} kernels", module.kernels.len());
    }
    println!("{kernels} kernels parsed");
}
