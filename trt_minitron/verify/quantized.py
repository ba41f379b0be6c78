"""`verify` on a quantized checkpoint: the conversion judged against ModelOpt, the quantization's cost reported.

Both are measured in one pass, one decoder layer at a time, on CNN/DailyMail articles:

  conversion (judged, exit 1): per layer, teacher-forced (every linear fed the source's own input to it at that
    layer), each quantized linear of each rank against ModelOpt's fake quantization rebuilt from the source's
    weights and the checkpoint's scales (quantize/recompute.py): the dequantized weight and the GEMM input element by
    element, allowing only isolated rounding-tie flips (quantize/teacher.py FLIP_FRACTION); the FP8 KV-cache rounding
    likewise; and every unquantized tensor (norms, the text's embedding rows, lm_head) bit-identical to what
    `export` writes. Recomputed rather than read from quantize's sidecar report: that report describes the files
    as quantize wrote them, and verify judges the files as they are now.
  cost (reported; judged only where it shows a broken model, or against the user's --max-kl/--min-top1:
    cost_gate.py): the checkpoint (the reference model: dequantized weights, emulated activation and
    KV rounding, running on its own hidden states) against the unquantized source as stored, in float32:
    KL divergence of the next-token distributions, max/mean |delta logit| and top-1 agreement.

Memory: one layer of each side, the rebuilt ModelOpt linears of that layer, and the texts' hidden states.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ..archs import get_arch
from ..archs.base import RankContext
from ..checkpoints.quant_formats import PQS
from ..checkpoints.quantized import LINEARS, PQS_SIDECAR, QuantSpec, check_sidecar, load_prequant_scales
from ..checkpoints.reference import LayerWeights, Semantics, attention_block, attention_kv, mlp_block, norm, rope_cos_sin
from ..checkpoints.trtllm import MergedCheckpoint
from ..errors import CheckpointError
from ..quantize.recompute import teacher_kv, teacher_linear
from ..quantize.teacher import FLIP_FRACTION, LayerCheck, TensorReader, hf_modules, mismatch, rel_diff
from ..tensors.dtypes import torch_dtype
from .calibration import CalibrationProof
from .cost_gate import first_nonfinite
from .divergence import Divergence, DivergenceReport
from .source_side import SourceSide, causal_additive_mask

BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class QuantizedVerifyResult:
    quant_algo: str
    kv_cache_quant_algo: str | None
    dtype: str
    num_texts: int
    num_tokens: int  # per text
    conversion: tuple[LayerCheck, ...]
    unquantized_differences: tuple[str, ...]  # tensors that differ from export's rounding of the source
    unquantized_checked: int
    cost: DivergenceReport
    modelopt: str
    notes: tuple[str, ...] = ()
    nonfinite: str | None = None  # where the checkpoint's hidden states first hold NaN/Inf ("layer i output, ...")
    calibration: CalibrationProof | None = None  # None: not asked for (--no-prove-calibration)
    cost_failures: tuple[str, ...] = ()  # cost_gate.cost_failures: non-finite logits, the top-1 floor, the user's gate
    gate: str = ""  # the user's gate, said on the cost line ("--max-kl 0.1"), empty when none

    @property
    def failures(self) -> list[LayerCheck]:
        return [c for c in self.conversion if not c.passed]

    @property
    def ok(self) -> bool:
        return (not self.failures and not self.unquantized_differences and self.nonfinite is None
                and not self.cost_failures and not (self.calibration is not None and self.calibration.failed))

    def summary(self) -> str:
        kv = f" + {self.kv_cache_quant_algo} KV cache" if self.kv_cache_quant_algo else ""
        lines = [f"verify (quantized {self.quant_algo}{kv}, {self.dtype}; layer by layer): {self.num_texts} "
                 f"CNN/DailyMail texts x {self.num_tokens} tokens"]
        lines += [f"  note: {n}" for n in self.notes]
        weights = [c for c in self.conversion if not c.name.startswith("attention.kv_cache")]
        kvs = [c for c in self.conversion if c.name.startswith("attention.kv_cache")]
        w = max(weights, key=lambda c: c.weight_mismatch)
        x = max(weights, key=lambda c: c.input_mismatch)
        kv_part = ""
        if kvs:
            k = max(kvs, key=lambda c: c.input_mismatch)
            kv_part = f", KV cache {k.input_mismatch:.1e}"
        lines.append(f"  conversion vs ModelOpt {self.modelopt}'s fake quantization of the source at the checkpoint's "
                     f"scales (teacher-forced, every linear and rank): {len(self.conversion)} checks; most elements "
                     f"differing: weights {w.weight_mismatch:.1e} (layer {w.layer} {w.name}), GEMM inputs "
                     f"{x.input_mismatch:.1e} (layer {x.layer} {x.name}){kv_part}; allowed {FLIP_FRACTION:.0e} "
                     "(rounding ties)")
        bad = self.failures
        if bad:
            b = bad[0]
            lines.append(f"  first failure: layer {b.layer} {b.name}: {b.weight_mismatch:.1%} of weight and "
                         f"{b.input_mismatch:.1%} of input elements differ from ModelOpt's ({len(bad)} failing)")
        if self.unquantized_differences:
            lines.append(f"  unquantized tensors that differ from export's rounding of the source: "
                         f"{', '.join(self.unquantized_differences[:5])}")
        else:
            lines.append(f"  unquantized tensors ({self.unquantized_checked} norms, the texts' embedding rows, "
                         "lm_head): identical to export's rounding of the source")
        if self.calibration is not None:
            lines.append(f"  {self.calibration.line()}")
        if self.nonfinite is not None:
            lines.append(f"  the checkpoint's hidden states hold NaN or Inf from {self.nonfinite}")
        judged = f"judged: {self.gate} and the top-1 floor" if self.gate else "reported; judged: finite, the top-1 floor"
        lines.append(f"  quantization cost vs the source as stored (float32, {judged}): {self.cost.line()}")
        lines += [f"  cost: {f}" for f in self.cost_failures]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def modelopt_version() -> str:
    try:
        return version("nvidia-modelopt")
    except PackageNotFoundError:
        return "?"


def _linear_tensors(f, prefix: str) -> dict[str, torch.Tensor]:
    return {n: f.read(n) for n in f.infos if n.rsplit(".", 1)[0] == prefix}


class _Layer:
    """One source decoder layer as stored, with the inputs of its linears recorded on the last forward."""

    def __init__(self, src: SourceSide, layer: int):
        self.module, _ = src.decoder_layer(layer)
        self.pre = f"model.layers.{layer}."
        self.weights = TensorReader({self.pre + n: p for n, p in self.module.state_dict().items()})
        self.inputs: dict[str, torch.Tensor] = {}
        modules = dict(self.module.named_modules())
        self._hooks = [modules[name].register_forward_pre_hook(self._recorder(self.pre + name))
                       for name in modules if isinstance(modules[name], torch.nn.Linear)]

    def _recorder(self, full: str):
        def hook(_m, args):
            self.inputs[full] = args[0].detach().float().reshape(-1, args[0].shape[-1])
        return hook

    def run(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cos_sin) -> torch.Tensor:
        out = self.module(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def _check_linears(merged: MergedCheckpoint, spec: QuantSpec, src_layer: _Layer, layer: int,
                   scales: dict[str, torch.Tensor], disagree: list[str]) -> list[LayerCheck]:
    """Every quantized linear of `layer`, each rank against ModelOpt's fake quantization on the source's input; the
    first rank file whose pre-quant scales are not the sidecar's rounded is said in `disagree`."""
    ckpt = merged.ckpt
    cfg, mapping = ckpt.model, ckpt.mapping
    arch = get_arch(cfg.architecture)
    stage, local = divmod(layer, merged.per_stage)
    files = merged.stage_files(stage)
    checks = []
    for name in LINEARS:
        prefix = f"transformer.layers.{local}.{name}"
        if f"{prefix}.weight" not in files[0].infos or not spec.quantizes(prefix):
            continue
        rule = arch.per_layer[f"{name}.weight"]
        mods = hf_modules(cfg, layer, name)
        x = src_layer.inputs[mods[0]]
        row = name in ("attention.dense", "mlp.proj")
        pqs = _module_scales(scales, mods, row, ckpt.path) if scales else None
        w_mis = x_mis = y_rel = 0.0
        for r, f in enumerate(files):
            ctx = RankContext(cfg, mapping, stage * mapping.tp_size + r, torch.float32)
            stored = spec.linear_tensors(_linear_tensors(f, prefix), prefix)
            spec.format.check(stored, prefix, spec.dtype)
            ours = spec.format.dequantize(stored)
            weight = rule(ctx, src_layer.pre)(src_layer.weights)
            x_r = rule(ctx, src_layer.pre)(TensorReader({f"{m}.weight": x for m in mods})) if row else x
            p_r = None
            if pqs is not None:
                p_r = rule(ctx, src_layer.pre)(TensorReader({f"{m}.weight": pqs[None, :] for m in mods}))[0] \
                    if row else pqs
                said = _sidecar_disagrees(p_r, stored.get(PQS), spec.dtype, mods[0], f"{f.path.name}'s {prefix}.{PQS}",
                                          ckpt.path)
                if said and not disagree:
                    disagree.append(said)
            teacher = teacher_linear(spec, weight, p_r, stored, x_r)
            raw_x = x_r if p_r is None else x_r * p_r.to(spec.dtype).float()
            want_x = teacher.quantize_input(x_r)
            w_mis = max(w_mis, mismatch(ours.weight, teacher.weight, teacher.raw_weight))
            x_mis = max(x_mis, mismatch(ours.quantize_input(x_r), want_x, raw_x))
            y_rel = max(y_rel, rel_diff(ours(x_r), want_x @ teacher.weight.T))
        checks.append(LayerCheck(layer, name, w_mis, x_mis, y_rel))
    return checks


