//! The files of an adapter folder, checked as PEFT writes them: the adapter_config.json keys'
//! types, the prompt table's submodules and a prefix table's width, and, where the folder
//! holds no adapter, what it is instead (a model folder, a multi-task run, PEFT's several
//! adapters, an adapter_model.bin to convert).
// As prompt.rs: no unwrap, no expect, no unchecked indexing on what a user hands in.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROMPT_KEY};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The JSON types of the adapter_config.json keys this engine reads (or keeps when it saves
/// the adapter again), null allowed as PEFT writes it: one of another type was read as
/// absent (a `token_dim` of "48" checked nothing, `num_transformer_submodules` "x" read as
/// 1). `num_virtual_tokens`, `num_attention_heads` and `prefix_placement` are checked where
/// they are read, against what they must be.
const ADAPTER_TYPES: [(&str, JsonKind); 12] = [
    ("num_transformer_submodules", JsonKind::Count),
    ("token_dim", JsonKind::Count),
    ("num_layers", JsonKind::Count),
    ("encoder_hidden_size", JsonKind::Count),
    ("encoder_num_layers", JsonKind::Count),
    ("task_type", JsonKind::Str),
    ("prompt_tuning_init", JsonKind::Str),
    ("prompt_tuning_init_text", JsonKind::Str),
    ("base_model_name_or_path", JsonKind::Str),
    ("tokenizer_name_or_path", JsonKind::Str),
    ("encoder_reparameterization_type", JsonKind::Str),
    ("prefix_projection", JsonKind::Bool),
];

#[derive(Clone, Copy)]
enum JsonKind {
    Count,
    Str,
    Bool,
}

/// Each of `ADAPTER_TYPES` present in `cfg` is of its type, else an error naming the file
/// (`path`), the key, the value and the type expected.
pub(super) fn check_adapter_types(cfg: &Value, path: &Path) -> Result<()> {
    for (key, kind) in ADAPTER_TYPES {
        let Some(v) = cfg.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let (ok, want) = match kind {
            JsonKind::Count => (v.is_u64(), "a non-negative integer"),
            JsonKind::Str => (v.is_string(), "a string"),
            JsonKind::Bool => (v.is_boolean(), "true or false"),
        };
        if !ok {
            return Err(Error::file(
                path,
                format!("`{key}` is {v}: expected {want}"),
            ));
        }
    }
    Ok(())
}

/// The count `key` of an adapter_config.json (`path`, for messages): None when absent or
/// null, an error naming the value when it is not a non-negative integer (a `num_layers` of
/// -1 or 1e30 was reported as 0).
pub(crate) fn config_count(cfg: &Value, key: &str, path: &Path) -> Result<Option<u64>> {
    match cfg.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::file(
                path,
                format!("`{key}` is {v}: expected a non-negative integer"),
            )
        }),
    }
}

/// Why `dir`, which holds no adapter_config.json, is no prompt folder, naming the common
/// mix-ups: a model folder given as the prompt, the output folder of a multi-task run (its
/// tasks' prompts are in folders of their own), PEFT's folder of several adapters (each but
/// the default one in a folder of its name), or predict's `NAME=DIR` given where one folder
/// is read. A bare "No such file or directory" named none of them.
pub(super) fn not_a_prompt_folder(dir: &Path) -> Error {
    let files =
        format!("{ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}, as PEFT's save_pretrained writes them");
    if dir.is_dir() {
        if let Some(why) = folder_without_config(dir) {
            return Error::file(dir, why);
        }
        // named by the missing file, which Python raises as FileNotFoundError, as before
        use crate::train::checkpoint::{live_advice, Origin};
        let origin = Origin::of(dir);
        let again = "a save was stopped while it wrote this folder (its task.json carries the \
                     save's stamp); save the prompt again";
        let hidden = crate::train::checkpoint::hidden_copy_advice(dir, ADAPTER_CONFIG);
        let why = match (dir.join(ADAPTER_WEIGHTS).is_file(), origin) {
            // a run or a save writing into it now: resuming it is refused (review 19, R19-5)
            // (the folder named: Python's FolderInUse holds it as `filename`; review 23)
            (_, Origin::Live(pid)) => {
                return Error::in_use(
                    dir,
                    format!("{ADAPTER_CONFIG} is missing: {}", live_advice(dir, pid)),
                )
            }
            _ if hidden.is_some() => hidden.unwrap_or_default(),
            // a run's folder, stopped before its first export ended (hostile pass 21, F5)
            (true, Origin::Run) => format!(
                "is missing beside {ADAPTER_WEIGHTS}: the run writing this folder was stopped \
                 before its prompt was written whole; resume it (train ... --resume)"
            ),
            (true, Origin::Save) => format!("is missing beside {ADAPTER_WEIGHTS}: {again}"),
            (true, Origin::Copied) => format!(
                "is missing beside {ADAPTER_WEIGHTS}: copy it from where the adapter was saved \
                 (PEFT's save_pretrained writes both)"
            ),
            // a run's folder before its first export (hostile pass 23)
            (false, Origin::Run) => format!(
                "is missing: {} is a run's folder whose prompt is not written yet (it holds \
                 a checkpoint); resume the run (train ... --resume), or wait for it",
                dir.display()
            ),
            (false, Origin::Save) => {
                format!("is missing: {} holds no prompt yet: {again}", dir.display())
            }
            (false, Origin::Copied) => format!(
                "is missing: {} is no prompt folder (one holds {files})",
                dir.display()
            ),
        };
        return Error::file(dir.join(ADAPTER_CONFIG), why);
    }
    let named = dir.to_str().and_then(|t| t.split_once('='));
    let why = match named.filter(|(_, folder)| Path::new(folder).join(ADAPTER_CONFIG).is_file()) {
        Some((name, folder)) => format!(
            "no such folder: `{name}=` names a prompt of predict's mixed rows (--prompt \
             NAME=DIR); here one prompt folder is read: {folder}"
        ),
        None => format!("no such folder: expected a prompt folder ({files})"),
    };
    // a missing path, whatever its length (Python raises FileNotFoundError)
    Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, why))
}

