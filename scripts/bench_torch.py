#!/usr/bin/env python3
"""PyTorch + PEFT side of the softprompt benchmark: the same presets, flags and JSON keys as
`softprompt bench`, so that scripts/compare.sh can print the ratios.

    /work/venv/bin/python scripts/bench_torch.py --preset bert-base --batch 8 --seq 128 --json
    /work/venv/bin/python scripts/bench_torch.py --preset t5-base --batch 2 --seq 1024 --target-len 16 --attn eager
    python scripts/bench_torch.py --preset t5-xl --batch 32 --seq 512 --target-len 16 --prompt 100 --device cuda

Workload (one step = one forward + backward of the loss with respect to the prompt only):
- The model is built from the preset's config with random weights (no hub access), wrapped by
  PEFT prompt tuning (PromptTuningConfig, num_virtual_tokens=P, RANDOM init). Every base weight
  is frozen; only `prompt_encoder.default.embedding.weight` trains. Dropout probabilities are 0
  and the model is in eval mode. With `--recompute layer` the model is in train mode instead,
  because transformers only checkpoints layers while `module.training` is set; with dropout 0
  this computes exactly the same thing.
- Inputs: seeded random token ids, every row T real tokens (no padding), attention mask ones.
- BERT `pet`: BertForMaskedLM through PeftModelForTokenClassification (the prompt is prepended,
  mask and token types are extended); loss = mean cross-entropy of
  logits[b, P + T//2, verbalizer_ids] (2 verbalizer ids, random class labels). transformers
  evaluates the MLM head at every row; that is what is being compared against.
- BERT `mlm`: 15% of the real positions per row labelled (bench_common.mlm_labels_per_row),
  cross-entropy over the full vocabulary.
- T5: T5ForConditionalGeneration (v1.1 shape, untied lm_head) through PEFT SEQ_2_SEQ_LM; random
  labels (B, L); transformers' own loss. PEFT prompt tuning puts the prompt on the encoder only.
- Decoder-only (bloom-*, llama-*, qwen2.5-7b): BloomForCausalLM / LlamaForCausalLM /
  Qwen2ForCausalLM through PEFT CAUSAL_LM; labels (B, T) random on the last L tokens of each row
  (`--target-len`), -100 elsewhere; PEFT prepends P labels of -100 and transformers computes the
  loss from the full (B, P+T, V) logits, which is what is being compared against.
- float32 on the CPU, bfloat16 weights on the GPU (the prompt table stays float32, as in PEFT).
- `--method` (softprompt bench's flag): prompt (PROMPT_TUNING, above), p-tuning (P_TUNING:
  PromptEncoderConfig with `--encoder-reparameterization`, `--encoder-hidden-size` (default the
  model's width) and `--encoder-num-layers`; the encoder's tensors are what trains) or prefix
  (PREFIX_TUNING: PrefixTuningConfig, `--prefix-projection` with `--encoder-hidden-size`).
  PEFT places the prefix its own way: on T5 that is softprompt's `--prefix-placement peft`
  (decoder self-attention only, block 2l mod N), which must then be given; on the decoder-only
  models softprompt's default `papers` is the same computation. PEFT's TOKEN_CLS model (with
  transformers 5), BERT's step here, refuses prefix tuning, so `--method prefix` with a BERT
  preset stops (exit 2):
  scripts/compare.sh --vs-prompt compares softprompt's BERT prefix step with its own prompt
  tuning instead. Under prefix tuning the batch has no prompt rows (the prefix is in the keys),
  and tokens and FLOPs count as bench_common.spans says.

Measurements:
- step_ms: median over `--steps` timed steps, after `--warmup` untimed steps and one untimed
  step that counts saved tensors (the counting hooks add Python overhead, so they are never on
  a timed step). On the GPU each step is bracketed by torch.cuda.synchronize().
  `step_cpu_ms` is the median CPU time of the process per step (all threads). On a shared,
  loaded CPU, a run with `--threads 1` has step_cpu_ms close to what step_ms would be on an idle
  core, while step_ms also counts the time the process waited for a core.
- saved_bytes: the bytes that autograd holds for backward at the end of the forward pass (loss
  computed, backward not started). Every tensor that autograd saves during the forward goes
  through torch.autograd.graph.saved_tensors_hooks; the pack hook keeps a weak reference. At the
  end of the forward, the still-alive saved tensors are mapped to their storages
  (untyped_storage().data_ptr(), per device) and each storage's nbytes is counted once.
  Excluded: storages of the PEFT model's parameters and buffers, i.e. the frozen weights (whole
  tables, even when a saved tensor is a view or transpose of one) and the prompt table itself.
  They are reported separately as `saved_weight_bytes`. Under `--recompute layer`, the
  non-reentrant checkpoint saves each layer's positional inputs through the same hooks, and the
  tensors it keeps in the layer's closure (keyword arguments: attention masks, T5 position bias,
  the encoder output for decoder layers) are counted too, storage-deduplicated with the rest.
  Not counted: memory of the backward pass itself (gradients, recomputed layers, workspaces).
- peak_bytes, CPU: the process's peak RSS, resource.getrusage(RUSAGE_SELF).ru_maxrss (KiB) in
  bytes. The high-water mark is reset (`echo 5 > /proc/self/clear_refs`) after the model is built,
  so the peak covers warmup and the measured steps and not the construction of the model; it
  still includes the weights and the allocator's caches. `rss_baseline_bytes` is the RSS right
  before the first step (weights + runtime), so peak_bytes - rss_baseline_bytes is the step's
  working memory. `peak_reset` says whether the reset worked.
- peak_bytes, GPU: torch.cuda.max_memory_allocated() over the timed steps (peak stats reset just
  before them); includes the weights: `weights_bytes` (both devices) is the size of every
  parameter and buffer storage of the PEFT model, each counted once (the frozen weights plus the
  small prompt table). `forward_retained_bytes` is the
  growth of memory_allocated() across the counted forward (a cross-check of saved_bytes that also
  includes the loss and whatever else the forward leaves alive).
- tokens_per_s and tflops use scripts/bench_common.py (tokens_per_step, step_flops), which the
  Rust side copies.

Everything runs offline; the only dependencies are torch, transformers and peft.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import weakref  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.checkpoint  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import PrefixTuningConfig, PromptEncoderConfig  # noqa: E402
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, T5Config, T5ForConditionalGeneration  # noqa: E402
from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

PROMPT_PARAM = "prompt_encoder.default.embedding.weight"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(bc.PRESETS))
    ap.add_argument("--batch", type=int, default=8, help="B (default 8)")
    ap.add_argument("--seq", type=int, default=128, help="T, real tokens per row, prompt excluded (default 128)")
    ap.add_argument("--target-len", type=int, default=8,
                    help="L, T5 decoder length; decoder-only: labelled tokens at the end of each row (default 8)")
    ap.add_argument("--prompt", type=int, default=20, help="P, prompt rows (default 20)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--recompute", choices=["none", "layer"], default="none",
                    help="layer: non-reentrant gradient checkpointing of every transformer layer")
    ap.add_argument("--objective", choices=["pet", "mlm"], default="pet", help="BERT only (T5 is seq2seq)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--attn", choices=["eager", "sdpa", "flash_attention_2"], default="sdpa",
                    help="transformers attention implementation (default sdpa)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                    help="weights dtype; auto = float32 on cpu, bfloat16 on cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--saved-report", type=int, default=0, metavar="N",
                    help="print the N largest groups of saved tensors (by shape and dtype) to stderr")
    ap.add_argument("--method", choices=["prompt", "p-tuning", "prefix"], default="prompt",
                    help="PEFT's PROMPT_TUNING, P_TUNING or PREFIX_TUNING (default prompt)")
    ap.add_argument("--prefix-placement", choices=["papers", "peft"], default=None,
                    help="prefix: softprompt's name for where PEFT puts the blocks: peft on T5 "
                         "(required there), papers (the default) on decoder-only models")
    ap.add_argument("--prefix-projection", action="store_true", help="prefix: PEFT's prefix_projection")
    ap.add_argument("--encoder-hidden-size", type=int, default=None,
                    help="p-tuning, prefix with --prefix-projection: encoder_hidden_size (default the model's width)")
    ap.add_argument("--encoder-reparameterization", choices=["mlp", "lstm"], default=None,
                    help="p-tuning: encoder_reparameterization_type (default mlp)")
    ap.add_argument("--encoder-num-layers", type=int, default=None, help="p-tuning, lstm: encoder_num_layers (default 2)")
    a = ap.parse_args(argv)
    for name in ("batch", "seq", "target_len", "prompt", "steps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        ap.error("--warmup must be at least 0")
    arch = bc.PRESETS[a.preset]["arch"]
    if arch == "bert" and a.prompt + a.seq > bc.BERT_MAX_POSITIONS:
        ap.error(f"--prompt + --seq = {a.prompt + a.seq} exceeds BERT's {bc.BERT_MAX_POSITIONS} positions")
    if arch == "t5":
        a.objective = "seq2seq"
    if arch in bc.DECODER_ARCHS:
        a.objective = "causal"
        if arch == "bloom" and a.attn != "eager":
            a.attn = "eager"  # transformers' BLOOM has no sdpa or flash-attention path
        size = 4 * bc.decoder_parameters(a.preset)
        if a.device == "cpu" and size > bc.CPU_WEIGHT_LIMIT:
            ap.error(f"{a.preset} holds {size / 1e9:.1f} GB of float32 weights, more than the "
                     f"{bc.CPU_WEIGHT_LIMIT >> 30} GB a CPU run may use: run it on a GPU (--device cuda)")
        if a.target_len > a.seq:
            ap.error(f"--target-len {a.target_len} exceeds --seq {a.seq}")
    check_method(ap, a, arch)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    return a


def check_method(ap, a, arch):
    """The method's flags as softprompt bench reads them, and what PEFT can run (module doc)."""
    given = lambda *names: [n for n in names if getattr(a, n.replace("-", "_")) not in (None, False)]
    if a.method != "prefix" and given("prefix-placement", "prefix-projection"):
        ap.error(f"--{given('prefix-placement', 'prefix-projection')[0]} applies to --method prefix only")
    if a.method != "p-tuning" and given("encoder-reparameterization", "encoder-num-layers"):
        ap.error(f"--{given('encoder-reparameterization', 'encoder-num-layers')[0]} applies to --method p-tuning only")
    if a.method == "prompt" and given("encoder-hidden-size"):
        ap.error("--encoder-hidden-size applies to --method p-tuning or prefix only")
    if a.method == "prefix" and a.encoder_hidden_size is not None and not a.prefix_projection:
        ap.error("--encoder-hidden-size sizes prefix tuning's projection: it needs --prefix-projection")
    if a.method != "prefix":
        return
    if arch == "bert":
        ap.error("--method prefix: PEFT's TOKEN_CLS model (with transformers 5) refuses prefix tuning on BERT (\"Model does not "
                 "support past key values which are required for prefix tuning\"); compare softprompt's BERT "
                 "prefix step with its own prompt tuning instead: scripts/compare.sh PRESET --method prefix --vs-prompt")
    a.prefix_placement = a.prefix_placement or "papers"
    if arch == "t5" and a.prefix_placement != "peft":
        ap.error("--method prefix on T5: PEFT computes only its own placement (decoder self-attention, block 2l mod N): "
                 "pass --prefix-placement peft, softprompt's name for it")
    if arch != "t5" and a.prefix_placement != "papers":
        ap.error("--prefix-placement peft: only T5 has a choice of placement; on this preset PEFT computes "
                 "softprompt's papers placement: leave it out")


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


