//! A saved prompt's folder, as `checkpoint.rs`'s doc describes it: the prompt in PEFT's
//! layout, task.json and the `cls` head, written by `save_prompt_dir` and read by
//! `load_prompt_dir`, each file stamped with the save it belongs to.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::checkpoint::{fnv1a_bytes, FNV_START, HEAD_FILE, TASK_FILE, TASK_FORMAT};
use super::encoder::HostEncoder;
use super::head_file::{head_metadata, read_head};
use super::model_id::{ModelId, FINGERPRINT_KEY};
use super::prompt_advice::{live_advice, missing_file, Origin};
use super::ptuning::{save_encoder, ENCODER_FILE};
use super::spec::{TaskKind, TaskSpec};
use super::task_record::check_record;
use crate::error::{Error, Result};
use crate::models::cls_head::HostClsHead;
use crate::prompt::{AdapterInfo, PromptTable, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::weights::{write_safetensors, TensorFile};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The key of the save stamp in a prompt folder's safetensors headers and task.json.
pub const SAVE_KEY: &str = "softprompt_save";

/// The stamp every file of one save of a prompt folder carries: the step and a hash of the
/// table and head, then (where the save has them) `rows <hash>` of the rows kept behind the
/// table (PEFT's seq2seq decoder rows), `encoder <hash>` of the host encoder's tensors
/// (`encoder_hash`) and `head <K>`, the labels of the `cls` head the hash covers (so that a
/// folder without its head is told so, not called corrupt), and last the table's and head's
/// hash. Each file is written atomically, but the folder is not: a run killed between two
/// files left a folder of two steps that loaded without a word. The stamp is derived, not random, so that an interrupted run resumed writes
/// the same bytes. The named fields came later: a stamp without them (an earlier save) leaves
/// those values unchecked; they stand before the table's hash because earlier builds read the
/// last field as that hash, so a folder saved now still loads there.
pub fn save_stamp(
    step: Option<u64>,
    prompt: &PromptTable,
    head: Option<&HostClsHead>,
    encoder: Option<u64>,
) -> String {
    let mut stamp = step.map_or("no step".into(), |s| format!("step {s}"));
    let extra = &prompt.layout.extra_rows;
    if !extra.is_empty() {
        stamp.push_str(&format!(", {ROWS_FIELD} {:016x}", rows_hash(extra)));
    }
    if let Some(h) = encoder {
        stamp.push_str(&format!(", {ENCODER_FIELD} {h:016x}"));
    }
    if let Some(h) = head {
        stamp.push_str(&format!(", {HEAD_FIELD} {}", h.k));
    }
    stamp.push_str(&format!(", {:016x}", values_hash(&prompt.data, head)));
    stamp
}

/// The hash of the rows kept behind the table: the stamp's `rows` field.
fn rows_hash(extra: &[f32]) -> u64 {
    fnv1a_bytes(FNV_START, bytemuck::cast_slice(extra))
}

/// The stamp's fields of the rows kept behind the table, of the encoder's tensors and of
/// the head.
const ROWS_FIELD: &str = "rows";
const ENCODER_FIELD: &str = "encoder";
const HEAD_FIELD: &str = "head";

/// The hash of the table (P, d) and the head: the stamp's second field.
fn values_hash(table: &[f32], head: Option<&HostClsHead>) -> u64 {
    let mut h = fnv1a_bytes(FNV_START, bytemuck::cast_slice(table));
    if let Some(head) = head {
        h = fnv1a_bytes(h, bytemuck::cast_slice(&head.weight));
        h = fnv1a_bytes(h, bytemuck::cast_slice(&head.bias));
    }
    h
}

/// The hash of a host encoder's tensors (P-tuning's encoder, a prefix projection), name and
/// values, in the names' order: the stamp's `encoder` field.
pub fn encoder_hash<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [f32])>) -> u64 {
    let mut all: Vec<(&str, &[f32])> = tensors.into_iter().collect();
    all.sort_unstable_by_key(|(name, _)| *name);
    all.iter().fold(FNV_START, |h, (name, data)| {
        fnv1a_bytes(fnv1a_bytes(h, name.as_bytes()), bytemuck::cast_slice(data))
    })
}

