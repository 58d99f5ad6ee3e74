"""The PyTorch + PEFT reference pipeline of scripts/torch_reference.py (the entry point), by concern:

    common        the producer string, the text data, small helpers, the BERT and T5 tokenizers
    weights       random weights; WEIGHTS ("harsh" or "realistic") is read at call time, set it here
    bert_t5       BERT and T5 model folders and their batches
    refs          PEFT prompt-tuning references of BERT and T5 (format 1), PEFT adapters
    decoder_only  decoder-only models (BLOOM, Llama, Qwen2, Mistral): folders, causal and generation references
    deep          deep prompts: P-tuning and prefix-tuning references (PEFT and the papers' placement)
    fixtures      the committed fixture set and the random configurations
    check         self-check of the BERT and T5 references (an independent implementation)
    check_deep    self-check of the decoder-only and deep-prompt references
    selfcheck     the self-check over a fixture folder

Importing the package (any of its modules) first sets up the process the references are
reproducible in: offline, CPU only, one thread, deterministic algorithms, quiet libraries.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import warnings  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore")
