//! Prefix-tuning prompts in mixed batches (#17): `Model::predict_mixed` over rows of prefix
//! jobs (prefixes of different lengths) beside prompt-tuning jobs gives each row the scores
//! `Model::predict` gives its job's rows alone, within 1e-5 relative, on every family that
//! prefix tuning runs on (BERT `pet`, T5 `seq2seq` under both placements, BLOOM's ALiBi and
//! Llama's RoPE `causal`), at batch sizes 1, 3 and 64, on the CPU and through the kernels
//! (`emu`). The attention op's per-row prefixes (`PrefixRows`) equal each row's own prefix,
//! and hiding nothing instead changes them.

use softprompt::internals::rng::Rng;
use softprompt::prelude::*;

mod common;
use common::label_jobs::{check_mixed, check_step_mixed, label_job, label_task as task};
use common::{fixture, ScratchDir};

const REL_TOL: f64 = common::label_jobs::MIX_TOL;

/// On `name`: prefixes of 2 and 5 rows (under `placement`, `width` wide), two prompt-tuning
/// prompts of 3 and 6 rows, and a second 5-row prefix on the other task share batches.
fn family(name: &str, width: usize, placement: &str) {
    family_on(Device::Cpu, name, width, placement);
}

/// `family` on `device`.
fn family_on(device: Device, name: &str, width: usize, placement: &str) {
    let model = Model::open(fixture(name), device).unwrap();
    let bert = name.starts_with("bert");
    let tag = format!("{device:?}").replace(|c: char| !c.is_alphanumeric(), "");
    let dir = ScratchDir::new(&format!("mixpfx_{name}_{placement}_{tag}"));
    let pre = |rows: usize, seed: u64| {
        let at = dir.path().join(format!("p{rows}_{seed}"));
        common::prefix_prompt(&at, rows, width, placement, seed)
    };
    let prompt = |task: &Task, rows: usize, seed: u64| {
        (model.new_prompt(task, rows, &PromptInit::Random { std: 0.5 }, seed)).unwrap()
    };
    let mut jobs = Vec::new();
    for (i, (prefix, rows, three)) in [
        (true, 2, false),
        (false, 3, true),
        (true, 5, true),
        (false, 6, false),
        (true, 5, false),
    ]
    .into_iter()
    .enumerate()
    {
        let (t, e) = task(&model, bert, rows, three);
        let p = match prefix {
            true => pre(rows, 10 + i as u64),
            false => prompt(&t, rows, 20 + i as u64),
        };
        jobs.push((t, p, e));
    }
    let all: Vec<_> = jobs.iter().collect();
    let mut worst = 0.0f64;
    for batch in [1, 3, 64] {
        worst = worst.max(check_mixed(&model, &all, batch));
    }
    // prefixes alone, of different lengths
    worst = worst.max(check_mixed(&model, &[&jobs[0], &jobs[2]], 64));
    let step = check_step_mixed(&model, &all);
    eprintln!("{name} {placement}: worst rel err {worst:.2e}, step {step:.2e}");
}

#[test]
fn bert_prefix_prompts_mix_with_prompt_tuning() {
    family("bert_mlm", 2 * 2 * 48, "papers");
}

#[test]
fn t5_prefix_prompts_mix_under_both_placements() {
    family("t5_v1_0", 4 * 2 * 32, "papers");
    family("t5_v1_0", 2 * 2 * 32, "peft");
}

#[test]
fn decoder_prefix_prompts_mix_with_alibi_and_rope() {
    family("bloom", 2 * 2 * 48, "peft");
    family("llama", 2 * 2 * 2 * 12, "peft");
}

/// A greedily decoded job: the three-topic label job under `--decode greedy`, or free
/// targets (each row its own target text) of at most 4 tokens.
fn greedy_task(model: &Model, p: usize, free: bool) -> (Task, Encoded) {
    let (data, verbalizer, template) = label_job(true);
    let data = match free {
        true => common::label_jobs::pairs(&[
            ("translate: the house", "das haus"),
            ("translate: a very small dog in the garden", "ein hund"),
            ("translate: good", "gut"),
        ]),
        false => data,
    };
    let opts = TaskOptions {
        template: (!free).then(|| template.into()),
        verbalizer: (!free)
            .then(|| (verbalizer.iter().map(|&(l, w)| (l.into(), w.into()))).collect()),
        free_targets: free,
        max_target_len: free.then_some(4),
        decode: Some(Decode::Greedy),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), p).unwrap();
    let enc = model.encode(&task, &data).unwrap();
    (task, enc)
}

