"""Fake `tensorrt_llm.runtime` for tests: the runners' real signatures, deterministic outputs.

Signatures copied from NVIDIA/TensorRT-LLM (the newest copies the search index holds; they match
the 1.x line, which still ships these runners):
- `tensorrt_llm/runtime/model_runner_cpp.py` @03832911f05dbe10232949eb3c56aac45578e30a:
  `ModelRunnerCpp.from_dir` (keyword-only, no **kwargs) and `generate` (**kwargs of which only the
  `accepted_parameters` list below feed the sampling config; rank != 0 returns `[]`;
  output_ids = prompt + generated, padded with end_id to `max_seq_len = max_input_len +
  max_output_len`; sequence_lengths = lengths of those lists).
- `tensorrt_llm/runtime/model_runner.py` (index file id 1077012789): `ModelRunner.from_dir`,
  `generate` (kwargs go to `SamplingConfig.update`).
- `tensorrt_llm/runtime/generation.py` (index file id 680446581): `SamplingConfig` fields.
Deliberate strictness: where the real `generate(**kwargs)` silently ignores a keyword it does not
know, the fake raises TypeError, so a misspelt option fails a test instead of being dropped.

Not an engine: tokens come from NEXT_TOKEN (monkeypatch it), by default
`(prompt[-1] + len(generated) + 1) % vocab_size`. As in the real decoder, an end_id is written but
not counted in sequence_lengths. Every runner call is appended to CALLS as (name, kwargs).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch

PYTHON_BINDINGS = True
CALLS: list[tuple[str, dict]] = []
NEXT_TOKEN: Callable[[list[int], list[int], int], int] = (
    lambda prompt, generated, vocab: (prompt[-1] + len(generated) + 1) % vocab)

_CPP_ACCEPTED = ("num_beams", "top_k", "top_p", "top_p_min", "top_p_reset_ids", "top_p_decay", "temperature",
                 "min_tokens", "beam_search_diversity_rate", "repetition_penalty", "presence_penalty",
                 "frequency_penalty", "length_penalty", "early_stopping", "no_repeat_ngram_size", "random_seed",
                 "num_return_sequences", "min_p", "beam_width_array")
_CPP_OTHER_KWARGS = ("skip_cross_attn_blocks", "draft_tokens_list", "draft_logits_list")


@dataclass
class SamplingConfig:
    end_id: int
    pad_id: int
    max_new_tokens: int = field(default=20)
    num_beams: int = field(default=1)
    num_return_sequences: Optional[int] = field(default=None)
    max_attention_window_size: Optional[int] = field(default=None)
    sink_token_length: Optional[int] = field(default=None)
    output_sequence_lengths: bool = field(default=False)
    return_dict: bool = field(default=False)
    stop_words_list: Optional[Union[list, torch.Tensor]] = field(default=None)
    bad_words_list: Optional[Union[list, torch.Tensor]] = field(default=None)
    temperature: Union[float, torch.Tensor] = field(default=1.0)
    top_k: Union[int, torch.Tensor] = field(default=1)
    top_p: Union[float, torch.Tensor] = field(default=0.0)
    top_p_decay: Optional[torch.Tensor] = field(default=None)
    top_p_min: Optional[torch.Tensor] = field(default=None)
    top_p_reset_ids: Optional[torch.Tensor] = field(default=None)
    random_seed: Union[int, torch.Tensor] = field(default=None)
    length_penalty: Union[float, torch.Tensor] = field(default=1.0)
    early_stopping: Union[int, torch.Tensor] = field(default=1)
    repetition_penalty: Union[float, torch.Tensor] = field(default=1.0)
    min_length: Union[int, torch.Tensor] = field(default=1)
    presence_penalty: Union[float, torch.Tensor] = field(default=0.0)
    frequency_penalty: Union[float, torch.Tensor] = field(default=0.0)
    use_beam_hyps: bool = field(default=True)
    beam_search_diversity_rate: Union[float, torch.Tensor] = field(init=False, default=0.0)
    output_cum_log_probs: bool = field(init=False, default=False)
    output_log_probs: bool = field(init=False, default=False)
    no_repeat_ngram_size: Union[int, torch.Tensor] = field(init=False, default=None)
    min_p: Union[float, torch.Tensor] = field(default=0.0)

    def update(self, **kwargs):
        unused_kwargs = dict()
        for key, value in kwargs.items():
            if hasattr(self, key):
                setattr(self, key, value)
            else:
                unused_kwargs[key] = value
        return unused_kwargs


def _world() -> tuple[int, int]:
    """The MPI rank and size the real C++ WorldConfig.mpi() sees: the fake's mpi_rank()/mpi_world_size()."""
    from ._utils import mpi_rank, mpi_world_size

    return mpi_rank(), mpi_world_size()


