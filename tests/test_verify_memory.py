"""verify streams layer by layer: its peak RSS does not grow with depth; the whole-model mode's does."""

import json
import os
import subprocess
import sys

import pytest
import torch
from synthetic import write_synthetic_hf

from trt_minitron.export.run import ExportOptions, run_export

# The child reports its peak (VmHWM, which unlike ru_maxrss does not inherit pytest's own peak).
CHILD = r"""
import json, sys
from trt_minitron.cli import main
rc = main(["verify", sys.argv[1], "--reference", sys.argv[2], *sys.argv[3:]])
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak": peak}))
"""

HIDDEN, FFN, VOCAB = 1024, 4096, 32000
# One layer in float32: q and o 1024x1024, k and v 256x1024, gate/up/down 4096x1024: 59 MB.
LAYER_F32 = 4 * (2 * HIDDEN * HIDDEN + 2 * 256 * HIDDEN + 3 * FFN * HIDDEN)


def checkpoint(root, layers):
    hf = {"architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": FFN,
          "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
          "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": VOCAB, "max_position_embeddings": 4096}
    src = write_synthetic_hf(root / f"src{layers}", hf, dtype=torch.bfloat16)
    out = root / f"ckpt{layers}"
    run_export(ExportOptions(src=str(src), output=out, dtype="bfloat16", tp=2))
    return src, out


# glibc raises its mmap threshold to the size of each large block freed, after which blocks of that size come
# from the heap and the peak depends on fragmentation: the same run varied by +-50 MB (more than one layer).
# A fixed threshold measures what verify holds, not the allocator's history: +-5 MB over repeated runs.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}


def peak(src, out, *flags):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(src), *flags], capture_output=True, text=True,
                          timeout=600, env=CHILD_ENV)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, proc.stdout + proc.stderr
    return report["peak"]


@pytest.mark.slow
def test_layer_by_layer_peak_is_flat_in_depth(tmp_path):
    shallow, deep = checkpoint(tmp_path, 2), checkpoint(tmp_path, 8)
    layers = [peak(*shallow), peak(*deep)]
    full = [peak(*shallow, "--full"), peak(*deep, "--full")]
    # 6 more layers: the whole-model mode holds them (>= 6 layers in float32); streaming holds one at a time.
    assert full[1] - full[0] > 5 * LAYER_F32, full
    assert layers[1] - layers[0] < LAYER_F32, layers
    assert layers[1] < full[1] - 4 * LAYER_F32