/// The hash a stamp's field `name` holds (`rows`, `encoder`), if it has that field; the
/// table's and head's hash, the one field without a name, is `name` "".
fn stamp_field(stamp: &str, name: &str) -> Option<String> {
    let mut fields = stamp.split(", ").skip(1);
    if name.is_empty() {
        return fields.find(|f| !f.contains(' ')).map(String::from);
    }
    fields.find_map(|f| f.strip_prefix(name)?.strip_prefix(' ').map(String::from))
}

/// The safetensors metadata carrying `stamp`.
pub fn stamp_metadata(stamp: &str) -> Option<HashMap<String, String>> {
    Some(HashMap::from([(SAVE_KEY.to_string(), stamp.to_string())]))
}

/// The save stamp in a safetensors file's header, read without its tensors: Some(None) when
/// it has none, None when the header cannot be read (the file's own loader names that).
fn header_stamp(path: &Path) -> Option<Option<String>> {
    let meta = header_metadata(path)?;
    Some(meta.get(SAVE_KEY).and_then(Value::as_str).map(String::from))
}

/// A safetensors file's `__metadata__` (Null when it has none), read without its tensors;
/// None when the header cannot be read.
pub(super) fn header_metadata(path: &Path) -> Option<Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    let n = u64::from_le_bytes(n);
    // a header is small; the loader has already checked it against the file's size
    let mut header = Vec::new();
    f.take(n.min(1 << 26)).read_to_end(&mut header).ok()?;
    let mut v: Value = serde_json::from_slice(&header).ok()?;
    Some(
        v.get_mut("__metadata__")
            .map(Value::take)
            .unwrap_or_default(),
    )
}

/// Refuses a prompt folder whose files carry different save stamps: a run stopped while it
/// wrote them (a new adapter beside an old head scored with neither's numbers). Files
/// without a stamp are not compared, but once one file is stamped, a file only softprompt
/// writes (task.json, the head, the encoder) without one is refused too: an older softprompt
/// version's save that a stamped one was stopped while replacing. The adapter alone may lack
/// one beside stamped files (PEFT's, which never has one). `task_stamp`: None without a
/// task.json, Some(None) for one without a stamp. Returns the folder's stamp, if any, and
/// whether the adapter carries it.
fn check_stamps(dir: &Path, task_stamp: Option<Option<String>>) -> Result<Option<(String, bool)>> {
    let mut files = vec![(TASK_FILE, task_stamp)];
    for f in [ADAPTER_WEIGHTS, HEAD_FILE, ENCODER_FILE] {
        let path = dir.join(f);
        files.push((f, header_stamp(&path)));
    }
    let stamped: Vec<(&str, &String)> = (files.iter())
        .filter_map(|(f, s)| s.as_ref()?.as_ref().map(|s| (*f, s)))
        .collect();
    let Some(&(first, stamp)) = stamped.first() else {
        return Ok(None);
    };
    let mixed = stamped.iter().any(|(_, s)| *s != stamp);
    let unstamped = (files.iter()).find(|(f, s)| *f != ADAPTER_WEIGHTS && matches!(s, Some(None)));
    let adapter_stamped = stamped.iter().any(|(f, _)| *f == ADAPTER_WEIGHTS);
    if !mixed && unstamped.is_none() {
        return Ok(Some((stamp.clone(), adapter_stamped)));
    }
    // whose folder it is, only for a refusal's words: asked of every folder read, it read
    // /proc/locks and the parent's checkpoint each time, and a run's export of N tasks took
    // O(N^2) (hostile pass 35, F6)
    let origin = Origin::of(dir);
    // being written now: Python's FolderInUse, a BlockingIOError (review 22)
    let refuse = match origin {
        Origin::Live(_) => Error::in_use,
        _ => Error::file,
    };
    let why = match origin {
        Origin::Live(pid) => live_advice(dir, pid),
        Origin::Run => "a run was stopped while it wrote them; resume the run (train ... \
                        --resume) to write the folder again"
            .into(),
        // Model::save_prompt's folder: no run to resume (hostile pass 21, F5)
        Origin::Save => "a save was stopped while it wrote them; save the prompt again".into(),
        // a run's folder copied out, or files copied in from elsewhere (review 16)
        Origin::Copied => "copy the whole folder again from where it was saved (a run's \
                           --out), or train again"
            .into(),
    };
    if mixed {
        let found: Vec<String> = stamped.iter().map(|(f, s)| format!("{f}: {s}")).collect();
        return Err(refuse(
            dir,
            format!(
                "the files of this prompt folder are of different saves ({}): {why}",
                found.join("; ")
            ),
        ));
    }
    match unstamped {
        None => Ok(Some((stamp.clone(), adapter_stamped))),
        Some((f, _)) => Err(refuse(
            dir,
            format!(
                "{f} has no save stamp, but {first} has one ({stamp}): the folder mixes a save \
                 of an older softprompt version (or a file written by hand) with a newer save; \
                 {why}"
            ),
        )),
    }
}

