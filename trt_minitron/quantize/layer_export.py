"""One calibrated decoder layer through ModelOpt's own exporters, run on its one-layer shell (hf_model.py).

ModelOpt's exporters walk a whole model; run on a shell whose only decoder layer is the calibrated one, they
give that layer's tensors exactly as in a whole-model export (tests/test_quant_layerwise.py compares them):
every per-layer step (q/k/v and gate/up amax unified, AWQ pre-quant scales averaged, tensor-parallel
splits, INT4 packing) happens inside the layer. The shell's own embedding, final norm and lm_head are
dropped. Both functions mutate the layer as ModelOpt's export mutates a model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from .modelopt_run import quiet

TRT_LAYER = "transformer.layers.0."
HF_LAYER = "model.layers.0."


def export_layer_trtllm(shell: torch.nn.Module, decoder_type: str, dtype: torch.dtype, tp: int,
                        ) -> tuple[dict, list[dict[str, torch.Tensor]]]:
    """(config.json `quantization` block, per tensor-parallel rank {name under transformer.layers.{i}.: tensor}).

    ModelOpt's `torch_to_tensorrt_llm_checkpoint` (0.47 `model_config_export.py`), which
    `export_tensorrt_llm_checkpoint` saves rank by rank; its `exclude_modules` is the union over ranks, as there."""
    from modelopt.torch.export import torch_to_tensorrt_llm_checkpoint

    ranks, exclude, quantization = [], set(), {}
    with torch.no_grad(), quiet():
        for config, weights, _ in torch_to_tensorrt_llm_checkpoint(shell, decoder_type, dtype,
                                                                   inference_tensor_parallel=tp,
                                                                   inference_pipeline_parallel=1):
            ranks.append({n[len(TRT_LAYER):]: t for n, t in weights.items() if n.startswith(TRT_LAYER)})
            quantization = dict(config.get("quantization") or {})
            exclude.update(quantization.get("exclude_modules") or ())
    if quantization:
        quantization["exclude_modules"] = list(exclude)
    return quantization, ranks


def export_layer_hf(shell: torch.nn.Module, dtype: torch.dtype, scratch: Path,
                    ) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(hf_quant_config.json, config.json's quantization_config, {name under model.layers.{i}.: tensor}) from
    ModelOpt's unified Hugging Face exporter (`export_hf_checkpoint`), written into a folder under `scratch`."""
    from modelopt.torch.export import export_hf_checkpoint
    from safetensors.torch import load_file

    folder = Path(tempfile.mkdtemp(prefix="layer-", dir=scratch))
    try:
        with torch.no_grad(), quiet():
            export_hf_checkpoint(shell, dtype=dtype, export_dir=folder)
        tensors = {}
        for f in sorted(folder.glob("*.safetensors")):
            tensors.update({n[len(HF_LAYER):]: t for n, t in load_file(str(f)).items() if n.startswith(HF_LAYER)})
        config = json.loads((folder / "config.json").read_text())
        return json.loads((folder / "hf_quant_config.json").read_text()), config.get("quantization_config"), tensors
    finally:
        shutil.rmtree(folder, ignore_errors=True)
