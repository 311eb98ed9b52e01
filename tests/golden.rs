//! Parity with Hugging Face on the CPU path, float32, against tests/fixtures/golden: tokenization
//! exactly; encoder outputs within 1e-4 (max |Δ|); the training step's losses within 1e-5
//! relative, gradients within 1e-4 relative (‖g − g_ref‖₂/‖g_ref‖₂), parameters after one AdamW
//! step within 1e-6 absolute. Needs the default checkpoint (weights/fetch.sh).

mod common;
use common::golden;
use engine::Device;

#[test]
fn tokenization_matches_exactly() {
    golden::check_tokenization();
}

#[test]
fn encoder_outputs_match() {
    golden::check_forward(&Device::Cpu, 1e-4);
}

#[test]
fn training_step_matches() {
    golden::check_step(&Device::Cpu, 1e-5, 1e-4, 1e-6);
}