def _module_scales(scales: dict[str, torch.Tensor], mods: list[str], row: bool, where: Path) -> torch.Tensor:
    """The float32 pre-quant scale of a TensorRT-LLM linear: shared by the Hugging Face modules it fuses."""
    missing = [m for m in mods if m not in scales]
    if missing:
        raise CheckpointError(f"{where / PQS_SIDECAR} has no pre-quant scale for {missing[0]} (it holds "
                              f"scales of {len(scales)} modules): the sidecar is not this checkpoint's")
    first = scales[mods[0]]
    if not row and any(not torch.equal(scales[m], first) for m in mods[1:]):
        raise CheckpointError(f"{where / PQS_SIDECAR}: {', '.join(mods)} share their input but have different "
                              "pre-quant scales (ModelOpt gives them one): the sidecar is not this checkpoint's")
    return first


def _sidecar_disagrees(exact: torch.Tensor, stored: torch.Tensor | None, dtype: torch.dtype, module: str, name: str,
                       where: Path) -> str | None:
    """Whether the sidecar's float32 scales, rounded to the checkpoint's dtype, are the rank file's stored ones
    (quantize writes both from one tensor): a shape that differs is refused (nothing can be compared), values that
    differ are said (the checks fail on them: a rank file's scales planted wrong, or a sidecar of another checkpoint)."""
    if stored is None or stored.shape != exact.shape:
        raise CheckpointError(f"{where / PQS_SIDECAR}: the pre-quant scale of {module} has shape {list(exact.shape)}, "
                              f"but {name} is {None if stored is None else list(stored.shape)}: the sidecar is not "
                              "this checkpoint's")
    differ = exact.to(dtype) != stored
    if not bool(differ.any()):
        return None
    i = int(differ.flatten().nonzero()[0])
    return (f"the pre-quant scales of {module} in {PQS_SIDECAR} do not round to {name} ({int(differ.sum())} of "
            f"{differ.numel()} differ; first at {i}: {float(exact.flatten()[i]):g} vs {float(stored.flatten()[i]):g}): "
            "the rank files' scales or the sidecar are not the ones quantize wrote")


