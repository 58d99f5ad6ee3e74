//! Every use of a task, rows and a prompt together on a model checks them here first: each
//! made on this model (`train::model_id`), the rows encoded for a task of the same settings
//! and within its lengths, the prompt's width (or a prefix adapter's layout), its values
//! finite, and a `cls` task's head.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::prompt::Prompt;
use super::task::Task;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::prompt::ADAPTER_CONFIG;
use crate::train::encode::Row;
use crate::train::model_id::TaskStamp;
use crate::train::{self, Params};
use std::path::Path;

/// The task was made on `model` (its config.json and tokenizer): a task of another model of
/// the same width ran this one's weights on the other's token ids and labels without a word.
pub(crate) fn check_model<B: Backend>(task: &Task, model: &train::Model<B>) -> Result<()> {
    let advice = "make the task with this model (Model::task, Model::task_for)";
    (task.inner.model).check(&model.identity, "task", "was made on", advice)
}

/// Every row was encoded by `model`'s tokenizer for a task of `task`'s settings (or made by
/// hand), and fits `task`'s limits next to a prompt of `p` rows (`check_row`). `flag` names
/// the argument that holds them.
pub(crate) fn check_rows<'r, B: Backend>(
    rows: impl IntoIterator<Item = &'r Row>,
    task: &Task,
    p: usize,
    model: &train::Model<B>,
    flag: &str,
) -> Result<()> {
    let stamp = TaskStamp::of(&task.inner.spec);
    (rows.into_iter().enumerate())
        .try_for_each(|(i, row)| check_row(row, i, (task, &stamp), p, model, flag))
}

/// Row `i` (from 0) of `flag` on `model` with a task and its stamp, next to a prompt of `p`
/// rows: another model's ids ran this one's embedding rows, and another task's labels were
/// read as this one's, without a word; a hand-made row past the limits ran unbounded (a
/// 100,000-token target for minutes).
pub(crate) fn check_row<B: Backend>(
    row: &Row,
    i: usize,
    (task, stamp): (&Task, &TaskStamp),
    p: usize,
    model: &train::Model<B>,
    flag: &str,
) -> Result<()> {
    row.check_model(&model.identity, i, flag)?;
    row.check_task(stamp, i, flag)?;
    let spec = &task.inner.spec;
    let (n, m) = (row.ids.len(), row.target.len());
    let too_long = |msg: String| Err(Error::arg(flag, format!("row {} {msg}", i + 1)));
    if n > spec.max_len {
        let max = spec.max_len;
        return too_long(format!(
            "has {n} token ids, more than the task's max_len {max}: cut it to {max} \
             (Model::encode cuts a text to max_len)"
        ));
    }
    if m > spec.max_target_len {
        let max = spec.max_target_len;
        return too_long(format!(
            "has a target of {m} token ids, more than the task's max_target_len {max}: cut \
             it to {max} (Model::encode cuts a target to max_target_len)"
        ));
    }
    let (limit, what) = model.position_limit();
    if p.saturating_add(n) > limit {
        let need = crate::error::sum_text(&[p, n]);
        return too_long(format!(
            "has {n} token ids, which next to a prompt of {p} rows need {need} positions, but \
             {what} holds {limit}: cut it to {}",
            limit.saturating_sub(p)
        ));
    }
    // after the limits (a row too long says so first); here, not only in `Task::batch`:
    // train_multi's mixed steps pad by the first job's task
    task.inner.check_hand_row(flag, i, row)
}

/// The prompt was made on `model`, or records no model (a PEFT adapter, a folder saved before
/// softprompt recorded one, values made by hand): a prompt of another model of the same width
/// was run on this one's weights without a word.
fn check_prompt_model<B: Backend>(prompt: &Prompt, model: &train::Model<B>) -> Result<()> {
    let Some(made) = &prompt.model else {
        return Ok(());
    };
    let what = prompt.made_on();
    let advice = "train or make the prompt on this model (Model::new_prompt); to run it on \
                  this model on purpose, Prompt::set_model (the command line: --model)";
    made.check(&model.identity, "prompt", &what, advice)
}