/// Greedy jobs on T5 (under `placement`, prefixes `width` wide): prefixes of 2 and 5 rows and
/// prompts of 3 and 6 rows decode in shared batches, each row's tokens its job's alone and
/// its log-probability within 1e-5; a rank-scored prefix job beside them keeps its scores.
fn greedy_t5_family(width: usize, placement: &str) {
    greedy_t5_family_on(Device::Cpu, width, placement);
}

/// `greedy_t5_family` on `device`.
fn greedy_t5_family_on(device: Device, width: usize, placement: &str) {
    let model = Model::open(fixture("t5_v1_0"), device).unwrap();
    let tag = format!("{device:?}").replace(|c: char| !c.is_alphanumeric(), "");
    let dir = ScratchDir::new(&format!("mixpfx_greedy_{placement}_{tag}"));
    let mut jobs = Vec::new();
    for (i, (prefix, rows, free)) in [
        (true, 2, false),
        (false, 3, true),
        (true, 5, true),
        (false, 6, false),
    ]
    .into_iter()
    .enumerate()
    {
        let (t, e) = greedy_task(&model, rows, free);
        let p = match prefix {
            true => common::prefix_prompt(
                &dir.path().join(format!("p{i}")),
                rows,
                width,
                placement,
                30 + i as u64,
            ),
            false => (model.new_prompt(&t, rows, &PromptInit::Random { std: 0.5 }, 40 + i as u64))
                .unwrap(),
        };
        let alone = model.predict(&t, &p, &e, 8).unwrap();
        assert!(
            alone.iter().all(|p| !p.ids.is_empty()),
            "job {i}: greedy output"
        );
        jobs.push((t, p, e));
    }
    let (t, e) = task(&model, false, 4, false);
    let ranked = common::prefix_prompt(&dir.path().join("ranked"), 4, width, placement, 50);
    jobs.push((t, ranked, e));
    let mut worst = 0.0f64;
    for batch in [1, 3, 64] {
        worst = worst.max(check_mixed(&model, &jobs, batch));
    }
    eprintln!("t5 greedy {placement} {tag}: worst rel err {worst:.2e}");
}

/// Through the kernels (the `emu` device, float32 build), which read each row's prefix of
/// the stack: T5's greedy prefix and prompt jobs decode in shared batches there too.
#[cfg(feature = "emu")]
#[test]
fn t5_greedy_prefix_jobs_decode_in_shared_batches_on_the_emu_device() {
    let device = Device::parse("emu", "f32").unwrap();
    greedy_t5_family_on(device, 2 * 2 * 32, "peft");
}

#[test]
fn t5_greedy_prefix_jobs_decode_in_shared_batches() {
    greedy_t5_family(4 * 2 * 32, "papers");
    greedy_t5_family(2 * 2 * 32, "peft");
}

/// A decoder's greedy prefix jobs (prefixes of 4 and 2 rows) and a prompt-tuning greedy job
/// generate in shared batches (`Decoder::generate_mixed_prefix`), each row as its job alone,
/// on ALiBi and RoPE, at batch sizes 1, 3 and 8.
#[test]
fn decoder_greedy_prefix_jobs_run_beside_prompt_jobs() {
    for (name, width) in [("bloom", 2 * 2 * 48), ("llama", 96)] {
        decoder_greedy_mix(Device::Cpu, name, width);
    }
}

/// `decoder_greedy_prefix_jobs_run_beside_prompt_jobs` through the kernels (`emu`, float32).
#[cfg(feature = "emu")]
#[test]
fn decoder_greedy_prefix_jobs_mix_on_the_emu_device() {
    let emu = Device::parse("emu", "f32").unwrap();
    for (name, width) in [("bloom", 2 * 2 * 48), ("llama", 96)] {
        decoder_greedy_mix(emu, name, width);
    }
}

/// On `name` (prefixes `width` wide): two greedy prefix jobs of 4 and 2 rows and a greedy
/// prompt job of 3 rows, mixed against each alone.
fn decoder_greedy_mix(device: Device, name: &str, width: usize) {
    let model = Model::open(fixture(name), device).unwrap();
    let dir = ScratchDir::new(&format!("mixpfx_greedy_{name}"));
    let (t_pre, e_pre) = greedy_task(&model, 4, true);
    let (t_two, e_two) = greedy_task(&model, 2, true);
    let (t_pt, e_pt) = greedy_task(&model, 3, false);
    let pre = common::prefix_prompt(&dir.path().join("pre"), 4, width, "peft", 3);
    let two = common::prefix_prompt(&dir.path().join("two"), 2, width, "peft", 5);
    let pt = (model.new_prompt(&t_pt, 3, &PromptInit::Random { std: 0.5 }, 4)).unwrap();
    let alone = model.predict(&t_pre, &pre, &e_pre, 8).unwrap();
    assert!(alone.iter().all(|p| !p.ids.is_empty()), "{alone:?}");
    let jobs = [(t_pre, pre, e_pre), (t_two, two, e_two), (t_pt, pt, e_pt)];
    for batch_size in [1, 3, 8] {
        let worst = check_mixed(&model, &jobs, batch_size);
        eprintln!(
            "{name} greedy prefixes {device:?} batch {batch_size}: worst rel err {worst:.2e}"
        );
    }
}

