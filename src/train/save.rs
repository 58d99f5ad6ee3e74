//! What every run writes of its trained state, the single-task `Trainer` (run.rs) and each
//! task of a multi-task run (multitask_run.rs) alike: a checkpoint's tensors (the table, the
//! head, the host encoder, the optimizer's state, the best so far), and the kept prompt's
//! folder (PEFT's files in the layout of the method, task.json, the head, the encoder).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{self, TrainState};
use super::encoder::HostEncoder;
use super::model::Model;
use super::model_id::FINGERPRINT_KEY;
use super::optim::Optimizer;
use super::ptuning::{self, Method};
use super::step::Params;
use super::task::Task;
use super::trainer::TrainConfig;
use crate::backend::Backend;
use crate::error::Result;
use crate::models::cls_head::HostClsHead;
use crate::prompt::PromptTable;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// A checkpoint's named tensors (shape, values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The best table and head so far, on the host.
pub type Best = (Vec<f32>, Option<HostClsHead>);

/// A run's trained state as a checkpoint's tensors: `prompt` (P, width), the head, the host
/// encoder under `encoder.`, the optimizer's state, and the best so far (`best.prompt`, its
/// head and, with an encoder, `best.encoder.`).
pub(super) fn checkpoint_tensors<B: Backend>(
    be: &B,
    params: &Params<B>,
    encoder: Option<&HostEncoder>,
    opt: &Optimizer<B>,
    best: Option<&Best>,
    best_encoder: Option<&HostEncoder>,
) -> Result<Tensors> {
    let mut tensors = BTreeMap::new();
    let pd = vec![params.p, params.d];
    tensors.insert(
        "prompt".to_string(),
        (pd.clone(), be.download(&params.prompt)?),
    );
    if let Some(h) = &params.head {
        let h = h.download(be)?;
        tensors.insert("head.weight".into(), (vec![h.k, h.c], h.weight));
        tensors.insert("head.bias".into(), (vec![h.k], h.bias));
    }
    if let Some(e) = encoder {
        ptuning::to_tensors(e, "encoder.", &mut tensors);
    }
    if let (Some(e), Some(_)) = (best_encoder, best) {
        ptuning::to_tensors(e, "best.encoder.", &mut tensors);
    }
    for (name, shape, data) in opt.state(be)? {
        tensors.insert(name, (shape, data));
    }
    if let Some((p, h)) = best {
        tensors.insert("best.prompt".into(), (pd, p.clone()));
        if let Some(h) = h {
            let weight = (vec![h.k, h.c], h.weight.clone());
            tensors.insert("best.head.weight".into(), weight);
            tensors.insert("best.head.bias".into(), (vec![h.k], h.bias.clone()));
        }
    }
    Ok(tensors)
}

/// The prompt a run keeps, as its folder records it.
pub(super) struct Kept<'k> {
    /// the table's PEFT facts, its data the kept table (P, width)
    pub table: PromptTable,
    pub head: Option<HostClsHead>,
    /// the encoder whose output the table is (P-tuning, a prefix projection)
    pub encoder: Option<&'k HostEncoder>,
    /// the step it is from, and its dev accuracy
    pub step: u64,
    pub dev_accuracy: Option<f64>,
}

impl<'k> Kept<'k> {
    /// What a run in `state` keeps: `kept` (its best table and head on dev when `best_on_dev`,
    /// else its current ones) over `facts`' PEFT facts, and the encoder that gave it.
    pub(super) fn new(
        facts: &PromptTable,
        (table, head): Best,
        encoder: Option<&'k HostEncoder>,
        state: &TrainState,
        best_on_dev: bool,
    ) -> Self {
        let mut facts = facts.clone();
        facts.data = table;
        Kept {
            table: facts,
            head,
            encoder,
            step: if best_on_dev {
                state.best_step
            } else {
                state.step
            },
            dev_accuracy: state.best.map(|m| m.accuracy),
        }
    }
}

/// Writes `kept` into `dir` as a run of `cfg`'s method saves it: PEFT's adapter in that
/// method's layout (PROMPT_TUNING, P_TUNING with the encoder's output, PREFIX_TUNING),
/// task.json (with the step, dev accuracy, seed, architecture, method and init), the `cls`
/// head, and the host encoder's own file. `check_finite` refuses a non-finite tensor (by
/// name) before anything is written.
pub(super) fn save_kept<B: Backend>(
    dir: &Path,
    model: &Model<B>,
    task: &Task,
    cfg: &TrainConfig,
    kept: Kept<'_>,
    check_finite: &dyn Fn(&str, &[f32]) -> Result<()>,
) -> Result<()> {
    let Kept {
        mut table,
        head,
        encoder,
        step,
        dev_accuracy,
    } = kept;
    // a non-finite prompt never replaces the last good one
    check_finite("prompt", &table.data)?;
    if let Some(h) = &head {
        check_finite("head.weight", &h.weight)?;
        check_finite("head.bias", &h.bias)?;
    }
    if let Some(HostEncoder::PTuning(e)) = encoder {
        // PEFT's P_TUNING layout: its adapter holds the encoder's output
        table.layout.config = Some(ptuning::adapter_config(&e.cfg));
    }
    if let Method::Prefix(pre) = &cfg.method {
        // PEFT's PREFIX_TUNING layout: the table (a projection's output, as PEFT saves it)
        let (blocks, kv) = model.net.prefix_layout(pre.placement);
        let seq2seq = model.arch_name() == "t5";
        let heads = model.net.prefix_heads();
        let c = ptuning::prefix_adapter_config(pre, (blocks, kv, heads), seq2seq);
        table.layout.config = Some(c);
    }
    let mut extra = json!({
        "step": step,
        "dev_accuracy": dev_accuracy,
        "seed": cfg.seed,
        // the architecture the prompt was trained in: a prompt as wide as another model's
        // would load there and score nonsense
        "arch": model.arch_name(),
        // the model itself (its config.json and tokenizer): a prompt of another model of the
        // same architecture and width is refused where it is used
        (FINGERPRINT_KEY): model.identity.hex(),
    });
    if let (Method::Prefix(pre), Some(e)) = (&cfg.method, extra.as_object_mut()) {
        e.insert("method".into(), json!("prefix"));
        e.insert("prefix_placement".into(), json!(pre.placement.name()));
    }
    // the real init (adapter_config.json keeps a value PEFT accepts)
    if let (Some(e), Some(r)) = (extra.as_object_mut(), cfg.init.record(table.p).as_object()) {
        e.extend(r.clone());
    }
    let info = model.adapter_info(task.spec.kind.peft_task_type());
    checkpoint::save_prompt_dir(
        dir,
        &table,
        (head.as_ref(), encoder),
        &task.spec,
        &model.dir,
        &info,
        extra,
    )
}
