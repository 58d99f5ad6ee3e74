#!/usr/bin/env python3
"""Writes tests/bad_inputs/, the bad-input corpus of issue #13 that tests/bad_input_cli/ runs
the release binary against. Small, deterministic, no dependencies:

  data/       a good training file, and data files that are broken in one way each
  config/     patches merged into a copy of a fixture model's config.json
  task/       patches merged into a copy of a trained prompt folder's task.json
  adapter     patches to a trained prefix folder's adapter files, and the command they fail
  verbalizer  (in cases.json) verbalizers that would train nothing

Every file a test uses is listed in tests/bad_inputs/cases.json with what it must provoke.
Run from the repository root: python3 scripts/make_bad_inputs.py
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "bad_inputs")

POS = ["great", "good", "fine", "funny", "lovely", "brilliant"]
NEG = ["bad", "terrible", "awful", "boring", "dull", "slow"]


def write(rel, data):
    path = os.path.join(ROOT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)


def jsonl(rows):
    return "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows)


def main():
    # 24 rows of words every fixture vocabulary holds
    rows = []
    for i in range(12):
        rows.append((f"the movie was {POS[i % 6]}.", "positive"))
        rows.append((f"the film was {NEG[i % 6]}.", "negative"))
    write("data/train.jsonl", jsonl(rows))
    write("data/dev.jsonl", jsonl(rows[:8]))
    # invalid UTF-8 on line 3 of each format (the header counts as line 1 in csv and tsv)
    bad = b"the plot was \xff\xfe dull."
    good = [(t.encode(), l.encode()) for t, l in rows[:4]]
    write(
        "data/invalid_utf8.jsonl",
        b"".join(b'{"text": "' + t + b'", "label": "' + l + b'"}\n' for t, l in good[:2])
        + b'{"text": "' + bad + b'", "label": "negative"}\n',
    )
    write(
        "data/invalid_utf8.tsv",
        b"text\tlabel\n" + b"".join(t + b"\t" + l + b"\n" for t, l in good[:1])
        + bad + b"\tnegative\n",
    )
    write(
        "data/invalid_utf8.csv",
        b"text,label\n" + b"".join(t + b"," + l + b"\n" for t, l in good[:1])
        + bad + b",negative\n",
    )
    # line 2 names its label twice (serde_json kept the last one without a word)
    write(
        "data/duplicate_key.jsonl",
        jsonl(rows[:1])
        + '{"text": "the film was bad.", "label": "positive", "label": "negative"}\n'
        + jsonl(rows[2:4]),
    )
    # line 2 holds the mask token in its text (the error blamed --template)
    write("data/mask_in_text.jsonl", jsonl(rows[:1] + [("a [MASK] movie.", "positive")] + rows[2:4]))
    cases = {
        "config": {
            # each: (fixture model, patch, words the error must hold)
            "type_vocab_size_0": ["bert_mlm", {"type_vocab_size": 0}, ["config.json", "type_vocab_size"]],
            "max_position_embeddings_2": ["bert_mlm", {"max_position_embeddings": 2}, ["max_position_embeddings", "--prompt-len"]],
            "num_hidden_layers_0": ["bert_mlm", {"num_hidden_layers": 0}, ["config.json", "num_hidden_layers", "positive"]],
            "t5_num_layers_0": ["t5_flan", {"num_layers": 0}, ["config.json", "num_layers", "positive"]],
            "negative_layer_norm_eps": ["bert_mlm", {"layer_norm_eps": -1e-12}, ["config.json", "layer_norm_eps"]],
            "t5_negative_layer_norm_epsilon": ["t5_flan", {"layer_norm_epsilon": -1e-6}, ["config.json", "layer_norm_epsilon"]],
        },
        "task": {
            "max_len_0": [{"max_len": 0}, ["task.json", "`max_len`"]],
            "future_format": [{"format": 2}, ["task.json", "`format` is 2", "expected 1"]],
            "max_target_len_0": [{"max_target_len": 0}, ["task.json", "`max_target_len`"]],
            # present with the wrong type: says what it holds (it said "missing integer")
            "max_len_negative": [{"max_len": -5}, ["task.json", "`max_len` is -5", "non-negative integer"]],
            "template_null": [{"template": None}, ["task.json", "`template` is null", "a string"]],
            "template_without_text": [{"template": "It was [MASK]."}, ["task.json", "`template`"]],
            "template_two_masks": [{"template": "{text} It was [MASK]. [MASK]"}, ["task.json", "`template`", "2 times"]],
            "free_targets_not_a_bool": [{"free_targets": "yes"}, ["task.json", "`free_targets` is \"yes\""]],
            "unknown_task": [{"task": "regression"}, ["task.json", "`task`"]],
            "verbalizer_not_a_list": [{"verbalizer": "positive=great,negative=bad"}, ["task.json", "`verbalizer`"]],
            "verbalizer_other_labels": [{"verbalizer": [["foo", "great"], ["bar", "bad"]]}, ["task.json", "`verbalizer`", "\"foo\""]],
            "labels_reordered": [{"labels": ["negative", "positive"]}, ["task.json", "`verbalizer`", "order"]],
            # the keys recorded beside the task: of the wrong type they were skipped, and a
            # num_virtual_tokens other than the adapter's means files of two runs
            "num_virtual_tokens_other": [{"num_virtual_tokens": 7}, ["task.json", "`num_virtual_tokens` is 7", "has 3"]],
            "step_negative": [{"step": -1}, ["task.json", "`step` is -1", "non-negative integer"]],
            "seed_not_a_number": [{"seed": "x"}, ["task.json", "`seed` is \"x\"", "non-negative integer"]],
            "arch_not_a_string": [{"arch": 5}, ["task.json", "`arch` is 5", "a string"]],
            "dev_accuracy_past_1": [{"dev_accuracy": 3}, ["task.json", "`dev_accuracy` is 3"]],
            # a placement no one reads was accepted (and printed by inspect as if it were one)
            "prefix_placement_unknown": [{"prefix_placement": "sideways"}, ["task.json", "`prefix_placement` is \"sideways\"", "\"papers\" or \"peft\""]],
            # an unknown method, or one the adapter's peft_type denies, was read as the adapter's
            "method_unknown": [{"method": "lora"}, ["task.json", "`method` is \"lora\"", "\"prompt\", \"p-tuning\" or \"prefix\""]],
            "method_not_the_adapters": [{"method": "prefix"}, ["task.json", "`method` is \"prefix\"", "`peft_type` is \"PROMPT_TUNING\"", "expected \"prompt\""]],
            # a label given twice: the pairs follow `labels`, so it is there twice too
            "verbalizer_label_twice": [{"labels": ["positive", "positive"], "verbalizer": [["positive", "great"], ["positive", "bad"]]}, ["task.json", "\"positive\"", "twice"]],
        },
        "adapter": {
            # each: (command, patch merged into a BERT prefix folder's adapter_config.json,
            # tensors added to its adapter_model.safetensors, "refused" (exit 2) or "warns"
            # (exit 0, on stderr), words the message must hold)
            # another model's head count was accepted without a word (bert_mlm has 4 heads)
            "prefix_heads_other": ["eval", {"num_attention_heads": 3}, [], "refused", ["adapter_config.json", "`num_attention_heads` is 3", "expected 4"]],
            "prefix_heads_not_a_number": ["eval", {"num_attention_heads": "four"}, [], "refused", ["adapter_config.json", "`num_attention_heads` is \"four\"", "expected 4"]],
            # inspect printed an unknown placement as if it were one; train and eval refused it
            "prefix_placement_unknown": ["inspect", {"prefix_placement": "sideways"}, [], "refused", ["adapter_config.json", "`prefix_placement` is \"sideways\"", "\"papers\" or \"peft\""]],
            # tensors no method reads were ignored without a word
            "extra_tensors": ["eval", {}, ["base_model.model.classifier.weight", "lora_A"], "warns", ["warning: ", "adapter_model.safetensors", "base_model.model.classifier.weight, lora_A"]],
        },
        "verbalizer": {
            # each: (fixture model, task, verbalizer, words the error must hold)
            "shared_token": ["bert_mlm", "pet", "positive=great,negative=great", ["--verbalizer", "\"positive\"", "\"negative\"", "share the token"]],
            "unknown_word": ["bert_mlm", "pet", "positive=photography,negative=bad", ["--verbalizer", "\"photography\"", "unknown token"]],
            "identical_targets": ["t5_flan", "seq2seq", "positive=good,negative=good", ["--verbalizer", "same target", "\"good\""]],
            "lacks_a_label": ["bert_mlm", "pet", "positive=great", ["--verbalizer", "\"negative\"", "train.jsonl:2"]],
            "special_token": ["bert_mlm", "pet", "positive=[MASK],negative=bad", ["--verbalizer", "\"[MASK]\"", "special token"]],
            # a label given twice: the later word won (JSON) or --labels was blamed
            "label_twice": ["bert_mlm", "pet", "positive=great,negative=bad,positive=good", ["--verbalizer", "\"positive\"", "twice"]],
            "label_twice_json": ["bert_mlm", "pet", "{\"positive\": \"great\", \"negative\": \"bad\", \"positive\": \"good\"}", ["--verbalizer", "\"positive\"", "twice"]],
        },
        "flags": {
            # each: extra training flags, and the flag the error must name
            "lr_nan": [["--lr", "NaN"], "--lr"],
            "lr_negative": [["--lr=-1"], "--lr"],
            "lr_0": [["--lr", "0"], "--lr"],
            "weight_decay_nan": [["--weight-decay", "NaN"], "--weight-decay"],
            "head_lr_inf": [["--head-lr", "inf"], "--head-lr"],
            "max_grad_norm_nan": [["--max-grad-norm", "NaN"], "--max-grad-norm"],
            "batch_size_0": [["--batch-size", "0"], "--batch-size"],
            "epochs_0": [["--epochs", "0"], "--epochs"],
            "max_steps_0": [["--max-steps", "0"], "--max-steps"],
            "patience_without_dev": [["--patience", "2"], "--patience"],
            "eval_every_without_dev": [["--eval-every", "5"], "--eval-every"],
            "prompt_len_huge": [["--prompt-len", "10000000"], "--prompt-len"],
            "max_len_huge": [["--max-len", "1000000000"], "--max-len"],
            "threads_huge": [["--threads", "100000"], "--threads"],
            # pet has no targets, but the value is saved and task.json refuses 0 (it trained,
            # then failed blaming task.json)
            "max_target_len_0_pet": [["--max-target-len", "0"], "--max-target-len"],
            "init_vocab_first_0": [["--init", "sample-vocab", "--init-vocab-first", "0"], "--init-vocab-first"],
            "verbalizer_word_not_a_string": [["--verbalizer", "{\"positive\": 3, \"negative\": \"bad\"}"], "--verbalizer"],
            # flags the task (or the init, or the optimizer) does not read were ignored;
            # "!--flag" drops that default flag and its value
            "pooling_with_pet": [["--pooling", "mean"], "--pooling"],
            "decode_with_pet": [["--decode", "greedy"], "--decode"],
            "free_targets_with_pet": [["--free-targets"], "--free-targets"],
            "max_target_len_with_cls": [["--task", "cls", "!--verbalizer", "--max-target-len", "8"], "--max-target-len"],
            "decode_with_cls": [["--task", "cls", "!--verbalizer", "--decode", "rank"], "--decode"],
            "verbalizer_with_cls": [["--task", "cls"], "--verbalizer"],
            "init_text_empty": [["--init", "text", "--init-text", ""], "--init-text"],
            "init_std_with_text": [["--init", "text", "--init-text", "a movie", "--init-std", "0.5"], "--init-std"],
            "init_vocab_first_with_random": [["--init-vocab-first", "10"], "--init-vocab-first"],
            "init_vocab_first_past_vocab": [["--init", "sample-vocab", "--init-vocab-first", "100000000"], "--init-vocab-first"],
            "decay_rate_above_1": [["--optimizer", "adafactor", "--decay-rate", "1.5"], "--decay-rate"],
            "decay_rate_0": [["--optimizer", "adafactor", "--decay-rate", "0"], "--decay-rate"],
            "decay_rate_with_adamw": [["--decay-rate", "0.8"], "--decay-rate"],
            # P-tuning's encoder was allocated unchecked: 10^11 aborted, 10^6 LSTM layers were
            # killed for memory
            "encoder_hidden_size_huge": [["--method", "p-tuning", "--encoder-hidden-size", "100000000000"], "--encoder-hidden-size"],
            "encoder_num_layers_huge": [["--method", "p-tuning", "--encoder-reparameterization", "lstm", "--encoder-num-layers", "1000000"], "--encoder-num-layers"],
        },
    }
    write("cases.json", json.dumps(cases, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
