//! Fuzz targets for what a run reads back: checkpoints (through `Trainer::resume` and a few
//! steps) and reference files (through `parity`).

use crate::common::{self, fixture, ScratchDir};
use crate::{apply, edit_st, edits, fuzz, st_edit, verdict, JsonEdit, StEdit};
use proptest::prelude::*;
use serde_json::Value;
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::{Model, Task, TaskKind, TaskSpec};
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
enum CkEdit {
    State(Vec<JsonEdit>),
    Plan(usize, usize, u32),
    Tensor(StEdit),
}

/// A checkpoint with one field of its state wrong (step, epoch, plan, position, rng, best,
/// window...), a plan index out of range, or a tensor's header wrong; then `Trainer::resume`
/// and the rest of the run.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_checkpoint() {
    use softprompt::internals::prompt::PromptInit;
    use softprompt::internals::train::checkpoint::Checkpoint;
    use softprompt::internals::train::optim::OptimConfig;
    use softprompt::internals::train::{TrainConfig, Trainer};
    let dir = ScratchDir::new("fuzz_ck");
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).expect("model");
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 40;
    let task = Task::new(spec, &model).expect("task");
    let data = Dataset::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl"),
        &DataSpec::default(),
    )
    .expect("data");
    let enc = task.encode(&model.tokenizer, &data).expect("encode");
    let cfg = TrainConfig {
        prompt_len: 3,
        init: PromptInit::Random { std: 1.0 },
        optim: OptimConfig::lester(),
        batch_size: 4,
        max_steps: Some(4),
        save_every: 1,
        log_every: 3,
        seed: 1,
        threads: rayon::current_num_threads(),
        ..TrainConfig::default()
    };
    // the checkpoint after step 2 of 4
    let base_dir = dir.path().join("base");
    let mut t = Trainer::new(&be, &model, &task, &enc, None, None, cfg.clone(), &base_dir)
        .expect("trainer");
    let keep = dir.path().join("ck.safetensors");
    t.run(&mut |e| {
        if let softprompt::internals::train::Event::Step(i) = e {
            if i.step == 3 {
                std::fs::copy(base_dir.join("checkpoint.safetensors"), &keep).expect("copy");
            }
        }
    })
    .expect("run");
    drop(t);
    let base = Checkpoint::load(&keep).expect("checkpoint");
    let base_bytes = std::fs::read(&keep).expect("read");
    let state = serde_json::to_value(&base.state).expect("state");
    let run = dir.path().join("run");
    let edit = prop_oneof![
        edits().prop_map(CkEdit::State),
        (
            any::<usize>(),
            any::<usize>(),
            prop_oneof![Just(24u32), Just(u32::MAX), 0u32..30]
        )
            .prop_map(|(b, i, x)| CkEdit::Plan(b, i, x)),
        st_edit().prop_map(CkEdit::Tensor),
    ];
    fuzz("checkpoint", 200, edit, |e| {
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).expect("mkdir");
        let path = run.join("checkpoint.safetensors");
        match &e {
            CkEdit::State(e) => {
                let Ok(s) = serde_json::from_value(apply(&state, e)) else {
                    return Ok(false);
                };
                Checkpoint {
                    state: s,
                    tensors: base.tensors.clone(),
                }
                .save(&path)
                .expect("save");
            }
            CkEdit::Plan(b, i, x) => {
                let mut ck = base.clone();
                let n = ck.state.plan.len();
                if let Some(batch) = ck.state.plan.get_mut(b % n) {
                    let m = batch.len();
                    batch[i % m] = *x;
                }
                ck.save(&path).expect("save");
            }
            CkEdit::Tensor(st) => std::fs::write(&path, edit_st(&base_bytes, st)).expect("write"),
        }
        let mut t = Trainer::resume(&be, &model, &task, &enc, None, None, cfg.clone(), &run)
            .map_err(|e| e.to_string())?;
        t.run(&mut |_| {}).map_err(|e| e.to_string())?;
        Ok(true)
    });
}

/// Reference files with one tensor's header or one metadata key wrong, through `parity`.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
fn fuzz_reference_files() {
    use softprompt::internals::reference::Reference;
    let dir = ScratchDir::new("fuzz_ref");
    let be = CpuBackend::<f32>::new();
    let cases: Vec<(PathBuf, PathBuf, Vec<u8>, Value)> = [
        ("bert_mlm", "ref_pet_random.safetensors"),
        ("bert_nohead", "ref_cls_random_mean.safetensors"),
        ("t5_flan", "ref_seq2seq_text.safetensors"),
    ]
    .iter()
    .map(|(m, r)| {
        let model = dir.copy_model(m, m);
        let path = model.join(r);
        let (_, meta) = common::read_raw(&path);
        let meta: Value = serde_json::from_str(&meta.expect("meta")["softprompt"]).expect("json");
        (
            model,
            path.clone(),
            std::fs::read(&path).expect("read"),
            meta,
        )
    })
    .collect();
    fuzz(
        "reference_files",
        500,
        (
            0usize..3,
            prop::option::of(st_edit()),
            prop::option::of(edits()),
        ),
        |(which, st, meta)| {
            let (model, path, bytes, meta_base) = &cases[which];
            std::fs::write(path, bytes).expect("write");
            if let Some(e) = meta {
                common::edit_reference_meta(path, |m| *m = apply(meta_base, &e));
            }
            if let Some(st) = st {
                let b = std::fs::read(path).expect("read");
                std::fs::write(path, edit_st(&b, &st)).expect("write");
            }
            let r = Reference::read(path).map_err(|e| e.to_string())?;
            verdict(softprompt::internals::parity::run(&be, model, &r, 1e-4))
        },
    );
}
