//! The `bert_mlm` fixture as a bare `Bert`, token batches of given lengths and the batch of
//! two prompts both read, for the tests of BERT's forward paths (`bert_packed.rs`,
//! `bert_tail_mixed.rs`).

use super::fixture;
use softprompt::internals::backend::Backend;
use softprompt::internals::config::ModelConfig;
use softprompt::internals::models::bert::{self, Bert, BertInputs};
use softprompt::internals::models::TokenBatch;
use softprompt::internals::rng::Rng;
use softprompt::internals::weights::WeightStore;

/// The `bert_mlm` fixture on `be`.
pub fn load_bert_mlm<B: Backend>(be: &B) -> Bert<B> {
    let dir = fixture("bert_mlm");
    let ModelConfig::Bert(cfg) = ModelConfig::load(&dir).unwrap() else {
        panic!("not BERT")
    };
    Bert::load(be, &WeightStore::open(&dir).unwrap(), cfg).unwrap()
}

/// Rows of `lens` tokens (ids from `rng`, 0 padding), padded to the longest.
pub fn token_batch(rng: &mut Rng, lens: &[usize], vocab: usize) -> TokenBatch {
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

/// Rows of 7, 2 and 5 tokens: two of three padded.
pub const ROW_LENS: [usize; 3] = [7, 2, 5];

/// `tokens` (rows of `ROW_LENS`) behind a table of two prompts of 3 and 5 rows (P = 5), the
/// rows reading prompts 0, 1, 0: rows 0 and 2 carry two masked prompt padding rows each.
pub fn two_prompt_inputs<B: Backend>(be: &B, m: &Bert<B>, tokens: &TokenBatch) -> BertInputs<B> {
    bert::upload_rows(be, &m.cfg, tokens, 5, Some(&[3, 5, 3]))
        .unwrap()
        .with_prompt_index(be, &[0, 1, 0], 2)
        .unwrap()
}
