//! Task resolution: the task a run uses, from the same inputs the command line takes (the
//! model, a saved prompt's task.json, the data, the task options), with the same defaults.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::models::heads::Pooling;
use crate::train::data::Dataset;
use crate::train::room::{self, Placing};
use crate::train::spec::{
    check_unique_labels, parse_verbalizer, Decode, TargetEnd, TaskKind, TaskSpec, TEXT_SLOT,
};
use crate::train::{self, Model};
use crate::Backend;

/// The task options, each one overriding the default for the model (or, for a saved prompt,
/// its task.json). Every field is the command line's flag of the same name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskOptions {
    /// pet, cls, seq2seq or causal (default: from the model: T5 seq2seq, the decoder-only
    /// models causal, BERT pet when it has its masked-LM head, else cls)
    pub task: Option<TaskKind>,
    /// the text around the input, with `{text}` once; pet also needs one `[MASK]`
    pub template: Option<String>,
    /// the labels in order (default: the verbalizer's, else the sorted labels of the data)
    pub labels: Option<Vec<String>>,
    /// (label, word) pairs: pet's one-token words, or seq2seq's and causal's target texts
    pub verbalizer: Option<Vec<(String, String)>>,
    /// cls pooling
    pub pooling: Option<Pooling>,
    /// seq2seq, causal: the label field holds free target texts
    pub free_targets: bool,
    /// tokens per row, special tokens included (default: 128, or what the model's positions
    /// leave next to the prompt)
    pub max_len: Option<usize>,
    /// seq2seq, causal: tokens per target
    pub max_target_len: Option<usize>,
    /// seq2seq and causal prediction
    pub decode: Option<Decode>,
    /// causal: the token after each target (default eos; pad reproduces PEFT's causal-LM
    /// guide; none appends nothing)
    pub target_end: Option<TargetEnd>,
}

impl TaskOptions {
    /// Parses the command line's text forms: `verbalizer` as `label=word,...` or a JSON
    /// object, `labels` comma-separated, the others by name.
    pub fn verbalizer_from_str(s: &str) -> Result<Vec<(String, String)>> {
        parse_verbalizer(s)
    }