/// The table, the rows behind it and the head read against the hashes in the folder's
/// `stamp`: the stamps agreeing with each other said nothing of the values, and a flipped bit
/// in the adapter scored with exit 0. A stamped adapter that does not match is refused
/// (corrupt, or edited with its stamp kept); an unstamped one (`adapter_stamped` false:
/// PEFT's, or values edited on purpose and saved without the stamp) is read, with the warning
/// returned. The encoder's file, only ever softprompt's, is checked by `check_encoder`.
fn check_values(
    dir: &Path,
    (stamp, adapter_stamped): (&str, bool),
    prompt: &PromptTable,
    head: Option<&HostClsHead>,
) -> Result<Option<String>> {
    let Some(msg) = values_mismatch(stamp, prompt, head) else {
        return Ok(None);
    };
    if adapter_stamped {
        // an earlier save's stamp has no `head` field (`check_head_kept`): a cls folder
        // without its head fails the hash as a corrupt adapter does
        let lost_head = match head {
            None => format!(
                " (or, if it is a cls prompt, its {HEAD_FILE} is missing: a cls save's stamp \
                 hashes the head too; copy it back from the run's --out folder)"
            ),
            Some(_) => String::new(),
        };
        return Err(Error::file(
            dir.join(ADAPTER_WEIGHTS),
            format!(
                "{msg}: the values do not match the stamp, so the file is corrupt or was \
                 edited{lost_head}; train again (or --resume the run), or, to use edited values \
                 on purpose, save the adapter without its `{SAVE_KEY}` metadata"
            ),
        ));
    }
    // an export over an unstamped folder (an earlier version's, or PEFT's) cut after its
    // stamped task.json left the old adapter beside it (review 14, R14-4): edited values are
    // read, as asked, but the warning says what else it may be
    let cut = match Origin::of(dir) {
        Origin::Live(pid) => format!("; {}", live_advice(dir, pid)),
        Origin::Run => "; if the run was stopped while it exported, resume it (train ... \
                        --resume) to write the folder again"
            .into(),
        Origin::Save => {
            "; if a save was stopped while it wrote this folder, save the prompt again".into()
        }
        Origin::Copied => String::new(),
    };
    Ok(Some(format!(
        "{}: {msg}: {ADAPTER_WEIGHTS} has no stamp (PEFT's, or edited), so its values are not \
         those task.json{} was saved with{cut}",
        dir.display(),
        if head.is_some() { " and the head" } else { "" }
    )))
}

/// What of the adapter (and head) does not hash to `stamp`, if anything: the table and head,
/// then the rows behind the table where the stamp has their field.
fn values_mismatch(
    stamp: &str,
    prompt: &PromptTable,
    head: Option<&HostClsHead>,
) -> Option<String> {
    let found = format!("{:016x}", values_hash(&prompt.data, head));
    let stored = stamp_field(stamp, "").unwrap_or_default();
    if stored != found {
        let files = match head {
            Some(_) => format!("{ADAPTER_WEIGHTS} and {HEAD_FILE}"),
            None => ADAPTER_WEIGHTS.to_string(),
        };
        return Some(format!(
            "the values of {files} hash to {found}, but the save stamp ({stamp}) says {stored}"
        ));
    }
    let stored = stamp_field(stamp, ROWS_FIELD)?;
    let extra = &prompt.layout.extra_rows;
    let found = format!("{:016x}", rows_hash(extra));
    (stored != found).then(|| {
        format!(
            "the rows of {ADAPTER_WEIGHTS} behind its first {} (PEFT's decoder rows, kept as \
             they were) hash to {found}, but the save stamp ({stamp}) says {stored}",
            prompt.p
        )
    })
}

