//! The kernel sources embedded by build.rs (kernels/*.cu, *.cuh), for run-time compilation.

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// The source of a kernel file by name (`"layernorm.cu"`).
pub fn source(name: &str) -> Option<&'static str> {
    KERNEL_SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
