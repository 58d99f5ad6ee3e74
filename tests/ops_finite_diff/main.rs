//! Each CPU op's backward against central finite differences in f64.
//!
//! The op functions of `src/cpu/<op>.rs` are generic over `Real`; here they run at f64, the
//! very code that ships in f32. For every op family a scalar f(x) = Σ r · forward(x) (r a
//! fixed random projection of the output) is differentiated two ways: the op's backward with
//! dout = r, and central differences of f. Shapes are awkward on purpose (T = 1, 7, 97, odd
//! C, head dims 8, 12, 16, odd head counts, padded rows). Each test also checks the op's
//! accumulation contract: outputs documented as `+=` are pre-filled with random values,
//! outputs documented as overwritten are pre-filled with NaN.
//!
//! One test binary, a module per op family: the embedding and the row ops (`rows`), LayerNorm
//! and RMSNorm (`norms`), the activations (`activation`), the GEMM, the loss and the cls head
//! (`linear`), attention (`attention`), and what decoder-only models add around it: the
//! KV-cache decode step, ALiBi's slopes and RoPE (`decoding`). The step, the tolerances and
//! the helpers they share live here.

#[path = "../common/mod.rs"]
mod common;

mod activation;
mod attention;
mod decoding;
mod linear;
mod norms;
mod rows;

use softprompt::internals::rng::Rng;

/// Central-difference step. Inputs are O(1), so truncation error ≈ H²·|f'''|/6 ≈ 1e-11 and
/// rounding error ≈ ε·|f|/H ≈ 2e-16 · |f| / 1e-5 ≈ 2e-11·|f| (|f| ≤ ~1e2 here).
const H: f64 = 1e-5;

/// Tolerances on the relative L2 error ‖analytic − FD‖ / ‖FD‖ (`softprompt::internals::closeness`, as
/// `assert_close` measures it), taken over the coordinates checked and again over the 4 random
/// directions. How they were chosen: the FD error budget above is ~1e-9 relative or less for
/// every op. Running this binary with SOFTPROMPT_TEST_VERBOSE=1 prints every comparison; the
/// worst observed errors are given per line. Each tolerance is about 100× its op's worst
/// observed error, rounded up to a power of ten: wide enough that FD noise never fails,
/// and still far below what a missing or wrong term produces (1e-3 or more of the largest
/// entry, so at least 1e-3/√n ≥ 4e-5 in relative L2 over n ≤ 500 coordinates).
/// Conversion: the table was first set on max abs error / max |want|, whose worst values
/// follow "was". Re-measured in relative L2, every row keeps its tolerance: for all but two,
/// 100× the new worst rounds up to the same power of ten; embedding and rows keep 1e-8 at
/// 53× and 77× their worst (they stood at 67× and 106×), as nothing measured asks for more.
const TOL: &[(&str, f64)] = &[
    ("embedding", 1e-8),     // observed 1.9e-10, was 1.5e-10 (linear in the prompt)
    ("layernorm", 1e-6),     // observed 2.4e-9, was 2.9e-9
    ("rmsnorm", 1e-5),       // observed 3.1e-8, was 3.3e-8 (C = 1, |x| ~ √eps); else 3.8e-10
    ("linear", 1e-6),        // observed 4.8e-9, was 5.7e-9: M97×N41 outputs, large |f|, ε|f|/H
    ("activation", 1e-7),    // observed 6.6e-10, was 5.8e-10; ReLU sampled away from its kink
    ("gated", 1e-7),         // observed 6.9e-10, was 7.0e-10
    ("attention", 1e-6),     // observed 5.8e-9, was 5.5e-9 (T = 97)
    ("cross_entropy", 1e-5), // observed 1.1e-8, was 1.3e-8, logits offset by 1000 (|f| ~ 1e3)
    ("rows", 1e-8),          // observed 1.3e-10, was 9.4e-11 (gather/scatter/mean: linear)
    ("head", 1e-7),          // observed 2.1e-10, was 2.1e-10 (cls head: weight, bias, pooled)
    ("forward", 1e-12),      // naive f64 forward references, no FD: observed 4.5e-16, was 8.6e-16
];

fn tol(op: &str) -> f64 {
    TOL.iter()
        .find(|(name, _)| *name == op)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no tolerance for {op}"))
}

fn rand_ids(rng: &mut Rng, n: usize, below: usize) -> Vec<i32> {
    (0..n).map(|_| rng.below(below as u64) as i32).collect()
}

fn sum_prod(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
