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

The loop and the judging (judge_linear, judge_kv) are shared; the checkpoint side differs: TrtQuantizedSide here (each
TensorRT-LLM linear and rank through the architecture's export rules, the reference model), hf_quantized.UnifiedSide
for ModelOpt's unified Hugging Face checkpoint (each Hugging Face linear, transformers' layers).

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
from ..checkpoints.quant_formats import PQS, QuantLinear
from ..checkpoints.quantized import LINEARS, PQS_SIDECAR, QuantSpec, check_sidecar, load_prequant_scales
from ..checkpoints.reference import LayerWeights, Semantics, attention_block, attention_kv, mlp_block, norm, rope_cos_sin
from ..checkpoints.trtllm import MergedCheckpoint
from ..errors import CheckpointError
from ..quantize.recompute import teacher_kv, teacher_linear
from ..quantize.teacher import FLIP_FRACTION, LayerCheck, TensorReader, hf_modules, mismatch, rel_diff
from ..tensors.dtypes import dtype_name, torch_dtype
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
    cost: DivergenceReport | None  # None when problems stopped the numbers
    modelopt: str
    notes: tuple[str, ...] = ()
    what: str = ""  # what the checkpoint is, said on the first line
    problems: tuple[str, ...] = ()  # labels or tensors that contradict each other: failures found before any number
    scope: str = "every linear and rank"  # what the conversion checks cover
    nonfinite: str | None = None  # where the checkpoint's hidden states first hold NaN/Inf ("layer i output, ...")
    calibration: CalibrationProof | None = None  # None: not asked for (--no-prove-calibration)
    cost_failures: tuple[str, ...] = ()  # cost_gate.cost_failures: non-finite logits, the top-1 floor, the user's gate
    gate: str = ""  # the user's gate, said on the cost line ("--max-kl 0.1"), empty when none

    @property
    def failures(self) -> list[LayerCheck]:
        return [c for c in self.conversion if not c.passed]

    @property
    def ok(self) -> bool:
        return (not self.problems and not self.failures and not self.unquantized_differences and self.nonfinite is None
                and not self.cost_failures and not (self.calibration is not None and self.calibration.failed))

    def summary(self) -> str:
        lines = [f"verify: {self.what}"] if self.what else []
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            more = f" (and {len(self.problems) - 8} more)" if len(self.problems) > 8 else ""
            lines.append(f"  {len(self.problems)} contradiction(s) between the quantization labels and the tensors"
                         f"{more}:")
            lines += [f"    {p}" for p in self.problems[:8]]
            lines.append("FAIL")
            return "\n".join(lines)
        kv = f" + {self.kv_cache_quant_algo} KV cache" if self.kv_cache_quant_algo else ""
        lines.append(f"verify (quantized {self.quant_algo}{kv}, {self.dtype}; layer by layer): {self.num_texts} "
                     f"CNN/DailyMail texts x {self.num_tokens} tokens")
        weights = [c for c in self.conversion if not c.name.startswith("attention.kv_cache")]
        kvs = [c for c in self.conversion if c.name.startswith("attention.kv_cache")]
        w = max(weights, key=lambda c: c.weight_mismatch)
        x = max(weights, key=lambda c: c.input_mismatch)
        kv_part = ""
        if kvs:
            k = max(kvs, key=lambda c: c.input_mismatch)
            kv_part = f", KV cache {k.input_mismatch:.1e}"
        lines.append(f"  conversion vs ModelOpt {self.modelopt}'s fake quantization of the source at the checkpoint's "
                     f"scales (teacher-forced, {self.scope}): {len(self.conversion)} checks; most elements "
                     f"differing: weights {w.weight_mismatch:.1e} (layer {w.layer} {w.name}), GEMM inputs "
                     f"{x.input_mismatch:.1e} (layer {x.layer} {x.name}){kv_part}; allowed {FLIP_FRACTION:.0e} "
                     "(rounding ties)")
        bad = self.failures
        if bad:
            b = bad[0]
            lines.append(f"  first failure: layer {b.layer} {b.name}: {b.weight_mismatch:.1%} of weight and "
                         f"{b.input_mismatch:.1%} of input elements differ from ModelOpt's ({len(bad)} failing)")
        if self.unquantized_differences:
            lines.append(f"  tensors that differ from what export (and ModelOpt's folds) make of the source: "
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
    """One source decoder layer as stored, with the inputs of its linears recorded on the last forward, and which
    norm's output each linear reads (`fed_by`: the norm a pre-quant scale may be folded into)."""

    def __init__(self, src: SourceSide, layer: int):
        self.module, _ = src.decoder_layer(layer)
        self.pre = f"model.layers.{layer}."
        self.weights = TensorReader({self.pre + n: p for n, p in self.module.state_dict().items()})
        self.inputs: dict[str, torch.Tensor] = {}
        self.fed_by: dict[str, str] = {}
        self._norm_out: dict[str, torch.Tensor] = {}
        modules = dict(self.module.named_modules())
        self.linears = [name for name, m in modules.items() if isinstance(m, torch.nn.Linear)]
        self._hooks = [modules[name].register_forward_pre_hook(self._recorder(name)) for name in self.linears]
        self._hooks += [m.register_forward_hook(self._norm_recorder(name)) for name, m in modules.items()
                        if isinstance(m, src.modules.norm)]

    def _recorder(self, name: str):
        def hook(_m, args):
            self.inputs[self.pre + name] = args[0].detach().float().reshape(-1, args[0].shape[-1])
            feeding = next((n for n, out in self._norm_out.items() if args[0] is out), None)
            if feeding is not None:
                self.fed_by[self.pre + name] = self.pre + feeding
        return hook

    def _norm_recorder(self, name: str):
        def hook(_m, _args, out):
            self._norm_out[name] = out
        return hook

    def run(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cos_sin) -> torch.Tensor:
        out = self.module(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        self._norm_out.clear()
        return out[0] if isinstance(out, tuple) else out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def judge_linear(spec: QuantSpec, stored: dict[str, torch.Tensor], weight: torch.Tensor,
                 pre_quant_scale: torch.Tensor | None, x: torch.Tensor, folded: bool = False,
                 ours: QuantLinear | None = None) -> tuple[float, float, float]:
    """One linear (one rank's part) against ModelOpt's fake quantization rebuilt from the source: the fractions of
    dequantized weight and GEMM-input elements that differ, and the output's relative difference.

    stored: the checkpoint's tensors by formats.py suffix; weight: the source's (this rank's part); pre_quant_scale:
    the float32 scale ModelOpt divided it by, or None; x: the source's input [tokens, in]; folded: the checkpoint
    carries the pre-quant scale in the norm that feeds this linear, so the input it sees is x already scaled;
    ours: the checkpoint's linear already dequantized from `stored` (its input transform without a folded scale)."""
    teacher = teacher_linear(spec, weight, pre_quant_scale, stored, x)
    if ours is None:
        ours = spec.format.dequantize({**stored, PQS: torch.ones(x.shape[-1], dtype=spec.dtype)} if folded else stored)
    x_ours = x * pre_quant_scale.to(spec.dtype).float() if folded else x
    raw_x = x if pre_quant_scale is None else x * pre_quant_scale.to(spec.dtype).float()
    want_x = teacher.quantize_input(x)
    return (mismatch(ours.weight, teacher.weight, teacher.raw_weight), mismatch(ours.quantize_input(x_ours), want_x, raw_x),
            rel_diff(ours(x_ours), want_x @ teacher.weight.T))


def judge_kv(ours: torch.Tensor, scale: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """The KV-cache rounding of K or V (`ours`, from `t`) against ModelOpt's FP8 bmm quantizer at `scale`."""
    want = teacher_kv(scale)(t).float()
    return mismatch(ours, want, t), rel_diff(ours, want)


class TrtQuantizedSide:
    """A quantized TensorRT-LLM checkpoint: its linears judged per rank through the architecture's export rules, run
    by trt-minitron's reference blocks (dequantized weights, emulated activation and KV rounding)."""

    target = "trtllm"
    embedding_name = "transformer.vocab_embedding.weight"
    scope = "every linear and rank"

    def __init__(self, merged: MergedCheckpoint):
        ckpt = self.ckpt = merged.ckpt
        self.merged, self.spec = merged, ckpt.quant
        self.dtype = torch_dtype(ckpt.dtype)
        self.hidden_size = ckpt.model.hidden_size
        self.num_layers = ckpt.model.num_hidden_layers
        self.what = (f"quantized TensorRT-LLM checkpoint ({ckpt.model.architecture}, {ckpt.quant.quant_algo}, "
                     f"{ckpt.dtype}, tp {ckpt.mapping.tp_size}, pp {ckpt.mapping.pp_size})")
        self.scales = load_prequant_scales(ckpt.path)
        check_sidecar(self.spec, self.scales, ckpt.path)
        self.sem = Semantics.from_config(ckpt.raw)
        self.disagree: list[str] = []  # the first rank file whose pre-quant scales are not the sidecar's rounded

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self.disagree)

    def start(self, source, num_tokens: int) -> tuple[list[str], int]:
        """Norms that differ from export's rounding of the source, and how many were compared."""
        pos = torch.arange(num_tokens)[None]
        self._cs = rope_cos_sin(self.sem, pos)
        self._mask = torch.ones(1, 1, num_tokens, num_tokens, dtype=torch.bool).tril()
        return _unquantized_norms(self.merged, source)

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.merged.embedding_rows(ids).float()

    def layer(self, i: int, src_layer: _Layer, x_in: torch.Tensor,
              stream: torch.Tensor) -> tuple[list[LayerCheck], list[str], torch.Tensor]:
        """Layer i's conversion checks, its unquantized tensors that differ, and `stream` through the layer."""
        checks = _check_linears(self.merged, self.spec, src_layer, i, self.scales, self.disagree)
        w = LayerWeights.from_quantized(self.merged.quantized_layer(i))
        if w.kv_cache is not None:
            checks += _check_kv(self.merged, w, *attention_kv(self.sem, x_in, w, *self._cs), layer=i)
        stream = mlp_block(self.sem, attention_block(self.sem, stream, w, *self._cs, self._mask), w)
        return checks, [], stream

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        ln_f = {k: v.float() for k, v in self.merged.final_norm().items()}
        return norm(self.sem, x, ln_f["weight"], ln_f.get("bias"))

    def lm_head_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.merged.lm_head_rows(start, stop).float()


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
            w, xm, y = judge_linear(spec, stored, weight, p_r, x_r)
            w_mis, x_mis, y_rel = max(w_mis, w), max(x_mis, xm), max(y_rel, y)
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
            m, d = judge_kv(ours[:, part], kvq.scale, t[:, part])
            worst, rel = max(worst, m), max(rel, d)
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


def verify_quantized(side, source, ids: torch.Tensor, vocab: int, notes: tuple[str, ...] = ()) -> QuantizedVerifyResult:
    """Conversion checks and quantization cost on token ids [texts, T]; see the module docstring.

    `side`: the checkpoint (TrtQuantizedSide here, hf_quantized.UnifiedSide for ModelOpt's unified HF checkpoint)."""
    from ..quantize.modelopt_run import require_modelopt

    require_modelopt()
    spec: QuantSpec = side.spec
    src = SourceSide(source, side.dtype, target=side.target)
    N, T = ids.shape
    pos = torch.arange(T)[None]
    differences, norms_checked = side.start(source, T)
    checks: list[LayerCheck] = []
    with torch.no_grad():
        emb_r, emb_s = src.embedding_rows(ids.reshape(-1))
        ours_emb = side.embedding_rows(ids.reshape(-1))
        if not torch.equal(ours_emb, emb_r):
            differences.append(f"{side.embedding_name} (rows of the texts)")
        stream_src, stream_ck = emb_s.reshape(N, T, -1), ours_emb.reshape(N, T, -1)
        hf_mask, hf_rope = causal_additive_mask(T), src.rotary(pos)
        nonfinite = None
        for i in range(side.num_layers):
            if sys.stderr.isatty():
                print(f"verify: layer {i + 1}/{side.num_layers}", end="\r", file=sys.stderr, flush=True)
            layer = _Layer(src, i)
            x_in = stream_src
            stream_src = layer.run(stream_src, hf_mask, pos, hf_rope)
            layer.close()
            layer_checks, layer_diffs, stream_ck = side.layer(i, layer, x_in, stream_ck)
            checks += layer_checks
            differences += layer_diffs
            if nonfinite is None and (where := first_nonfinite(stream_ck)) is not None:
                nonfinite = f"layer {i}'s output ({where})"
            del layer

        ours = side.final_norm(stream_ck).reshape(N * T, -1)
        theirs = src.final_norm(rounded=False)[0](stream_src).reshape(N * T, -1)
        cost = Divergence(N * T)
        rows = max(1, BLOCK_BYTES // (4 * side.hidden_size))
        head_differs = False
        for start in range(0, vocab, rows):
            stop = min(start + rows, vocab)
            mine = side.lm_head_rows(start, stop)
            head_r, head_s = src.head_rows(start, stop)
            head_differs |= not torch.equal(mine, head_r)
            cost.update(ours @ mine.T, theirs @ head_s.T, start)
        if head_differs:
            differences.append("lm_head.weight")
    return QuantizedVerifyResult(spec.quant_algo, spec.kv_cache_quant_algo, dtype_name(side.dtype), N, T,
                                 tuple(checks), tuple(differences), norms_checked, cost.report(next_tokens(ids)),
                                 modelopt_version(), notes + tuple(side.notes), side.what, scope=side.scope,
                                 nonfinite=nonfinite)


def next_tokens(ids: torch.Tensor) -> torch.Tensor:
    """Each token's successor in its text, flattened like the logits [texts * T]; -1 after a text's last token."""
    return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], dim=1).reshape(-1)


def text_ids(path, vocab: int, dataset_file, num_samples: int, max_tokens: int) -> torch.Tensor:
    """Token ids [texts, T] of CNN/DailyMail articles with the checkpoint's tokenizer, all cut to the same length."""
    from transformers import AutoTokenizer

    from ..errors import ConfigError
    from ..eval.data import load_records

    records = load_records(dataset_file, num_samples)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: no usable tokenizer for the CNN/DailyMail texts ({e})") from None
    ids = [tok(r.article, add_special_tokens=True)["input_ids"][:max_tokens] for r in records]
    T = min(len(x) for x in ids)
    if T < 8:
        raise ConfigError(f"an article of the dataset has only {T} tokens; verify needs at least 8 per text")
    out = torch.tensor([x[:T] for x in ids], dtype=torch.long)
    if int(out.max()) >= vocab:
        raise CheckpointError(f"the tokenizer in {path} gives token id {int(out.max())}, but the checkpoint's "
                              f"vocab_size is {vocab}")
    return out

