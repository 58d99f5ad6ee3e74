//! `softprompt kernels`: the CI compile gate. Compiles every kernel file with NVRTC for the
//! given architecture (the options the engine uses at start-up, plus `-Xptxas -v`), prints
//! registers, shared memory, stack frame and spills per kernel, and fails on a compile error
//! or on any spill. Needs NVRTC and CUDA headers, not a GPU (scripts/nvrtc_check.sh).

use softprompt::internals::cuda::nvrtc;

#[derive(clap::Args)]
pub struct Args {
    /// Target architecture: sm_ and the compute capability, sm_80 or later (the kernels' bf16
    /// tensor-core instructions need it), e.g. sm_90 or sm_90a
    #[arg(long, default_value = "sm_90")]
    arch: String,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

/// The lowest compute capability the kernels compile for (`mma.cuh`: bf16 `mma.sync`).
const MIN_ARCH: u32 = 80;

/// `--arch` is `sm_NN` (NN at least `MIN_ARCH`, NVRTC's `a` or `f` suffix allowed): NVRTC's
/// own error for `sm_0` or `90` named neither the flag nor what it takes.
fn check_arch(arch: &str) -> softprompt::Result<()> {
    let cc = arch
        .strip_prefix("sm_")
        .map(|n| n.strip_suffix(['a', 'f']).unwrap_or(n))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok());
    match cc {
        Some(cc) if cc >= MIN_ARCH => Ok(()),
        _ => Err(softprompt::Error::arg(
            "--arch",
            format!(
                "{arch:?}: expected sm_{MIN_ARCH} or later (sm_ and the compute capability, e.g. \
                 sm_90 or sm_90a; the kernels' bf16 tensor-core instructions need sm_{MIN_ARCH})"
            ),
        )),
    }
}

pub fn run(args: Args) -> i32 {
    if let Err(e) = check_arch(&args.arch) {
        return super::common::fail(e);
    }
    if !nvrtc::nvrtc_present() {
        errln!(
            "error: NVRTC not found: put the folder of libnvrtc.so.13 (the nvidia-cuda-nvrtc wheel's \
             nvidia/cu13/lib) on LD_LIBRARY_PATH (scripts/nvrtc_check.sh does this)"
        );
        return 2;
    }
    let version = nvrtc::nvrtc_version()
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_default();
    let report = match nvrtc::resource_report(&args.arch) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return 1;
        }
    };
    let spilled: Vec<&str> = report
        .iter()
        .filter(|r| r.spill_stores > 0 || r.spill_loads > 0)
        .map(|r| r.kernel.as_str())
        .collect();
    if args.json {
        let rows: Vec<_> = report
            .iter()
            .map(|r| {
                serde_json::json!({"kernel": r.kernel, "file": r.file, "registers": r.registers,
                "smem_bytes": r.smem_bytes, "stack_bytes": r.stack_bytes,
                "spill_stores": r.spill_stores, "spill_loads": r.spill_loads})
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({"nvrtc": version, "arch": args.arch, "kernels": rows, "spilled": spilled})
        );
    } else {
        outln!("NVRTC {version}, {}: {} kernels", args.arch, report.len());
        outln!(
            "{:<26} {:<20} {:>5} {:>10} {:>6} {:>13}",
            "kernel",
            "file",
            "regs",
            "smem(B)",
            "stack",
            "spill st/ld"
        );
        for r in &report {
            outln!(
                "{:<26} {:<20} {:>5} {:>10} {:>6} {:>6}/{:<6}",
                r.kernel,
                r.file,
                r.registers,
                r.smem_bytes,
                r.stack_bytes,
                r.spill_stores,
                r.spill_loads
            );
        }
    }
    if spilled.is_empty() {
        if !args.json {
            outln!("ok: every kernel compiles for {} without spills", args.arch);
        }
        0
    } else {
        errln!("error: register spills in {spilled:?}");
        1
    }
}
