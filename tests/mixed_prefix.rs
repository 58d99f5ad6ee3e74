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
use common::label_jobs::label_job;
use common::{fixture, ScratchDir};

const REL_TOL: f64 = 1e-5;

/// The family's label job (rank classification, or `pet` on BERT) with a prompt of `p` rows.
fn task(model: &Model, bert: bool, p: usize, three: bool) -> (Task, Encoded) {
    let (data, verbalizer, template) = label_job(three);
    // BERT's verbalizer words are one token each
    let verbalizer = (verbalizer.iter().enumerate())
        .map(|(i, &(l, w))| match bert {
            true => (l.into(), ["bad", "great", "good"][i].into()),
            false => (l.into(), w.into()),
        })
        .collect();
    let opts = TaskOptions {
        template: (!bert).then(|| template.into()),
        verbalizer: Some(verbalizer),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data), p).unwrap();
    let enc = model.encode(&task, &data).unwrap();
    (task, enc)
}

/// Rows of every job interleaved (job 0's first row, job 1's first row, ...).
fn interleave(encs: &[&Encoded]) -> Vec<(usize, Row)> {
    let longest = encs.iter().map(|e| e.rows.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            (encs.iter().enumerate())
                .filter_map(move |(j, e)| e.rows.get(i).map(|r| (j, r.clone())))
        })
        .collect()
}

/// Each mixed row's scores and class against its job's `predict` alone; the worst error.
fn check_mixed(model: &Model, jobs: &[&(Task, Prompt, Encoded)], batch_size: usize) -> f64 {
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.predict_mixed(&refs, &rows, batch_size).unwrap();
    assert_eq!(mixed.len(), rows.len());
    let alone: Vec<Vec<Prediction>> = (jobs.iter())
        .map(|(t, p, e)| model.predict(t, p, e, 1).unwrap())
        .collect();
    let mut next = vec![0usize; jobs.len()];
    let mut worst = 0.0f64;
    for ((j, _), got) in rows.iter().zip(&mixed) {
        let want = &alone[*j][next[*j]];
        next[*j] += 1;
        assert_eq!(got.scores.len(), jobs[*j].0.labels().len(), "job {j}");
        let what = format!("job {j} scores (batch {batch_size})");
        common::assert_close(&what, &got.scores, &want.scores, REL_TOL);
        worst = worst.max(common::rel_err(&got.scores, &want.scores));
        assert_eq!(got.class, want.class, "job {j}");
    }
    worst
}

/// `step_mixed` over every job's rows (on BERT one batch over the prompt table and the
/// prefixes' stack; on T5 and the decoders the prefix jobs one batch over their stack, the
/// prompt jobs another) against `step` on each job's rows alone: loss, prompt or prefix
/// gradient, tokens. Returns the worst error.
fn check_step_mixed(model: &Model, jobs: &[&(Task, Prompt, Encoded)]) -> f64 {
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let encs: Vec<&Encoded> = jobs.iter().map(|(_, _, e)| e).collect();
    let rows = interleave(&encs);
    let mixed = model.step_mixed(&refs, &rows).unwrap();
    assert_eq!(mixed.len(), jobs.len());
    let mut worst = 0.0f64;
    for (j, ((task, prompt, enc), got)) in jobs.iter().zip(&mixed).enumerate() {
        let want = model.step(task, prompt, &enc.rows).unwrap();
        common::assert_close(&format!("job {j} loss"), &[got.loss], &[want.loss], REL_TOL);
        assert!(want.prompt_grad.iter().any(|&g| g != 0.0), "job {j}");
        let name = format!("job {j} gradient");
        common::assert_close(&name, &got.prompt_grad, &want.prompt_grad, REL_TOL);
        worst = worst.max(common::rel_err(&got.prompt_grad, &want.prompt_grad));
        assert_eq!(got.tokens, want.tokens, "job {j}");
    }
    worst
}

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
    let m = v["scores"].as_object().unwrap();
    m.values().map(|s| s.as_f64().unwrap()).collect()
}

/// `softprompt predict --prompt pre=dir --prompt pt=dir` where `pre` is a saved prefix-tuning
/// prompt (Llama, RoPE): each row's line equals `predict --prompt dir` on its rows alone.
#[test]
fn cli_predict_mixes_a_saved_prefix_prompt() {
    let model = Model::open(fixture("llama"), Device::Cpu).unwrap();
    let scratch = ScratchDir::new("mixpfx_cli");
    let dir = scratch.path();
    let (t_pre, _) = task(&model, false, 4, false);
    let (t_pt, _) = task(&model, false, 3, true);
    let pre = common::prefix_prompt(&dir.join("raw"), 4, 96, "peft", 3);
    let pt = (model.new_prompt(&t_pt, 3, &PromptInit::Random { std: 0.5 }, 4)).unwrap();
    model.save_prompt(dir.join("pre"), &pre, &t_pre).unwrap();
    model.save_prompt(dir.join("pt"), &pt, &t_pt).unwrap();
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
    let mixed = cli_predict(&[
        "--data".into(),
        path("rows.jsonl"),
        "--batch-size".into(),
        "4".into(),
        "--prompt".into(),
        format!("pre={}", path("pre")),
        "--prompt".into(),
        format!("pt={}", path("pt")),
    ]);
    assert_eq!(mixed.len(), texts.len());
    for name in ["pre", "pt"] {
        let only: String = texts.iter().filter(|(n, _)| *n == name).map(line).collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), only).unwrap();
        let alone = cli_predict(&[
            "--data".into(),
            path(&format!("{name}.jsonl")),
            "--prompt".into(),
            path(name),
        ]);
        let got: Vec<_> = mixed.iter().filter(|v| v["prompt"] == name).collect();
        assert_eq!(got.len(), alone.len(), "{name}");
        for (g, w) in got.iter().zip(&alone) {
            assert_eq!(
                (&g["text"], &g["label"]),
                (&w["text"], &w["label"]),
                "{name}"
            );
            common::assert_close(&format!("{name} scores"), &scores(g), &scores(w), REL_TOL);
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