/// Generation behind a prefix through the kernels (the `emu` device, float32 build): on
/// ALiBi and RoPE the ids of the CPU's, the scores within 1e-5.
#[cfg(feature = "emu")]
#[test]
fn decoder_greedy_prefix_job_on_the_emu_device() {
    let dir = ScratchDir::new("mixpfx_greedy_emu");
    let emu = Device::parse("emu", "f32").unwrap();
    for (name, width) in [("bloom", 2 * 2 * 48), ("llama", 2 * 2 * 2 * 12)] {
        let pre = common::prefix_prompt(&dir.path().join(name), 4, width, "peft", 3);
        let predict = |device| {
            let model = Model::open(fixture(name), device).unwrap();
            let (task, enc) = greedy_task(&model, 4, true);
            model.predict(&task, &pre, &enc, 8).unwrap()
        };
        let (want, got) = (predict(Device::Cpu), predict(emu));
        assert_eq!(want.len(), got.len(), "{name}");
        for (w, g) in want.iter().zip(&got) {
            assert!(!w.ids.is_empty(), "{name}");
            assert_eq!(w.ids, g.ids, "{name}");
            let err = ((w.score - g.score) as f64).abs() / (w.score.abs() as f64).max(1.0);
            assert!(err < 1e-5, "{name}: score {} vs {}", g.score, w.score);
        }
    }
}

fn cli_predict(args: &[String]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .arg("predict")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "predict {args:?}: {stderr}");
    (String::from_utf8(out.stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The scores of a `predict` line, in label order.
fn scores(v: &serde_json::Value) -> Vec<f64> {
    let Some(m) = v["scores"].as_object() else {
        return Vec::new(); // greedy decoding
    };
    m.values().map(|s| s.as_f64().unwrap()).collect()
}

/// `softprompt predict --prompt pre=dir --prompt pt=dir` where `pre` is a saved prefix-tuning
/// prompt (Llama, RoPE): each row's line equals `predict --prompt dir` on its rows alone.
#[test]
fn cli_predict_mixes_a_saved_prefix_prompt() {
    cli_mix("llama", 96, &[]);
}

/// The same with `--decode greedy` on T5 (the prefix under PEFT's placement): the rows of
/// both prompts decode in shared batches, each line's output the one its prompt alone writes.
#[test]
fn cli_predict_decodes_mixed_prompts_greedily() {
    cli_mix("t5_v1_0", 2 * 2 * 32, &["--decode", "greedy"]);
}

/// `cli_predict_mixes_a_saved_prefix_prompt` on `name` (a prefix `width` wide), `flags` given
/// to every run: label, output and text equal, scores and score within 1e-5.
fn cli_mix(name: &str, width: usize, flags: &[&str]) {
    let model = Model::open(fixture(name), Device::Cpu).unwrap();
    let scratch = ScratchDir::new(&format!("mixpfx_cli_{name}"));
    let dir = scratch.path();
    let (t_pre, _) = task(&model, false, 4, false);
    let (t_pt, _) = task(&model, false, 3, true);
    let pre = common::prefix_prompt(&dir.join("raw"), 4, width, "peft", 3);
    let pt = (model.new_prompt(&t_pt, 3, &PromptInit::Random { std: 0.5 }, 4)).unwrap();
    model
        .save_prompt(dir.join("pre"), &pre, &t_pre, SaveOptions::default())
        .unwrap();
    model
        .save_prompt(dir.join("pt"), &pt, &t_pt, SaveOptions::default())
        .unwrap();
    let cfg = std::fs::read_to_string(dir.join("pre/adapter_config.json")).unwrap();
    assert!(cfg.contains("PREFIX_TUNING"), "{cfg}");
    let texts = [
        ("pre", "a great film"),
        ("pt", "the striker scored a goal in the last minute"),
        ("pre", "dull and far too long, with nothing to say"),
        ("pt", "rates rose"),
        ("pre", "fine"),
    ];
    let line =
        |(name, text): &(&str, &str)| format!("{{\"text\": \"{text}\", \"prompt\": \"{name}\"}}\n");
    let rows: String = texts.iter().map(line).collect();
    std::fs::write(dir.join("rows.jsonl"), &rows).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let mut args = vec![
        "--data".into(),
        path("rows.jsonl"),
        "--batch-size".into(),
        "4".into(),
        "--prompt".into(),
        format!("pre={}", path("pre")),
        "--prompt".into(),
        format!("pt={}", path("pt")),
    ];
    args.extend(flags.iter().cloned());
    let mixed = cli_predict(&args);
    assert_eq!(mixed.len(), texts.len());
    for name in ["pre", "pt"] {
        let only: String = texts.iter().filter(|(n, _)| *n == name).map(line).collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), only).unwrap();
        let mut args = vec![
            "--data".into(),
            path(&format!("{name}.jsonl")),
            "--prompt".into(),
            path(name),
        ];
        args.extend(flags.iter().cloned());
        let alone = cli_predict(&args);
        let got: Vec<_> = mixed.iter().filter(|v| v["prompt"] == name).collect();
        assert_eq!(got.len(), alone.len(), "{name}");
        for (g, w) in got.iter().zip(&alone) {
            let fields = |v: &serde_json::Value| {
                (v["text"].clone(), v["label"].clone(), v["output"].clone())
            };
            assert_eq!(fields(g), fields(w), "{name}");
            common::assert_close(&format!("{name} scores"), &scores(g), &scores(w), REL_TOL);
            let score = |v: &serde_json::Value| [v["score"].as_f64().unwrap_or(0.0)];
            common::assert_close_floor(
                &format!("{name} score"),
                &score(g),
                &score(w),
                REL_TOL,
                1.0,
            );
        }
        if !flags.is_empty() {
            assert!(
                got.iter().all(|v| v["output"].is_string()),
                "{name}: greedy lines"
            );
        }
    }
}

