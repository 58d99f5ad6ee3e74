"""Benchmark presets and the FLOP count shared by `softprompt bench` and scripts/bench_torch.py.

Stdlib only. The Rust side (`softprompt bench`) copies PRESETS, `tokens_per_step`,
`mlm_labels_per_row` and `step_flops` exactly, so that both tools print comparable
`tokens_per_s` and `tflops` for the same flags.

Presets are the shapes of the public checkpoints (weights are random in the benchmark):
- bert-*: BERT (gelu, absolute positions, max 512, 2 token types, vocab 30522, tied MLM decoder).
- t5-*: T5 v1.1 (gated-gelu FFN, untied lm_head, no decoder-output scaling, 32 relative-position
  buckets, max distance 128, vocab 32128).
- bloom-*: BLOOM (ALiBi, embedding LayerNorm, tanh-GELU MLP 4 x hidden, tied head, vocab 250880).
- llama-*, qwen2.5-7b: Llama 3.x (8 key/value heads, SwiGLU, RoPE theta 5e5 with llama3 scaling,
  vocab 128256; 3.2 tied, 3.1 untied) and Qwen2.5 (4 key/value heads, q/k/v biases, theta 1e6,
  untied, vocab 152064). The 7-8B ones run on a GPU only.
  Workload: B rows of T real tokens behind P prompt rows, causal-LM labels on the last L tokens of
  each row (`--target-len`), -100 elsewhere.
"""

# ------------------------------------------------------------------------------------------------
# Presets
# ------------------------------------------------------------------------------------------------

BERT_VOCAB = 30522
T5_VOCAB = 32128

# layers / decoder_layers: transformer blocks; hidden: model width C; heads x head_dim: attention
# width A (= C for BERT); ff: FFN inner width (BERT intermediate I, T5 d_ff F).
PRESETS = {
    "bert-base": dict(arch="bert", layers=12, decoder_layers=0, hidden=768, heads=12, head_dim=64, ff=3072,
                      vocab=BERT_VOCAB),
    "bert-large": dict(arch="bert", layers=24, decoder_layers=0, hidden=1024, heads=16, head_dim=64, ff=4096,
                       vocab=BERT_VOCAB),
    "t5-base": dict(arch="t5", layers=12, decoder_layers=12, hidden=768, heads=12, head_dim=64, ff=2048,
                    vocab=T5_VOCAB),
    "t5-large": dict(arch="t5", layers=24, decoder_layers=24, hidden=1024, heads=16, head_dim=64, ff=2816,
                     vocab=T5_VOCAB),
    "t5-xl": dict(arch="t5", layers=24, decoder_layers=24, hidden=2048, heads=32, head_dim=64, ff=5120,
                  vocab=T5_VOCAB),
    "t5-xxl": dict(arch="t5", layers=24, decoder_layers=24, hidden=4096, heads=64, head_dim=64, ff=10240,
                   vocab=T5_VOCAB),
    # decoder-only: kv_heads = key/value heads (grouped-query attention)
    "bloom-560m": dict(arch="bloom", layers=24, decoder_layers=0, hidden=1024, heads=16, head_dim=64, ff=4096,
                       vocab=250880, kv_heads=16),
    "bloom-7b1": dict(arch="bloom", layers=30, decoder_layers=0, hidden=4096, heads=32, head_dim=128, ff=16384,
                      vocab=250880, kv_heads=32),
    "llama-3.2-1b": dict(arch="llama", layers=16, decoder_layers=0, hidden=2048, heads=32, head_dim=64, ff=8192,
                         vocab=128256, kv_heads=8, tied=True, rope_theta=500000.0, rope_factor=32.0),
    "llama-3.2-3b": dict(arch="llama", layers=28, decoder_layers=0, hidden=3072, heads=24, head_dim=128, ff=8192,
                         vocab=128256, kv_heads=8, tied=True, rope_theta=500000.0, rope_factor=32.0),
    "llama-3.1-8b": dict(arch="llama", layers=32, decoder_layers=0, hidden=4096, heads=32, head_dim=128,
                         ff=14336, vocab=128256, kv_heads=8, tied=False, rope_theta=500000.0, rope_factor=8.0),
    "qwen2.5-7b": dict(arch="qwen2", layers=28, decoder_layers=0, hidden=3584, heads=28, head_dim=128, ff=18944,
                       vocab=152064, kv_heads=4, tied=False, rope_theta=1e6, rope_factor=None),
}

DECODER_ARCHS = ("bloom", "llama", "qwen2")

BERT_MAX_POSITIONS = 512
BERT_TYPE_VOCAB = 2
T5_BUCKETS = 32
T5_MAX_DISTANCE = 128

# PET: the loss reads the MLM head at one [MASK] row per example (position T // 2 of the real
# tokens), over this many verbalizer rows of the vocabulary.
PET_VERBALIZERS = 2


