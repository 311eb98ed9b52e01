//! Runs a launch: the grid's blocks (in parallel over host threads where the kernel has no
//! inter-block communication), each block's threads one after the other until the next barrier
//! or warp collective; a warp collective executes for its 32 lanes together.
//!
//! CONTRACT (helper "core" fills the bodies and may add to the API; the engine uses these):

use crate::error::Result;
use crate::ir::Module;
use crate::memory::Memory;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Bytes of dynamic shared memory (`extern .shared`).
    pub dynamic_shared: u32,
    /// The kernel's opt-in limit for dynamic shared memory (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES):
    /// 48 KiB unless raised. A launch asking for more is an error.
    pub max_dynamic_shared: u32,
}

/// What a launch executed (benches report thread-instructions per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchStats {
    pub thread_instructions: u64,
    pub blocks: u64,
}

/// Runs kernel `kernel` of `module` over `mem`. `params` holds each `.param`'s bytes in order; their
/// count and sizes must match the kernel's signature (an error names the kernel and the parameter).
pub fn launch(
    module: &Module,
    kernel: &str,
    mem: &mut Memory,
    cfg: &LaunchConfig,
    params: &[&[u8]],
) -> Result<LaunchStats> {
    let _ = (module, kernel, mem, cfg, params);
    unimplemented!("exec::launch")
}