def bert_config(p):
    return BertConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                      num_attention_heads=p["heads"], intermediate_size=p["ff"], hidden_act="gelu",
                      max_position_embeddings=bc.BERT_MAX_POSITIONS, type_vocab_size=bc.BERT_TYPE_VOCAB,
                      layer_norm_eps=1e-12, pad_token_id=0,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def t5_config(p):
    # tie_word_embeddings=False is how a v1.1 config says "no decoder-output scaling"; transformers 5
    # still ties lm_head to the shared embedding in code, so build_model unties it.
    return T5Config(vocab_size=p["vocab"], d_model=p["hidden"], d_kv=p["head_dim"], d_ff=p["ff"],
                    num_layers=p["layers"], num_decoder_layers=p["decoder_layers"], num_heads=p["heads"],
                    relative_attention_num_buckets=bc.T5_BUCKETS,
                    relative_attention_max_distance=bc.T5_MAX_DISTANCE, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False, layer_norm_epsilon=1e-6, dropout_rate=0.0,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def decoder_config(p):
    common = dict(vocab_size=p["vocab"], hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                  num_attention_heads=p["heads"], pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if p["arch"] == "bloom":
        return BloomConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], n_layer=p["layers"], n_head=p["heads"],
                           layer_norm_epsilon=1e-5, hidden_dropout=0.0, attention_dropout=0.0)
    rope = {"rope_type": "default", "rope_theta": p["rope_theta"]}
    if p.get("rope_factor"):
        rope = {"rope_type": "llama3", "rope_theta": p["rope_theta"], "factor": p["rope_factor"],
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    cls = Qwen2Config if p["arch"] == "qwen2" else LlamaConfig
    extra = {"rms_norm_eps": 1e-6 if p["arch"] == "qwen2" else 1e-5}
    return cls(**common, **extra, intermediate_size=p["ff"], num_key_value_heads=p["kv_heads"],
               head_dim=p["head_dim"], rope_parameters=rope, tie_word_embeddings=p["tied"],
               max_position_embeddings=131072, attention_dropout=0.0)


DECODER_CLASSES = {"bloom": BloomForCausalLM, "llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}


def build_model(args, dtype, device):
    """The base model, random weights, built directly on `device` in `dtype`, every weight frozen."""
    p = bc.PRESETS[args.preset]
    torch.manual_seed(args.seed)
    if p["arch"] == "bert":
        cls, cfg = BertForMaskedLM, bert_config(p)
    elif p["arch"] in bc.DECODER_ARCHS:
        cls, cfg = DECODER_CLASSES[p["arch"]], decoder_config(p)
    else:
        cls, cfg = T5ForConditionalGeneration, t5_config(p)
    with torch.device(device):
        model = cls._from_config(cfg, dtype=dtype, attn_implementation=args.attn)
        if p["arch"] == "t5":
            assert not model.config.scale_decoder_outputs
            w = torch.empty(p["vocab"], p["hidden"], dtype=dtype)
            torch.nn.init.normal_(w, std=p["hidden"] ** -0.5)
            model.lm_head.weight = torch.nn.Parameter(w)  # v1.1: lm_head separate from `shared`
    model.requires_grad_(False)
    if args.recompute == "layer":
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        n = 0
        for m in model.modules():  # route every layer's checkpoint through the counting wrapper
            if hasattr(m, "_gradient_checkpointing_func"):
                m._gradient_checkpointing_func = counting_checkpoint
                n += int(bool(getattr(m, "gradient_checkpointing", False)))
        assert n >= p["layers"] + p["decoder_layers"], f"only {n} modules checkpoint"
    return model


def method_config(args, task):
    """PEFT's config of `--method`."""
    hidden = args.encoder_hidden_size or bc.PRESETS[args.preset]["hidden"]
    if args.method == "p-tuning":
        return PromptEncoderConfig(task_type=task, num_virtual_tokens=args.prompt,
                                   encoder_reparameterization_type=(args.encoder_reparameterization or "mlp").upper(),
                                   encoder_hidden_size=hidden, encoder_num_layers=args.encoder_num_layers or 2)
    if args.method == "prefix":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=args.prompt,
                                  prefix_projection=args.prefix_projection, encoder_hidden_size=hidden)
    return PromptTuningConfig(task_type=task, num_virtual_tokens=args.prompt,
                              prompt_tuning_init=PromptTuningInit.RANDOM)


def wrap_peft(model, args):
    arch = bc.PRESETS[args.preset]["arch"]
    task = {"bert": TaskType.TOKEN_CLS, "t5": TaskType.SEQ_2_SEQ_LM}.get(arch, TaskType.CAUSAL_LM)
    torch.manual_seed(args.seed + 1)  # RANDOM init: nn.Embedding's N(0, 1)
    pm = get_peft_model(model, method_config(args, task))
    if args.recompute == "layer":
        pm.train()  # transformers checkpoints only in train mode; dropout is 0, so nothing else changes
    else:
        pm.eval()
    trainable = [n for n, q in pm.named_parameters() if q.requires_grad]
    if args.method == "prompt":
        assert trainable == [PROMPT_PARAM], trainable
    else:
        assert trainable and all(n.startswith("prompt_encoder.default.") for n in trainable), trainable
    if arch == "t5":
        assert pm.get_base_model().lm_head.weight is not pm.get_base_model().shared.weight
    return pm


# ------------------------------------------------------------------------------------------------
# Inputs and losses
# ------------------------------------------------------------------------------------------------


def make_batch(args, device):
    p = bc.PRESETS[args.preset]
    g = torch.Generator().manual_seed(args.seed + 2)
    B, T, V = args.batch, args.seq, p["vocab"]
    b = {"input_ids": torch.randint(0, V, (B, T), generator=g),
         "attention_mask": torch.ones(B, T, dtype=torch.int64)}
    if p["arch"] == "bert":
        b["token_type_ids"] = torch.zeros(B, T, dtype=torch.int64)
        if args.objective == "pet":
            b["mask_pos"] = torch.full((B,), bc.pet_mask_position(T), dtype=torch.int64)
            b["verbalizer_ids"] = torch.randperm(V, generator=g)[:bc.PET_VERBALIZERS].clone()
            b["class_labels"] = torch.randint(0, bc.PET_VERBALIZERS, (B,), generator=g)
        else:
            k = bc.mlm_labels_per_row(T)
            labels = torch.full((B, T), -100, dtype=torch.int64)
            for r in range(B):
                pos = torch.randperm(T, generator=g)[:k]
                labels[r, pos] = torch.randint(0, V, (k,), generator=g)
            b["labels"] = labels
    elif p["arch"] in bc.DECODER_ARCHS:
        labels = torch.full((B, T), -100, dtype=torch.int64)
        labels[:, T - args.target_len:] = torch.randint(0, V, (B, args.target_len), generator=g)
        b["labels"] = labels
    else:
        b["labels"] = torch.randint(0, V, (B, args.target_len), generator=g)
    return {k: v.to(device) for k, v in b.items()}


def forward_loss(pm, batch, args):
    """One forward pass; returns the scalar loss (model outputs are dropped so that only what
    autograd holds stays alive)."""
    P = args.prompt
    # prefix tuning hands the prefix to the model as its cache (past_key_values): no use_cache=False
    cache = {} if args.method == "prefix" else {"use_cache": False}
    if bc.PRESETS[args.preset]["arch"] in bc.DECODER_ARCHS:
        out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                 return_dict=True, **cache)
        return out.loss
    if bc.PRESETS[args.preset]["arch"] == "t5":
        out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                 return_dict=True, **cache)
        return out.loss
    out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
             token_type_ids=batch["token_type_ids"], return_dict=True)
    logits = out.logits  # (B, P+T, V): transformers evaluates the MLM head at every row
    del out
    if args.objective == "pet":
        rows = torch.arange(logits.shape[0], device=logits.device)
        sel = logits[rows, P + batch["mask_pos"]][:, batch["verbalizer_ids"]]  # (B, 2)
        return F.cross_entropy(sel, batch["class_labels"])
    real = logits[:, P:]  # (B, T, V)
    return F.cross_entropy(real.reshape(-1, real.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)


# ------------------------------------------------------------------------------------------------
# Saved-tensor accounting
# ------------------------------------------------------------------------------------------------


class SavedTensorCounter:
    """Weak references to every tensor autograd saves while active (see the module docstring).

    Use:  with counter: loss = forward();  stats = counter.summary()  (before backward)."""

    active = None  # the counter in use, read by counting_checkpoint

    def __init__(self, exclude_storages):
        self.exclude = exclude_storages  # {(device, data_ptr)} of parameters and buffers
        self.refs = []
        self._hooks = None

    def _pack(self, t):
        self.refs.append(weakref.ref(t))
        return t  # identity: the hook observes, it changes nothing

    def hold(self, obj):
        """Also count tensors reachable from obj (dict/list/tuple) that a checkpoint closure keeps."""
        if isinstance(obj, torch.Tensor):
            self.refs.append(weakref.ref(obj))
        elif isinstance(obj, dict):
            for v in obj.values():
                self.hold(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                self.hold(v)

    def __enter__(self):
        self.refs = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        SavedTensorCounter.active = self
        return self

    def __exit__(self, *exc):
        SavedTensorCounter.active = None
        self._hooks.__exit__(*exc)
        return False

    def summary(self, report=0):
        gc.collect()  # free unreachable autograd cycles before looking at what is alive
        storages, groups, weights, n = {}, {}, {}, 0
        for r in self.refs:
            t = r()
            if t is None:
                continue
            s = t.untyped_storage()
            key = (str(t.device), s.data_ptr())
            if s.nbytes() == 0:
                continue
            if key in self.exclude:
                weights[key] = s.nbytes()
                continue
            n += 1
            if key not in storages:
                storages[key] = s.nbytes()
                g = groups.setdefault((tuple(t.shape), str(t.dtype).replace("torch.", "")), [0, 0])
                g[0] += 1
                g[1] += s.nbytes()
        if report:
            log(f"largest saved-tensor groups (first tensor seen per storage; shape, dtype: count, MB):")
            for (shape, dt), (c, nb) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:report]:
                log(f"  {str(list(shape)):>24s} {dt:9s} x{c:<4d} {nb / 1e6:10.1f}")
        return {"saved_bytes": sum(storages.values()), "saved_storages": len(storages), "saved_tensors": n,
                "saved_weight_bytes": sum(weights.values())}


def counting_checkpoint(fn, *args, **kwargs):
    """torch.utils.checkpoint (non-reentrant) that also counts the tensors the layer's closure keeps.

    transformers calls this as checkpoint(partial(forward, layer, **kwargs), *positional_args); the
    positional arguments are saved by the checkpoint itself through saved_tensors_hooks, the
    keyword arguments only live in the partial."""
    counter = SavedTensorCounter.active
    if counter is not None and isinstance(fn, functools.partial):
        counter.hold(fn.keywords)
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)