def _engine(engine_dir: str) -> dict:
    cfg = json.loads((Path(engine_dir) / "config.json").read_text())
    bc, pc = cfg["build_config"], cfg["pretrained_config"]
    return {"max_batch_size": bc["max_batch_size"], "max_input_len": bc["max_input_len"],
            "max_seq_len": bc["max_seq_len"], "max_beam_width": bc.get("max_beam_width", 1),
            "vocab_size": pc["vocab_size"], "world_size": pc.get("mapping", {}).get("world_size", 1)}


def _decode_one(prompt: list[int], max_new: int, end_id: int, vocab: int, stop_words: list[list[int]] | None):
    """Generated ids (an end_id, if produced, is the last) and the count sequence_lengths adds."""
    gen: list[int] = []
    while len(gen) < max_new:
        tok = NEXT_TOKEN(prompt, gen, vocab)
        gen.append(tok)
        if tok == end_id:
            return gen, len(gen) - 1
        if stop_words and any(len(w) and gen[-len(w):] == list(w) for w in stop_words):
            break
    return gen, len(gen)


def _outputs(batch_input_ids, max_new, end_id, beams, width, stop_words_list, vocab, steps=None):
    out, lens = [], []
    for i, t in enumerate(batch_input_ids):
        prompt = t.tolist()
        stops = stop_words_list[i] if stop_words_list else None
        gen, n = _decode_one(prompt, max_new, end_id, vocab, stops)
        if steps is not None:
            gen, n = gen[:steps], min(n, steps)
        row = prompt + gen
        row = row + [end_id] * (width - len(row))
        out.append([row] * beams)
        lens.append([len(prompt) + n] * beams)
    return {"output_ids": torch.tensor(out, dtype=torch.int32),
            "sequence_lengths": torch.tensor(lens, dtype=torch.int32)}


