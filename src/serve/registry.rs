//! The prompts the server holds. The table itself (each prompt's rows and task) lives on the
//! engine's thread; the catalog, what the HTTP side lists and checks names against, is shared.

use super::error::ApiError;
use axum::http::StatusCode;
use serde::Serialize;
use softprompt::{is_folder_name, Error, Model, Prompt, Result, Task, TaskOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, PoisonError, RwLock};

/// A loaded prompt: its rows (and `cls` head) and the task they were trained for.
pub struct Entry {
    pub task: Task,
    pub prompt: Prompt,
}

/// What `GET /v1/prompts` says of a prompt.
#[derive(Clone, Debug, Serialize)]
pub struct PromptInfo {
    pub name: String,
    pub path: PathBuf,
    /// pet, cls, seq2seq or causal
    pub task: &'static str,
    pub labels: Vec<String>,
    pub template: String,
    /// the prompt's rows P
    pub prompt_len: usize,
    /// tokens per row the texts are cut to
    pub max_len: usize,
}

/// A prompt just loaded: its description, and what its load warns of (printed on stderr too).
pub struct Loaded {
    pub info: PromptInfo,
    pub warnings: Vec<String>,
}

/// The names and descriptions of the loaded prompts, shared with the HTTP side.
#[derive(Clone, Default)]
pub struct Catalog(Arc<RwLock<BTreeMap<String, PromptInfo>>>);

impl Catalog {
    pub fn list(&self) -> Vec<PromptInfo> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.contains_key(name)
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, PromptInfo>)) {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The prompt table on the engine's thread. Entries are shared with the requests queued for
/// them, so an unload never takes a prompt from under a request already accepted.
pub struct Registry {
    entries: HashMap<String, Rc<Entry>>,
    catalog: Catalog,
}

impl Registry {
    pub fn new(catalog: Catalog) -> Registry {
        Registry {
            entries: HashMap::new(),
            catalog,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, name: &str) -> Option<Rc<Entry>> {
        self.entries.get(name).cloned()
    }

    /// Adds `prompt`, read from the folder `path`, as `name` for `model`: 400 for a bad name
    /// or a prompt that does not fit the model, 409 when the name is taken. Its warnings are
    /// printed on stderr, once each.
    pub fn load(
        &mut self,
        model: &Model,
        name: &str,
        path: &Path,
        prompt: Prompt,
    ) -> Result<Loaded, ApiError> {
        check_new_name(name, &self.catalog)?;
        let loaded = prompt
            .load_warning()
            .map(|w| format!("prompt \"{name}\": {w}"));
        let entry = open(model, name, path, prompt)?;
        let warnings: Vec<String> = (loaded.into_iter())
            .chain(warnings(model, name, path, &entry.task))
            .collect();
        for w in &warnings {
            errln!("warning: {w}");
        }
        let spec = entry.task.spec();
        let info = PromptInfo {
            name: name.to_string(),
            path: path.to_path_buf(),
            task: spec.kind.name(),
            labels: spec.labels.clone(),
            template: spec.template.clone(),
            prompt_len: entry.prompt.rows(),
            max_len: spec.max_len,
        };
        self.entries.insert(name.to_string(), Rc::new(entry));
        self.catalog.update(|c| {
            c.insert(name.to_string(), info.clone());
        });
        Ok(Loaded { info, warnings })
    }

    /// `check_new_name` against this table.
    pub fn check_new(&self, name: &str) -> Result<(), ApiError> {
        check_new_name(name, &self.catalog)
    }

    /// 404 for a prompt that is not loaded.
    pub fn unknown(&self, name: &str) -> ApiError {
        unknown_prompt(name, &self.catalog)
    }

    /// Drops the prompt `name` (404 when there is none); requests already queued for it are
    /// still answered.
    pub fn unload(&mut self, name: &str) -> Result<PromptInfo, ApiError> {
        if self.entries.remove(name).is_none() {
            return Err(self.unknown(name));
        }
        let mut info = None;
        self.catalog.update(|c| info = c.remove(name));
        info.ok_or_else(|| ApiError::internal(format!("prompt \"{name}\" was not in the catalog")))
    }
}

/// The longest prompt name, in bytes (its characters are ASCII).
const NAME_CHARS: usize = 64;

/// 400 for a bad name, 409 for one that is loaded already: checked before a folder is read,
/// and again as the engine adds it.
pub fn check_new_name(name: &str, catalog: &Catalog) -> Result<(), ApiError> {
    check_name(name).map_err(ApiError::bad_request)?;
    if catalog.contains(name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a prompt named \"{name}\" is loaded already: unload it first"),
        ));
    }
    Ok(())
}