def _check_kv(merged: MergedCheckpoint, w: LayerWeights, k: torch.Tensor, v: torch.Tensor, layer: int,
              ) -> list[LayerCheck]:
    """The FP8 KV-cache rounding of every rank's heads against ModelOpt's FP8 bmm quantizer at that rank's scale."""
    spec = merged.ckpt.quant
    stage, local = divmod(layer, merged.per_stage)
    per = merged.kv_per_rank
    checks = []
    for which, t in (("k", k), ("v", v)):
        worst = rel = 0.0
        ours = w.kv_cache(t)
        for r, f in enumerate(merged.stage_files(stage)):
            attn = f"transformer.layers.{local}.attention"
            kvq = spec.kv_quant(_linear_tensors(f, attn), attn)
            part = slice(r * per, (r + 1) * per)
            want = teacher_kv(kvq.scale)(t[:, part]).float()
            worst = max(worst, mismatch(ours[:, part], want, t[:, part]))
            rel = max(rel, rel_diff(ours[:, part], want))
        checks.append(LayerCheck(layer, f"attention.kv_cache.{which}", 0.0, worst, rel))
    return checks


def _unquantized_norms(merged: MergedCheckpoint, source) -> tuple[list[str], int]:
    """Norm tensors of every rank that differ from what export writes for them (the arch rules on the source)."""
    from ..quantize.assemble import materialise

    ckpt = merged.ckpt
    arch = get_arch(ckpt.model.architecture)
    bad, n = [], 0
    for r in range(ckpt.mapping.world_size):
        ctx = RankContext(ckpt.model, ckpt.mapping, r, torch_dtype(ckpt.dtype))
        for o in arch.rank_plan(ctx):
            if "layernorm" in o.name or o.name.startswith("transformer.ln_f."):
                n += 1
                want = materialise(o.produce(source))
                if not torch.equal(merged.files[r].read(o.name), want):
                    bad.append(f"rank{r} {o.name}")
    return bad, n


