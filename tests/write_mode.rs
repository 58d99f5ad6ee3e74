//! The backward ops that take `accumulate` (src/backend/mod.rs, the accumulation rule): with
//! it false they write their gradients whole, and what they write over a buffer of garbage
//! equals, value for value, what they add into a zeroed one. The garbage is NaN, so an
//! element the op reads, or leaves unwritten, fails. `linear_bwd`'s write mode is checked in
//! ops_finite_diff/, gemm_paths.rs and cuda_kernels/; these are the others: LayerNorm,
//! RMS norm, the activations (plain and gated), the `cls` head and the mean pooling behind
//! it, and attention's dq, dk and dv (its dprefix always adds). Each runs on the CPU backend
//! in float32 (its SIMD path) and float64 (the scalar reference), and with `--features emu`
//! on the emulated kernels in the bf16, float32 and mixed builds, the bf16 build's attention
//! both on wmma and on mma.sync.

use softprompt::internals::backend::{Act, AttnBias, AttnDims, Backend, DType, PrefixKv};
use softprompt::internals::rng::Rng;
use softprompt::internals::CpuBackend;

fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

/// Runs `op` (the gradients it writes, accumulate) twice: adding into zeros, and writing over
/// NaN; every gradient (activations, `lens` elements each) must come out the same, and not all
/// zero.
fn written_equals_added<B: Backend>(
    be: &B,
    name: &str,
    lens: &[usize],
    op: impl Fn(&mut [B::Buf], bool),
) {
    let bufs: Vec<_> = lens.iter().map(|&n| (be.act_dtype(), n)).collect();
    written_equals_added_as(be, name, &bufs, op)
}

/// `written_equals_added` with each gradient's type and length in `bufs`.
fn written_equals_added_as<B: Backend>(
    be: &B,
    name: &str,
    bufs: &[(DType, usize)],
    op: impl Fn(&mut [B::Buf], bool),
) {
    let start = |x: f32| -> Vec<B::Buf> {
        let bufs = bufs.iter().map(|&(dt, n)| be.upload(dt, &vec![x; n]));
        bufs.collect::<Result<_, _>>().expect("upload")
    };
    let (mut added, mut written) = (start(0.0), start(f32::NAN));
    op(&mut added, true);
    op(&mut written, false);
    for (i, (a, w)) in added.iter().zip(&written).enumerate() {
        let (a, w) = (be.download(a).unwrap(), be.download(w).unwrap());
        if let Some(j) = (0..a.len()).find(|&j| a[j] != w[j]) {
            panic!(
                "{name}, gradient {i}: element {j} written {} added {}",
                w[j], a[j]
            );
        }
        assert!(
            a.iter().any(|&x| x != 0.0),
            "{name}, gradient {i}: all zero"
        );
    }
}

/// (rows, width): a single row, widths that leave a SIMD tail, one wider than a kernel
/// block's 256 x 8 elements.
const ROWS: [(usize, usize); 3] = [(1, 8), (7, 37), (3, 2100)];

fn check_norms<B: Backend>(be: &B) {
    let mut rng = Rng::new(41);
    for (n, c) in ROWS {
        let act = be.act_dtype();
        let x = be.upload(act, &randn(&mut rng, n * c, 2.0)).unwrap();
        let w = be
            .upload(be.weight_dtype(), &randn(&mut rng, c, 1.0))
            .unwrap();
        let bias = be
            .upload(be.weight_dtype(), &randn(&mut rng, c, 1.0))
            .unwrap();
        let dy = be.upload(act, &randn(&mut rng, n * c, 1.0)).unwrap();
        let mut out = be.zeros(act, n * c).unwrap();
        let (mut mean, mut rstd) = (
            be.zeros(DType::F32, n).unwrap(),
            be.zeros(DType::F32, n).unwrap(),
        );
        be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &x, &w, &bias, n, c, 1e-5)
            .unwrap();
        written_equals_added(be, &format!("layernorm_bwd {n}x{c}"), &[n * c], |g, acc| {
            be.layernorm_bwd(&mut g[0], &dy, &x, &w, &mean, &rstd, n, c, acc)
                .unwrap()
        });
        be.rmsnorm_fwd(&mut out, &mut rstd, &x, &w, n, c, 1e-6)
            .unwrap();
        written_equals_added(be, &format!("rmsnorm_bwd {n}x{c}"), &[n * c], |g, acc| {
            be.rmsnorm_bwd(&mut g[0], &dy, &x, &w, &rstd, n, c, acc)
                .unwrap()
        });
    }
}