/// 404 for a prompt that is not loaded, naming those that are.
pub fn unknown_prompt(name: &str, catalog: &Catalog) -> ApiError {
    // the name cut to a name's longest and the list to its first names: a 404 echoed a
    // request's whole 100 KB name, and every loaded name on each miss (hostile pass 34, F3)
    const SHOWN: usize = 32;
    let mut names: Vec<String> = catalog.list().into_iter().map(|i| i.name).collect();
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    if more > 0 {
        names.push(format!("and {more} more: GET /v1/prompts lists them"));
    }
    let shown: String = name.chars().take(NAME_CHARS).collect();
    let cut = match shown.len() < name.len() {
        true => format!("... ({} bytes)", name.len()),
        false => String::new(),
    };
    ApiError::not_found(format!(
        "unknown prompt \"{shown}\"{cut}; loaded: [{}]",
        names.join(", ")
    ))
}

/// A prompt read from the folder `path`, with the task it was trained for (task.json, or the
/// model's defaults for a PEFT folder) on `model`, checked against both as a prediction
/// checks them: a prompt that cannot serve is refused here, not on every request.
fn open(model: &Model, name: &str, path: &Path, prompt: Prompt) -> Result<Entry, ApiError> {
    let engine = |e: Error| ApiError::from_load(&e);
    // the command line's --model lets a user run a prompt of another architecture on purpose
    // (with a warning); a server's client never sees that warning, so here it is a 400
    if let Some(why) = prompt.check_arch(model, true).map_err(engine)? {
        return Err(ApiError::bad_request(format!(
            "prompt \"{name}\" ({}) does not fit this server's {} model in {}: {why}; load a \
             prompt trained on {}",
            path.display(),
            model.arch(),
            model.dir().display(),
            model.arch()
        )));
    }
    let task = (model.task_for(&prompt, &TaskOptions::default(), None))
        .map_err(|e| task_error(name, path, &prompt, e))?;
    // a `cls` head of other labels, or none: each prediction failed on it, a 400 to a
    // request that was not at fault
    model.check_prompt(&task, &prompt).map_err(engine)?;
    Ok(Entry { task, prompt })
}

/// The engine's error on a prompt's task, in a client's terms: its advice names flags
/// (`--labels`, `--verbalizer`, `--prompt-len`) that a request cannot pass.
fn task_error(name: &str, path: &Path, prompt: &Prompt, e: Error) -> ApiError {
    let named = format!("prompt \"{name}\" ({})", path.display());
    if let Some(why) = saved_setting(&e) {
        // a greedy task.json whose label target holds one of the model's stop tokens
        // (task.rs's `check_generable`): its advice names command-line flags
        if let Some((why, _)) = why.split_once("; give the label a target") {
            return ApiError::bad_request(format!(
                "{named} cannot be served: {why}; set \"decode\" to \"rank\" in its task.json \
                 to score the labels instead"
            ));
        }
        return ApiError::bad_request(format!("{named} does not fit this server's model: {why}"));
    }
    let Error::Arg { flag, msg } = &e else {
        return ApiError::from_load(&e);
    };
    match flag.as_str() {
        "--labels" | "--verbalizer" if prompt.saved_task().is_none() => {
            ApiError::bad_request(format!(
                "{named} holds no task.json (a PEFT adapter alone), so its labels are unknown: \
                 the server reads a prompt's task, template and labels from the task.json \
                 `softprompt train` writes beside the adapter; add one to the folder"
            ))
        }
        // trained on another model (task.json's fingerprint): the advice names the API's
        // and the command line's ways round it, which a client has not
        "prompt" => {
            let why = msg.split(": train or make").next().unwrap_or(msg);
            ApiError::bad_request(format!(
                "{named} does not fit this server's model: {why}; load a prompt trained on it"
            ))
        }
        "--prompt-len" => {
            let why = msg.split(": use --prompt-len").next().unwrap_or(msg);
            ApiError::bad_request(format!(
                "{named} does not fit this server's model: {why}; load a prompt of fewer rows"
            ))
        }
        _ => ApiError::from_load(&e),
    }
}

