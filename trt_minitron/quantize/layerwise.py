"""Layer-by-layer calibration: ModelOpt's `quantize` run on one decoder layer at a time, fed captured activations.

This is ModelOpt's own layerwise scheme (`modelopt/torch/quantization/model_calib.py` `layerwise_calibrate`,
0.47) with `get_qdq_activations_from_prev_layer=False`, the setting it uses for max calibration: each layer is
calibrated on the float activations a whole-model pass would give it, captured before the layer is quantized.
ModelOpt's driver needs the whole model as one module (weights off-device through accelerate hooks at best)
and exports only after the last layer; here each layer lives in a one-layer shell (hf_model.py) built from
the source when its turn comes, so the caller can export it and drop it before the next is read. Memory:
one layer in the calibration dtype + the calibration activations twice (this layer's inputs and outputs).

Same answer as the whole model: the calibration algorithms (max, SmoothQuant, AWQ-lite) only ever look at one
layer's inputs, and those are bit-identical to the whole-model pass's (its calibration forward runs with
quantization off). Measured bit for bit in tests/test_quant_layerwise.py for every format.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..sources.base import Source
from .hf_model import embedding_rows, layer_shell


@dataclass
class LayerInput:
    """One batch as a decoder layer receives it: the hidden states and what the model passes besides
    (rotary position embeddings, position ids, mask), as transformers' own model forward made them."""

    hidden: torch.Tensor  # [batch, tokens, hidden]
    kwargs: dict


@dataclass
class CalibratedLayer:
    """Decoder layer `index`, quantized and calibrated by ModelOpt, as model.layers[0] of a one-layer shell."""

    index: int
    shell: torch.nn.Module | None  # None once the next layer was asked for
    inputs: list[LayerInput]  # the calibration batches it saw
    next_hidden: list[torch.Tensor]  # its float outputs on them (+ probes): the next layer's inputs
    probes: list[LayerInput]  # extra inputs run through but not calibrated on (e.g. the conversion check's)

    @property
    def layer(self) -> torch.nn.Module:
        return self.shell.model.layers[0]

    def quantizer_state(self) -> dict[str, torch.Tensor]:
        """Every calibrated quantizer value of the layer (amax, pre-quant scale) by its whole-model name,
        e.g. `model.layers.3.self_attn.q_proj.input_quantizer._amax`."""
        from modelopt.torch.quantization.nn import TensorQuantizer

        state = {}
        for name, m in self.layer.named_modules():
            if isinstance(m, TensorQuantizer):
                for attr in ("_amax", "_pre_quant_scale"):
                    value = getattr(m, attr, None)
                    if value is not None:
                        state[f"model.layers.{self.index}.{name}.{attr}"] = value.detach()
        return state


class _Captured(Exception):
    """Raised by the capture hook to stop the model forward at the first decoder layer."""


def capture_inputs(source: Source, batches: list[torch.Tensor], device: str, dtype: torch.dtype) -> list[LayerInput]:
    """What decoder layer 0 receives for each token batch, from transformers' own model forward.

    The embedding rows come from the source (only the rows the batches use); a one-layer shell computes the
    rest (rotary embeddings, mask) and stops at its layer 0 with no layer weight used."""
    shell = layer_shell(source, 0, device, dtype)
    captured: list[LayerInput] = []

    def hook(_module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(LayerInput(hidden.detach(), kwargs))
        raise _Captured

    handle = shell.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    shell.model(inputs_embeds=embedding_rows(source, ids, dtype).to(device), use_cache=False)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return captured


def _run(layer: torch.nn.Module, x: LayerInput) -> torch.Tensor:
    out = layer(x.hidden, **x.kwargs)
    return (out[0] if isinstance(out, tuple) else out).detach()


def calibrate_layers(source: Source, quant_cfg: dict, inputs: list[LayerInput], device: str, dtype: torch.dtype,
                     start: int = 0, probes: list[LayerInput] = (), on_layer: Callable[[int], None] = lambda i: None,
                     on_batch: Callable[[], None] = lambda: None) -> Iterator[CalibratedLayer]:
    """Decoder layers `start`.. of `source`, each calibrated by `mtq.quantize(shell, quant_cfg, loop)`.

    `inputs`: what layer `start` receives for each calibration batch (capture_inputs for layer 0, or the
    saved `next_hidden` of layer start-1 with the captured kwargs); `probes` ride along uncalibrated.
    A layer's successor inputs are its outputs computed before it is quantized (float, as a whole-model
    calibration pass sees them). `on_layer(i)` is called before layer i is read, `on_batch` after every
    calibration batch (AWQ runs several passes).
    The caller may export and mutate each yielded layer; it is released (`shell` None) when the next one is
    asked for, so that only one layer is ever resident."""
    from .modelopt_run import quiet, require_modelopt

    mtq = require_modelopt()
    for index in range(start, source.config.num_hidden_layers):
        on_layer(index)
        shell = layer_shell(source, index, device, dtype)
        layer = shell.model.layers[0]
        with torch.no_grad():
            next_hidden = [_run(layer, x) for x in [*inputs, *probes]]

        def forward_loop(model: torch.nn.Module, batches: list[LayerInput] = inputs) -> None:
            for x in batches:
                model.model.layers[0](x.hidden, **x.kwargs)
                on_batch()

        with torch.no_grad(), quiet():
            mtq.quantize(shell, copy.deepcopy(quant_cfg), forward_loop)
        calibrated = CalibratedLayer(index, shell, inputs, next_hidden, list(probes))
        del shell, layer
        yield calibrated
        calibrated.shell = None
        gc.collect()  # ModelOpt's quantized modules hold reference cycles: free the layer before reading the next
        n = len(inputs)
        inputs = [LayerInput(h, x.kwargs) for h, x in zip(next_hidden[:n], inputs)]
        probes = [LayerInput(h, x.kwargs) for h, x in zip(next_hidden[n:], probes)]


def calibrated_quantizer_states(source: Source, quant_cfg: dict, batches: list[torch.Tensor], device: str = "cpu",
                                ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(layer index, CalibratedLayer.quantizer_state()) for every decoder layer of `source`, calibrated with
    `quant_cfg` (modelopt_run.quant_config) on the token `batches` (calib.calibration_plan rebuilds quantize's
    from its report): what `quantize` calibrated, one layer in memory at a time.

    These are the values calibration produced, before ModelOpt's export fuses them (q/k/v and gate/up amax
    unified to their max, AWQ pre-quant scales averaged over linears sharing an input); layer_export.py applies
    that step, as quantize does, where a checkpoint's stored scales are the comparison."""
    from .hf_model import calibration_dtype

    dtype = calibration_dtype(device)
    for layer in calibrate_layers(source, quant_cfg, capture_inputs(source, batches, device, dtype), device, dtype):
        yield layer.index, {n: t.clone() for n, t in layer.quantizer_state().items()}
