use super::common::WorkloadArgs;
use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::backend::Backend;
use softprompt::internals::backend::Storage;
use softprompt::internals::bench::{self, Preset, Workload};
use softprompt::internals::bench_method::{self, Tuned};
use softprompt::internals::device::{with_backend, WithBackend};
use softprompt::internals::models::Model;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    workload: WorkloadArgs,
}

struct Job {
    /// the preset's name, as --preset gave it
    name: String,
    preset: Preset,
    w: Workload,
}

impl WithBackend for Job {
    type Output = String;
    fn run<B: Backend>(self, inner: B) -> softprompt::Result<String> {
        let be = Profiler::new(inner);
        if !be.device().is_gpu() {
            bench::check_fits_cpu(&self.name, &self.preset, false)?;
        }
        let model = Model::random(&be, &self.preset.config(), 1)?;
        bench::check_memory(&be, &model, &self.w)?;
        let batch = bench::bench_batch(&self.preset, &self.w, 3);
        let tuned = Tuned::new(&model, &self.w, &batch.prompt, 5)?;
        bench::step(&be, &model, &batch, &tuned, &self.w)?;
        be.reset();
        be.kernel_profile_start()?;
        let _range = softprompt::internals::nvtx::Range::push("softprompt step");
        bench::step(&be, &model, &batch, &tuned, &self.w)?;
        let kernels = be.kernel_profile_stop()?;
        let mut out = format!(
            "per op ({}, --method {}; each op synchronised):\n{}",
            be.name(),
            bench_method::name(&self.w.method),
            be.table()
        );
        if !kernels.is_empty() {
            out += &kernel_table(&kernels);
        }
        if be.device() == softprompt::internals::backend::DeviceKind::Cpu {
            out += &gemm_share(&be);
        }
        Ok(out)
    }
}

/// The step's frozen-weight GEMMs against this machine's FMA peak, measured now.
fn gemm_share<B: Backend>(be: &Profiler<B>) -> String {
    let ops = [
        "linear_fwd",
        "linear_bwd",
        "linear_heads_fwd",
        "linear_heads_bwd",
    ];
    let (flops, secs, share) = be.sum_of(&ops);
    let peak = softprompt::internals::ceiling::fma_peak(0.3);
    let rate = flops / secs.max(1e-12) / 1e9;
    let (of_peak, noisy) = softprompt::internals::ceiling::share_of_peak(rate, peak.gflops);
    let noisy = match noisy {
        true => " (noisy: faster than the measured peak, capped at 100%; the machine is loaded)",
        false => "",
    };
    format!(
        "\nGEMMs (linear_fwd + linear_bwd, linear_heads_*: {} path): {:.1} GFLOP in {:.1} ms = {:.1} GFLOP/s, {:.0}% of the step; \
         {:.0}% of the float32 FMA peak {:.1} GFLOP/s ({}, {} threads, measured now){noisy}\n",
        softprompt::internals::device::gemm_path::selected().name(),
        flops / 1e9,
        secs * 1e3,
        rate,
        100.0 * share,
        100.0 * of_peak,
        peak.gflops,
        peak.isa.name(),
        peak.threads
    )
}

/// Device time per kernel, from CUDA events on a GPU (host clock under emu).
fn kernel_table(rows: &[softprompt::internals::backend::KernelTime]) -> String {
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    let mut s = format!(
        "\nper kernel (device time):\n{:<36} {:>7} {:>11} {:>10} {:>7}\n",
        "kernel", "calls", "total ms", "mean us", "share"
    );
    for r in rows {
        s += &format!(
            "{:<36} {:>7} {:>11.3} {:>10.1} {:>6.1}%\n",
            r.name,
            r.calls,
            r.ms,
            1e3 * r.ms / r.calls.max(1) as f64,
            100.0 * r.ms / total.max(1e-12)
        );
    }
    s + &format!("{:<36} {:>7} {:>11.3}\n", "total", "", total)
}

/// One warm-up step, then one profiled step: a per-op table (every backend) and a per-kernel
/// table (CUDA events on a GPU), inside an NVTX range for nsys and ncu.
pub fn run(args: Args) -> i32 {
    let result = args.workload.parse().and_then(|(kind, w)| {
        let preset = Preset::by_name(&args.workload.preset)?;
        bench::check_workload(&preset, &w)?;
        bench_method::check(&preset, &w.method)?;
        let name = args.workload.preset.clone();
        with_backend(kind, Job { name, preset, w })
    });
    match result {
        Ok(table) => {
            out!("{table}");
            0
        }
        // a bad flag or a missing device is the user's (2), a failed run is 1
        Err(e) => super::common::fail(e),
    }
}
