//! Launches of handwritten PTX: results against values computed here, and the checkers' errors.

use ptxemu::error::EmuError;
use ptxemu::{LaunchConfig, Memory, Module, launch};

const HEAD: &str = ".version 9.0\n.target sm_90\n.address_size 64\n.file 1 \"t.cu\"\n";

fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid: (grid, 1, 1), block: (block, 1, 1), dynamic_shared: 0, max_dynamic_shared: 48 * 1024 }
}

fn upload(mem: &mut Memory, v: &[f32]) -> u64 {
    let a = mem.alloc(v.len() * 4).unwrap();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    mem.write(a, &bytes).unwrap();
    a
}

fn download(mem: &Memory, a: u64, n: usize) -> Vec<f32> {
    let mut b = vec![0u8; n * 4];
    mem.read(a, &mut b).unwrap();
    b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn launch_err(
    ptx: &str,
    name: &str,
    mem: &mut Memory,
    c: LaunchConfig,
    params: &[&[u8]],
) -> (ptxemu::error::Site, String) {
    let m = Module::parse(ptx).unwrap();
    match launch(&m, name, mem, &c, params) {
        Err(EmuError::Launch { site, message }) => (site, message),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("launch of {name} succeeded"),
    }
}

/// c[i] = a[i] + b[i]: a read through its generic address, b through cvta.to.global.
const VADD: &str = "
.visible .entry vadd(
\t.param .u64 .ptr .align 1 vadd_param_0,
\t.param .u64 .ptr .align 1 vadd_param_1,
\t.param .u64 .ptr .align 1 vadd_param_2,
\t.param .u32 vadd_param_3
)
{
\t.reg .pred %p<2>;
\t.reg .b32 %r<6>;
\t.reg .f32 %f<4>;
\t.reg .b64 %rd<10>;
\t.loc 1 3 0
\tld.param.u64 %rd1, [vadd_param_0];
\tld.param.u64 %rd2, [vadd_param_1];
\tld.param.u64 %rd3, [vadd_param_2];
\tld.param.u32 %r1, [vadd_param_3];
\tmov.u32 %r2, %ctaid.x;
\tmov.u32 %r3, %ntid.x;
\tmov.u32 %r4, %tid.x;
\tmad.lo.s32 %r5, %r2, %r3, %r4;
\tsetp.ge.s32 %p1, %r5, %r1;
\t@%p1 bra $L__BB0_2;
\tmul.wide.s32 %rd4, %r5, 4;
\tadd.s64 %rd5, %rd1, %rd4;
\tld.f32 %f1, [%rd5];
\tcvta.to.global.u64 %rd6, %rd2;
\tadd.s64 %rd7, %rd6, %rd4;
\t.loc 1 5 0
\tld.global.f32 %f2, [%rd7];
\tadd.f32 %f3, %f1, %f2;
\tcvta.to.global.u64 %rd8, %rd3;
\tadd.s64 %rd9, %rd8, %rd4;
\tst.global.f32 [%rd9], %f3;
$L__BB0_2:
\tret;
}
";

#[test]
fn vector_add_generic_and_global() {
    let ptx = format!("{HEAD}{VADD}");
    let m = Module::parse(&ptx).unwrap();
    let mut mem = Memory::new();
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 1.0 / (i as f32 + 1.0)).collect();
    let (da, db) = (upload(&mut mem, &a), upload(&mut mem, &b));
    let dc = mem.alloc(n * 4).unwrap();
    let nn = n as u32;
    let stats = launch(
        &m,
        "vadd",
        &mut mem,
        &cfg(8, 128),
        &[&da.to_le_bytes(), &db.to_le_bytes(), &dc.to_le_bytes(), &nn.to_le_bytes()],
    )
    .unwrap();
    let c = download(&mem, dc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
    assert_eq!(stats.blocks, 8);
    assert!(stats.thread_instructions > 1000 * 15);
}

#[test]
fn param_count_and_size_mismatch() {
    let ptx = format!("{HEAD}{VADD}");
    let mut mem = Memory::new();
    let x = 0u64.to_le_bytes();
    let (_, msg) = launch_err(&ptx, "vadd", &mut mem, cfg(1, 32), &[&x, &x, &x]);
    assert!(msg.contains("3 parameters given, the kernel takes 4"), "{msg}");
    let (site, msg) = launch_err(&ptx, "vadd", &mut mem, cfg(1, 32), &[&x, &x, &x, &x]);
    assert_eq!(site.kernel, "vadd");
    assert!(msg.contains("parameter 3 (vadd_param_3) has 8 bytes, the kernel takes 4"), "{msg}");
}

#[test]
fn out_of_bounds_global_read() {
    let ptx = format!("{HEAD}{VADD}");
    let mut mem = Memory::new();
    let (a, b) = (mem.alloc(64 * 4).unwrap(), mem.alloc(64 * 4).unwrap());
    let c = mem.alloc(65 * 4).unwrap();
    // n = 65: thread 64 reads one element past a's end.
    let (site, msg) = launch_err(
        &ptx,
        "vadd",
        &mut mem,
        cfg(1, 96),
        &[&a.to_le_bytes(), &b.to_le_bytes(), &c.to_le_bytes(), &65u32.to_le_bytes()],
    );
    assert!(msg.contains("outside every live allocation"), "{msg}");
    assert_eq!(site.thread, Some((64, 0, 0)));
    assert_eq!(site.line, Some(3));
    assert_eq!(site.file.as_deref(), Some("t.cu"));
}

#[test]
fn dynamic_shared_over_48k_without_opt_in() {
    let ptx = format!("{HEAD}{VADD}");
    let mut mem = Memory::new();
    let x = 0u64.to_le_bytes();
    let mut c = cfg(1, 32);
    c.dynamic_shared = 64 * 1024;
    let (_, msg) = launch_err(&ptx, "vadd", &mut mem, c, &[&x, &x, &x, &0u32.to_le_bytes()]);
    assert!(msg.contains("dynamic shared memory over 48 KiB without the opt-in attribute"), "{msg}");
    let (_, msg) = launch_err(&ptx, "vadd", &mut mem, cfg(1, 2048), &[&x, &x, &x, &0u32.to_le_bytes()]);
    assert!(msg.contains("1024"), "{msg}");
}

/// out[i] = 2 * in[i] + 1 for i in a grid-stride loop.
const STRIDE: &str = "
.visible .entry stride(
\t.param .u64 stride_param_0,
\t.param .u64 stride_param_1,
\t.param .u32 stride_param_2
)
{
\t.reg .pred %p<3>;
\t.reg .b32 %r<10>;
\t.reg .f32 %f<4>;
\t.reg .b64 %rd<8>;
\tld.param.u64 %rd1, [stride_param_0];
\tld.param.u64 %rd2, [stride_param_1];
\tld.param.u32 %r1, [stride_param_2];
\tmov.u32 %r2, %ntid.x;
\tmov.u32 %r3, %ctaid.x;
\tmov.u32 %r4, %tid.x;
\tmad.lo.s32 %r5, %r3, %r2, %r4;
\tmov.u32 %r6, %nctaid.x;
\tmul.lo.s32 %r7, %r6, %r2;
\tsetp.ge.u32 %p1, %r5, %r1;
\t@%p1 bra $L__BB0_3;
\tcvta.to.global.u64 %rd3, %rd1;
\tcvta.to.global.u64 %rd4, %rd2;
$L__BB0_2:
\tmul.wide.u32 %rd5, %r5, 4;
\tadd.s64 %rd6, %rd3, %rd5;
\tld.global.nc.f32 %f1, [%rd6];
\tfma.rn.f32 %f2, %f1, 0f40000000, 0f3F800000;
\tadd.s64 %rd7, %rd4, %rd5;
\tst.global.f32 [%rd7], %f2;
\tadd.s32 %r5, %r5, %r7;
\tsetp.lt.u32 %p2, %r5, %r1;
\t@%p2 bra $L__BB0_2;
$L__BB0_3:
\tret;
}
";

#[test]
fn grid_stride_loop_over_blocks() {
    let ptx = format!("{HEAD}{STRIDE}");
    let m = Module::parse(&ptx).unwrap();
    let mut mem = Memory::new();
    let n = 5000usize;
    let x: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    let dx = upload(&mut mem, &x);
    let dy = mem.alloc(n * 4).unwrap();
    launch(&m, "stride", &mut mem, &cfg(3, 64), &[&dx.to_le_bytes(), &dy.to_le_bytes(), &(n as u32).to_le_bytes()])
        .unwrap();
    let y = download(&mem, dy, n);
    for i in 0..n {
        assert_eq!(y[i], x[i].mul_add(2.0, 1.0), "element {i}");
    }
}

/// Block sum (as kernels/common.cuh block_sum): warp sums by shfl.bfly, one partial per warp in
/// shared memory, a barrier, thread 0 adds the partials. `out[block] = sum(in[block*ntid ..])`.
const BLOCK_SUM: &str = "
.visible .entry block_sum(
\t.param .u64 block_sum_param_0,
\t.param .u64 block_sum_param_1
)
{
\t.reg .pred %p<8>;
\t.reg .b32 %r<20>;
\t.reg .f32 %f<20>;
\t.reg .b64 %rd<10>;
\t.shared .align 4 .b8 _ZZ9block_sumE7scratch[128];
\tld.param.u64 %rd1, [block_sum_param_0];
\tld.param.u64 %rd2, [block_sum_param_1];
\tcvta.to.global.u64 %rd3, %rd1;
\tmov.u32 %r1, %tid.x;
\tmov.u32 %r2, %ctaid.x;
\tmov.u32 %r3, %ntid.x;
\tmad.lo.s32 %r4, %r2, %r3, %r1;
\tmul.wide.u32 %rd4, %r4, 4;
\tadd.s64 %rd5, %rd3, %rd4;
\tld.global.f32 %f1, [%rd5];
\tmov.b32 %r5, %f1;
\tmov.b32 %r6, 16;
\tmov.b32 %r7, 31;
\tmov.b32 %r8, -1;
\tshfl.sync.bfly.b32 %r9|%p1, %r5, %r6, %r7, %r8;
\tmov.b32 %f2, %r9;
\tadd.f32 %f3, %f1, %f2;
\tmov.b32 %r10, %f3;
\tshfl.sync.bfly.b32 %r11|%p2, %r10, 8, %r7, %r8;
\tmov.b32 %f4, %r11;
\tadd.f32 %f5, %f3, %f4;
\tmov.b32 %r12, %f5;
\tshfl.sync.bfly.b32 %r13|%p3, %r12, 4, %r7, %r8;
\tmov.b32 %f6, %r13;
\tadd.f32 %f7, %f5, %f6;
\tmov.b32 %r14, %f7;
\tshfl.sync.bfly.b32 %r15|%p4, %r14, 2, %r7, %r8;
\tmov.b32 %f8, %r15;
\tadd.f32 %f9, %f7, %f8;
\tmov.b32 %r16, %f9;
\tshfl.sync.bfly.b32 %r17|%p5, %r16, 1, %r7, %r8;
\tmov.b32 %f10, %r17;
\tadd.f32 %f11, %f9, %f10;
\tand.b32 %r18, %r1, 31;
\tsetp.ne.s32 %p6, %r18, 0;
\tshr.u32 %r19, %r1, 5;
\tmov.u64 %rd6, _ZZ9block_sumE7scratch;
\tcvta.shared.u64 %rd7, %rd6;
\tmul.wide.u32 %rd8, %r19, 4;
\tadd.s64 %rd9, %rd7, %rd8;
\t@%p6 bra $L__BB0_2;
\tst.f32 [%rd9], %f11;
$L__BB0_2:
\tbar.sync 0;
\tsetp.ne.s32 %p7, %r1, 0;
\t@%p7 bra $L__BB0_4;
\tld.shared.f32 %f12, [_ZZ9block_sumE7scratch];
\tld.shared.f32 %f13, [_ZZ9block_sumE7scratch+4];
\tadd.f32 %f14, %f12, %f13;
\tcvta.to.global.u64 %rd3, %rd2;
\tmul.wide.u32 %rd4, %r2, 4;
\tadd.s64 %rd5, %rd3, %rd4;
\tst.global.f32 [%rd5], %f14;
$L__BB0_4:
\tret;
}
";

#[test]
fn block_reduction_through_shared_with_bar_and_shfl() {
    let ptx = format!("{HEAD}{BLOCK_SUM}");
    let m = Module::parse(&ptx).unwrap();
    let mut mem = Memory::new();
    let blocks = 4usize;
    let x: Vec<f32> = (0..64 * blocks).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let dx = upload(&mut mem, &x);
    let dy = mem.alloc(blocks * 4).unwrap();
    launch(&m, "block_sum", &mut mem, &cfg(blocks as u32, 64), &[&dx.to_le_bytes(), &dy.to_le_bytes()]).unwrap();
    let y = download(&mem, dy, blocks);
    for b in 0..blocks {
        // Small integers: every order of summation is exact.
        let want: f32 = x[b * 64..(b + 1) * 64].iter().sum();
        assert_eq!(y[b], want, "block {b}");
    }
}

#[test]
fn barrier_not_reached_by_all_threads() {
    // Threads of the second warp exit before the barrier.
    let ptx = format!("{HEAD}{BLOCK_SUM}")
        .replace("\t@%p6 bra $L__BB0_2;", "\tsetp.ge.u32 %p7, %r1, 32;\n\t@%p7 bra $L__BB0_4;\n\t@%p6 bra $L__BB0_2;");
    let mut mem = Memory::new();
    let dx = mem.alloc(64 * 4).unwrap();
    let dy = mem.alloc(4).unwrap();
    let (site, msg) = launch_err(&ptx, "block_sum", &mut mem, cfg(1, 64), &[&dx.to_le_bytes(), &dy.to_le_bytes()]);
    assert!(msg.contains("barrier not reached by all threads"), "{msg}");
    assert!(msg.contains("thread (32, 0, 0) has exited"), "{msg}");
    assert_eq!(site.block, Some((0, 0, 0)));
}

#[test]
fn warp_collective_not_reached_by_all_lanes() {
    // Odd lanes skip to the end: the first shfl deadlocks.
    let ptx = format!("{HEAD}{BLOCK_SUM}").replace(
        "\tshfl.sync.bfly.b32 %r9|%p1",
        "\tand.b32 %r18, %r1, 1;\n\tsetp.ne.s32 %p7, %r18, 0;\n\t@%p7 bra $L__BB0_4;\n\tshfl.sync.bfly.b32 %r9|%p1",
    );
    let mut mem = Memory::new();
    let dx = mem.alloc(64 * 4).unwrap();
    let dy = mem.alloc(4).unwrap();
    let (_, msg) = launch_err(&ptx, "block_sum", &mut mem, cfg(1, 64), &[&dx.to_le_bytes(), &dy.to_le_bytes()]);
    assert!(msg.contains("warp collective not reached by all 32 lanes") && msg.contains("lane 1 has exited"), "{msg}");
}

#[test]
fn shared_race_without_barrier() {
    // Thread 0 reads the partials without waiting at the barrier.
    let ptx = format!("{HEAD}{BLOCK_SUM}").replace("\tbar.sync 0;\n", "");
    let mut mem = Memory::new();
    let dx = mem.alloc(64 * 4).unwrap();
    let dy = mem.alloc(4).unwrap();
    let (site, msg) = launch_err(&ptx, "block_sum", &mut mem, cfg(1, 64), &[&dx.to_le_bytes(), &dy.to_le_bytes()]);
    // Thread 0 runs before warp 1 wrote its partial: the read is of unwritten memory.
    assert!(msg.contains("not written in this launch") || msg.contains("race"), "{msg}");
    assert_eq!(site.thread, Some((0, 0, 0)));
}

const V4: &str = "
.visible .entry v4(
\t.param .u64 v4_param_0,
\t.param .u64 v4_param_1
)
{
\t.reg .f32 %f<5>;
\t.reg .b64 %rd<4>;
\tld.param.u64 %rd1, [v4_param_0];
\tld.param.u64 %rd2, [v4_param_1];
\tld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1+4];
\tst.global.v4.f32 [%rd2], {%f1, %f2, %f3, %f4};
\tret;
}
";