class ModelRunnerCpp:
    """Fake C++-executor runner."""

    def __init__(self, engine: dict, max_batch_size, max_input_len, max_seq_len, max_beam_width, rank):
        self.engine, self.rank = engine, rank
        self.max_batch_size, self.max_input_len = max_batch_size, max_input_len
        self.max_seq_len, self.max_beam_width = max_seq_len, max_beam_width

    @classmethod
    def from_dir(
        cls,
        engine_dir: str,
        *,
        lora_dir: Optional[str] = None,
        rank: int = 0,
        max_batch_size: Optional[int] = None,
        max_input_len: Optional[int] = None,
        max_output_len: Optional[int] = None,
        max_beam_width: Optional[int] = None,
        max_attention_window_size: Optional[list[int]] = None,
        sink_token_length: Optional[int] = None,
        kv_cache_free_gpu_memory_fraction: Optional[float] = None,
        cross_kv_cache_fraction: Optional[float] = None,
        medusa_choices: list[list[int]] | None = None,
        eagle_choices: list[list[int]] | None = None,
        eagle_posterior_threshold: float | None = None,
        eagle_use_dynamic_tree: bool = False,
        eagle_dynamic_tree_max_top_k: Optional[int] = None,
        lookahead_config: list[int] | None = None,
        debug_mode: bool = False,
        lora_ckpt_source: str = "hf",
        use_gpu_direct_storage: bool = False,
        gpu_weights_percent: float = 1,
        max_tokens_in_paged_kv_cache: int | None = None,
        kv_cache_enable_block_reuse: bool = False,
        enable_chunked_context: bool = False,
        is_enc_dec: bool = False,
        multi_block_mode: bool = True,
        enable_context_fmha_fp32_acc: Optional[bool] = None,
        cuda_graph_mode: Optional[bool] = None,
        logits_processor_map: Optional[Dict[str, object]] = None,
        device_ids: List[int] | None = None,
        is_orchestrator_mode: bool = False,
        use_runtime_defaults: bool = True,
        gather_generation_logits: bool = False,
        use_variable_beam_width_search: bool = False,
        mm_embedding_offloading: bool = False,
    ) -> "ModelRunnerCpp":
        CALLS.append(("ModelRunnerCpp.from_dir", {"engine_dir": engine_dir, "rank": rank,
                                                  "max_batch_size": max_batch_size, "max_input_len": max_input_len,
                                                  "max_output_len": max_output_len, "max_beam_width": max_beam_width}))
        eng = _engine(engine_dir)
        world_rank, world_size = _world()
        assert world_size == eng["world_size"], "fake: engine world size != MPI world size"
        assert rank == world_rank  # as the real one: WorldConfig.mpi(...).rank
        mb = eng["max_batch_size"] if max_batch_size is None else max_batch_size
        assert mb <= eng["max_batch_size"]
        mil = eng["max_input_len"] if max_input_len is None else max_input_len
        msl = eng["max_seq_len"] if max_output_len is None else mil + max_output_len
        assert msl <= eng["max_seq_len"]
        mbw = eng["max_beam_width"] if max_beam_width is None else max_beam_width
        assert mbw <= eng["max_beam_width"]
        return cls(eng, mb, mil, msl, mbw, rank)

    def generate(self, batch_input_ids: List[torch.Tensor], *, position_ids=None, encoder_input_ids=None,
                 encoder_input_features=None, encoder_output_lengths=None, cross_attention_masks=None,
                 mrope_params=None, sampling_config=None, lora_uids=None, lookahead_config=None,
                 streaming: bool = False, stopping_criteria=None, logits_processor_names=None,
                 max_new_tokens: int = 1, end_id: int | None = None, pad_id: int | None = None,
                 bad_words_list=None, stop_words_list=None, return_dict: bool = False,
                 output_sequence_lengths: bool = False, output_generation_logits: bool = False,
                 output_log_probs: bool = False, output_cum_log_probs: bool = False, prompt_table=None,
                 prompt_tasks=None, input_token_extra_ids=None, return_all_generated_tokens: bool = False,
                 language_adapter_uids=None, mm_embedding_offloading: bool = False, **kwargs):
        unknown = set(kwargs) - set(_CPP_ACCEPTED) - set(_CPP_OTHER_KWARGS)
        if unknown:
            raise TypeError(f"fake ModelRunnerCpp.generate: unknown keyword(s) {sorted(unknown)}")
        CALLS.append(("ModelRunnerCpp.generate", {"batch_input_ids": [t.tolist() for t in batch_input_ids],
                                                  "max_new_tokens": max_new_tokens, "end_id": end_id,
                                                  "pad_id": pad_id, "streaming": streaming,
                                                  "return_dict": return_dict,
                                                  "output_sequence_lengths": output_sequence_lengths,
                                                  "stop_words_list": stop_words_list, **kwargs}))
        if stopping_criteria is not None:
            raise RuntimeError("Stopping criteria is not supported in C++ session.")
        if self.rank != 0:
            return []
        for t in batch_input_ids:
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                raise TypeError("batch_input_ids must be a list of 1-D tensors")
        if len(batch_input_ids) > self.max_batch_size:
            raise RuntimeError(f"Input batch size ({len(batch_input_ids)}) exceeds the engine or specified limit "
                               f"({self.max_batch_size})")
        longest = max(t.numel() for t in batch_input_ids)
        if longest > self.max_input_len:
            raise RuntimeError(f"Maximum input length ({longest}) exceeds the engine or specified limit "
                               f"({self.max_input_len})")
        if longest + max_new_tokens > self.max_seq_len:
            raise RuntimeError(f"Maximum input length ({longest}) + maximum new tokens ({max_new_tokens}) "
                               f"exceeds the engine or specified limit ({self.max_seq_len})")
        beams = kwargs.get("num_beams", 1)
        if beams > self.max_beam_width:
            raise RuntimeError(f"Num beams ({beams}) exceeds the engine or specified limit ({self.max_beam_width})")

        def pack(steps=None):
            d = _outputs(batch_input_ids, max_new_tokens, end_id, beams, self.max_seq_len, stop_words_list,
                         self.engine["vocab_size"], steps)
            if not output_sequence_lengths:
                d.pop("sequence_lengths")
            return d if return_dict else d["output_ids"]

        if not streaming:
            return pack()
        return (pack(s) for s in range(1, max_new_tokens + 1))