/// An error the engine blames on a setting of the prompt's task.json (its max_len past the
/// model's positions, or too short for its template), in a client's terms: the engine's
/// advice names the command line's flag, which overrides the setting and which a request
/// cannot pass, so the advice names the file's key instead. None for other errors.
fn saved_setting(e: &Error) -> Option<String> {
    let Error::File { path, msg } = e else {
        return None;
    };
    let (why, from) = msg.rsplit_once(" (the setting comes from this file; ")?;
    let flag = from.strip_suffix(" overrides it)")?;
    let key = flag.trim_start_matches("--").replace('-', "_");
    // a folder without task.json whose head records the task: the head's metadata is no
    // file to edit, and a task.json written by hand is refused beside a stamped adapter
    // (review 18, R18-3): a save with the setting changed writes a folder that loads
    if path.file_name().is_some_and(|n| n == "head.safetensors") {
        let why = why.replace(&format!("use {flag} "), &format!("a \"{key}\" of "));
        let fits = format!("a \"{key}\" of ");
        let (why, fits) = match why.rsplit_once(": ") {
            Some((why, f)) if f.starts_with(&fits) => (why.to_string(), f.to_string()),
            _ => (why.clone(), format!("a \"{key}\" that fits")),
        };
        return Some(format!(
            "\"{key}\" as {} records it: {why}; save the prompt again with {fits} in its \
             task (Python: model.save_prompt(DIR, prompt, model.task_for(prompt, {key}=N))) \
             and load that folder",
            path.display()
        ));
    }
    let why = why.replace(&format!("use {flag} "), &format!("set \"{key}\" to "));
    Some(format!("\"{key}\" in {}: {why}", path.display()))
}

/// What serving `task` on `model` warns of: a `causal` task under target_end eos on a model
/// whose config.json names no eos_token_id (`Task::eos_missing`), as the command line warns
/// (its message names `--target-end`; a prompt served takes it from its task.json).
fn warnings(model: &Model, name: &str, path: &Path, task: &Task) -> Vec<String> {
    let mut found = Vec::new();
    // loaded by name while a run writes into it: --prompts leaves such a folder out, and a
    // client was told nothing (hostile pass 25, F3)
    if let Some(pid) = softprompt::folder_writer(path) {
        found.push(format!(
            "prompt \"{name}\" ({}): {} is writing into its folder, so this is the prompt of \
             an earlier step, not the finished one: load it again (DELETE, then POST) once that \
             ends",
            path.display(),
            writer(pid)
        ));
    }
    if task.eos_missing() {
        found.push(format!(
            "prompt \"{name}\" ({}): {} has no eos_token_id: the task's target_end eos (the \
             default) ends each causal target with no token, so generation stops at its length \
             bound (or at a stop token of generation_config.json, which no target teaches); \
             set \"target_end\" to \"none\" in its task.json to say so and \
             silence this, or to \"pad\"",
            path.display(),
            model.dir().join("config.json").display()
        ));
    }
    found
}