fn check_activations<B: Backend>(be: &B) {
    let mut rng = Rng::new(42);
    for act in [Act::GeluErf, Act::GeluTanh, Act::Relu, Act::Silu] {
        // a SIMD tail; several of the CPU's 4096-element chunks and a tail (enough elements
        // that ReLU's gradient is not all zero)
        for n in [97, 10_001] {
            let dt = be.act_dtype();
            let x = be.upload(dt, &randn(&mut rng, n, 2.0)).unwrap();
            let lin = be.upload(dt, &randn(&mut rng, n, 1.0)).unwrap();
            let dy = be.upload(dt, &randn(&mut rng, n, 1.0)).unwrap();
            written_equals_added(be, &format!("act_bwd {act:?} n={n}"), &[n], |g, acc| {
                be.act_bwd(&mut g[0], &dy, &x, act, n, acc).unwrap()
            });
            let name = format!("gated_act_bwd {act:?} n={n}");
            written_equals_added(be, &name, &[n, n], |g, acc| {
                let [dgate, dlin] = g else { unreachable!() };
                be.gated_act_bwd(dgate, dlin, &dy, &x, &lin, act, n, acc)
                    .unwrap()
            });
        }
    }
}

/// The `cls` head's backward (dweight and dbias F32, dpooled an activation) and the mean
/// pooling's behind it, whose rows of weight 0 (padding, a row pooling nothing) it must write
/// as zeros: (B, K, C) one row, a SIMD tail, one wider than a kernel block.
fn check_head<B: Backend>(be: &B) {
    let mut rng = Rng::new(44);
    for (b, k, c, t) in [(1, 2, 8, 3), (5, 3, 37, 9), (2, 4, 2100, 4)] {
        let (act, f32) = (be.act_dtype(), DType::F32);
        let dlogits = be.upload(f32, &randn(&mut rng, b * k, 0.5)).unwrap();
        let pooled = be.upload(act, &randn(&mut rng, b * c, 1.0)).unwrap();
        let weight = be.upload(f32, &randn(&mut rng, k * c, 1.0)).unwrap();
        let name = format!("cls_head_bwd B{b} K{k} C{c}");
        let bufs = [(f32, k * c), (f32, k), (act, b * c)];
        written_equals_added_as(be, &name, &bufs, |g, acc| {
            let [dw, db, dp] = g else { unreachable!() };
            be.cls_head_bwd(dw, db, dp, &dlogits, &pooled, &weight, b, k, c, acc)
                .unwrap()
        });
        // row 0 pools its first two positions, every other row its first one
        let w: Vec<f32> = (0..b * t)
            .map(|i| match (i / t, i % t) {
                (0, s) if s < 2 => 0.5,
                (_, 0) => 1.0,
                _ => 0.0,
            })
            .collect();
        let w = be.upload(act, &w).unwrap();
        let dout = be.upload(act, &randn(&mut rng, b * c, 1.0)).unwrap();
        let name = format!("mean_pool_bwd B{b} T{t} C{c}");
        written_equals_added(be, &name, &[b * t * c], |g, acc| {
            be.mean_pool_bwd(&mut g[0], &dout, &w, b, t, c, acc)
                .unwrap()
        });
    }
}

/// One attention case: its sizes, mask, bias and prefix rows.
struct AttnCase {
    dims: AttnDims,
    causal: bool,
    alibi: bool,
    /// prefix rows (0: none)
    p: usize,
}

/// (B, Tq, Tk, H, Hkv, D): one query tile and two (70 rows), Tq < Tk, grouped-query heads,
/// D <= 64 and 64 < D <= 128 (the kernels' two entry points); batch row 1 has padded keys.
fn attn_cases() -> Vec<AttnCase> {
    let dims = |b, tq, tk, h, hkv, d| AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    };
    vec![
        AttnCase {
            dims: dims(2, 7, 7, 2, 2, 16),
            causal: false,
            alibi: false,
            p: 0,
        },
        AttnCase {
            dims: dims(2, 70, 70, 2, 1, 24),
            causal: true,
            alibi: true,
            p: 0,
        },
        AttnCase {
            dims: dims(2, 5, 19, 4, 2, 72),
            causal: true,
            alibi: false,
            p: 0,
        },
        AttnCase {
            dims: dims(2, 9, 9, 2, 2, 16),
            causal: false,
            alibi: false,
            p: 3,
        },
        AttnCase {
            dims: dims(2, 66, 66, 2, 2, 80),
            causal: true,
            alibi: true,
            p: 5,
        },
    ]
}

