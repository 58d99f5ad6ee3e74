//! BERT's training step without a capture runs its last layer at the rows the head reads
//! only (`Tail` in src/models/bert/tail.rs: the queries, the attention's output projection,
//! the residual, both LayerNorms and the FFN at those rows, keys and values at every row).
//! Its loss and prompt (or prefix) gradient against PyTorch + PEFT's at 1e-4 on every BERT
//! fixture (`mlm`, `pet`, `cls` under both poolings, prefix tuning), and against the full
//! step (`parity`'s, with a capture: every row) at 1e-5.

mod common;

use common::{assert_close, fixtures};
use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::{Capture, Model, Recompute, StepOutput, Tuning};
use softprompt::internals::parity::step_objective;
use softprompt::internals::reference::{RefObjective, Reference};
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

/// The step's outputs (loss, trained gradient, the cls head's gradients) and the bytes held
/// after the forward, with or without a capture.
fn step<B: Backend>(
    be: &B,
    m: &Model<B>,
    r: &Reference,
    recompute: Recompute,
    full: bool,
) -> (f64, Vec<f32>, Vec<f32>, usize) {
    let mut head = None;
    let objective = step_objective(&mut head, be, r, m.hidden_size()).unwrap();
    let tuning = match &r.prefix {
        Some(prefix) => Tuning::Prefix(prefix.spec),
        None => Tuning::Prompt(r.p()),
    };
    let table = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut grad = be.zeros(DType::F32, r.prompt.data.len()).unwrap();
    let mut capture = Capture::new();
    let mut acct = MemoryAccountant::new();
    let out: StepOutput<B> = m
        .train_step(
            be,
            &mut acct,
            &mut grad,
            &table,
            &r.batch,
            tuning,
            &objective,
            recompute,
            full.then_some(&mut capture),
        )
        .unwrap();
    let head_grad = match out.head_grads {
        Some(h) => [
            be.download(&h.weight).unwrap(),
            be.download(&h.bias).unwrap(),
        ]
        .concat(),
        None => Vec::new(),
    };
    (
        out.loss,
        be.download(&grad).unwrap(),
        head_grad,
        acct.held_after_forward(),
    )
}

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
        let r = Reference::read(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = Model::load(&be, &fixtures().join(model)).unwrap();
        let grad_name = if r.prefix.is_some() {
            "prefix_grad"
        } else {
            "prompt_grad"
        };
        let (full_loss, full_grad, full_head, full_held) = step(&be, &m, &r, Recompute::None, true);
        for recompute in [Recompute::None, Recompute::Layer] {
            let (loss, grad, head, held) = step(&be, &m, &r, recompute, false);
            let name = format!("{file} {recompute:?}");
            let want_loss = &r.expected["loss"].data;
            assert_close(&format!("{name} loss"), &[loss], want_loss, TOL);
            let want_grad = &r.expected[grad_name].data;
            assert_close(&format!("{name} {grad_name}"), &grad, want_grad, TOL);
            let vs_full = format!("{name} vs full");
            assert_close(&format!("{vs_full}: loss"), &[loss], &[full_loss], TOL_FULL);
            assert_close(&format!("{vs_full}: grad"), &grad, &full_grad, TOL_FULL);
            if !full_head.is_empty() {
                assert_close(&format!("{vs_full}: head"), &head, &full_head, TOL_FULL);
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
    let r = Reference::read(&fixtures().join(file)).unwrap();
    let m = Model::load(&be, &fixtures().join("bert_mlm")).unwrap();
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
        step(&be, &m, &r, Recompute::None, full_rows);
        be.sum_of(&["linear_fwd", "linear_bwd"]).0 as usize
    };
    assert_eq!(products(true), 2 * full, "{file}: the full step's products");
    assert_eq!(
        products(false),
        2 * tail,
        "{file}: the tail step's products"
    );
}
