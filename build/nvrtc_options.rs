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

/// The builds besides the default bf16 one (kernels/common.cuh's `w_t` and `act_t`):
/// (name, the macro that selects it, the prefix of the emulator's exported names).
pub const VARIANT_BUILDS: [(&str, &str, &str); 2] = [
    ("float32", "SOFTPROMPT_F32", "emu32"),
    ("mixed", "SOFTPROMPT_MIXED", "emumx"),
];
