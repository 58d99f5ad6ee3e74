//! `ceiling::step_gemms` lists the frozen-weight products one step runs (`bench --ceiling`
//! times them): its forward and backward FLOPs must be what the profiling backend counts for
//! `linear_fwd` and `linear_bwd` over the bench's own step, exactly, so that the ceiling
//! times the step's real shapes: the first layer's query, key and value input gradient at the
//! prompt rows only (none under prefix tuning), BERT's last layer at the rows its head reads,
//! the decoders' at the target rows, T5's encoder forward only under PEFT's placement, the
//! heads at their rows. Tiny BERT, T5 and decoder configs (the presets' layouts, a few
//! layers, small widths), every objective and method the bench runs; each step takes
//! milliseconds.

use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::bench::{self, Preset, Workload};
use softprompt::internals::bench_method::Tuned;
use softprompt::internals::ceiling::step_gemms;
use softprompt::internals::models::{Model, Placement, Recompute};
use softprompt::internals::CpuBackend;
use softprompt::{Method, PrefixTuning};

/// bert-base's layout at 3 layers, C 32, 2 heads, FFN 48, a vocabulary of 2100 (the bench's
/// `pet` verbalizer ids are 1000 and 2000).
fn tiny_bert() -> Preset {
    let Ok(Preset::Bert(mut c)) = Preset::by_name("bert-base") else {
        panic!("bert-base")
    };
    (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) = (3, 32, 2);
    (c.intermediate_size, c.vocab_size) = (48, 2100);
    Preset::Bert(c)
}

/// t5-base's layout (gated FFN) at 2 + 3 layers, C 24, 2 heads of 8, FFN 40.
fn tiny_t5() -> Preset {
    let Ok(Preset::T5(mut c)) = Preset::by_name("t5-base") else {
        panic!("t5-base")
    };
    (c.d_model, c.d_kv, c.num_heads, c.d_ff) = (24, 8, 2, 40);
    (c.num_layers, c.num_decoder_layers, c.vocab_size) = (2, 3, 300);
    Preset::T5(c)
}

/// llama-3.2-1b's layout (grouped-query attention, SwiGLU) at 3 layers, C 32, 4 heads of 8
/// over 2 key/value heads, MLP 48; bloom-560m's at 2 layers, C 32, 4 heads.
fn tiny_decoders() -> Vec<Preset> {
    let shrink = |name: &str, layers, kv| {
        let Ok(Preset::Decoder(mut c)) = Preset::by_name(name) else {
            panic!("{name}")
        };
        (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) = (layers, 32, 4, kv);
        (c.head_dim, c.intermediate_size, c.vocab_size) = (8, 48, 300);
        Preset::Decoder(c)
    };
    vec![shrink("llama-3.2-1b", 3, 2), shrink("bloom-560m", 2, 4)]
}

fn prefix(placement: Placement) -> Method {
    Method::Prefix(PrefixTuning {
        projection: false,
        hidden: None,
        placement,
    })
}

/// B 3, T 19, P 5, L `l`: (forward, backward) FLOPs of the profiled step and of the list;
/// with T5's folded cross-attention (per-head products, whose forward and backward take
/// each other's ops) their sums only, as (total, 0).
fn counts(preset: &Preset, objective: &str, method: Method, l: usize) -> ((f64, f64), (f64, f64)) {
    let w = Workload {
        batch: 3,
        seq: 19,
        target_len: l,
        prompt: 5,
        recompute: Recompute::None,
        objective: objective.into(),
        method,
    };
    let be = Profiler::new(CpuBackend::<f32>::new());
    let model = Model::random(&be, &preset.config(), 1).unwrap();
    let batch = bench::bench_batch(preset, &w, 3);
    let tuned = Tuned::new(&model, &w, &batch.prompt, 5).unwrap();
    be.reset();
    bench::step(&be, &model, &batch, &tuned, &w).unwrap();
    let profiled = (be.sum_of(&["linear_fwd"]).0, be.sum_of(&["linear_bwd"]).0);
    let listed = (step_gemms(preset, &w).iter()).fold((0.0, 0.0), |(f, b), g| {
        let mkn = 2.0 * (g.m * g.k * g.n) as f64;
        (f + mkn * g.calls as f64, b + mkn * g.bwd_calls as f64)
    });
    let heads = be.sum_of(&["linear_heads_fwd", "linear_heads_bwd"]).0;
    if heads == 0.0 {
        return (profiled, listed);
    }
    let sum = |(f, b): (f64, f64)| (f + b, 0.0);
    (sum((profiled.0 + heads, profiled.1)), sum(listed))
}

fn assert_counts(preset: &Preset, objective: &str, methods: &[Method]) {
    assert_counts_at(preset, objective, methods, 4)
}

fn assert_counts_at(preset: &Preset, objective: &str, methods: &[Method], l: usize) {
    for method in methods {
        let (profiled, listed) = counts(preset, objective, *method, l);
        let name = match preset {
            Preset::Bert(_) => "bert".to_string(),
            Preset::T5(_) => "t5".to_string(),
            Preset::Decoder(c) => c.model_type.clone(),
        };
        let what = format!("{name} {objective} {method:?} L {l}: (forward, backward)");
        assert_eq!(listed, profiled, "{what}");
    }
}

#[test]
fn bert_products_are_the_steps() {
    let methods = [Method::Prompt, prefix(Placement::Papers)];
    for objective in ["pet", "mlm", "cls"] {
        assert_counts(&tiny_bert(), objective, &methods);
    }
}

#[test]
fn t5_products_are_the_steps() {
    let methods = [
        Method::Prompt,
        prefix(Placement::Papers),
        prefix(Placement::Peft),
    ];
    assert_counts(&tiny_t5(), "pet", &methods);
    // one target row: the CPU folds the cross-attention's key and value products into
    // per-head ones at the decoder rows (2·L·(D + T) <= T·D)
    let Preset::T5(c) = tiny_t5() else { panic!() };
    assert!(softprompt::internals::models::t5::fold_pays(1, 24, c.d_kv));
    assert_counts_at(&tiny_t5(), "pet", &methods, 1);
}

#[test]
fn decoder_products_are_the_steps() {
    for preset in tiny_decoders() {
        assert_counts(&preset, "pet", &[Method::Prompt, prefix(Placement::Papers)]);
    }
}