/// The prompt (and head) on the device, checked against the model and the task.
pub(crate) fn bind<B: Backend>(
    be: &B,
    model: &train::Model<B>,
    task: &Task,
    prompt: &Prompt,
) -> Result<Params<B>> {
    let (prefix, head) = checked(model, task, prompt)?;
    Ok(Params {
        prompt: be.upload(DType::F32, prompt.values())?,
        p: prompt.rows(),
        d: prompt.width(),
        head: head.map(|h| h.upload(be)).transpose()?,
        prefix,
    })
}

/// The prompt's prefix settings (a prefix adapter's) and `cls` head, once the task is checked
/// against the model and the prompt against both.
pub(super) fn checked<B: Backend>(
    model: &train::Model<B>,
    task: &Task,
    prompt: &Prompt,
) -> Result<(Option<crate::models::PrefixSpec>, Option<HostClsHead>)> {
    check_model(task, model)?;
    let prefix = fit(prompt, model)?;
    check_finite(prompt)?;
    let head = checked_head(task, prompt, model.hidden_size())?;
    Ok((prefix, head))
}

/// The prompt's `cls` head for `task` (None for other tasks), its shape checked against the
/// task's labels and the model's width `d`.
fn checked_head(task: &Task, prompt: &Prompt, d: usize) -> Result<Option<HostClsHead>> {
    match (task.inner.new_head(d), &prompt.head) {
        (None, _) => Ok(None),
        (Some(fresh), Some(h)) if h.k == fresh.k && h.c == d => Ok(Some(h.clone())),
        (Some(fresh), Some(h)) => Err(prompt.fault(
            Some("head.safetensors"),
            format!("the head has {} labels but the task {}", h.k, fresh.k),
        )),
        (Some(_), None) if prompt.dir.is_none() => Err(prompt.fault(
            None,
            "--task cls needs the classifier head trained with the prompt; this prompt, made \
             in memory (new_prompt for another task, or from values), has none",
        )),
        (Some(_), None) => Err(prompt.fault(
            None,
            "--task cls needs the classifier head (head.safetensors) trained with the \
             prompt; this folder has none",
        )),
    }
}

/// Values set through `values_mut`/`head_mut` are checked here, where every use passes: a
/// NaN row would give a NaN loss (and NaN scores) without a word.
fn check_finite(prompt: &Prompt) -> Result<()> {
    let mut tensors = vec![("the prompt", prompt.values())];
    if let Some((w, b)) = prompt.head() {
        tensors.push(("the head's weight", w));
        tensors.push(("the head's bias", b));
    }
    for (name, values) in tensors {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            // set in memory (loading refuses them): an argument's fault, not a file's
            return Err(Error::arg(
                "prompt",
                format!("{name} holds {v} at flat index {i}: every value must be finite"),
            ));
        }
    }
    Ok(())
}

/// A prompt as wide as the model's hidden size `d`, else an error naming both.
/// The prompt's width against the model: d for prompt rows, N·2·Hkv·D for a prefix (an
/// adapter of PEFT's PREFIX_TUNING), whose step settings come back.
pub(super) fn fit<B: Backend>(
    prompt: &Prompt,
    model: &train::Model<B>,
) -> Result<Option<crate::models::PrefixSpec>> {
    check_prompt_model(prompt, model)?;
    let prefix = match &prompt.table.layout.config {
        Some(cfg) => {
            let path = prompt.origin().join(ADAPTER_CONFIG);
            train::ptuning::adapter_prefix_spec(cfg, prompt.rows(), &path)?
        }
        None => None,
    };
    match prefix {
        None => {
            check_submodules(prompt, model)?;
            check_width(prompt, model.hidden_size(), &model.dir)?
        }
        Some(spec) => {
            check_prefix_width(prompt, model, spec)?;
            check_prefix_heads(prompt, model)?;
        }
    }
    Ok(prefix)
}