def verify_quantized(merged: MergedCheckpoint, source, ids: torch.Tensor, vocab: int,
                     notes: tuple[str, ...] = ()) -> QuantizedVerifyResult:
    """Conversion checks and quantization cost on token ids [texts, T]; see the module docstring."""
    from ..quantize.modelopt_run import require_modelopt

    require_modelopt()
    ckpt = merged.ckpt
    spec: QuantSpec = ckpt.quant
    scales = load_prequant_scales(ckpt.path)
    check_sidecar(spec, scales, ckpt.path)
    src = SourceSide(source, torch_dtype(ckpt.dtype))
    sem = Semantics.from_config(ckpt.raw)
    N, T = ids.shape
    pos = torch.arange(T)[None]
    differences, norms_checked = _unquantized_norms(merged, source)
    checks: list[LayerCheck] = []
    disagree: list[str] = []
    with torch.no_grad():
        emb_r, emb_s = src.embedding_rows(ids.reshape(-1))
        ours_emb = merged.embedding_rows(ids.reshape(-1)).float()
        if not torch.equal(ours_emb, emb_r):
            differences.append("transformer.vocab_embedding.weight (rows of the texts)")
        stream_src, stream_ck = emb_s.reshape(N, T, -1), ours_emb.reshape(N, T, -1)
        hf_mask, hf_rope = causal_additive_mask(T), src.rotary(pos)
        cos, sin = rope_cos_sin(sem, pos)
        mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
        layers = ckpt.model.num_hidden_layers
        nonfinite = None
        for i in range(layers):
            if sys.stderr.isatty():
                print(f"verify: layer {i + 1}/{layers}", end="\r", file=sys.stderr, flush=True)
            layer = _Layer(src, i)
            x_in = stream_src
            stream_src = layer.run(stream_src, hf_mask, pos, hf_rope)
            layer.close()
            checks += _check_linears(merged, spec, layer, i, scales, disagree)
            w = LayerWeights.from_quantized(merged.quantized_layer(i))
            if w.kv_cache is not None:
                checks += _check_kv(merged, w, *attention_kv(sem, x_in, w, cos, sin), layer=i)
            stream_ck = mlp_block(sem, attention_block(sem, stream_ck, w, cos, sin, mask), w)
            if nonfinite is None and (where := first_nonfinite(stream_ck)) is not None:
                nonfinite = f"layer {i}'s output ({where})"
            del layer, w

        ln_f = {k: v.float() for k, v in merged.final_norm().items()}
        ours = norm(sem, stream_ck, ln_f["weight"], ln_f.get("bias")).reshape(N * T, -1)
        theirs = src.final_norm(rounded=False)[0](stream_src).reshape(N * T, -1)
        cost = Divergence(N * T)
        rows = max(1, BLOCK_BYTES // (4 * ckpt.model.hidden_size))
        head_differs = False
        for start in range(0, vocab, rows):
            stop = min(start + rows, vocab)
            mine = merged.lm_head_rows(start, stop).float()
            head_r, head_s = src.head_rows(start, stop)
            head_differs |= not torch.equal(mine, head_r)
            cost.update(ours @ mine.T, theirs @ head_s.T, start)
        if head_differs:
            differences.append("lm_head.weight")
    return QuantizedVerifyResult(spec.quant_algo, spec.kv_cache_quant_algo, ckpt.dtype, N, T, tuple(checks),
                                 tuple(differences), norms_checked, cost.report(next_tokens(ids)), modelopt_version(),
                                 (*notes, *disagree), nonfinite)


def next_tokens(ids: torch.Tensor) -> torch.Tensor:
    """Each token's successor in its text, flattened like the logits [texts * T]; -1 after a text's last token."""
    return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], dim=1).reshape(-1)


def text_ids(ckpt, dataset_file, num_samples: int, max_tokens: int) -> torch.Tensor:
    """Token ids [texts, T] of CNN/DailyMail articles with the checkpoint's tokenizer, all cut to the same length."""
    from transformers import AutoTokenizer

    from ..errors import ConfigError
    from ..eval.data import load_records

    records = load_records(dataset_file, num_samples)
    try:
        tok = AutoTokenizer.from_pretrained(ckpt.path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: no usable tokenizer for the CNN/DailyMail texts ({e})") from None
    ids = [tok(r.article, add_special_tokens=True)["input_ids"][:max_tokens] for r in records]
    T = min(len(x) for x in ids)
    if T < 8:
        raise ConfigError(f"an article of the dataset has only {T} tokens; verify needs at least 8 per text")
    out = torch.tensor([x[:T] for x in ids], dtype=torch.long)
    if int(out.max()) >= ckpt.model.vocab_size:
        raise CheckpointError(f"the tokenizer in {ckpt.path} gives token id {int(out.max())}, but the checkpoint's "
                              f"vocab_size is {ckpt.model.vocab_size}")
    return out

