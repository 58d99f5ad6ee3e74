//! The launchers' refusals: indices, sizes and types checked on the host.

use crate::{Store, F32};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::{Act, DType};
use softprompt::internals::cuda::CudaBackend;

/// The launchers check indices and sizes on the host and return errors, never launching.
fn check_errors(be: &CudaBackend) {
    let st = Store::of(be);
    let ids = be.upload_i32(&[0, 5, 200]).unwrap();
    let inp = be.upload(st.dt, &[0.0; 10 * 4]).unwrap();
    let mut out = be.zeros(st.dt, 3 * 4).unwrap();
    let e = be
        .gather_rows(&mut out, &inp, &ids, 3, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("200") && e.contains("10 rows"), "{e}");
    let mut small = be.zeros(st.dt, 5).unwrap();
    let e = be
        .act_fwd(&mut small, &inp, Act::Relu, 40)
        .unwrap_err()
        .to_string();
    assert!(e.contains("act out"), "{e}");
    let f = be.zeros(st.other, 40).unwrap();
    let e = be
        .act_fwd(&mut out, &f, Act::Relu, 12)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("expected {:?}", st.dt)), "{e}");
    // a linear output of neither the storage type nor F32 (I32; BF16 where activations are
    // float32, where filling its bias as float32 would write past its end)
    let wrong = if st.dt == F32 {
        DType::BF16
    } else {
        DType::I32
    };
    let mut bad_out = be.zeros(wrong, 3 * 4).unwrap();
    let w = be.upload(st.w, &[0.0; 4 * 4]).unwrap();
    let bias = be.upload(st.w, &[0.0; 4]).unwrap();
    let e = be
        .linear_fwd(&mut bad_out, &inp, &w, Some(&bias), 3, 4, 4)
        .unwrap_err()
        .to_string();
    let want = if st.dt == F32 { "F32" } else { "BF16 or F32" };
    assert!(
        e.contains("linear out") && e.contains(&format!("expected {want}, got {wrong:?}")),
        "{e}"
    );
    // the same for a gradient into linear_bwd
    let mut dx = be.zeros(st.dt, 3 * 4).unwrap();
    let e = be
        .linear_bwd(&mut dx, &bad_out, &w, 3, 4, 4, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear dout") && e.contains(&format!("expected {want}, got {wrong:?}")),
        "{e}"
    );
    // per-head sizes whose element counts overflow (M·H·K = 2^64 wrapped to 0): every buffer
    // passed, and the launchers returned Ok having computed nothing
    let (m, h) = (1usize << 62, 4);
    let e = be
        .linear_heads_fwd(&mut dx, &inp, &w, m, h, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear_heads inp") && e.contains("· 4 · 1 elements"),
        "{e}"
    );
    let dout = be.zeros(st.dt, 3 * 4).unwrap();
    let e = be
        .linear_heads_bwd(&mut dx, &dout, &w, m, h, 1, 1, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear_heads dinp") && e.contains("· 4 · 1 elements"),
        "{e}"
    );
    // the same for the plain products: M·K = 2^64 forward, M·N backward
    let e = be
        .linear_fwd(&mut dx, &inp, &w, None, m, 4, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear inp") && e.contains("· 1 · 4 elements"),
        "{e}"
    );
    let e = be
        .linear_bwd(&mut dx, &dout, &w, m, 0, 4, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear dout") && e.contains("· 1 · 4 elements"),
        "{e}"
    );
}

test_device!(errors, check_errors);