def shapes(preset):
    """The `shapes` object of the JSON output."""
    p = PRESETS[preset]
    keys = ("layers", "decoder_layers", "hidden", "heads", "head_dim", "ff", "vocab")
    return {k: p[k] for k in keys + (("kv_heads",) if p["arch"] in DECODER_ARCHS else ())}


# float32 weights above this do not fit the CPU machines the benchmark runs on (24 GB): the 7-8B
# decoder presets stop before allocating there (the same rule as `softprompt bench`).
CPU_WEIGHT_LIMIT = 16 << 30


def decoder_parameters(preset):
    """Weight count of a decoder-only preset (embeddings, layers, final norm, untied head)."""
    p = PRESETS[preset]
    C, F, V = p["hidden"], p["ff"], p["vocab"]
    A, K = p["heads"] * p["head_dim"], p["kv_heads"] * p["head_dim"]
    mlp = (2 if p["arch"] == "bloom" else 3) * C * F
    layer = C * A + 2 * C * K + A * C + mlp + 4 * C
    head = 0 if p.get("tied", True) else V * C
    return V * C + p["layers"] * layer + 2 * C + head


def pet_mask_position(seq):
    """Index of the [MASK] token among the T real tokens (the prompt comes before them)."""
    return seq // 2


def mlm_labels_per_row(seq):
    """Labelled positions per example for `--objective mlm`: 15% of T, rounded half up, at least 1."""
    return max(1, (15 * seq + 50) // 100)


METHODS = ("prompt", "prefix")
PLACEMENTS = ("papers", "peft")


def spans(preset, seq, prompt, method="prompt", placement="papers"):
    """The lengths a step's tokens and FLOPs count (src/bench_method.rs `spans`): (rows, keys,
    decoder_prefix, encoder_backward). rows: positions per row of the encoder (or only stack),
    P+T, or T under prefix tuning (the prefix sits in the keys only); keys: the keys each of them
    attends to, P+T, or T under PEFT's T5 placement (the encoder reads no prefix); decoder_prefix:
    prefix keys in front of T5's decoder self-attention (P under prefix tuning); encoder_backward:
    False under PEFT's T5 placement, where nothing trainable is below the decoder."""
    if method == "prompt":
        return prompt + seq, prompt + seq, 0, True
    if method != "prefix":
        raise ValueError(f"unknown method {method!r} (expected one of {METHODS})")
    if PRESETS[preset]["arch"] == "t5" and placement == "peft":
        return seq, seq, prompt, False
    return seq, prompt + seq, prompt, True


def tokens_per_step(preset, batch, seq, prompt, target_len, method="prompt", placement="papers"):
    """Tokens processed per step: B*(P+T) for BERT and decoder-only models; B*(P+T) + B*L for T5
    (encoder + decoder rows); prefix tuning's rows are B*T (its prefix is in the keys only)."""
    n = batch * spans(preset, seq, prompt, method, placement)[0]
    if PRESETS[preset]["arch"] == "t5":
        n += batch * target_len
    return n


# ------------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------------


def _linear(rows, k, n):
    """FLOPs of one frozen linear layer (k inputs -> n outputs) over `rows` rows, forward plus
    backward: 2 FLOPs per multiply-add, and backward computes only the input gradient
    dX = dY . W^T (no weight gradient), which costs as much as the forward. 4 * rows * k * n."""
    return 4 * rows * k * n


def _attention(batch, tq, tk, width):
    """FLOPs of one attention call: 12 * B * Tq * Tk * (heads * head_dim).
    Forward QK^T and PV: 2 + 2 per (q, k, channel); backward dP = dO V^T, dV = P^T dO, dQ = dS K,
    dK = dS^T Q: 8. Causal attention is counted full (no halving); the softmax is not counted."""
    return 12 * batch * tq * tk * width


def step_flops(preset, batch, seq, prompt, target_len=8, objective="pet", method="prompt", placement="papers"):
    """Useful FLOPs of one prompt-tuning step (forward + backward to the prompt), as an int.

    This counts what the task needs, identically for every implementation. Each tool divides it
    by its own step time (`tflops` = step_flops / step_seconds / 1e12). Work an implementation
    does beyond this (e.g. PyTorch evaluating the full-vocabulary MLM head at every row for PET,
    or the first layer's input gradient at every row) is not credited. Not counted: embeddings,
    norms, activations, softmax, loss, bias adds.

    BERT (C hidden, I intermediate, V vocab, N = B*(P+T) rows, S = P+T):
      per layer: q, k, v, o (C x C each) and FFN (C x I, I x C) over N rows; attention(B, S, S, C);
        but the last layer's q, o and FFN over the B*R rows its head reads only (R: `pet` 1,
        `mlm` mlm_labels_per_row(T), `cls` T), its attention of those R queries.
      head, objective `pet`: B mask rows x (dense C x C + verbalizer C x 2).
      head, objective `mlm`: B * mlm_labels_per_row(T) rows x (dense C x C + decoder C x V).
      head, objective `cls`: none (a K x C classifier, no frozen linear layer).
    T5 (C = d_model, A = heads * d_kv, F = d_ff, V vocab, Ne = B*(P+T), Nd = B*L, S = P+T):
      encoder per layer over Ne rows: q, k, v (C x A), o (A x C), gated FFN 2 x (C x F) + (F x C);
        attention(B, S, S, A).
      decoder per layer: self q, k, v, o and cross q, o over Nd rows; cross k, v (C x A each) over
        Ne rows; gated FFN over Nd rows; self attention(B, L, L, A); cross attention(B, L, S, A).
      LM head C x V over Nd rows.
    Decoder-only (C hidden, A = heads * head_dim, K = kv_heads * head_dim, F ff, N = B*(P+T)):
      per layer over N rows: q (C x A), k, v (C x K each), o (A x C); MLP: BLOOM C x F, F x C,
        Llama/Qwen2 gate and up C x F, down F x C; attention(B, S, S, A); but the last layer's
        q, o and MLP over the B*L target rows only, its attention of those L queries.
      LM head C x V over the B*L target rows only.
    The first layer (T5: the encoder's first block) computes its q, k, v input gradient (half of
    their count) at the B*P prompt rows only; under prefix tuning at none.
    Prefix tuning (`method` "prefix"; `spans`): S = T rows per sequence whose attention sees K =
    P+T keys (attention(B, S, K, .)), T5's decoder self-attention P+L keys; under PEFT's T5
    placement the encoder sees T keys and runs forward only (half its count, and half of the
    cross-attention's k, v products over its output).
    """
    p = PRESETS[preset]
    C, H, D, F, V = p["hidden"], p["heads"], p["head_dim"], p["ff"], p["vocab"]
    A = H * D
    S, K, dec_prefix, enc_backward = spans(preset, seq, prompt, method, placement)
    front = prompt if method == "prompt" else 0  # rows per sequence whose input gradient is wanted
    ne = batch * S

    def skipped(k, n):  # the input-gradient half of _linear at the rows that are not the prompt's
        return 2 * batch * (S - front) * k * n

    if p["arch"] in DECODER_ARCHS:
        KV = p["kv_heads"] * D

        def rowwise(tq):
            n = batch * tq
            mlp = (_linear(n, C, F) + _linear(n, F, C)) if p["arch"] == "bloom" else (2 * _linear(n, C, F) + _linear(n, F, C))
            return _linear(n, C, A) + _linear(n, A, C) + mlp + _attention(batch, tq, K, A)

        kv = 2 * _linear(ne, C, KV)
        return ((p["layers"] - 1) * rowwise(S) + rowwise(min(target_len, S)) + p["layers"] * kv
                - skipped(C, A + 2 * KV) + _linear(batch * target_len, C, V))
    if p["arch"] == "bert":
        if objective == "pet":
            head, r = _linear(batch, C, C) + _linear(batch, C, PET_VERBALIZERS), 1
        elif objective == "mlm":
            m = batch * mlm_labels_per_row(seq)
            head, r = _linear(m, C, C) + _linear(m, C, V), mlm_labels_per_row(seq)
        elif objective == "cls":
            head, r = 0, seq
        else:
            raise ValueError(f"unknown BERT objective {objective!r} (expected pet, mlm or cls)")

        def rowwise(tq):
            n = batch * tq
            return 2 * _linear(n, C, C) + _linear(n, C, F) + _linear(n, F, C) + _attention(batch, tq, K, C)

        kv = 2 * _linear(ne, C, C)
        return ((p["layers"] - 1) * rowwise(S) + rowwise(min(r, S)) + p["layers"] * kv
                - 3 * skipped(C, C) + head)
    L = target_len
    nd = batch * L
    enc = (3 * _linear(ne, C, A) + _linear(ne, A, C) + 2 * _linear(ne, C, F) + _linear(ne, F, C)
           + _attention(batch, S, K, A))
    cross_kv = 2 * _linear(ne, C, A)
    enc_skipped = 3 * skipped(C, A)
    if not enc_backward:  # forward only: half of forward + backward (every term is even)
        enc, cross_kv, enc_skipped = enc // 2, cross_kv // 2, 0
    dec = (3 * _linear(nd, C, A) + _linear(nd, A, C)                          # self q, k, v, o
           + _linear(nd, C, A) + _linear(nd, A, C) + cross_kv               # cross q, o; k, v
           + 2 * _linear(nd, C, F) + _linear(nd, F, C)                         # gated FFN
           + _attention(batch, L, L + dec_prefix, A) + _attention(batch, L, S, A))
    return p["layers"] * enc - enc_skipped + p["decoder_layers"] * dec + _linear(nd, C, V)


if __name__ == "__main__":  # quick look: python3 scripts/bench_common.py
    for name in PRESETS:
        f = step_flops(name, 8, 128, 20, 8)
        print(f"{name:11s} B=8 T=128 P=20 L=8: {f / 1e12:8.3f} TFLOP/step, "
              f"{tokens_per_step(name, 8, 128, 20, 8)} tokens/step")