/// The weights a model folder holds, any of which makes a folder with config.json a model's.
const MODEL_WEIGHTS: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// What the folder `dir`, without adapter_config.json, is instead, where it is a common
/// mix-up (see `not_a_prompt_folder`).
fn folder_without_config(dir: &Path) -> Option<String> {
    let has = |f: &str| dir.join(f).is_file();
    if has("config.json") && MODEL_WEIGHTS.iter().any(|f| has(f)) {
        return Some(format!(
            "holds no {ADAPTER_CONFIG}: it is a model folder (config.json and the model's \
             weights), not a prompt folder: name it as the model (--model) and a prompt \
             folder as the prompt"
        ));
    }
    let mut inner: Vec<(String, bool)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(ADAPTER_CONFIG).is_file())
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, p.join("task.json").is_file())
        })
        .collect();
    inner.sort();
    let names: Vec<&str> = inner.iter().map(|(n, _)| n.as_str()).collect();
    let names = names.join(", ");
    match (inner.is_empty(), inner.iter().any(|(_, run)| *run)) {
        (true, _) => None,
        // softprompt's runs write task.json beside each task's adapter; PEFT writes none
        (false, true) => Some(format!(
            "holds no {ADAPTER_CONFIG}: the folder of a multi-task run? its tasks' prompts \
             are in its folders {names}: name one of them"
        )),
        (false, false) => Some(format!(
            "holds no {ADAPTER_CONFIG}, but its folders {names} each hold one: adapters PEFT's \
             save_pretrained saved together (each but the default one in a folder of its \
             name)? name one of them"
        )),
    }
}

/// adapter_model.safetensors is there (`weights`, in the prompt folder `dir`), else an error
/// saying what is: older PEFT saved adapter_model.bin by default, a PyTorch pickle this
/// engine does not read, and the bare "No such file" said nothing of converting it.
pub(super) fn check_weights_file(dir: &Path, weights: &Path) -> Result<()> {
    if weights.exists() {
        return Ok(());
    }
    let bin = dir.join("adapter_model.bin");
    if let Some(why) = crate::train::checkpoint::hidden_copy_advice(dir, ADAPTER_WEIGHTS) {
        return Err(Error::file(weights, why));
    }
    let why = match bin.is_file() {
        true => format!(
            "is missing, but the folder holds adapter_model.bin, a PyTorch pickle (older \
             PEFT's default), which softprompt does not read: convert it, e.g. python -c \
             \"import torch; from safetensors.torch import save_file; \
             save_file(torch.load('{}'), '{}')\"",
            bin.display(),
            weights.display()
        ),
        false => format!(
            "is missing: a prompt folder holds it beside {ADAPTER_CONFIG} (PEFT's \
             save_pretrained writes both)"
        ),
    };
    Err(Error::file(weights, why))
}