/// A folder whose stamp covers a `cls` head (its `head` field) has head.safetensors: the
/// adapter copied out alone failed the table's hash, which covers the head too, and was
/// called corrupt. A stamp without the field (an earlier save's, or no head) checks nothing.
fn check_head_kept(head_path: &Path, stamp: &str, has_head: bool) -> Result<()> {
    let dir = head_path.parent().unwrap_or(Path::new("."));
    match stamp_field(stamp, HEAD_FIELD).filter(|_| !has_head) {
        None => Ok(()),
        Some(k) => Err(missing_file(
            dir,
            head_path,
            &format!(
                "the folder's save stamp ({stamp}) covers a cls classifier head of {k} labels, \
                 which this file holds"
            ),
        )),
    }
}

/// The encoder's file (P-tuning's encoder, a prefix projection) against the stamp's
/// `encoder` field. Nothing to check for a stamp without one (an earlier save's, or a save
/// without an encoder) or a folder without the file (the table alone, as PEFT saves it).
fn check_encoder(dir: &Path, stamp: &str) -> Result<()> {
    let path = dir.join(ENCODER_FILE);
    let Some(stored) = stamp_field(stamp, ENCODER_FIELD).filter(|_| path.exists()) else {
        return Ok(());
    };
    let file = TensorFile::read(&path)?;
    let tensors = (file.floats.iter()).map(|(n, t)| (n.as_str(), t.data.as_slice()));
    let found = format!("{:016x}", encoder_hash(tensors));
    if found == stored {
        return Ok(());
    }
    Err(Error::file(
        &path,
        format!(
            "its tensors hash to {found}, but the save stamp ({stamp}) says {stored}: the file \
             is corrupt or was edited; train again, or --resume the run to write it again"
        ),
    ))
}

/// A prompt folder as `eval` and `predict` read it.
pub struct SavedPrompt {
    pub prompt: PromptTable,
    pub head: Option<HostClsHead>,
    /// from task.json; None for a folder written by PEFT
    pub task: Option<TaskSpec>,
    /// the model folder recorded in task.json, as it was typed (`model`) and made absolute
    /// (`model_path`): `eval` and `predict` try it as is, relative to the prompt folder, then
    /// the absolute path
    pub model: Option<PathBuf>,
    /// the other places to look: the absolute path task.json records, the path it records
    /// relative to the prompt folder, and the typed path taken relative to the prompt folder
    pub model_abs: Vec<PathBuf>,
    /// the architecture task.json records (`arch`: "bert", "t5", "bloom", "llama"); None for
    /// folders written before it was recorded, and for PEFT's
    pub arch: Option<String>,
    /// the model task.json records (`model_fingerprint`, with the model's folder); None for
    /// folders written before it was recorded, and for PEFT's
    pub model_id: Option<ModelId>,
    /// an unstamped adapter whose values are not the ones the folder's stamp hashes: read,
    /// with this to show
    pub warning: Option<String>,
    /// the labels in the order of the head's rows, as head.safetensors records them; None
    /// without a head, or for one saved without them (an earlier softprompt's)
    pub head_labels: Option<Vec<String>>,
    /// the `cls` task head.safetensors records (template, pooling, max_len): a folder without
    /// task.json is scored with it; None as for `head_labels`, or for a head saved before
    /// 2026-12-07
    pub head_task: Option<TaskSpec>,
}

impl SavedPrompt {
    /// Checks the architecture recorded in `dir`'s task.json against that of the model it is
    /// loaded on. A mismatch is an error, unless the user named the model (`explicit`, the
    /// `--model` flag): then it comes back as a warning to print.
    pub fn check_arch(&self, dir: &Path, arch: &str, explicit: bool) -> Result<Option<String>> {
        check_arch(self.arch.as_deref(), dir, arch, explicit)
    }
}

/// `recorded`, the architecture `dir`'s task.json names, against `arch`, the model's: see
/// `SavedPrompt::check_arch`.
pub fn check_arch(
    recorded: Option<&str>,
    dir: &Path,
    arch: &str,
    explicit: bool,
) -> Result<Option<String>> {
    let Some(rec) = recorded.filter(|&r| r != arch) else {
        return Ok(None);
    };
    let msg = format!(
        "`arch` is \"{rec}\", but the model is {arch}: a prompt trained in one \
         architecture means nothing in another of the same width"
    );
    if explicit {
        Ok(Some(format!("{}: {msg}", dir.join(TASK_FILE).display())))
    } else {
        Err(Error::file(
            dir.join(TASK_FILE),
            format!("{msg} (pass --model to use it anyway)"),
        ))
    }
}

