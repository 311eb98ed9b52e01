//! Parsing: every PTX file NVRTC made from the project's kernels (in $PTXEMU_PTX_DIR, if set: scripts/dump-ptx.py), and
//! handwritten snippets for the structure and the errors.

use ptxemu::Module;
use ptxemu::error::EmuError;
use ptxemu::ir::Op;

#[test]
fn parses_every_kernel_file_in_the_ptx_dir() {
    let Ok(dir) = std::fs::read_dir(ptx_dir()) else {
        println!("no PTX in {} (PTXEMU_PTX_DIR; scripts/dump-ptx.py makes it): skipped", ptx_dir());
        return;
    };
    let mut files = 0;
    let mut kernels = 0;
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "ptx") {
            let text = std::fs::read_to_string(&p).unwrap();
            let m = Module::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!m.kernels.is_empty(), "{}", p.display());
            kernels += m.kernels.len();
            files += 1;
        }
    }
    println!("parsed {files} files, {kernels} kernels");
}

const HEAD: &str = ".version 9.0\n.target sm_90\n.address_size 64\n";

#[test]
fn structure_params_shared_local_and_scopes() {
    let ptx = format!(
        "{HEAD}.extern .shared .align 128 .b8 dyn_smem[];
.shared .align 4 .b8 unused_elsewhere[64];
.visible .entry k(
\t.param .u64 .ptr .align 1 k_param_0,
\t.param .align 16 .b8 k_param_1[16],
\t.param .u32 k_param_2
)
.maxntid 128, 1, 1
{{
\t.local .align 16 .b8 __local_depot0[32];
\t.reg .b64 %SP;
\t.reg .b64 %SPL;
\t.reg .b32 %r<4>;
\t.reg .b64 %rd<4>;
\t.shared .align 16 .b8 tile[100];
\t.loc 1 7 3
\tmov.u64 %SPL, __local_depot0;
\tld.param.u32 %r1, [k_param_2];
\tld.param.u64 %rd1, [k_param_1+8];
\tmov.u64 %rd2, dyn_smem;
\tmov.u32 %r2, tile;
\t{{ .reg .u64 t; cvta.to.shared.u64 t, %rd2; cvt.u32.u64 %r3, t; }}
\t{{ .reg .u64 t; mov.u64 t, 0fBF800000; }}
$L__BB0_1:
\t@!%r1 bra $L__BB0_1;
\tret;
}}
.file 1 \"k.cu\"
"
    );
    // `@!%r1` guards on a non-predicate register name: fine for the parser (slots are untyped).
    let m = Module::parse(&ptx).unwrap();
    let k = m.kernel("k").unwrap();
    let sizes: Vec<u32> = k.params.iter().map(|p| p.size).collect();
    assert_eq!(sizes, vec![8, 16, 4]);
    assert_eq!(k.params[1].offset, 16);
    assert_eq!(k.params[2].offset, 32);
    assert_eq!(k.static_shared, 100, "the unreferenced module-level variable is not laid out");
    assert_eq!(k.dynamic_shared_offset, 128);
    assert_eq!(k.local_bytes, 32);
    assert_eq!(k.max_threads, Some(128));
    let Op::Mov { a, .. } = k.insts[3].op else { panic!("{:?}", k.insts[3].op) };
    assert_eq!(k.constant(a), Some(128), "dyn_smem sits after the static 100 bytes, 128-aligned");
    let Op::Mov { a, .. } = k.insts[4].op else { panic!("{:?}", k.insts[4].op) };
    assert_eq!(k.constant(a), Some(0));
    assert!(matches!(k.insts[8].op, Op::Bra { target: 8 }));
    assert!(k.insts[8].guard_neg);
    assert_eq!(k.lines[0].line, 7);
    assert_eq!(k.file_name(k.lines[0].file), Some("k.cu"), "the .file table after the kernel applies");
    assert_eq!(k.lines[0].ptx_line, 20);
}

fn parse_err(body: &str) -> (u32, String) {
    let ptx = format!("{HEAD}.visible .entry bad()\n{{\n\t.reg .b32 %r<4>;\n{body}\n\tret;\n}}\n");
    match Module::parse(&ptx) {
        Err(EmuError::Parse { kernel, ptx_line, message }) => {
            assert_eq!(kernel, "bad");
            (ptx_line, message)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("parsed: {body}"),
    }
}

#[test]
fn unknown_forms_are_errors_naming_the_line_and_text() {
    let (line, msg) = parse_err("\tadd.sat.s32 %r1, %r2, %r3;");
    assert_eq!(line, 7);
    assert!(msg.contains("add.sat.s32 %r1, %r2, %r3") && msg.contains(".sat"), "{msg}");
    let (_, msg) = parse_err("\tfrobnicate.b32 %r1, %r2;");
    assert!(msg.contains("unsupported opcode"), "{msg}");
    let (_, msg) = parse_err("\tadd.ftz.f32 %r1, %r2, %r3;");
    assert!(msg.contains(".ftz"), "{msg}");
    let (_, msg) = parse_err("\tmov.b32 %r1, %r9;");
    assert!(msg.contains("%r9"), "{msg}");
    let (_, msg) = parse_err("\tbra $L__nowhere;");
    assert!(msg.contains("unknown label"), "{msg}");
}

/// The folder of NVRTC's PTX of the project's kernels ($PTXEMU_PTX_DIR; the engine's own tests
/// run every kernel through the emulator, these opt-in ones check it without the engine).
fn ptx_dir() -> String {
    std::env::var("PTXEMU_PTX_DIR").unwrap_or_else(|_| "(PTXEMU_PTX_DIR unset)".into())
}