/// A prompt table of two submodules' rows (P encoder rows, then P decoder rows) runs only on
/// T5: PEFT sets 2 for SEQ_2_SEQ_LM alone, and on an encoder-only or decoder-only model its
/// forward prepends all 2P rows under a mask of P, which fails, so PEFT never ran such an
/// adapter; softprompt read the first P rows and dropped the rest without a word.
fn check_submodules<B: Backend>(prompt: &Prompt, model: &train::Model<B>) -> Result<()> {
    let arch = model.arch_name();
    if prompt.table.layout.num_transformer_submodules != 2 || arch == "t5" {
        return Ok(());
    }
    let cfg = prompt.table.layout.config.as_ref();
    let read = match cfg.and_then(|c| c.get("num_transformer_submodules")) {
        Some(v) if !v.is_null() => format!("`num_transformer_submodules` is {v}"),
        _ => "`num_transformer_submodules` is absent, which PEFT reads as 2 for task_type \
              SEQ_2_SEQ_LM,"
            .to_string(),
    };
    let p = prompt.rows();
    Err(Error::file(
        prompt.origin().join(ADAPTER_CONFIG),
        format!(
            "{read} but {} is a {arch} model: 2 (a table of P encoder rows, then P decoder \
             rows: {} rows here) is PEFT's for a SEQ_2_SEQ_LM model (T5) only, and PEFT cannot \
             run such an adapter on this model; expected 1 (a table of num_virtual_tokens {p} \
             rows)",
            model.dir.display(),
            p.saturating_mul(2)
        ),
    ))
}

/// A prefix adapter's `num_attention_heads` (how PEFT splits each block of keys and values
/// into heads) against the model: PEFT's value (`prefix_heads`: the key/value heads of a
/// grouped-query model), or on such a model its query heads, which softprompt wrote before
/// #13 and PEFT replaces on load. Another value means another model's adapter, which was
/// accepted without a word. An absent key is PEFT's to fill in.
fn check_prefix_heads<B: Backend>(prompt: &Prompt, model: &train::Model<B>) -> Result<()> {
    let Some(cfg) = prompt.table.layout.config.as_ref() else {
        return Ok(());
    };
    let path = prompt.origin().join(ADAPTER_CONFIG);
    // a string "2" was compared with the heads and reported as "is "2" ... expected 2"
    let Some(found) = crate::prompt::config_count(cfg, "num_attention_heads", &path)? else {
        return Ok(());
    };
    let want = model.net.prefix_heads();
    let (query_heads, _) = model.net.heads_and_layers();
    if found == want as u64 || found == query_heads as u64 {
        return Ok(());
    }
    let grouped = match want == query_heads {
        true => String::new(),
        false => format!(" (its key/value heads: {query_heads} query heads share them)"),
    };
    Err(Error::file(
        path,
        format!(
            "`num_attention_heads` is {found}, but {} lays a prefix out over {want} heads{grouped}: \
             expected {want} (an adapter of another model?)",
            model.dir.display()
        ),
    ))
}

/// A prefix table is N·2·Hkv·D wide, N the blocks its adapter names (or the model's own).
fn check_prefix_width<B: Backend>(
    prompt: &Prompt,
    model: &train::Model<B>,
    spec: crate::models::PrefixSpec,
) -> Result<()> {
    let (own, kv) = model.net.prefix_layout(spec.placement);
    let blocks = spec.blocks.unwrap_or(own);
    if let Some(why) = model.net.prefix_blocks_misfit(blocks, spec.placement) {
        // refused here, at load, naming the file and key: the step's own check named neither
        return Err(Error::file(
            prompt.origin().join(ADAPTER_CONFIG),
            format!(
                "{why} for {} (an adapter of another model?)",
                model.dir.display()
            ),
        ));
    }
    if prompt.width() == blocks * 2 * kv {
        return Ok(());
    }
    Err(prompt.fault(
        None,
        format!(
            "the prefix is {} wide but {} takes {blocks} blocks of keys and values {kv} wide \
             under placement {} ({} values a row)",
            prompt.width(),
            model.dir.display(),
            spec.placement.name(),
            blocks * 2 * kv
        ),
    ))
}

fn check_width(prompt: &Prompt, d: usize, model_dir: &Path) -> Result<()> {
    if prompt.width() == d {
        return Ok(());
    }
    Err(prompt.fault(
        None,
        format!(
            "the prompt is {} wide but {} has hidden size {d}",
            prompt.width(),
            model_dir.display()
        ),
    ))
}
