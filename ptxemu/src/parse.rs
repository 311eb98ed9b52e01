//! PTX text → `ir::Module`.
//!
//! CONTRACT (helper "core"):

use crate::error::Result;
use crate::ir::Module;

pub fn parse(ptx: &str) -> Result<Module> {
    let _ = ptx;
    unimplemented!("parse::parse")
}