/// Prompt names go into URLs and metrics: 1 to 64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`
/// (a client's URL library drops those path segments, so such a prompt could not be unloaded).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.len() <= NAME_CHARS && is_folder_name(name) {
        return Ok(());
    }
    Err(format!(
        "prompt name {name:?}: expected 1 to 64 letters, digits, '.', '_' or '-', and not \
         \".\" or \"..\""
    ))
}

/// The process /proc/locks names as a folder's writer: the pid that took the lock, which a
/// process it forked holds on after it ended (review 15, R15-3; the kernel may say 0 then).
fn writer(pid: u32) -> String {
    match pid != 0 && Path::new(&format!("/proc/{pid}")).exists() {
        true => format!("a softprompt run or save (pid {pid})"),
        false => format!(
            "a process that a softprompt run or save (pid {pid}, no longer running) started, \
             and which inherited its lock,"
        ),
    }
}

/// Whether `dir` is a folder with a prompt folder inside (a subfolder holding
/// adapter_config.json).
fn holds_prompt_folders(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    (entries.flatten()).any(|e| e.path().join("adapter_config.json").is_file())
}

/// The prompt folders in `dir` (subfolders holding adapter_config.json), each named after its
/// folder, sorted by name; none when every one is being written.
pub fn prompts_in(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found = Vec::new();
    let (mut writing, mut misnamed) = (0, 0);
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !path.join("adapter_config.json").is_file() {
            // a prompt folder whose adapter_config.json a killed `train --overwrite` left
            // hidden was passed over without a word (verification 28, V2)
            if let Some(hidden) = softprompt::hidden_run_file(&path, "adapter_config.json") {
                errln!(
                    "note: --prompts: {} is not loaded: its adapter_config.json is missing, and \
                     {} is the earlier copy that a `train` run with --overwrite, killed part \
                     way, left hidden: start that run again into the folder (it puts it back), \
                     or rename it back",
                    path.display(),
                    hidden.display()
                );
                continue;
            }
            // a folder of prompt folders (a multi-task run's --out) was passed over without a
            // word (hostile pass 29, F1): --prompts reads one level
            if holds_prompt_folders(&path) {
                errln!(
                    "note: --prompts: {} is not loaded: it holds prompt folders (a multi-task \
                     run's --out?), and --prompts reads one level; load them by name (--prompt \
                     NAME=FOLDER, or POST /v1/prompts)",
                    path.display()
                );
            }
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        // a folder whose name a prompt cannot take (a multi-task run's task of 65 or more
        // characters) stopped the whole server's start (hostile pass 25, F1)
        if let Err(msg) = check_name(&name) {
            errln!(
                "note: --prompts: {} is not loaded: {msg}; load it under a name of its own \
                 (--prompt NAME=FOLDER, or POST /v1/prompts)",
                path.display()
            );
            misnamed += 1;
            continue;
        }
        // a run training into the folder now: its prompt is unfinished, and its files may be
        // mid-export, which stopped the whole server's start (hostile pass 21, F2); a
        // multi-task run locks each task folder, and a run into `dir` writes no folder inside
        // (the folder above was looked at too, and a saved prompt inside a live run's `out`
        // left out; review 21, R21-3)
        if let Some(pid) = softprompt::folder_writer(&path) {
            errln!(
                "note: --prompts: {} is not loaded: {} is writing into it; load it once that \
                 ends (POST /v1/prompts)",
                path.display(),
                writer(pid)
            );
            writing += 1;
            continue;
        }
        found.push((name, path));
    }
    found.sort();
    // every folder being written: the server starts without them, to load them later as the
    // notes say (it refused to start; review 15, R15-4)
    if found.is_empty() && writing == 0 {
        return Err(Error::arg(
            "--prompts",
            format!(
                "{} holds no prompt folder (a subfolder with adapter_config.json){}",
                dir.display(),
                match misnamed {
                    0 => String::new(),
                    n => format!(" whose name a prompt can take ({n} not)"),
                }
            ),
        ));
    }
    Ok(found)
}
