"""The README's movie-review job (scripts/main_job.sh) from Python: a 12-row prompt with the
cls task's linear head on all-MiniLM-L6-v2, trained on the English movie-review sentences,
then the saved prompt scored on the test split. From the repository root:
    python python/examples/movie_reviews.py [OUT]     (default runs/minilm_sentiment_en_py)
"""
import sys

import softprompt as sp

out = sys.argv[1] if len(sys.argv) > 1 else "runs/minilm_sentiment_en_py"
data = "assets/sentiment_en/"
model = sp.Model("assets/all-MiniLM-L6-v2")  # device="cuda" for a GPU
summary, prompt = model.train(
    data + "train.jsonl", out, dev=data + "dev.jsonl", test=data + "test.jsonl",
    task="cls", pooling="mean", prompt_len=12,
    init="text", init_text="Is this movie review positive or negative?",
    optimizer="adamw", lr=0.03, schedule="linear",
    batch_size=32, max_steps=120, eval_every=40, seed=0, resume=True,
)  # the same flags as scripts/main_job.sh: the same numbers as `softprompt train`
print("summary:", summary)
saved = sp.Prompt.load(out)  # what `softprompt eval --prompt OUT` reads
task = model.task_for(saved)
metrics, predictions = model.evaluate(task, saved, data + "test.jsonl")
print("test:", metrics, "| first prediction:", predictions[0]["label"])
