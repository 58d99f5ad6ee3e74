//! Prefix tuning (PEFT PREFIX_TUNING, P-tuning v2): every committed prefix reference passes at
//! 1e-4 on the CPU, under its placement (PEFT's for the files PEFT made, the papers' for the
//! others), with and without `prefix_projection`; PEFT's T5 placement leaves the blocks it
//! never reads at exactly zero gradient; `--recompute layer` gives the same step bit for bit.

mod common;

use common::{fixtures, PREFIX_REFERENCES};
use softprompt::internals::backend::{DType, Storage};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::{Model, Objective, Recompute, Tuning};
use softprompt::internals::parity;
use softprompt::internals::reference::{RefObjective, Reference};
use softprompt::internals::CpuBackend;

/// A float32 CPU run passes at 1e-4 (reference-format.md).
const TOL: f64 = 1e-4;

fn read(reference: &str) -> Reference {
    let file = fixtures().join("deep").join(reference);
    Reference::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_prefix_reference_passes() {
    let be = CpuBackend::<f32>::new();
    for (model, reference) in PREFIX_REFERENCES {
        let r = read(reference);
        let prefix = r.prefix.as_ref().expect("a prefix reference reads as one");
        let report = parity::run(&be, &fixtures().join(model), &r, TOL)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert!(report.passed(), "{reference}\n{}", report.table());
        assert!(
            report.skipped.is_empty(),
            "{reference}: skipped {:?}",
            report.skipped
        );
        let names: Vec<&str> = report.rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(
            &names[..3],
            ["loss", "logits", "prefix_grad"],
            "{reference}"
        );
        if let Some(projection) = &prefix.projection {
            assert!(names.contains(&"prefix (projection output)"), "{names:?}");
            for (tensor, _) in projection.cfg.shapes() {
                let grad = format!("grad.encoder.{tensor}");
                assert!(names.contains(&grad.as_str()), "{reference}: no row {grad}");
            }
        }
    }
}

/// The step's prefix gradient (P, N·2·w) on `be`, and its loss.
fn prefix_step(
    be: &CpuBackend<f32>,
    model: &Model<CpuBackend<f32>>,
    r: &Reference,
    recompute: Recompute,
) -> (f64, Vec<f32>) {
    let spec = r.prefix.as_ref().unwrap().spec;
    let objective = match &r.objective {
        RefObjective::Mlm { labels } => Objective::Mlm { labels },
        RefObjective::Seq2Seq { labels, l } => Objective::Seq2Seq { labels, l: *l },
        RefObjective::Causal { labels } => Objective::Causal { labels },
        o => panic!("objective {}", o.name()),
    };
    let prefix = be.upload(DType::F32, &r.prompt.data).unwrap();
    let mut dprefix = be.zeros(DType::F32, r.prompt.data.len()).unwrap();
    let step = model
        .train_step(
            be,
            &mut MemoryAccountant::new(),
            &mut dprefix,
            &prefix,
            &r.batch,
            Tuning::Prefix(spec),
            &objective,
            recompute,
            None,
        )
        .unwrap();
    (step.loss, be.download(&dprefix).unwrap())
}

/// PEFT reads block 2l mod N in T5's decoder layer l: with N even the odd blocks are never
/// read, and their gradient is exactly zero (the reference's `unread_blocks`), the others not.
#[test]
fn peft_t5_placement_leaves_unread_blocks_at_zero() {
    let be = CpuBackend::<f32>::new();
    for (model, reference) in [
        ("t5_v1_0", "t5_v1_0/ref_seq2seq_prefix_peft.safetensors"),
        ("t5_flan", "t5_flan/ref_seq2seq_prefix_peft.safetensors"),
    ] {
        let r = read(reference);
        let unread: Vec<u64> = r.metadata["unread_blocks"]
            .as_array()
            .expect("PEFT's T5 references list their unread blocks")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let m = Model::load(&be, &fixtures().join(model)).unwrap();
        let (_, grad) = prefix_step(&be, &m, &r, Recompute::None);
        let (p, width) = (r.p(), r.d());
        let blocks = r.prefix.as_ref().unwrap().spec.blocks.unwrap();
        let block = width / blocks;
        for n in 0..blocks {
            let zero = (0..p).all(|row| {
                grad[row * width + n * block..row * width + (n + 1) * block]
                    .iter()
                    .all(|&g| g == 0.0)
            });
            assert_eq!(zero, unread.contains(&(n as u64)), "{reference}: block {n}");
        }
    }
}

/// Under `--recompute layer` each layer's forward runs again in backward, reading the same
/// prefix: the loss and the prefix gradient are the same bit for bit, on BERT, T5 (both
/// placements) and a RoPE decoder.
#[test]
fn recompute_layer_gives_the_same_step() {
    let be = CpuBackend::<f32>::new();
    for (model, reference) in [
        ("bert_mlm", "bert_mlm/ref_mlm_prefix_papers.safetensors"),
        ("t5_v1_0", "t5_v1_0/ref_seq2seq_prefix_papers.safetensors"),
        ("t5_flan", "t5_flan/ref_seq2seq_prefix_peft.safetensors"),
        ("llama", "llama/ref_causal_prefix.safetensors"),
    ] {
        let r = read(reference);
        let m = Model::load(&be, &fixtures().join(model)).unwrap();
        let full = prefix_step(&be, &m, &r, Recompute::None);
        let again = prefix_step(&be, &m, &r, Recompute::Layer);
        assert_eq!(full.0.to_bits(), again.0.to_bits(), "{reference}: loss");
        assert!(
            full.1
                .iter()
                .zip(&again.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{reference}: prefix gradient"
        );
        assert!(full.1.iter().any(|&g| g != 0.0), "{reference}");
    }
}

/// The attention op with a prefix read in place equals the same op over keys and values
/// concatenated by hand (the prefix rows repeated over the batch, their mask columns 1, the
/// bias over P + Tk keys), forward and backward, in f64; the prefix gradient is the batch sum
/// of the concatenated problem's prefix-row gradients, added (`+=`) to what dprefix held. Odd
/// sizes, grouped-query heads, a padded row, and each bias with and without the causal mask;
/// T = 67 spans two query tiles of 64, so the causal mask's clamp of a tile's key range (the
/// first tile stops at key P + 64) is checked against the concatenated problem's.
#[test]
fn prefix_attention_equals_concatenated_keys() {
    use common::{assert_close, normals};
    use softprompt::internals::backend::attention::prefix_bucket_lookup;
    use softprompt::internals::backend::AttnDims;
    use softprompt::internals::cpu::attention::{
        attention_bwd, attention_fwd, Bias, PositionBias, Prefix,
    };
    use softprompt::internals::rng::Rng;
    let (b, t, p, h, hkv, d, blocks, block) = (3, 67, 5, 4, 2, 6, 3, 1);
    let kvw = hkv * d;
    let width = blocks * 2 * kvw;
    let dims = AttnDims {
        b,
        tq: t,
        tk: t,
        h,
        hkv,
        d,
    };
    let all = AttnDims { tk: p + t, ..dims };
    let mut rng = Rng::new(15);
    let q = normals(&mut rng, b * t * h * d, 1.0);
    let k = normals(&mut rng, b * t * kvw, 1.0);
    let v = normals(&mut rng, b * t * kvw, 1.0);
    let table = normals(&mut rng, p * width, 1.0);
    let dout = normals(&mut rng, b * t * h * d, 1.0);
    let mask: Vec<i32> = (0..b * t)
        .map(|i| (i % t < t - 2 * (i / t)) as i32)
        .collect();
    let (k_off, v_off) = (block * 2 * kvw, block * 2 * kvw + kvw);
    let prefix = Prefix {
        table: &table,
        p,
        width,
        k_off,
        v_off,
        rows: None,
    };
    // the concatenated problem: (B, P + T, Hkv, D) keys and values, (B, P + T) mask
    let tab = &table;
    let cat = |x: &[f64], off: usize| -> Vec<f64> {
        (0..b)
            .flat_map(|bi| {
                let pre = (0..p).flat_map(move |r| tab[r * width + off..][..kvw].to_vec());
                pre.chain(x[bi * t * kvw..(bi + 1) * t * kvw].to_vec())
            })
            .collect()
    };
    let (kc, vc) = (cat(&k, k_off), cat(&v, v_off));
    let mask_c: Vec<i32> = (0..b)
        .flat_map(|bi| std::iter::repeat_n(1, p).chain(mask[bi * t..(bi + 1) * t].to_vec()))
        .collect();
    let rel = normals(&mut rng, 32 * h, 1.0);
    let buckets = prefix_bucket_lookup(t, p, true, 32, 20);
    for (bias_name, causal) in [("none", true), ("relative", false), ("alibi", true)] {
        let bias = || match bias_name {
            "relative" => Some(Bias::Relative(PositionBias {
                table: &rel,
                buckets: &buckets,
            })),
            "alibi" => Some(Bias::Alibi),
            _ => None,
        };
        let name = format!("bias {bias_name} causal {causal}");
        let (mut out, mut lse) = (vec![f64::NAN; q.len()], vec![f64::NAN; b * h * t]);
        let fwd = |out: &mut [f64], lse: &mut [f64], pre: Option<Prefix<f64>>| match pre {
            Some(_) => attention_fwd(out, lse, &q, &k, &v, pre, &mask, bias(), causal, 0.4, dims),
            None => attention_fwd(
                out,
                lse,
                &q,
                &kc,
                &vc,
                None,
                &mask_c,
                bias(),
                causal,
                0.4,
                all,
            ),
        };
        fwd(&mut out, &mut lse, Some(prefix));
        let (mut want, mut want_lse) = (vec![f64::NAN; q.len()], vec![f64::NAN; b * h * t]);
        fwd(&mut want, &mut want_lse, None);
        assert_close(&format!("{name}: out"), &out, &want, 1e-13);
        assert_close(&format!("{name}: lse"), &lse, &want_lse, 1e-13);
        let start = normals(&mut rng, table.len(), 1.0);
        let mut dprefix = start.clone();
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_bwd(
            &mut dq,
            &mut dk,
            &mut dv,
            Some(&mut dprefix),
            &dout,
            &q,
            &k,
            &v,
            Some(prefix),
            &lse,
            &mask,
            bias(),
            causal,
            0.4,
            dims,
            true,
        );
        let (mut dqc, mut dkc, mut dvc) =
            (vec![0.0; q.len()], vec![0.0; kc.len()], vec![0.0; vc.len()]);
        attention_bwd(
            &mut dqc,
            &mut dkc,
            &mut dvc,
            None,
            &dout,
            &q,
            &kc,
            &vc,
            None,
            &want_lse,
            &mask_c,
            bias(),
            causal,
            0.4,
            all,
            true,
        );
        assert_close(&format!("{name}: dq"), &dq, &dqc, 1e-13);
        // the real rows of the concatenated dk, dv; the prefix rows summed over the batch
        let real = |x: &[f64]| -> Vec<f64> {
            (0..b)
                .flat_map(|bi| x[(bi * (p + t) + p) * kvw..(bi + 1) * (p + t) * kvw].to_vec())
                .collect()
        };
        assert_close(&format!("{name}: dk"), &dk, &real(&dkc), 1e-13);
        assert_close(&format!("{name}: dv"), &dv, &real(&dvc), 1e-13);
        let mut want_dprefix = start;
        for (off, g) in [(k_off, &dkc), (v_off, &dvc)] {
            for bi in 0..b {
                for r in 0..p {
                    for x in 0..kvw {
                        want_dprefix[r * width + off + x] += g[(bi * (p + t) + r) * kvw + x];
                    }
                }
            }
        }
        assert_close(&format!("{name}: dprefix"), &dprefix, &want_dprefix, 1e-13);
    }
}

/// A prefix whose width does not fit the model under its placement, or a placement the engine
/// does not know, is an error that names what was expected, never a step.
#[test]
fn bad_prefixes_are_named() {
    let be = CpuBackend::<f32>::new();
    // the T5 papers reference read as PEFT's placement: 4 blocks given, PEFT's rule takes them
    // all, but a table one block short fits neither placement's width
    let mut r = read("t5_v1_0/ref_seq2seq_prefix_papers.safetensors");
    let (p, width) = (r.p(), r.d());
    let short = width - width / 4;
    r.prompt.data = (0..p)
        .flat_map(|row| r.prompt.data[row * width..row * width + short].to_vec())
        .collect();
    r.prompt.shape = vec![p, short];
    let e = parity::run(&be, &fixtures().join("t5_v1_0"), &r, TOL)
        .expect_err("a short prefix is refused")
        .to_string();
    assert!(e.contains("blocks") && e.contains("papers"), "{e}");
    // BERT reads one block per layer: a reference that says otherwise is refused by name
    let mut r = read("bert_mlm/ref_mlm_prefix_papers.safetensors");
    r.prefix.as_mut().unwrap().spec.blocks = Some(3);
    let e = parity::run(&be, &fixtures().join("bert_mlm"), &r, TOL)
        .expect_err("3 blocks for a 2-layer BERT")
        .to_string();
    assert!(e.contains("blocks"), "{e}");
    assert!("paper"
        .parse::<softprompt::internals::models::Placement>()
        .unwrap_err()
        .to_string()
        .contains("--prefix-placement"),);
}

/// PEFT's own saved adapters (`save_pretrained` of the run that made the reference) hold the
/// prefix table in the layout the engine reads: `prompt_embeddings` [P, N·2·w] with N
/// `num_layers`; run in place of the reference's prefix, it passes parity under PEFT's
/// placement (T5: decoder only, block 2l mod N; Llama: block l, grouped-query heads).
#[test]
fn peft_prefix_adapters_read_as_the_table() {
    use softprompt::internals::weights::TensorFile;
    let be = CpuBackend::<f32>::new();
    for (model, reference) in [
        ("t5_v1_0", "t5_v1_0/ref_seq2seq_prefix_peft.safetensors"),
        ("llama", "llama/ref_causal_prefix.safetensors"),
    ] {
        let dir = fixtures()
            .join("deep")
            .join(model)
            .join("peft_adapter_prefix");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["peft_type"], "PREFIX_TUNING");
        let mut r = read(reference);
        let spec = r.prefix.as_ref().unwrap().spec;
        assert_eq!(cfg["num_layers"].as_u64(), spec.blocks.map(|n| n as u64));
        let table = TensorFile::read(&dir.join("adapter_model.safetensors"))
            .unwrap()
            .float("prompt_embeddings")
            .unwrap()
            .clone();
        assert_eq!(table.shape, r.prompt.shape, "{model}");
        r.prompt = table;
        let report = parity::run(&be, &fixtures().join(model), &r, TOL).unwrap();
        assert!(report.passed(), "{model} adapter\n{}", report.table());
    }
}