fn check_attention<B: Backend>(be: &B) {
    let mut rng = Rng::new(43);
    for case in attn_cases() {
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = case.dims;
        let (dt, ql, kl) = (be.act_dtype(), b * tq * h * d, b * tk * hkv * d);
        let q = be.upload(dt, &randn(&mut rng, ql, 1.0)).unwrap();
        let k = be.upload(dt, &randn(&mut rng, kl, 1.0)).unwrap();
        let v = be.upload(dt, &randn(&mut rng, kl, 1.0)).unwrap();
        let dout = be.upload(dt, &randn(&mut rng, ql, 1.0)).unwrap();
        // batch row 1 hides its last two keys
        let mask: Vec<i32> = (0..b * tk).map(|i| (i < 2 * tk - 2) as i32).collect();
        let mask = be.upload_i32(&mask).unwrap();
        let width = 2 * hkv * d;
        let table = be
            .upload(DType::F32, &randn(&mut rng, case.p * width, 1.0))
            .unwrap();
        let prefix = (case.p > 0).then_some(PrefixKv {
            table: &table,
            p: case.p,
            width,
            k_off: 0,
            v_off: hkv * d,
            rows: None,
        });
        let bias = case.alibi.then_some(AttnBias::Alibi);
        let (mut out, mut lse) = (
            be.zeros(dt, ql).unwrap(),
            be.zeros(DType::F32, b * h * tq).unwrap(),
        );
        be.attention_fwd(
            &mut out,
            &mut lse,
            &q,
            &k,
            &v,
            prefix,
            &mask,
            bias,
            case.causal,
            0.3,
            case.dims,
        )
        .unwrap();
        // dprefix adds in both modes: each run starts it from the same random rows
        let dprefix_start = randn(&mut rng, case.p * width, 0.25);
        let name = format!(
            "attention_bwd {:?} causal {} p {}",
            case.dims, case.causal, case.p
        );
        written_equals_added(be, &name, &[ql, kl, kl], |g, acc| {
            let [dq, dk, dv] = g else { unreachable!() };
            let mut dprefix = be.upload(DType::F32, &dprefix_start).unwrap();
            let dpre = prefix.is_some().then_some(&mut dprefix);
            be.attention_bwd(
                dq,
                dk,
                dv,
                dpre,
                &dout,
                &q,
                &k,
                &v,
                prefix,
                &lse,
                &mask,
                bias,
                case.causal,
                0.3,
                case.dims,
                acc,
            )
            .unwrap();
        });
    }
}

#[test]
fn norms_write_what_they_add_to_zeros() {
    check_norms(&CpuBackend::<f32>::new());
    check_norms(&CpuBackend::<f64>::new());
}

#[test]
fn activations_write_what_they_add_to_zeros() {
    check_activations(&CpuBackend::<f32>::new());
    check_activations(&CpuBackend::<f64>::new());
}

#[test]
fn cls_head_writes_what_it_adds_to_zeros() {
    check_head(&CpuBackend::<f32>::new());
    check_head(&CpuBackend::<f64>::new());
}

#[test]
fn attention_writes_what_it_adds_to_zeros() {
    check_attention(&CpuBackend::<f32>::new());
    check_attention(&CpuBackend::<f64>::new());
}

/// The same checks on the emulated kernels, in each build of them.
#[cfg(feature = "emu")]
mod emu {
    use softprompt::internals::backend::Precision;
    use softprompt::internals::cuda::attention::AttnKernel::Mma;
    use softprompt::internals::cuda::CudaBackend;

    fn each_build(body: fn(&CudaBackend)) {
        for precision in [Precision::Bf16, Precision::F32, Precision::Mixed] {
            body(&CudaBackend::emu_with(precision).expect("emu device"));
        }
    }

    #[test]
    fn norms() {
        each_build(super::check_norms);
    }

    #[test]
    fn activations() {
        each_build(super::check_activations);
    }

    #[test]
    fn cls_head() {
        each_build(super::check_head);
    }

    #[test]
    fn attention() {
        each_build(super::check_attention);
        // the bf16 build's mma.sync kernels (the default is wmma)
        let be = CudaBackend::emu().expect("emu device");
        let be = be.with_attention_kernels(Mma, Mma, Mma);
        super::check_attention(&be);
        let counts = be.launch_counts();
        for kernel in ["attention_bwd_dq_mma", "attention_bwd_dkdv_mma"] {
            let ran = counts
                .iter()
                .any(|(name, n)| name.starts_with(kernel) && *n > 0);
            assert!(ran, "no {kernel} ran");
        }
    }
}
