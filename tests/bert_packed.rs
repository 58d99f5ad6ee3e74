//! `Bert::encoder_hidden`, prediction's forward with the position-wise layers over the real
//! positions only (src/models/bert/packed.rs), against `encoder_fwd` over the padded batch:
//! every real position's hidden row (key mask 1) within 1e-5 relative. Rows of 7, 2 and 5
//! tokens (so two of three are padded), one prompt, and a table of two prompts of 3 and 5 rows
//! (each shorter prompt's row carrying masked prompt padding). Measured on the CPU: bit for bit
//! (error 0: the GEMMs round a row alike whatever the rows beside it).

mod common;

use common::bert_batch::{load_bert_mlm, token_batch, two_prompt_inputs, ROW_LENS};
use common::{assert_close, fixture, normals};
use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::cpu::CpuBackend;
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::bert::{self, Bert, BertInputs};
use softprompt::internals::models::Recompute;
use softprompt::internals::rng::Rng;

/// The hidden rows (B·T, C) at the key mask's real positions, packed and padded.
fn real_rows<B: Backend>(
    be: &B,
    m: &Bert<B>,
    prompt: &[f64],
    inp: &BertInputs<B>,
) -> (Vec<f32>, Vec<f32>) {
    let prompt: Vec<f32> = prompt.iter().map(|&x| x as f32).collect();
    let prompt = be.upload(DType::F32, &prompt).unwrap();
    let packed = be
        .download(&m.encoder_hidden(be, &prompt, inp).unwrap())
        .unwrap();
    let mut acct = MemoryAccountant::new();
    let (padded, _) = m
        .encoder_fwd(be, &mut acct, &prompt, inp, Recompute::Layer, None)
        .unwrap();
    let padded = be.download(&padded).unwrap();
    let key_mask = be.download(&inp.key_mask).unwrap();
    let c = m.cfg.hidden_size;
    let real = |h: &[f32]| -> Vec<f32> {
        (key_mask.iter().enumerate())
            .filter(|(_, &k)| k != 0.0)
            .flat_map(|(i, _)| h[i * c..(i + 1) * c].to_vec())
            .collect()
    };
    assert!(key_mask.contains(&0.0), "the batch should hold padding");
    (real(&packed), real(&padded))
}

#[test]
fn packed_forward_equals_the_padded_one_at_real_positions() {
    packed_equals_padded(&CpuBackend::<f32>::new(), 1e-5);
}

/// Through the kernels (the `emu` device): the pack and unpack around `attention_fwd` in
/// both precision builds, float32 at the CPU's 1e-5 and bf16 at its default tolerance (the
/// padded forward's GEMMs round over other rows than the packed ones').
#[cfg(feature = "emu")]
#[test]
fn packed_forward_equals_the_padded_one_on_the_emu_device() {
    use softprompt::internals::backend::{Precision, Storage};
    use softprompt::internals::cuda::CudaBackend;
    packed_equals_padded(&CudaBackend::emu_with(Precision::F32).unwrap(), 1e-5);
    let bf16 = CudaBackend::emu_with(Precision::Bf16).unwrap();
    packed_equals_padded(&bf16, bf16.device().default_tol());
}

fn packed_equals_padded<B: Backend>(be: &B, tol: f64) {
    let m = load_bert_mlm(be);
    let mut rng = Rng::new(17);
    let (c, vocab) = (m.cfg.hidden_size, m.cfg.vocab_size);
    let tokens = token_batch(&mut rng, &ROW_LENS, vocab);

    // one prompt of 4 rows
    let prompt = normals(&mut rng, 4 * c, 0.5);
    let inp = bert::upload_inputs(be, &m.cfg, &tokens, 4).unwrap();
    let (got, want) = real_rows(be, &m, &prompt, &inp);
    assert_close("one prompt", &got, &want, tol);

    // a table of two prompts, 3 and 5 rows (P = 5), rows reading prompts 0, 1, 0
    let table = normals(&mut rng, 2 * 5 * c, 0.5);
    let inp = two_prompt_inputs(be, &m, &tokens);
    let (got, want) = real_rows(be, &m, &table, &inp);
    assert_close("two prompts of 3 and 5 rows", &got, &want, tol);
}

/// `Model::predict` over rows of different lengths: batches sorted by length and packed give
/// each row, in the file's order, the scores it gets alone (batch size 1: no padding, nothing
/// packed), within 1e-5 relative.
#[test]
fn predict_in_sorted_packed_batches_keeps_the_file_order_and_the_scores() {
    use softprompt::prelude::*;
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let texts = [
        "the plot drags and the actors look tired of it, scene after scene",
        "bad",
        "a great film with a warm heart",
        "quite good",
        "not my kind of thing at all, but well made and well acted",
    ];
    let data = Dataset::from_pairs("mem", texts.iter().map(|t| (*t, None::<&str>)));
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["negative".into(), "positive".into()]),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 3).unwrap();
    let mut prompt = (model.new_prompt(&task, 3, &PromptInit::Random { std: 0.5 }, 5)).unwrap();
    // a fresh head is zero: random values make the scores differ
    let mut rng = Rng::new(5);
    let (w, b) = prompt.head_mut().unwrap();
    for v in w.iter_mut().chain(b.iter_mut()) {
        *v = rng.normal() as f32 * 0.3;
    }
    let enc = model.encode(&task, &data).unwrap();
    let alone = model.predict(&task, &prompt, &enc, 1).unwrap();
    let batched = model.predict(&task, &prompt, &enc, 64).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (i, (got, want)) in batched.iter().zip(&alone).enumerate() {
        assert_close(&format!("row {i}"), &got.scores, &want.scores, 1e-5);
        assert_eq!(got.class, want.class, "row {i}");
    }
}

/// `pet` prediction runs the masked-LM head's forward alone (`heads::mlm_head_logits`): each
/// row's score for each label is the log-probability the training step's forward gives it, the
/// step's loss on that row alone with that label, negated (within 1e-5 relative; measured on
/// the CPU: 1e-7 at most, the step's last layer at the [MASK] row against prediction's packed
/// forward).
#[test]
fn pet_predict_scores_are_the_step_log_probabilities() {
    use softprompt::prelude::*;
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let texts = [
        "quite good",
        "the plot drags and the actors look tired",
        "bad",
    ];
    let labels = ["negative", "positive"];
    let opts = TaskOptions {
        verbalizer: Some(vec![
            ("negative".into(), "terrible".into()),
            ("positive".into(), "good".into()),
        ]),
        ..TaskOptions::default()
    };
    // every text under every label: the step's loss on each is one score
    let pairs = texts
        .iter()
        .flat_map(|t| labels.iter().map(move |l| (*t, Some(*l))));
    let data = Dataset::from_pairs("mem", pairs);
    let task = model.task(&opts, Some(&data), 4).unwrap();
    assert_eq!(task.kind(), TaskKind::Pet);
    let prompt = (model.new_prompt(&task, 4, &PromptInit::Random { std: 0.5 }, 9)).unwrap();
    let enc = model.encode(&task, &data).unwrap();
    let predicted = model.predict(&task, &prompt, &enc, 64).unwrap();
    for (i, (row, got)) in enc.rows.iter().zip(&predicted).enumerate() {
        let loss = model
            .step(&task, &prompt, std::slice::from_ref(row))
            .unwrap()
            .loss;
        let want = -loss as f32;
        let (text, label) = (texts[i / 2], i % 2);
        assert_close(
            &format!("{text:?} {}", labels[label]),
            &[got.scores[label]],
            &[want],
            1e-5,
        );
    }
}