#[test]
fn misaligned_v4_load() {
    let ptx = format!("{HEAD}{V4}");
    let mut mem = Memory::new();
    let a = mem.alloc(64).unwrap();
    let b = mem.alloc(64).unwrap();
    let (site, msg) = launch_err(&ptx, "v4", &mut mem, cfg(1, 1), &[&a.to_le_bytes(), &b.to_le_bytes()]);
    assert!(msg.contains("misaligned 16-byte access"), "{msg}");
    assert_eq!(site.ptx_line, Some(15));
    // Aligned: works.
    let ok = ptx.replace("[%rd1+4]", "[%rd1+16]");
    let m = Module::parse(&ok).unwrap();
    mem.write(a + 16, &[1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    launch(&m, "v4", &mut mem, &cfg(1, 1), &[&a.to_le_bytes(), &b.to_le_bytes()]).unwrap();
    assert_eq!(download(&mem, b, 4), vec![1.0, 2.0, 3.0, 4.0]);
}

/// One thread: two cp.async groups into shared memory (the first with src-size 8 of 16), waits
/// for the older group, copies it out; then waits for all and copies the second.
const CPASYNC: &str = "
.visible .entry cpa(
\t.param .u64 cpa_param_0,
\t.param .u64 cpa_param_1
)
{
\t.reg .b32 %r<12>;
\t.reg .b64 %rd<4>;
\t.shared .align 16 .b8 sm[32];
\tld.param.u64 %rd1, [cpa_param_0];
\tld.param.u64 %rd2, [cpa_param_1];
\tmov.u32 %r1, sm;
\tmov.u32 %r2, 8;
\tcp.async.ca.shared.global [%r1], [%rd1], 16, %r2;
\tcp.async.commit_group;
\tadd.s32 %r3, %r1, 16;
\tadd.s64 %rd3, %rd1, 16;
\tcp.async.cg.shared.global [%r3], [%rd3], 16;
\tcp.async.commit_group;
\tcp.async.wait_group 1;
\tld.shared.v4.u32 {%r4, %r5, %r6, %r7}, [%r1];
\tst.global.v4.u32 [%rd2], {%r4, %r5, %r6, %r7};
\tcp.async.wait_group 0;
\tld.shared.v4.u32 {%r8, %r9, %r10, %r11}, [%r3];
\tst.global.v4.u32 [%rd2+16], {%r8, %r9, %r10, %r11};
\tret;
}
";

#[test]
fn cp_async_groups_zero_fill_and_wait() {
    let ptx = format!("{HEAD}{CPASYNC}");
    let m = Module::parse(&ptx).unwrap();
    let mut mem = Memory::new();
    let src: Vec<f32> = (1..=8).map(|i| i as f32).collect();
    let ds = upload(&mut mem, &src);
    let dd = mem.alloc(32).unwrap();
    launch(&m, "cpa", &mut mem, &cfg(1, 1), &[&ds.to_le_bytes(), &dd.to_le_bytes()]).unwrap();
    assert_eq!(download(&mem, dd, 8), vec![1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]);
    // Reading the second group's destination after waiting only for the first: a finding.
    let early = ptx.replace("\tcp.async.wait_group 0;\n", "");
    let (site, msg) = launch_err(&early, "cpa", &mut mem, cfg(1, 1), &[&ds.to_le_bytes(), &dd.to_le_bytes()]);
    assert!(msg.contains("before its cp.async.wait_group"), "{msg}");
    let line = early.lines().position(|l| l.contains("{%r8, %r9, %r10, %r11}, [%r3]")).unwrap() as u32 + 1;
    assert_eq!(site.ptx_line, Some(line));
}

#[test]
fn parallel_blocks_report_the_lowest_failing_block() {
    let ptx = format!("{HEAD}{VADD}");
    let mut mem = Memory::new();
    let (a, b, c) = (mem.alloc(64 * 4).unwrap(), mem.alloc(256 * 4).unwrap(), mem.alloc(256 * 4).unwrap());
    for _ in 0..5 {
        // Blocks 2..7 all read past a's 64 elements; block 2 is the one reported.
        let (site, msg) = launch_err(
            &ptx,
            "vadd",
            &mut mem,
            cfg(8, 32),
            &[&a.to_le_bytes(), &b.to_le_bytes(), &c.to_le_bytes(), &256u32.to_le_bytes()],
        );
        assert!(msg.contains("outside every live allocation"), "{msg}");
        assert_eq!((site.block, site.thread), (Some((2, 0, 0)), Some((0, 0, 0))));
    }
}

/// Each thread keeps two values in its local depot, one written through the generic %SP and read
/// back through .local %SPL, then writes their sum: local memory is per thread.
const LOCAL: &str = "
.visible .entry loc(
\t.param .u64 loc_param_0
)
{
\t.local .align 8 .b8 __local_depot0[16];
\t.reg .b64 %SP;
\t.reg .b64 %SPL;
\t.reg .b32 %r<6>;
\t.reg .b64 %rd<4>;
\tmov.u64 %SPL, __local_depot0;
\tcvta.local.u64 %SP, %SPL;
\tld.param.u64 %rd1, [loc_param_0];
\tmov.u32 %r1, %tid.x;
\tst.u32 [%SP+4], %r1;
\tmul.lo.s32 %r2, %r1, 3;
\tst.local.u32 [%SPL+8], %r2;
\tbar.sync 0;
\tld.local.u32 %r3, [%SPL+4];
\tld.u32 %r4, [%SP+8];
\tadd.s32 %r5, %r3, %r4;
\tmul.wide.u32 %rd2, %r1, 4;
\tadd.s64 %rd3, %rd1, %rd2;
\tst.global.u32 [%rd3], %r5;
\tret;
}
";

#[test]
fn local_memory_is_per_thread_through_generic_and_local() {
    let ptx = format!("{HEAD}{LOCAL}");
    let m = Module::parse(&ptx).unwrap();
    let mut mem = Memory::new();
    let d = mem.alloc(64 * 4).unwrap();
    launch(&m, "loc", &mut mem, &cfg(1, 64), &[&d.to_le_bytes()]).unwrap();
    let mut out = vec![0u8; 256];
    mem.read(d, &mut out).unwrap();
    let got: Vec<u32> = out.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, (0..64).map(|t| 4 * t).collect::<Vec<u32>>());
    // Past the depot's 16 bytes: an error.
    let bad = ptx.replace("[%SPL+8], %r2", "[%SPL+16], %r2");
    let (_, msg) = launch_err(&bad, "loc", &mut mem, cfg(1, 64), &[&d.to_le_bytes()]);
    assert!(msg.contains("local-memory access of 4 bytes at offset 16"), "{msg}");
}