def storage_keys(module):
    keys, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        s = t.untyped_storage()
        key = (str(t.device), s.data_ptr())
        if key not in keys:
            keys.add(key)
            total += s.nbytes()
    return keys, total


# ------------------------------------------------------------------------------------------------
# Host memory and device description
# ------------------------------------------------------------------------------------------------


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss():
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); ru_maxrss follows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def device_name(device):
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"cpu ({name}, {n} thread{'' if n == 1 else 's'})"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def check_grads(pm, arch, P, method):
    """Only the prompt (or the prompt encoder) received a gradient, and it is finite and non-zero
    (rows P.. of PEFT's T5 table, meant for a decoder prompt, stay zero: prompt tuning feeds the
    encoder only)."""
    seen = False
    for n, q in pm.named_parameters():
        if n == PROMPT_PARAM and method == "prompt":
            g = q.grad[:P] if arch == "t5" else q.grad
            assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, "bad prompt gradient"
        elif n.startswith("prompt_encoder.default.") and method != "prompt":
            assert q.grad is None or torch.isfinite(q.grad).all(), f"{n}: bad gradient"
            seen = seen or (q.grad is not None and q.grad.abs().sum() > 0)
        else:
            assert q.grad is None, f"{n} received a gradient"
    assert method == "prompt" or seen, "no prompt encoder tensor received a gradient"


