fn main() {
    println!("gpu_gemm: not written yet");
}
