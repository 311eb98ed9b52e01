//! Embeds every kernels/*.cu and *.cuh into the binary as a name → source table, so the engine
//! compiles its kernels at run time (NVRTC) without shipping files beside the binary.

use std::{env, fs, path::Path};

fn main() {
    // Read when the script runs, not baked in when it compiles: a target folder shared by two
    // checkouts reuses the compiled script, which must still read its own checkout's kernels.
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, String)> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("cu" | "cuh")))
                .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p.display().to_string()))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    let mut out = String::from(
        "/// (file name, source) of every kernel file, sorted by name.\npub static KERNEL_SOURCES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &entries {
        println!("cargo:rerun-if-changed={path}");
        out += &format!("    ({name:?}, include_str!({path:?})),\n");
    }
    out += "];\n";
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("kernel_sources.rs");
    fs::write(dest, out).expect("write kernel_sources.rs");
}