/// Writes the prompt (PEFT layout), task.json, for `cls` head.safetensors, and the host
/// encoder's prompt_encoder.safetensors (P-tuning, a prefix projection) into `dir`, all with
/// one save stamp. `extra` is merged into task.json (step, dev metrics, ...). The files are
/// written first and renamed into place together (`write_together`): a folder read at any
/// moment, or left by a kill, holds one save's files, but within the renames (milliseconds
/// on some file systems), where the stamps refuse the mix. Then an earlier prompt's files
/// this save did not write (a head, an encoder) are removed.
pub fn save_prompt_dir(
    dir: &Path,
    prompt: &PromptTable,
    (head, encoder): (Option<&HostClsHead>, Option<&HostEncoder>),
    spec: &TaskSpec,
    model_dir: &Path,
    info: &AdapterInfo,
    extra: Value,
) -> Result<()> {
    crate::fsutil::write_together(|| {
        let step = extra.get("step").and_then(Value::as_u64);
        // the tensors `save_encoder` writes, as the file's loader hashes them
        let encoder_sum = encoder.map(|e| {
            let (shapes, tensors) = (e.spec().shapes(), e.tensors());
            let named = shapes
                .iter()
                .filter_map(|(n, _)| Some((n.as_str(), tensors.get(n)?)));
            encoder_hash(named.map(|(n, d)| (n, d.as_slice())))
        });
        let stamp = save_stamp(step, prompt, head, encoder_sum);
        // task.json first, so renamed in first: a run's first export cut short after the
        // adapter's files and before it left a stamped adapter without a task, loaded
        // silently as a PEFT folder under the model's default task (review 13, R13-3); now
        // such a folder is one of two saves, or no prompt folder yet
        let task = task_record(dir, prompt.p, spec, model_dir, &extra, &stamp);
        crate::fsutil::write_json_atomic(&dir.join(TASK_FILE), &task)?;
        if let Some(e) = encoder {
            save_encoder(dir, e, &stamp)?;
        }
        if let Some(h) = head {
            write_safetensors(
                &dir.join(HEAD_FILE),
                &[
                    ("weight", vec![h.k, h.c], &h.weight),
                    ("bias", vec![h.k], &h.bias),
                ],
                Some(head_metadata(&stamp, spec, h)),
            )?;
        }
        // last, adapter_config.json after the weights: the file every lister of prompt
        // folders looks for (`serve --prompts`), so a first export cut short is no prompt
        // folder to them yet (review 14, R14-2)
        prompt.save_peft_with(dir, info, stamp_metadata(&stamp))
    })?;
    // an earlier prompt's files this save has none of (a `cls` head under a `pet` prompt, an
    // encoder), which would be read with it: a single-task --resume into a folder a
    // multi-task run had written left one, and the folder was refused (hostile pass 25, F6)
    let mut written = vec![ADAPTER_CONFIG, ADAPTER_WEIGHTS, TASK_FILE];
    written.extend(head.is_some().then_some(HEAD_FILE));
    written.extend(encoder.is_some().then_some(ENCODER_FILE));
    super::outdir::remove_unwritten(dir, &written)
}

/// task.json of a prompt of `rows` rows saved in `dir`: the task, where its model is, `extra`
/// (step, dev metrics, ...) and the save's `stamp`, which every file of the save carries.
fn task_record(
    dir: &Path,
    rows: usize,
    spec: &TaskSpec,
    model_dir: &Path,
    extra: &Value,
    stamp: &str,
) -> Value {
    let mut task = spec.to_json();
    if let (Some(obj), Some(more)) = (task.as_object_mut(), extra.as_object()) {
        obj.insert("format".into(), json!(TASK_FORMAT));
        obj.insert("model".into(), json!(model_dir.display().to_string()));
        // as typed, absolute, and relative to this folder: a copied or moved folder still
        // finds its model (`eval`/`predict` try all three)
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        obj.insert(
            "model_path".into(),
            json!(abs(model_dir).display().to_string()),
        );
        if let Some(rel) = relative_to(&abs(model_dir), &abs(dir)) {
            obj.insert("model_from_prompt".into(), json!(rel.display().to_string()));
        }
        obj.insert("num_virtual_tokens".into(), json!(rows));
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert(SAVE_KEY.into(), json!(stamp));
    }
    task
}

