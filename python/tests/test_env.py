"""The environment variables that choose the CPU kernels are read as the command line reads
them: a SOFTPROMPT_GEMM that does not load is refused by parity as by a Model (parity ran the
gemm crate and passed), and a SOFTPROMPT_SIMD set after the process fixed its instruction set
is refused (it was accepted and not used)."""
import os
import subprocess
import sys
import textwrap

from conftest import BERT_MLM

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import softprompt as sp
    model_dir, reference = sys.argv[1], sys.argv[2]
    os.environ["SOFTPROMPT_GEMM"], os.environ["SOFTPROMPT_MKL"] = "mkl", "/nonexistent/mkl"
    try:
        sp.parity(model_dir, reference)
        print("parity ran")
    except sp.InvalidArgument as e:
        print("parity refused", "SOFTPROMPT_GEMM" in str(e))
    del os.environ["SOFTPROMPT_GEMM"]
    model = sp.Model(model_dir)
    task = model.task([("a", "positive"), ("b", "negative")], prompt_len=4,
                      verbalizer="positive=great,negative=bad")
    model.predict(task, model.new_prompt(task), ["a fine film"])  # the set is fixed here
    os.environ["SOFTPROMPT_SIMD"] = "scalar"
    try:
        sp.Model(model_dir)
        print("simd accepted")
    except sp.InvalidArgument as e:
        print("simd refused", str(e))
    """
)


def test_kernel_variables_are_refused_where_they_would_not_be_used():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTPROMPT_")}
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(BERT_MLM), str(BERT_MLM / "ref_pet_text.safetensors")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().split("\n")
    assert lines[0] == "parity refused True", p.stdout + p.stderr
    if lines[1] == "simd accepted":
        # a CPU without AVX2 runs the scalar set already: nothing to refuse
        import softprompt as sp
        assert sp.Model(BERT_MLM) and not _has_avx2(), p.stdout
        return
    assert lines[1].startswith("simd refused invalid argument SOFTPROMPT_SIMD: scalar: the "
                               "instruction set of this process is already "), lines[1]


def _has_avx2():
    try:
        return " avx2 " in " " + open("/proc/cpuinfo").read().replace("\n", " ") + " "
    except OSError:
        return False