class ModelRunner:
    """Fake Python-session runner (GenerationSession)."""

    def __init__(self, engine: dict, rank: int):
        self.engine, self.rank = engine, rank
        self.max_batch_size, self.max_input_len = engine["max_batch_size"], engine["max_input_len"]
        self.max_seq_len, self.max_beam_width = engine["max_seq_len"], engine["max_beam_width"]

    @classmethod
    def from_dir(cls, engine_dir: str, *, max_output_len: Optional[int] = None,
                 lora_dir: Optional[List[str]] = None, rank: int = 0, debug_mode: bool = False,
                 lora_ckpt_source: str = "hf", medusa_choices: List[List[int]] = None, stream=None,
                 gpu_weights_percent: float = 1, enable_context_fmha_fp32_acc: Optional[bool] = None,
                 multi_block_mode: Optional[bool] = None,
                 fail_fast_on_attention_window_too_large: bool = False) -> "ModelRunner":
        CALLS.append(("ModelRunner.from_dir", {"engine_dir": engine_dir, "rank": rank,
                                               "max_output_len": max_output_len}))
        return cls(_engine(engine_dir), rank)

    def generate(self, batch_input_ids: List[torch.Tensor], position_ids=None, sampling_config=None,
                 prompt_table=None, prompt_tasks=None, lora_uids=None, streaming: bool = False,
                 output_generation_logits: bool = False, stopping_criteria=None, logits_processor=None,
                 medusa_choices=None, encoder_max_input_length: int = None, encoder_input_features=None,
                 encoder_output_lengths=None, cross_attention_masks=None, **kwargs):
        sc = SamplingConfig(end_id=None, pad_id=None) if sampling_config is None else copy.deepcopy(sampling_config)
        unused = sc.update(**kwargs)
        unused.pop("skip_cross_attn_blocks", None)
        if unused:
            raise TypeError(f"fake ModelRunner.generate: unknown keyword(s) {sorted(unused)}")
        CALLS.append(("ModelRunner.generate", {"batch_input_ids": [t.tolist() for t in batch_input_ids],
                                               "streaming": streaming,
                                               **{f.name: getattr(sc, f.name) for f in fields(sc)}}))
        lens = [t.numel() for t in batch_input_ids]
        if len(lens) > self.max_batch_size or max(lens) > self.max_input_len:
            raise RuntimeError("fake ModelRunner: batch or input length over the engine limits")
        # Python session buffers are max_context_length + max_new_tokens wide.
        width = max(lens) + sc.max_new_tokens

        def pack(steps=None):
            d = _outputs(batch_input_ids, sc.max_new_tokens, sc.end_id, sc.num_beams, width, None,
                         self.engine["vocab_size"], steps)
            if not sc.output_sequence_lengths:
                d.pop("sequence_lengths")
            return d if sc.return_dict else d["output_ids"]

        if not streaming:
            return pack()
        return (pack(s) for s in range(1, sc.max_new_tokens + 1))
