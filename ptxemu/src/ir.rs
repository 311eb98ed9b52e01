//! The compact form of a parsed module: per kernel its parameters, shared and local memory, and
//! its instructions pre-decoded with operands resolved to register slots and labels to indices.
//!
//! CONTRACT (helper "core" defines the rest; the engine uses `Module::parse`, `Module::kernel`,
//! `Kernel::name` and `Kernel::params`):

use crate::error::Result;

pub struct Module {
    pub kernels: Vec<Kernel>,
}

/// One `.param` of a kernel's signature, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// Bytes (`.u64` 8, `.u32` 4, `.b8 x[16]` 16, …).
    pub size: u32,
    pub align: u32,
}

pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
}

impl Module {
    /// Parses PTX text (as NVRTC emits it). A form the emulator does not know is an error
    /// naming the kernel, the PTX line and the instruction.
    pub fn parse(ptx: &str) -> Result<Module> {
        crate::parse::parse(ptx)
    }
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}
