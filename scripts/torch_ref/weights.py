"""Random weights of the BERT and T5 models; `WEIGHTS` is read at call time (set it here:
`torch_ref.weights.WEIGHTS = "realistic"`)."""

import math

import torch


# --------------------------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------------------------


# --weights realistic (random configs only): variance-preserving layers and small biases, the
# scale of trained checkpoints, where a bf16 engine is expected to hold 2e-2. The default
# ("harsh") amplifies every layer by its gain so that float32 parity at 1e-4 catches small
# semantic slips; it also makes prompt gradients too sensitive for bf16 weights.
REALISTIC = {"bert": dict(emb_std=0.05, lin_gain=1.0, norm_std=0.05, bias_std=0.02),
             "t5": dict(emb_std=1.0, lin_gain=1.0, qk_gain=1.0, rel_std=0.5, lm_head_std=0.2, norm_std=0.05)}
WEIGHTS = "harsh"


def randomize_(model, seed, arch, emb_std=0.3, lin_gain=1.6, qk_gain=None, rel_std=0.8, lm_head_std=0.25,
               norm_std=0.2, bias_std=0.1):
    """Overwrite every parameter with seeded random values. Norm scales = 1 + norm_std N(0,1);
    every bias (linear, LayerNorm, MLM head) = bias_std N(0,1); linear weights N(0, gain/sqrt(fan_in))."""
    if WEIGHTS == "realistic":
        kw = dict(emb_std=emb_std, lin_gain=lin_gain, qk_gain=qk_gain, rel_std=rel_std, lm_head_std=lm_head_std,
                  norm_std=norm_std, bias_std=bias_std)
        kw.update(REALISTIC[arch])
        emb_std, lin_gain, qk_gain, rel_std, lm_head_std, norm_std, bias_std = kw.values()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
                val = 1.0 + norm_std * torch.randn(shape, generator=g)
            elif name.endswith(".bias") or name.endswith("predictions.bias"):
                val = bias_std * torch.randn(shape, generator=g)
            elif "relative_attention_bias" in name:
                val = rel_std * torch.randn(shape, generator=g)
            elif name == "lm_head.weight":
                val = lm_head_std * torch.randn(shape, generator=g)
            elif "embeddings" in name or name.endswith("shared.weight") or "embed_tokens" in name:
                val = emb_std * torch.randn(shape, generator=g)
            elif p.dim() == 2:
                gain = lin_gain
                if qk_gain is not None and (name.endswith(".q.weight") or name.endswith(".k.weight")):
                    gain = qk_gain
                if WEIGHTS == "realistic" and name.endswith(".q.weight"):
                    gain /= math.sqrt(model.config.d_kv)  # T5 folds attention's 1/sqrt(d_kv) into q
                val = gain / math.sqrt(shape[1]) * torch.randn(shape, generator=g)
            else:
                raise ValueError(f"unhandled parameter {name} {tuple(shape)}")
            if WEIGHTS == "realistic":  # bf16 values, as bf16 checkpoints (flan-t5, t5 v1.1) hold them
                val = val.to(torch.bfloat16).to(torch.float32)
            p.copy_(val)