    /// `labels` from its comma-separated form.
    pub fn labels_from_str(s: &str) -> Vec<String> {
        s.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The spec: `base` (a prompt's task.json) or defaults for the model, with the options on
/// top. `data` supplies the labels when nothing else does; `prompt_len` bounds the default
/// max_len by the model's positions.
pub(crate) fn resolve<B: Backend>(
    opts: &TaskOptions,
    base: Option<TaskSpec>,
    model: &Model<B>,
    data: Option<&Dataset>,
    prompt_len: usize,
) -> Result<TaskSpec> {
    // first, so that a prompt too long for the model is named as such (the default max_len
    // below is what room the prompt leaves)
    model.check_lengths(prompt_len, None)?;
    // a saved prompt's labels and their words, which --labels may reorder but not invent
    let saved: Option<Vec<(String, String)>> = base
        .as_ref()
        .filter(|b| opts.task.is_none_or(|t| t == b.kind))
        .map(|b| {
            let words = (b.label_words.len() == b.labels.len()).then_some(&b.label_words);
            (b.labels.iter().enumerate())
                .map(|(i, l)| {
                    let word = words.and_then(|w| w.get(i)).cloned().unwrap_or_default();
                    (l.clone(), word)
                })
                .collect()
        });
    if let Some(v) = &opts.verbalizer {
        check_unique_labels(v)?;
    }
    let mut spec = base_spec(opts, base, model, prompt_len);
    check_applies(opts, spec.kind)?;
    apply_options(opts, &mut spec);
    // max_len next to this prompt (Task::new checks it alone, not knowing the prompt); a
    // causal row's targets take positions too, counted once they are tokens (`fit_positions`)
    let causal = spec.kind == TaskKind::Causal;
    model.check_lengths(prompt_len, Some(spec.max_len).filter(|_| !causal))?;
    // free targets given here or saved in the prompt's task.json: nothing to rank
    if spec.free_targets && opts.decode == Some(Decode::Rank) {
        return Err(Error::arg(
            "--decode",
            "rank scores the label targets, and free targets (--free-targets, or the prompt's \
             task.json) have none (their rows are decoded greedily): leave it out",
        ));
    }
    if spec.free_targets {
        spec.labels.clear();
        spec.label_words.clear();
        return Ok(spec);
    }
    let verbalizer = opts.verbalizer.as_deref();
    set_labels(opts, &mut spec, verbalizer, data)?;
    if let (Some(saved), Some(_), None) = (&saved, &opts.labels, verbalizer) {
        keep_saved_words(&mut spec, saved)?;
    }
    if spec.kind != TaskKind::Cls {
        set_label_words(&mut spec, verbalizer)?;
    }
    // before a message quotes it (hostile pass 24)
    crate::train::encode_text::check_tokenize_bytes(&spec.template, "--template")?;
    if !spec.template.contains(TEXT_SLOT) {
        return Err(Error::arg(
            "--template",
            format!("{:?} must hold {TEXT_SLOT}", spec.template),
        ));
    }
    Ok(spec)
}

/// `causal`: a row's prompt, text and what follows the text (`room::after_row`) all sit
/// within the model's sliding attention window (config.json's `sliding_window`, which this
/// engine does not slide), or else within this engine's cap. The default max_len (`given`
/// false) counted the prompt only, so a long row was refused in the middle of training (or
/// its target ran past the cap) instead of cut; it is cut to leave the targets room. A
/// max_len given (a flag, or a saved task.json) that leaves none is refused, naming the flag.
pub(crate) fn fit_positions<B: Backend>(
    task: train::Task,
    model: &Model<B>,
    p: usize,
    given: bool,
    placing: Placing,
) -> Result<train::Task> {
    let Some(room) = room::text_room(&task, model, p, placing) else {
        return Ok(task);
    };
    let fits = room.fits;
    if task.spec.max_len <= fits {
        return Ok(task);
    }
    if given {
        return room::check_room(&task, model, p, placing).map(|()| task);
    }
    if fits < 2 {
        let (size, what, targets) = (room.limit, room.what, room.targets);
        let msg = format!("{p} rows{targets} leave {fits} of the {size} positions of {what} for a row's text (2 at least): shorten the prompt or the targets (--max-target-len)");
        return Err(Error::arg("--prompt-len", msg));
    }
    let mut spec = task.spec.clone();
    spec.max_len = fits;
    train::Task::new(spec, model)
}

/// The task a model is tuned for when nothing names one.
pub(crate) fn default_kind<B: Backend>(model: &Model<B>) -> TaskKind {
    match model.arch_name() {
        "t5" => TaskKind::Seq2Seq,
        "bloom" | "llama" => TaskKind::Causal,
        _ if model.has_mlm_head() => TaskKind::Pet,
        _ => TaskKind::Cls,
    }
}

/// The base of a prompt folder without task.json whose head.safetensors records its labels
/// (`head_labels`): the `cls` task the head records (its template, pooling and max_len), or
/// for a head that records its labels alone the defaults with those labels, in the order of
/// the head's rows, as a task.json would give them (so that --labels may name them in that
/// order only; the data's sorted labels swapped the rows of a head trained in another order).
/// None when the task asked for is not `cls`; none asked for is `cls`, whatever the model's
/// default: only a `cls` run writes a head (a folder copied out was scored as `pet` on a
/// model with an MLM head; review 18, R18-4).
pub(crate) fn head_spec<B: Backend>(
    opts: &TaskOptions,
    (head_labels, head_task): (Option<&[String]>, Option<&TaskSpec>),
    model: &Model<B>,
    prompt_len: usize,
) -> Option<TaskSpec> {
    let labels = head_labels?;
    let kind = opts.task.unwrap_or(TaskKind::Cls);
    (kind == TaskKind::Cls).then(|| match head_task {
        Some(task) => task.clone(),
        None => {
            let mut spec = default_spec(kind, model, prompt_len);
            spec.labels = labels.to_vec();
            spec
        }
    })
}

/// The warning a task made for a folder without task.json needs: a `cls` head saved without
/// its label names (an earlier softprompt's, or made by hand) read in the order of `spec`'s
/// labels, which no one gave (`labels_given` false: the data's, sorted).
pub(crate) fn head_order_warning(
    prompt: &crate::Prompt,
    spec: &TaskSpec,
    labels_given: bool,
) -> Option<String> {
    let unknown = prompt.task.is_none() && prompt.head.is_some() && prompt.head_labels.is_none();
    (unknown && spec.kind == TaskKind::Cls && !labels_given).then(|| {
        let head = (prompt.dir.as_ref()).map_or("the prompt's cls head".into(), |d| {
            d.join(crate::train::checkpoint::HEAD_FILE)
                .display()
                .to_string()
        });
        format!(
            "{head} records no label names (an earlier softprompt's save, or made by hand) \
             and there is no task.json, so the order of the head's rows is unknown: it is \
             assumed to be the labels sorted, {:?}; pass --labels in the order training \
             used, or the scores of the labels are swapped",
            spec.labels
        )
    })
}

/// `base` when it is of the asked task, else the defaults of the task the option or the
/// model names.
fn base_spec<B: Backend>(
    opts: &TaskOptions,
    base: Option<TaskSpec>,
    model: &Model<B>,
    prompt_len: usize,
) -> TaskSpec {
    let kind = match (opts.task, &base) {
        (Some(t), _) => t,
        (None, Some(b)) => b.kind,
        (None, None) => default_kind(model),
    };
    match base {
        Some(b) if b.kind == kind => b,
        _ => default_spec(kind, model, prompt_len),
    }
}

/// The defaults of task `kind` on `model`, max_len bounded by what room a prompt of
/// `prompt_len` rows leaves.
fn default_spec<B: Backend>(kind: TaskKind, model: &Model<B>, prompt_len: usize) -> TaskSpec {
    let mut s = TaskSpec::new(kind, &[]);
    if let Some(limit) = model.max_tokens(prompt_len) {
        s.max_len = s.max_len.min(limit);
    }
    s
}

/// An option the task has no use for is refused: ignoring it would run something other than
/// what the user asked for, without a word.
fn check_applies(opts: &TaskOptions, kind: TaskKind) -> Result<()> {
    let targets = matches!(kind, TaskKind::Seq2Seq | TaskKind::Causal);
    let to_targets = "seq2seq and causal";
    let checks = [
        (
            "--pooling",
            opts.pooling.is_some(),
            kind == TaskKind::Cls,
            "cls",
        ),
        (
            "--verbalizer",
            opts.verbalizer.is_some(),
            kind != TaskKind::Cls,
            "pet, seq2seq and causal",
        ),
        ("--free-targets", opts.free_targets, targets, to_targets),
        (
            "--max-target-len",
            opts.max_target_len.is_some(),
            targets,
            to_targets,
        ),
        ("--decode", opts.decode.is_some(), targets, to_targets),
        (
            "--target-end",
            opts.target_end.is_some(),
            kind == TaskKind::Causal,
            "causal",
        ),
    ];
    match checks
        .iter()
        .find(|(_, given, applies, _)| *given && !applies)
    {
        Some((flag, _, _, kinds)) => Err(Error::arg(
            *flag,
            format!(
                "does nothing for the {} task (it applies to {kinds} only): leave it out",
                kind.name()
            ),
        )),
        None => Ok(()),
    }
}

/// The options that set one field each.
fn apply_options(opts: &TaskOptions, spec: &mut TaskSpec) {
    if let Some(t) = &opts.template {
        spec.template = t.clone();
    }
    if opts.free_targets {
        spec.free_targets = true;
    }
    if let Some(p) = opts.pooling {
        spec.pooling = p;
    }
    if let Some(n) = opts.max_len {
        spec.max_len = n;
    }
    if let Some(n) = opts.max_target_len {
        spec.max_target_len = n;
    }
    if let Some(d) = opts.decode {
        spec.decode = d;
    }
    if let Some(e) = opts.target_end {
        spec.target_end = e;
    }
}

/// Every label in `data` has a name: a blank one (`Dataset::from_pairs`; the file parsers
/// refuse it naming the field) became a class named "".
fn check_named_labels(data: Option<&Dataset>) -> Result<()> {
    let Some(d) = data else { return Ok(()) };
    let blank =
        (d.examples.iter()).find(|e| e.label.as_deref().is_some_and(|l| l.trim().is_empty()));
    match blank {
        Some(e) => Err(Error::data(
            &d.path,
            e.line,
            format!(
                "the label is {:?}: a label needs a name (None for a row without one)",
                e.label.as_deref().unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

/// Labels read from the data that differ only by surrounding whitespace ("positive" and
/// "positive ", or CSV's `ok, positive`) or by their Unicode normalisation ("café" composed
/// and decomposed, as macOS and some editors write it; hostile pass 33, F2) are refused,
/// naming both and their lines: they trained as two classes that look alike without a word.
/// Labels are otherwise kept as written, as Hugging Face datasets keeps them (it strips
/// nothing).
fn check_space_twins(d: &Dataset) -> Result<()> {
    let mut first: std::collections::HashMap<String, (&str, usize)> = Default::default();
    for e in &d.examples {
        let Some(label) = e.label.as_deref() else {
            continue;
        };
        let key = crate::train::label_twins::look_alike_key(label);
        let (seen, line) = *first.entry(key).or_insert((label, e.line));
        if seen != label {
            let by = crate::train::label_twins::twin_difference(label, seen);
            return Err(Error::data(
                &d.path,
                e.line,
                format!(
                    "the label {label:?} differs from the label {seen:?} (line {line}) only by \
                     {by}, so they would train as two classes: write them the same (labels are \
                     kept as written, not trimmed or normalised)"
                ),
            ));
        }
    }
    Ok(())
}

/// The labels: the option, else the verbalizer's, else the spec's, else those of `data`.
fn set_labels(
    opts: &TaskOptions,
    spec: &mut TaskSpec,
    verbalizer: Option<&[(String, String)]>,
    data: Option<&Dataset>,
) -> Result<()> {
    check_named_labels(data)?;
    if let Some(labels) = &opts.labels {
        spec.labels = labels.clone();
        spec.label_words.clear();
    } else if let Some(v) = verbalizer {
        // the verbalizer gives the labels: one it lacks is its fault, not --labels'
        if let Some(ex) = data.and_then(|d| {
            d.examples.iter().find(|e| {
                e.label
                    .as_ref()
                    .is_some_and(|l| spec.kind != TaskKind::Cls && !v.iter().any(|(k, _)| k == l))
            })
        }) {
            let label = ex.label.clone().unwrap_or_default();
            return Err(Error::arg(
                "--verbalizer",
                format!(
                    "has no word for the label {label:?} ({}:{}): add {label}=WORD",
                    data.map(|d| d.path.display().to_string())
                        .unwrap_or_default(),
                    ex.line
                ),
            ));
        }
        if v.len() < 2 {
            return Err(Error::arg(
                "--verbalizer",
                format!("gives {} label(s); a classifier needs at least 2", v.len()),
            ));
        }
        spec.labels = v.iter().map(|(l, _)| l.clone()).collect();
        // its own twins are its fault: no --labels was given (verification 32, F2-d)
        train::label_twins::check_label_list(&spec.labels, "--verbalizer")?;
        spec.label_words.clear();
    } else if spec.labels.is_empty() {
        if let Some(d) = data {
            check_space_twins(d)?;
        }
        let mut found: Vec<String> = data
            .map(|d| d.examples.iter().filter_map(|e| e.label.clone()).collect())
            .unwrap_or_default();
        found.sort();
        found.dedup();
        spec.labels = found;
        spec.label_words.clear();
    }
    Ok(())
}

/// `--labels` over a saved prompt: the labels must be the prompt's (the head's rows and the
/// verbalizer's words belong to them), in any order but the head's for `cls`; each keeps its
/// saved word.
fn keep_saved_words(spec: &mut TaskSpec, saved: &[(String, String)]) -> Result<()> {
    let names: Vec<&str> = saved.iter().map(|(l, _)| l.as_str()).collect();
    if let Some(l) = spec.labels.iter().find(|l| !names.contains(&l.as_str())) {
        // a cls head has a row per trained label; the other tasks score words
        let advice = match spec.kind {
            TaskKind::Cls => "(the cls head has a row for each of them, and no other)",
            _ => "(give --verbalizer to score new label words)",
        };
        return Err(Error::arg(
            "--labels",
            format!(
                "{l:?} is not one of the prompt's labels {names:?}: a saved prompt scores the labels it was trained for {advice}"
            ),
        ));
    }
    if spec.kind == TaskKind::Cls && spec.labels != names {
        return Err(Error::arg(
            "--labels",
            format!(
                "{:?} differs from the labels {names:?} in the order of the prompt's cls head rows",
                spec.labels
            ),
        ));
    }
    if spec.kind != TaskKind::Cls {
        spec.label_words = (spec.labels.iter())
            .map(|l| {
                let word = saved.iter().find(|(k, _)| k == l).map(|(_, w)| w.clone());
                word.unwrap_or_else(|| l.clone())
            })
            .collect();
    }
    Ok(())
}

/// `pet`, `seq2seq` and `causal`: each label's word from the verbalizer, or the label itself.
fn set_label_words(spec: &mut TaskSpec, verbalizer: Option<&[(String, String)]>) -> Result<()> {
    match verbalizer {
        Some(v) => {
            spec.label_words = spec
                .labels
                .iter()
                .map(|l| {
                    v.iter()
                        .find(|(k, _)| k == l)
                        .map(|(_, w)| w.clone())
                        .ok_or_else(|| {
                            Error::arg("--verbalizer", format!("no word for label {l:?}"))
                        })
                })
                .collect::<Result<_>>()?;
        }
        None if spec.label_words.len() != spec.labels.len() => {
            spec.label_words = spec.labels.clone()
        }
        None => {}
    }
    Ok(())
}

/// A task resolved against a model's tokenizer: what `step`, `train`, `evaluate`,
/// `predict` and `generate` run.
#[derive(Clone, Debug)]
pub struct Task {
    pub(crate) inner: train::Task,
    /// what making it for a saved prompt found worth a warning ([`Task::warning`])
    pub(crate) warning: Option<String>,
}

impl Task {
    /// The task's definition (what task.json holds).
    pub fn spec(&self) -> &TaskSpec {
        &self.inner.spec
    }

    /// The labels in score order (empty with free targets).
    pub fn labels(&self) -> &[String] {
        &self.inner.spec.labels
    }

    /// A warning about how [`crate::Model::task_for`] made it, to show the user: the prompt's
    /// folder has no task.json and its `cls` head records no label names (a head saved by an
    /// earlier softprompt, or made by hand), so its rows were taken to be the labels sorted,
    /// which no option named. The command line prints it as a warning and Python warns.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        self.inner.spec.kind
    }

    /// What this task, made for `prompt` with options on top ([`crate::Model::task_for`]),
    /// uses in place of what the prompt was trained with (its task.json): a line for each
    /// such setting (`--template`, `--pooling`), naming the flag, the trained value and the
    /// value used. The options win, as asked, but a prompt scores what it was trained for
    /// only with its own template and pooling; the library says nothing, the command line
    /// prints each line as a note and Python warns.
    pub fn overrides(&self, prompt: &crate::Prompt) -> Vec<String> {
        // a folder without task.json: the cls task its head records, if this is that task
        let head = (prompt.head_task()).filter(|_| self.inner.spec.kind == TaskKind::Cls);
        let (trained, record) = match (prompt.saved_task(), head) {
            (Some(t), _) => (t, "its task.json"),
            (None, Some(t)) => (t, "as its head.safetensors records"),
            (None, None) => return Vec::new(),
        };
        let used = &self.inner.spec;
        let mut lines = Vec::new();
        let mut say = |flag: &str, trained: String, now: String| {
            lines.push(format!(
                "{flag} {now} is used, but the prompt was trained with {trained} ({record})"
            ))
        };
        if used.template != trained.template {
            say(
                "--template",
                format!("{:?}", trained.template),
                format!("{:?}", used.template),
            );
        }
        if used.kind == TaskKind::Cls && used.pooling != trained.pooling {
            say(
                "--pooling",
                trained.pooling.name().into(),
                used.pooling.name().into(),
            );
        }
        lines
    }

    /// Whether the task is `causal` under `TargetEnd::Eos` (the default) on a model whose
    /// config.json names no `eos_token_id`: its targets then end with no token, as under
    /// `TargetEnd::None`, and generation stops at its length bound (or at a stop token of
    /// generation_config.json, which no target teaches). The library scores
    /// them so (as PEFT does) and says nothing; the command line warns.
    pub fn eos_missing(&self) -> bool {
        self.inner.eos_missing()
    }

    /// How many rows of `enc` hold a target that greedy generation could never produce whole
    /// (a stop token before its end: free targets are data, so such rows load and are scored
    /// as misses), and the first one's line in the data file. None when there are none or
    /// the task does not generate. The command line warns.
    pub fn stops_inside_targets(&self, enc: &crate::Encoded) -> Option<(usize, usize)> {
        self.inner.stops_inside_targets(&enc.rows)
    }
}
