//! GPU suite: elementwise kernels (GELU, …) against the CPU path. See tests/common for the method.

mod common;
use common::{F32_TOL, gpu, parity};

#[test]
fn gelu() {
    let Some(g) = gpu() else { return };
    parity(&g, "gelu", &[&[37, 1013]], F32_TOL, &|t, x| t.gelu(x[0]));
}
