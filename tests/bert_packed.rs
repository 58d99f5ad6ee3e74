//! `Bert::encoder_hidden`, prediction's forward with the position-wise layers over the real
//! positions only (src/models/bert/packed.rs), against `encoder_fwd` over the padded batch:
//! every real position's hidden row (key mask 1) within 1e-5 relative. Rows of 7, 2 and 5
//! tokens (so two of three are padded), one prompt, and a table of two prompts of 3 and 5 rows
//! (each shorter prompt's row carrying masked prompt padding). Measured on the CPU: bit for bit
//! (error 0: the GEMMs round a row alike whatever the rows beside it).

mod common;

use common::{assert_close, fixture, normals};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::config::ModelConfig;
use softprompt::internals::cpu::CpuBackend;
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::bert::{self, Bert, BertInputs};
use softprompt::internals::models::{Recompute, TokenBatch};
use softprompt::internals::rng::Rng;
use softprompt::internals::weights::WeightStore;

type Be = CpuBackend<f32>;

fn load() -> (Be, Bert<Be>) {
    let dir = fixture("bert_mlm");
    let be = Be::new();
    let ModelConfig::Bert(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not BERT")
    };
    let model = Bert::load(&be, &WeightStore::open(&dir).unwrap(), cfg).unwrap();
    (be, model)
}

/// Rows of `lens` tokens (ids from `rng`, 0 padding), padded to the longest.
fn batch(rng: &mut Rng, lens: &[usize], vocab: usize) -> TokenBatch {
    let t = *lens.iter().max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for &l in lens {
        for s in 0..t {
            ids.push(if s < l {
                1 + rng.below(vocab as u64 - 1) as i32
            } else {
                0
            });
            mask.push((s < l) as i32);
        }
    }
    TokenBatch {
        b: lens.len(),
        t,
        ids,
        mask,
        type_ids: None,
    }
}

/// The hidden rows (B·T, C) at the key mask's real positions, packed and padded.
fn real_rows(be: &Be, m: &Bert<Be>, prompt: &[f64], inp: &BertInputs<Be>) -> (Vec<f32>, Vec<f32>) {
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
    let (be, m) = load();
    let mut rng = Rng::new(17);
    let (c, vocab) = (m.cfg.hidden_size, m.cfg.vocab_size);
    let tokens = batch(&mut rng, &[7, 2, 5], vocab);

    // one prompt of 4 rows
    let prompt = normals(&mut rng, 4 * c, 0.5);
    let inp = bert::upload_inputs(&be, &m.cfg, &tokens, 4).unwrap();
    let (got, want) = real_rows(&be, &m, &prompt, &inp);
    assert_close("one prompt", &got, &want, 1e-5);

    // a table of two prompts, 3 and 5 rows (P = 5), rows reading prompts 0, 1, 0
    let table = normals(&mut rng, 2 * 5 * c, 0.5);
    let inp = bert::upload_inputs(&be, &m.cfg, &tokens, 5)
        .unwrap()
        .with_prompt_index(&be, &[0, 1, 0], 2)
        .unwrap()
        .with_prompt_lens(&be, &[3, 5, 3])
        .unwrap();
    let (got, want) = real_rows(&be, &m, &table, &inp);
    assert_close("two prompts of 3 and 5 rows", &got, &want, 1e-5);
}
