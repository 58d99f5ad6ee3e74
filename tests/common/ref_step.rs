//! One `Model::train_step` on a PyTorch reference's batch (`tests/fixtures/`), for the tests
//! of the step's paths (`bert_tail.rs`, `decoder_tail.rs`, `front_rows.rs`,
//! `memory_accounting/prefix.rs`): the reference's own table, tuning and objective
//! (`parity::step_objective`, as `parity` runs it), or a table, tuning or objective of the
//! test's.

use super::{assert_close, fixtures};
use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::{Capture, Model, Objective, Recompute, Tuning};
use softprompt::internals::parity::step_objective;
use softprompt::internals::reference::Reference;

/// What one step gives back.
pub struct RefStep {
    pub loss: f64,
    /// the trained table's gradient: the prompt's (P, C), or the prefix table's
    pub grad: Vec<f32>,
    /// a `cls` head's weight (K, C) then bias (K) gradients; empty without a head
    pub head_grad: Vec<f32>,
    /// the step's accountant: the bytes held after the forward, what is still live
    pub acct: MemoryAccountant,
}

impl RefStep {
    /// Checks the loss and the trained table's gradient against the reference's at `tol`.
    pub fn assert_reference(&self, name: &str, r: &Reference, tol: f64) {
        let (_, grad_name) = ref_tuning(r);
        assert_close(
            &format!("{name} loss"),
            &[self.loss],
            &r.expected["loss"].data,
            tol,
        );
        let want = &r.expected[grad_name].data;
        assert_close(&format!("{name} {grad_name}"), &self.grad, want, tol);
    }
}

/// The reference `file` and the model folder `model` it was made on, both under
/// `tests/fixtures/`, the model on `be`.
pub fn load_case<B: Backend>(be: &B, model: &str, file: &str) -> (Reference, Model<B>) {
    let r = Reference::read(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let m = Model::load(be, &fixtures().join(model)).unwrap_or_else(|e| panic!("{model}: {e}"));
    (r, m)
}

/// How `r` trains (its prefix, or its P prompt rows in front), and the name of the gradient it
/// holds for it.
pub fn ref_tuning(r: &Reference) -> (Tuning, &'static str) {
    match &r.prefix {
        Some(prefix) => (Tuning::Prefix(prefix.spec), "prefix_grad"),
        None => (Tuning::Prompt(r.p()), "prompt_grad"),
    }
}

/// One step of `r` as it was made: its table, tuning and objective; with a capture when
/// `full` (every row: the tails are skipped), else without.
pub fn ref_step<B: Backend>(
    be: &B,
    m: &Model<B>,
    r: &Reference,
    recompute: Recompute,
    full: bool,
) -> RefStep {
    let table = (&r.prompt.data[..], ref_tuning(r).0);
    step_with(be, m, r, table, None, recompute, full)
}

/// One step of `r`'s batch with `table` (its values, read as its tuning) under `objective`
/// (None: the reference's); with a capture when `full`.
pub fn step_with<B: Backend>(
    be: &B,
    m: &Model<B>,
    r: &Reference,
    (table, tuning): (&[f32], Tuning),
    objective: Option<&Objective<B>>,
    recompute: Recompute,
    full: bool,
) -> RefStep {
    // the cls head outlives the objective that borrows it
    let mut head = None;
    let own;
    let objective = match objective {
        Some(o) => o,
        None => {
            own = step_objective(&mut head, be, r, m.hidden_size()).unwrap();
            &own
        }
    };
    let table = be.upload(DType::F32, table).unwrap();
    let mut grad = be.zeros(DType::F32, be.len(&table)).unwrap();
    let mut capture = Capture::new();
    let mut acct = MemoryAccountant::new();
    let out = m
        .train_step(
            be,
            &mut acct,
            &mut grad,
            &table,
            &r.batch,
            tuning,
            objective,
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
    RefStep {
        loss: out.loss,
        grad: be.download(&grad).unwrap(),
        head_grad,
        acct,
    }
}