/// Through the kernels (the `emu` device, float32 build), which read each batch row's own
/// prefix of a stack (`prefix_slot`, `prefix_hidden`; kernels/ATTENTION.md): prefix jobs of
/// different lengths mix with each other and with prompt-tuning jobs at batch sizes 1, 3 and
/// 64 with the scores of each job alone, and the step over their stack gives each job its own
/// loss and prefix gradient (`family_on`).
#[cfg(feature = "emu")]
#[test]
fn prefix_jobs_mix_on_the_emu_device() {
    let device = Device::parse("emu", "f32").unwrap();
    family_on(device, "llama", 2 * 2 * 2 * 12, "peft");
    family_on(device, "bert_mlm", 2 * 2 * 48, "papers");
}

/// The attention op over a stack of prefixes (`PrefixRows`): each batch row's output, lse and
/// dq, dk, dv equal the op on that row alone behind its own prefix (of 5 rows, of 2 rows
/// left-padded to 5, or none), under each bias, causal or not; each prefix's gradient is its
/// own rows' (the padding rows' 0). Hiding nothing instead changes the outputs.
#[test]
fn attention_over_a_prefix_stack_equals_each_row_alone() {
    use common::{assert_close, normals};
    use softprompt::internals::backend::attention::prefix_bucket_lookup;
    use softprompt::internals::backend::{AttnDims, PrefixRows};
    use softprompt::internals::cpu::attention::{
        attention_bwd, attention_fwd, Bias, PositionBias, Prefix,
    };
    let (b, t, p, h, hkv, d, width) = (3, 9, 5, 4, 2, 6, 60);
    let kvw = hkv * d;
    let (k_off, v_off) = (2 * kvw, 3 * kvw);
    let lens = [2usize, 5, 0];
    let slot = [1usize, 0, 2];
    let hidden: Vec<usize> = slot.iter().map(|&s| p - lens[s]).collect();
    let dims = AttnDims {
        b,
        tq: t,
        tk: t,
        h,
        hkv,
        d,
    };
    let one = AttnDims { b: 1, ..dims };
    let mut rng = Rng::new(17);
    let q = normals(&mut rng, b * t * h * d, 1.0);
    let k = normals(&mut rng, b * t * kvw, 1.0);
    let v = normals(&mut rng, b * t * kvw, 1.0);
    let dout = normals(&mut rng, b * t * h * d, 1.0);
    let mut stack = normals(&mut rng, 3 * p * width, 1.0);
    for (s, &len) in lens.iter().enumerate() {
        stack[s * p * width..(s * p + p - len) * width].fill(0.0);
    }
    let mask: Vec<i32> = (0..b * t).map(|i| (i % t < t - i / t) as i32).collect();
    let rel = normals(&mut rng, 32 * h, 1.0);
    let rows = PrefixRows {
        slot: &slot,
        hidden: &hidden,
        prefixes: 3,
    };
    let stacked = |hidden| Prefix {
        table: &stack,
        p,
        width,
        k_off,
        v_off,
        rows: Some(PrefixRows { hidden, ..rows }),
    };
    for (bias_name, causal) in [("none", true), ("relative", false), ("alibi", true)] {
        let name = format!("bias {bias_name} causal {causal}");
        let lookups: Vec<Vec<i32>> = (0..=p)
            .map(|n| prefix_bucket_lookup(t, n, true, 32, 20))
            .collect();
        let bias = |n: usize| match bias_name {
            "relative" => Some(Bias::Relative(PositionBias {
                table: &rel,
                buckets: &lookups[n],
            })),
            "alibi" => Some(Bias::Alibi),
            _ => None,
        };
        let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; b * h * t]);
        let pre = Some(stacked(&hidden));
        attention_fwd(
            &mut out,
            &mut lse,
            &q,
            &k,
            &v,
            pre,
            &mask,
            bias(p),
            causal,
            0.4,
            dims,
        );
        let mut dstack = vec![0.0; stack.len()];
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_bwd(
            &mut dq,
            &mut dk,
            &mut dv,
            Some(&mut dstack),
            &dout,
            &q,
            &k,
            &v,
            pre,
            &lse,
            &mask,
            bias(p),
            causal,
            0.4,
            dims,
            true,
        );
        let mut want_dstack = vec![0.0; stack.len()];
        for bi in 0..b {
            let (s, len) = (slot[bi], lens[slot[bi]]);
            let own = stack[(s * p + p - len) * width..(s + 1) * p * width].to_vec();
            let own_prefix = (len > 0).then(|| Prefix {
                table: &own,
                p: len,
                width,
                k_off,
                v_off,
                rows: None,
            });
            let (qs, ks) = (
                bi * t * h * d..(bi + 1) * t * h * d,
                bi * t * kvw..(bi + 1) * t * kvw,
            );
            let (ls, ms) = (bi * h * t..(bi + 1) * h * t, bi * t..(bi + 1) * t);
            let (mut o, mut l) = (vec![0.0; t * h * d], vec![0.0; h * t]);
            let (q1, k1, v1) = (&q[qs.clone()], &k[ks.clone()], &v[ks.clone()]);
            let m1 = &mask[ms];
            attention_fwd(
                &mut o,
                &mut l,
                q1,
                k1,
                v1,
                own_prefix,
                m1,
                bias(len),
                causal,
                0.4,
                one,
            );
            assert_close(
                &format!("{name} row {bi}: out"),
                &out[qs.clone()],
                &o,
                1e-12,
            );
            assert_close(&format!("{name} row {bi}: lse"), &lse[ls], &l, 1e-12);
            let mut dp = vec![0.0; own.len()];
            let (mut dq1, mut dk1, mut dv1) =
                (vec![0.0; o.len()], vec![0.0; k1.len()], vec![0.0; k1.len()]);
            attention_bwd(
                &mut dq1,
                &mut dk1,
                &mut dv1,
                own_prefix.is_some().then_some(&mut dp[..]),
                &dout[qs.clone()],
                q1,
                k1,
                v1,
                own_prefix,
                &l,
                m1,
                bias(len),
                causal,
                0.4,
                one,
                true,
            );
            assert_close(&format!("{name} row {bi}: dq"), &dq[qs], &dq1, 1e-12);
            assert_close(
                &format!("{name} row {bi}: dk"),
                &dk[ks.clone()],
                &dk1,
                1e-12,
            );
            assert_close(&format!("{name} row {bi}: dv"), &dv[ks], &dv1, 1e-12);
            let at = (s * p + p - len) * width;
            for (w, g) in want_dstack[at..at + dp.len()].iter_mut().zip(&dp) {
                *w += g;
            }
        }
        assert_close(&format!("{name}: dprefix"), &dstack, &want_dstack, 1e-12);
        // the masking matters: hiding nothing reads the padding (and a prompt row's prefix)
        let (mut wrong, mut l2) = (vec![0.0; q.len()], vec![0.0; b * h * t]);
        let none = Some(stacked(&[0, 0, 0]));
        attention_fwd(
            &mut wrong,
            &mut l2,
            &q,
            &k,
            &v,
            none,
            &mask,
            bias(p),
            causal,
            0.4,
            dims,
        );
        assert!(common::rel_err(&wrong, &out) > 1e-2, "{name}");
    }
}