/// `path` relative to the folder `base` (both absolute), through `..` where needed.
fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let (p, b): (Vec<Component>, Vec<Component>) =
        (path.components().collect(), base.components().collect());
    if p.first() != b.first() {
        return None;
    }
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in b.iter().skip(common) {
        rel.push("..");
    }
    for c in p.iter().skip(common) {
        rel.push(c);
    }
    Some(rel)
}

/// Reads a prompt folder: ours (with task.json, and head.safetensors for `cls`) or PEFT's
/// (adapter files only). A folder a run is writing into now (it holds the folder's lock: a
/// multi-task run holds each task folder's) is read again, a few times over about a
/// second, while it is refused: an export renames its files in one after another, and a
/// read between two renames met two saves (an eval looping on a live run under
/// `--save-every 1` was refused about one time in eight; hostile pass 23, F2).
pub fn load_prompt_dir(dir: &Path) -> Result<SavedPrompt> {
    let mut waits = [10, 40, 160, 640].into_iter();
    let written = || crate::train::outdir::folder_writer(dir).is_some();
    loop {
        // once the tries are spent, the refusal's advice names the writer (`Origin`)
        match load_prompt_once(dir) {
            Err(e) if written() => match waits.next() {
                Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
                None => return Err(e),
            },
            read => return read,
        }
    }
}

fn load_prompt_once(dir: &Path) -> Result<SavedPrompt> {
    let prompt = PromptTable::load_peft(dir)?;
    let task_path = dir.join(TASK_FILE);
    let mut task_stamp = None;
    let (task, model, model_abs, arch, model_id) = if task_path.exists() {
        let text = crate::fsutil::read_json_text(&task_path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&task_path, format!("not valid JSON: {e}")))?;
        // a future format may mean other things by the same keys
        if let Some(f) = v.get("format").filter(|f| f.as_u64() != Some(TASK_FORMAT)) {
            return Err(Error::file(
                &task_path,
                format!(
                    "`format` is {f}, expected {TASK_FORMAT}: the folder was written by another \
                     softprompt version; use that version, or train again"
                ),
            ));
        }
        let peft_type = (prompt.layout.config.as_ref())
            .and_then(|c| c.get("peft_type"))
            .and_then(Value::as_str);
        check_record(&v, &task_path, prompt.p, peft_type)?;
        task_stamp = Some(v.get(SAVE_KEY).and_then(Value::as_str).map(String::from));
        let path = |k: &str| v.get(k).and_then(|m| m.as_str()).map(PathBuf::from);
        (
            Some(TaskSpec::from_json(&v, &task_path)?),
            path("model"),
            path("model_path")
                .into_iter()
                .chain(path("model_from_prompt").map(|r| dir.join(r)))
                .chain(
                    path("model")
                        .filter(|m| m.is_relative())
                        .map(|m| dir.join(m)),
                )
                .collect(),
            v.get("arch").and_then(|a| a.as_str()).map(String::from),
            // check_record refused a fingerprint that is not 16 hex digits
            (v.get(FINGERPRINT_KEY).and_then(Value::as_str)).and_then(|h| {
                ModelId::from_hex(h, path("model_path").or(path("model")).unwrap_or_default())
            }),
        )
    } else {
        (None, None, Vec::new(), None, None)
    };
    let head_path = dir.join(HEAD_FILE);
    let (head, head_labels, head_task) = match head_path.exists() {
        true => read_head(&head_path, &prompt)?,
        false => (None, None, None),
    };
    // a cls folder's missing head would otherwise fail the values' hash below and be
    // reported as a corrupt adapter
    let cls = task.as_ref().is_some_and(|t| t.kind == TaskKind::Cls);
    if cls && head.is_none() {
        // the run's own folder, stopped before its first export ended, or a save's
        let why = "task.json says a cls task, whose classifier head this file holds";
        return Err(missing_file(dir, &head_path, why));
    }
    let warning = match check_stamps(dir, task_stamp)? {
        Some((stamp, stamped)) => {
            check_head_kept(&head_path, &stamp, head.is_some())?;
            check_encoder(dir, &stamp)?;
            check_values(dir, (&stamp, stamped), &prompt, head.as_ref())?
        }
        None => None,
    };
    Ok(SavedPrompt {
        prompt,
        head,
        task,
        model,
        model_abs,
        arch,
        model_id,
        warning,
        head_labels,
        head_task,
    })
}
