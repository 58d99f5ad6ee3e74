//! The encoder against PEFT's: the reference files of tests/fixtures/deep hold PEFT's encoder
//! tensors, its output (`prompt`), the gradient at that output (`prompt_grad`) and the
//! encoder's gradients (`grad.encoder.*`).

use super::*;
use crate::closeness::{Closeness, TENSOR_FLOOR};
use crate::weights::TensorFile;
use std::path::Path;

fn config_of(file: &TensorFile) -> EncoderConfig {
    let meta: serde_json::Value = serde_json::from_str(&file.metadata["softprompt"]).unwrap();
    let peft = &meta["peft_config"];
    let prompt = file.float("prompt").unwrap();
    EncoderConfig {
        kind: peft["encoder_reparameterization_type"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        p: prompt.shape[0],
        d: prompt.shape[1],
        hidden: peft["encoder_hidden_size"].as_u64().unwrap() as usize,
        lstm_layers: peft["encoder_num_layers"].as_u64().unwrap() as usize,
    }
}

fn rel(got: &[f32], want: &[f32]) -> f64 {
    Closeness::of(got, want, TENSOR_FLOOR).rel_err
}

fn check_reference(name: &str, kind: EncoderKind) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deep")
        .join(name);
    let file = TensorFile::read(&path).unwrap();
    let cfg = config_of(&file);
    assert_eq!(cfg.kind, kind);
    let enc = PromptEncoder::from_tensors(cfg, |n| {
        file.floats
            .get(&format!("encoder.{n}"))
            .map(|t| (t.shape.as_slice(), t.data.as_slice()))
    })
    .unwrap();
    let (prompt, tape) = enc.forward().unwrap();
    let want = &file.float("prompt").unwrap().data;
    assert!(
        rel(&prompt, want) < 1e-5,
        "{name}: prompt {}",
        rel(&prompt, want)
    );
    let grads = enc
        .backward(&tape, &file.float("prompt_grad").unwrap().data)
        .unwrap();
    assert_eq!(grads.len(), cfg.shapes().len());
    for (n, g) in &grads {
        let want = &file.float(&format!("grad.encoder.{n}")).unwrap().data;
        let err = rel(g, want);
        assert!(err < 1e-4, "{name}: grad of {n}: rel err {err}");
    }
}

#[test]
fn mlp_matches_peft() {
    check_reference("bert_mlm/ref_mlm_ptuning_mlp.safetensors", EncoderKind::Mlp);
    check_reference("qwen2/ref_causal_ptuning_mlp.safetensors", EncoderKind::Mlp);
}

#[test]
fn lstm_matches_peft() {
    check_reference(
        "bert_mlm/ref_pet_ptuning_lstm.safetensors",
        EncoderKind::Lstm,
    );
    check_reference(
        "llama/ref_causal_ptuning_lstm.safetensors",
        EncoderKind::Lstm,
    );
}

#[test]
fn init_has_peft_shapes_and_bad_tensors_are_named() {
    let cfg = EncoderConfig {
        kind: EncoderKind::Lstm,
        p: 3,
        d: 6,
        hidden: 4,
        lstm_layers: 2,
    };
    let enc = PromptEncoder::init(cfg, &mut Rng::new(0)).unwrap();
    for (name, shape) in cfg.shapes() {
        assert_eq!(
            enc.tensors[&name].len(),
            shape.iter().product::<usize>(),
            "{name}"
        );
    }
    let (prompt, _) = enc.forward().unwrap();
    assert_eq!(prompt.len(), 3 * 6);
    let wrong = PromptEncoder::from_tensors(cfg, |n| {
        let t = enc.tensors.get(n)?;
        let shape: &'static [usize] = if n == "mlp_head.2.bias" { &[5] } else { &[] };
        Some((shape, t.as_slice()))
    });
    let msg = wrong.unwrap_err().to_string();
    assert!(
        msg.contains("embedding.weight") || msg.contains("mlp_head.2.bias"),
        "{msg}"
    );
    let zero = EncoderConfig { hidden: 0, ..cfg };
    assert!(PromptEncoder::init(zero, &mut Rng::new(0)).is_err());
}

/// The counted parameters are the listed tensors' (the memory check counts without listing).
#[test]
fn params_count_the_listed_tensors() {
    for (kind, layers) in [
        (EncoderKind::Mlp, 2),
        (EncoderKind::Lstm, 1),
        (EncoderKind::Lstm, 3),
    ] {
        let cfg = EncoderConfig {
            kind,
            p: 5,
            d: 7,
            hidden: 11,
            lstm_layers: layers,
        };
        let listed: usize = cfg
            .shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(cfg.params(), listed as u128, "{kind:?} {layers}");
    }
}
