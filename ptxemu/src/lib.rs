//! A PTX emulator: runs the kernels of a PTX module (as NVRTC compiles kernels/*.cu) on the CPU,
//! with checkers for what a GPU run does not show (shared-memory races, uninitialised shared
//! reads, out-of-bounds global accesses, a cp.async destination read before its wait, warp
//! collectives and barriers not reached by every thread, misaligned vector accesses).
//!
//! Depends on nothing of the engine. The parts:
//! - `ir`: the compact, pre-decoded form of a kernel (operands resolved to register slots).
//! - `parse`: PTX text → `Module` (once per module; the engine caches the result).
//! - `memory`: global memory (allocations at fake device addresses) and the address windows.
//! - `exec`: runs a launch's grid: blocks (in parallel where that is safe), threads of a block
//!   one after the other until a barrier or warp collective.
//! - `arith`: IEEE semantics of the scalar instructions, rounding modifiers computed exactly.
//! - `warp`: the warp collectives' data movement (shfl, vote, ldmatrix, mma fragment layouts).
//! - `shadow`: the shared-memory checker state of one block.

pub mod arith;
pub mod error;
pub mod exec;
pub mod ir;
pub mod memory;
pub mod parse;
pub mod shadow;
pub mod warp;

pub use error::{EmuError, Result};
pub use exec::{LaunchConfig, LaunchOptions, LaunchStats, launch, launch_with};
pub use ir::{Kernel, Module};
pub use memory::Memory;