def method_settings(args):
    """The method's settings in softprompt bench's keys (null for prompt tuning)."""
    hidden = args.encoder_hidden_size or bc.PRESETS[args.preset]["hidden"]
    if args.method == "p-tuning":
        return {"method": "p-tuning", "encoder_reparameterization_type": (args.encoder_reparameterization or "mlp").upper(),
                "encoder_hidden_size": hidden, "encoder_num_layers": args.encoder_num_layers or 2}
    if args.method == "prefix":
        return {"method": "prefix", "prefix_projection": args.prefix_projection,
                "encoder_hidden_size": hidden if args.prefix_projection else None,
                "prefix_placement": args.prefix_placement}
    return None


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (torch.float32 if device.type == "cpu"
                                                             else torch.bfloat16)
    arch = bc.PRESETS[args.preset]["arch"]

    t0 = time.perf_counter()
    model = build_model(args, dtype, device)
    pm = wrap_peft(model, args)
    batch = make_batch(args, device)
    weight_keys, weights_bytes = storage_keys(pm)
    log(f"built {args.preset} ({sum(q.numel() for q in pm.parameters()) / 1e6:.1f}M parameters, {dtype}, "
        f"attn={model.config._attn_implementation}) in {time.perf_counter() - t0:.1f}s")

    def step():
        pm.zero_grad(set_to_none=True)
        forward_loss(pm, batch, args).backward()

    gc.collect()
    sync(device)
    rss_baseline = rss_bytes() if device.type == "cpu" else None
    peak_reset = reset_peak_rss() if device.type == "cpu" else None

    for _ in range(args.warmup):
        step()

    # Untimed step that counts what autograd saves.
    pm.zero_grad(set_to_none=True)
    sync(device)
    before = torch.cuda.memory_allocated() if device.type == "cuda" else None
    counter = SavedTensorCounter(weight_keys)
    with counter:
        loss = forward_loss(pm, batch, args)
    sync(device)
    retained = torch.cuda.memory_allocated() - before if device.type == "cuda" else None
    saved = counter.summary(report=args.saved_report)
    loss.backward()
    loss_value = loss.item()
    del loss
    check_grads(pm, arch, args.prompt, args.method)
    if not math.isfinite(loss_value):
        log(f"warning: loss is {loss_value} (random weights); timings are still reported")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(args.steps):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        step()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
        cpu_times.append((time.process_time() - c) * 1e3)

    step_ms = statistics.median(times)
    # P-tuning's step is prompt tuning's (its encoder is not counted)
    counted = ("prefix", args.prefix_placement) if args.method == "prefix" else ("prompt", "papers")
    tokens = bc.tokens_per_step(args.preset, args.batch, args.seq, args.prompt, args.target_len, *counted)
    flops = bc.step_flops(args.preset, args.batch, args.seq, args.prompt, args.target_len,
                          args.objective if arch == "bert" else "seq2seq", *counted)
    if arch in bc.DECODER_ARCHS:
        assert model.config.vocab_size == bc.PRESETS[args.preset]["vocab"]
    res = {
        "impl": "pytorch+peft",
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        "target_len": args.target_len,
        "prompt": args.prompt,
        "recompute": args.recompute,
        "objective": args.objective,
        "method": args.method,
        "method_settings": method_settings(args),
        "attn": model.config._attn_implementation,
        "dtype": str(dtype).replace("torch.", ""),
        "device": device_name(device),
        "steps": args.steps,
        "warmup": args.warmup,
        "step_ms": step_ms,
        "step_ms_all": times,
        "step_cpu_ms": statistics.median(cpu_times),
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / (step_ms / 1e3),
        "flops_per_step": flops,
        "tflops": flops / (step_ms / 1e3) / 1e12,
        **saved,
        "weights_bytes": weights_bytes,
        "loss": loss_value,
        "shapes": bc.shapes(args.preset),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "python": platform.python_version()},
    }
    if device.type == "cuda":
        res["peak_bytes"] = torch.cuda.max_memory_allocated()
        res["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        res["forward_retained_bytes"] = retained
    else:
        res["peak_bytes"] = peak_rss_bytes()
        res["rss_baseline_bytes"] = rss_baseline
        res["peak_reset"] = peak_reset
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        mb = 1e6
        extra = (f"peak RSS {res['peak_bytes'] / mb:.0f} MB (baseline {rss_baseline / mb:.0f} MB, "
                 f"+{(res['peak_bytes'] - rss_baseline) / mb:.0f} MB)" if device.type == "cpu" else
                 f"peak allocated {res['peak_bytes'] / mb:.0f} MB (weights {weights_bytes / mb:.0f} MB)")
        print(f"{args.preset} B={args.batch} T={args.seq} P={args.prompt}"
              + (f" L={args.target_len}" if arch in ("t5", *bc.DECODER_ARCHS) else f" {args.objective}")
              + f" --method {args.method} {res['attn']} {res['dtype']} recompute={args.recompute} on {res['device']}")
        print(f"  step {step_ms:.1f} ms (all: {', '.join(f'{x:.0f}' for x in times)}), "
              f"{res['tokens_per_s']:.0f} tokens/s, {res['tflops']:.3f} TFLOP/s")
        print(f"  saved for backward {saved['saved_bytes'] / mb:.1f} MB in {saved['saved_storages']} storages; "
              + extra)


if __name__ == "__main__":
    try:
        main()
    except torch.OutOfMemoryError as e:
        log(f"bench_torch.py: out of memory: {str(e).splitlines()[0]}")
        sys.exit(3)
