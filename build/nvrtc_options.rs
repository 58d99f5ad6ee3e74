/// The NVRTC options every kernel is compiled with: at build time (build.rs), at device
/// start-up (src/cuda/nvrtc.rs) and by the compile gate (`softprompt kernels`). `arch` is
/// "sm_90"; `include` the folder holding cuda_bf16.h.
pub fn nvrtc_options(arch: &str, include: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
        "-lineinfo".to_string(),
        format!("--include-path={include}"),
    ]
}

/// The option that selects a kernel file's float32 build (kernels/common.cuh's `store_t`).
pub const F32_BUILD: &str = "-DSOFTPROMPT_F32";