/// How many submodules' rows the table of `rows` rows holds: 1, or 2 (P encoder rows, then
/// P decoder rows), given `p` (num_virtual_tokens), `given` (num_transformer_submodules,
/// None when absent or null) and whether it is a `prefix` table, which holds one row per
/// virtual token whatever the submodules (PEFT cuts its tokens to num_virtual_tokens).
/// Absent or null, PEFT's `_setup_prompt_encoder` reads 2 for task_type SEQ_2_SEQ_LM and 1
/// otherwise: a SEQ_2_SEQ_LM table of 2P rows is PEFT's, and one of P rows is read too (one
/// submodule's, as softprompt saves a T5 prompt).
pub(super) fn table_submodules(
    cfg: &Value,
    (p, given, prefix): (usize, Option<u64>, bool),
    rows: usize,
    (cfg_path, weights_path): (&Path, &Path),
) -> Result<usize> {
    let bad_rows = |want: String| {
        Err(Error::file(
            weights_path,
            format!("`{PROMPT_KEY}` has {rows} rows: expected {want}"),
        ))
    };
    let task_type = cfg.get("task_type").filter(|t| !t.is_null());
    let seq2seq = task_type.and_then(Value::as_str) == Some("SEQ_2_SEQ_LM");
    let twice = p.checked_mul(2);
    match (prefix, given) {
        (true, _) if rows == p => Ok(given.unwrap_or(1) as usize),
        (true, _) => bad_rows(format!(
            "num_virtual_tokens {p} (a PREFIX_TUNING table has one row per virtual token)"
        )),
        (false, Some(subs)) => {
            let Some(want) = p.checked_mul(subs as usize) else {
                return Err(Error::file(
                    cfg_path,
                    format!("num_virtual_tokens {p} x num_transformer_submodules {subs} overflows: expected a table this engine can hold"),
                ));
            };
            match rows == want {
                true => Ok(subs as usize),
                false => bad_rows(format!(
                    "num_virtual_tokens {p} x num_transformer_submodules {subs}"
                )),
            }
        }
        (false, None) if rows == p => Ok(1),
        (false, None) if seq2seq && twice == Some(rows) => Ok(2),
        (false, None) => {
            let held = match cfg.get("num_transformer_submodules") {
                None => "leaves out",
                Some(_) => "has null for",
            };
            let peft = match (seq2seq, twice) {
                (true, Some(two)) => format!(
                    "2 for task_type \"SEQ_2_SEQ_LM\" ({two} rows: P encoder rows, then P \
                     decoder rows; a table of {p} rows, one submodule's, is read too)"
                ),
                _ => format!(
                    "1 where task_type is not \"SEQ_2_SEQ_LM\" (it is {}): {p} rows",
                    task_type.map_or("absent".into(), Value::to_string)
                ),
            };
            bad_rows(format!(
                "num_virtual_tokens {p} x num_transformer_submodules, which {cfg} {held}: PEFT \
                 reads it as {peft}",
                cfg = cfg_path.display()
            ))
        }
    }
}

/// A PREFIX_TUNING row holds every layer's keys and values: num_layers·2·token_dim wide
/// (`td` the token_dim, `d` the table's width; `path` the adapter_config.json). Without
/// `num_layers` PEFT takes the model's, so the width is a multiple of 2·token_dim here, and
/// checked against the model where it runs. A `prefix_projection` adapter whose rows are
/// token_dim wide holds only the projection's input (PEFT's `embedding.weight`, saved in
/// inference mode), not the table it makes: the message said "token_dim 24 ... does not
/// match the table width 24".
pub(super) fn check_prefix_table(cfg: &Value, td: u64, d: usize, path: &Path) -> Result<()> {
    let layers = config_count(cfg, "num_layers", path)?;
    let pair = td.checked_mul(2);
    let width = layers.and_then(|n| n.checked_mul(2)?.checked_mul(td));
    let fits = match layers {
        Some(_) => width == Some(d as u64),
        None => pair.is_some_and(|w| w > 0 && (d as u64).is_multiple_of(w)),
    };
    if fits {
        return Ok(());
    }
    let want = match (layers, width, pair) {
        (Some(n), Some(w), _) => format!("num_layers·2·token_dim = {n}·2·{td} = {w} wide"),
        (Some(n), None, _) => format!("num_layers·2·token_dim = {n}·2·{td} wide, past any table"),
        (None, _, pair) => format!(
            "num_layers·2·token_dim wide, a multiple of 2·token_dim = {} (`num_layers` is \
             missing: PEFT takes the model's)",
            pair.map_or(format!("2·{td}"), |w| w.to_string())
        ),
    };
    let projection = cfg.get("prefix_projection") == Some(&Value::Bool(true));
    let hint = match projection && d as u64 == td {
        true => {
            " (a prefix_projection adapter saved in inference mode: it holds only the \
             projection's input, P × token_dim, not the table the projection makes, which is \
             what runs; save it from the PEFT model it was trained in)"
        }
        false => "",
    };
    Err(Error::file(
        path,
        format!(
            "a PREFIX_TUNING `{PROMPT_KEY}` row is {want}, but the one in {ADAPTER_WEIGHTS} is \
             {d} wide{hint}"
        ),
    ))
}
