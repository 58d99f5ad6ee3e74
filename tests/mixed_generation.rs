//! Greedy generation over rows mixing prefix tuning's prefixes and prompt tuning's prompts in
//! one batch (`Decoder::generate_mixed_prefix`, #16): each row reads its own prefix of a stack
//! (left-padded to the longest, its leading rows hidden) or its own prompt of a table, and
//! produces the ids of its own generation alone (`generate_prefix`, `generate`), its summed
//! log-probability within 1e-5 relative, on ALiBi (BLOOM) and RoPE (Llama, Qwen2).

mod common;

use common::fixture;
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::models::decoder::{GenerateOptions, Generated, MixedGeneration};
use softprompt::internals::models::prefix::{MixedPrefix, PrefixInputs};
use softprompt::internals::models::{MixedPrompts, Placement};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::Model;
use softprompt::internals::CpuBackend;

/// Rows of awkward lengths (1 to 12 tokens).
fn rows(model: &Model<CpuBackend<f32>>) -> Vec<Vec<i32>> {
    [
        "Tweet : Great movie. Label :",
        "dull",
        "the music was lovely and the story slow",
    ]
    .iter()
    .map(|t| model.tokenizer.encode(t, true).unwrap())
    .collect()
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| 0.5 * rng.normal() as f32).collect()
}

/// Jobs: prefixes of 2 and 5 rows (slots 0, 1), a prompt of 3 rows (slot 2); each row of the
/// batch names its job; the mixed batch against each row alone.
#[test]
fn mixed_prefixes_and_prompts_generate_as_each_row_alone() {
    let be = CpuBackend::<f32>::new();
    for name in ["bloom", "llama", "qwen2"] {
        let model = Model::load(&be, &fixture(name)).unwrap();
        let m = model.net.decoder().unwrap();
        let (blocks, kvw, c) = (m.cfg.num_layers, m.cfg.kv_width(), m.cfg.hidden_size);
        let width = blocks * 2 * kvw;
        let mut rng = Rng::new(11);
        let (lens, p) = ([2usize, 5], 3usize);
        let prefixes: Vec<Vec<f32>> = lens.iter().map(|&l| random(&mut rng, l * width)).collect();
        let prompt = random(&mut rng, p * c);
        // the stack (3·5, width): prefix k left-padded to 5 rows, the prompt job's slot zeros
        let l = 5;
        let mut stack = Vec::new();
        for pre in &prefixes {
            stack.resize(stack.len() + l * width - pre.len(), 0.0);
            stack.extend(pre);
        }
        stack.resize(3 * l * width, 0.0);
        // the prompt table (3, 3, C): the prefix jobs' slots zeros
        let mut table = vec![0.0; 2 * p * c];
        table.extend(&prompt);
        let (stack, table) = (
            be.upload(DType::F32, &stack).unwrap(),
            be.upload(DType::F32, &table).unwrap(),
        );
        let texts = rows(&model);
        // batch row -> (job, text): every job on short and long rows
        let batch: Vec<(usize, usize)> =
            vec![(0, 0), (2, 1), (1, 2), (1, 1), (2, 2), (0, 1), (2, 0)];
        let ids: Vec<Vec<i32>> = batch.iter().map(|&(_, t)| texts[t].clone()).collect();
        let slot: Vec<usize> = batch.iter().map(|&(j, _)| j).collect();
        let idx: Vec<i32> = slot.iter().map(|&j| j as i32).collect();
        let front = [0, 0, p];
        let row_lens: Vec<usize> = slot.iter().map(|&j| front[j]).collect();
        let hidden: Vec<usize> = slot.iter().map(|&j| l - [2, 5, 0][j]).collect();
        let max_new: Vec<usize> = slot.iter().map(|&j| [6, 4, 5][j]).collect();
        let stop = vec![Vec::new(); batch.len()];
        let gen = MixedGeneration {
            mix: MixedPrompts {
                idx: &idx,
                k: 3,
                lens: Some(&row_lens),
            },
            p,
            max_new: &max_new,
            stop: &stop,
        };
        let pre = PrefixInputs::new(&be, &stack, 3 * l, blocks, kvw, Placement::Peft).unwrap();
        let rows_of = MixedPrefix {
            slot: slot.clone(),
            hidden,
            prefixes: 3,
        };
        let pre = pre.with_rows(rows_of).unwrap();
        let mixed = m
            .generate_mixed_prefix(&be, &table, &pre, &ids, &gen)
            .unwrap();
        let own_prompt = be.upload(DType::F32, &prompt).unwrap();
        for (bi, (&j, row)) in slot.iter().zip(&ids).enumerate() {
            let opts = GenerateOptions {
                max_new_tokens: max_new[bi],
                ..Default::default()
            };
            let one = std::slice::from_ref(row);
            let alone: Generated = match j {
                2 => m.generate(&be, &own_prompt, p, one, &opts).unwrap(),
                _ => {
                    let t = be.upload(DType::F32, &prefixes[j]).unwrap();
                    let pre = PrefixInputs::new(&be, &t, lens[j], blocks, kvw, Placement::Peft);
                    m.generate_prefix(&be, &pre.unwrap(), one, &opts).unwrap()
                }
            };
            let what = format!("{name} row {bi} (job {j})");
            assert_eq!(mixed.ids[bi], alone.ids[0], "{what}");
            assert_eq!(mixed.ids[bi].len(), max_new[bi], "{what}");
            let (got, want) = (mixed.logprob[bi], alone.logprob[0]);
            let err = (got - want).abs() / want.abs().max(1.0);
            assert!(
                err < 1e-5,
                "{what}: log-probability {got} vs alone {want} ({err:.1e})"
            );
        }
    }
}

/// A prefix row without tokens has no position to generate from: refused, naming the row.
#[test]
fn a_prefix_row_without_tokens_is_refused() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("llama")).unwrap();
    let m = model.net.decoder().unwrap();
    let (blocks, kvw) = (m.cfg.num_layers, m.cfg.kv_width());
    let stack = be
        .upload(DType::F32, &vec![0.1; 2 * 2 * blocks * 2 * kvw])
        .unwrap();
    let table = be.upload(DType::F32, &[]).unwrap();
    let pre = PrefixInputs::new(&be, &stack, 4, blocks, kvw, Placement::Peft).unwrap();
    let pre = pre.with_rows(MixedPrefix {
        slot: vec![0, 1],
        hidden: vec![0, 0],
        prefixes: 2,
    });
    let ids = vec![vec![5, 6], vec![]];
    let gen = MixedGeneration {
        mix: MixedPrompts {
            idx: &[0, 1],
            k: 2,
            lens: None,
        },
        p: 0,
        max_new: &[3, 3],
        stop: &[Vec::new(), Vec::new()],
    };
    let err = m
        .generate_mixed_prefix(&be, &table, &pre.unwrap(), &ids, &gen)
        .unwrap_err();
    assert!(err.to_string().contains("row 1 has no tokens"), "{err}");
}
