//! BERT's training step without a capture runs its last layer at the rows the head reads
//! only (`Tail` in src/models/bert/tail.rs: the queries, the attention's output projection,
//! the residual, both LayerNorms and the FFN at those rows, keys and values at every row).
//! Its loss and prompt (or prefix) gradient against PyTorch + PEFT's at 1e-4 on every BERT
//! fixture (`mlm`, `pet`, `cls` under both poolings, prefix tuning), and against the full
//! step (`parity`'s, with a capture: every row) at 1e-5.

mod common;

use common::assert_close;
use common::ref_step::{load_case, ref_step};
use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::models::{Model, Recompute};
use softprompt::internals::reference::RefObjective;
use softprompt::internals::CpuBackend;

type Be = CpuBackend<f32>;

/// A float32 CPU run passes at 1e-4 (reference-format.md).
const TOL: f64 = 1e-4;
/// The tail against the full step: the same float32 ops on fewer rows (the rows left out get
/// exactly zero gradient in the full step), but the last layer's input gradient sums its four
/// parts in another order (the keys' and values' first, the residual's and the queries'
/// scattered onto them); measured 0 to 4.2e-7 (loss) and 6e-8 to 1.2e-6 (gradients) here, so
/// 1e-5 is ten times under the reference tolerance and still far below what a wrong row gives.
const TOL_FULL: f64 = 1e-5;

/// Every BERT fixture but P-tuning's (its table is the host encoder's output; the step is
/// prompt tuning's): (model folder, reference).
const CASES: [(&str, &str); 8] = [
    ("bert_mlm", "bert_mlm/ref_mlm_random.safetensors"),
    ("bert_mlm", "bert_mlm/ref_mlm_text.safetensors"),
    ("bert_mlm", "bert_mlm/ref_pet_random.safetensors"),
    ("bert_mlm", "bert_mlm/ref_pet_text.safetensors"),
    ("bert_nohead", "bert_nohead/ref_cls_random_mean.safetensors"),
    ("bert_nohead", "bert_nohead/ref_cls_text_cls.safetensors"),
    (
        "bert_mlm",
        "deep/bert_mlm/ref_mlm_prefix_papers.safetensors",
    ),
    (
        "bert_mlm",
        "deep/bert_mlm/ref_pet_prefix_papers_proj.safetensors",
    ),
];

#[test]
fn tail_step_matches_peft_and_the_full_step() {
    let be = Be::new();
    for (model, file) in CASES {
        let (r, m) = load_case(&be, model, file);
        let full = ref_step(&be, &m, &r, Recompute::None, true);
        let full_held = full.acct.held_after_forward();
        for recompute in [Recompute::None, Recompute::Layer] {
            let got = ref_step(&be, &m, &r, recompute, false);
            let name = format!("{file} {recompute:?}");
            got.assert_reference(&name, &r, TOL);
            let vs_full = format!("{name} vs full");
            let (loss, grad, held) = (got.loss, &got.grad, got.acct.held_after_forward());
            assert_close(&format!("{vs_full}: loss"), &[loss], &[full.loss], TOL_FULL);
            assert_close(&format!("{vs_full}: grad"), grad, &full.grad, TOL_FULL);
            if !full.head_grad.is_empty() {
                let head = &got.head_grad;
                assert_close(&format!("{vs_full}: head"), head, &full.head_grad, TOL_FULL);
            }
            if recompute == Recompute::None {
                assert!(
                    held < full_held,
                    "{name}: the tail did not run ({held} bytes held, {full_held} at every row)"
                );
            }
        }
    }
}

/// The frozen-weight products' FLOPs, counted by the profiling backend, on the `pet`
/// reference: the tail step runs the last layer's queries, output projection and FFN at the
/// B [MASK] rows (forward and backward), and, with a capture or without, the first layer's
/// backward runs its query, key and value input-gradient products at the B·P prompt rows.
#[test]
fn the_last_layer_runs_at_the_mask_rows_and_the_first_backward_at_the_prompt_rows() {
    let be = Profiler::new(Be::new());
    let file = "bert_mlm/ref_pet_random.safetensors";
    let (r, m) = load_case(&be, "bert_mlm", file);
    let Model::Bert(bert) = &m else {
        panic!("not BERT")
    };
    let RefObjective::Pet { verbalizer_ids, .. } = &r.objective else {
        panic!("not pet")
    };
    let (c, i, layers) = (
        bert.cfg.hidden_size,
        bert.cfg.intermediate_size,
        bert.cfg.num_hidden_layers,
    );
    assert!(layers >= 2, "the first and the last layer must differ");
    let (b, p) = (r.batch.b, r.p());
    let n = b * (p + r.batch.t);
    let layer = |rows: usize| rows * (4 * c * c + 2 * c * i);
    let head = b * c * c + b * c * verbalizer_ids.len();
    // forward, then backward: the first layer's output projection and FFN at every row, its
    // queries, keys and values at the prompt rows
    let first_bwd = n * (c * c + 2 * c * i) + b * p * 3 * c * c;
    let full = layers * layer(n) + 2 * head + (layers - 1) * layer(n) + first_bwd;
    let last_at_mask = n * 2 * c * c + b * (2 * c * c + 2 * c * i);
    let tail = full - 2 * layer(n) + 2 * last_at_mask;
    let products = |full_rows: bool| {
        be.reset();
        ref_step(&be, &m, &r, Recompute::None, full_rows);
        be.sum_of(&["linear_fwd", "linear_bwd"]).0 as usize
    };
    assert_eq!(products(true), 2 * full, "{file}: the full step's products");
    assert_eq!(
        products(false),
        2 * tail,
        "{file}: the tail step's products"
    );
}
