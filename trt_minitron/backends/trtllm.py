"""`trtllm` backend: a TensorRT-LLM engine folder through tensorrt_llm.runtime (1.2.x and earlier; Hugging Face
folders go to trtllm_llmapi.py).

ModelRunnerCpp (C++ executor) when the Python bindings exist and the engine supports in-flight
batching (GPT attention plugin, packed input, paged KV cache), else the Python ModelRunner: the rule
of TensorRT-LLM's examples/summarize.py. Output layout (both runners): output_ids
[batch, beams, max_seq_len] = prompt + generated, right-padded with end_id; sequence_lengths
[batch, beams] count the prompt. Multi-GPU engines run under `mpirun -n <tp*pp>`; only rank 0
gets outputs (ModelRunnerCpp.generate returns [] elsewhere).

Rank and world size come from tensorrt_llm.mpi_rank() / mpi_world_size() (exported by tensorrt_llm/__init__.py
@c40f1157; tensorrt_llm/_utils.py, code-index file id 52995752: the MPI communicator's rank and size, or
torch.distributed's rank with TLLM_DISABLE_MPI=1), the numbers the runners themselves use, rather than
launcher-specific environment variables (which differ between mpirun, srun --mpi=pmix and others).
Runner signatures: see tests/fakes/tensorrt_llm/runtime.py for the sources read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..archs.config import load_json
from ..errors import ConfigError, MissingDependencyError
from ..trtllm import install as trtllm_install
from .base import Clock, Generation, Sampling, TokenCallback, decode, load_tokenizer, split_at_end, synchronize

DOCKER_HINT = ("tensorrt_llm is not importable here; run inside a TensorRT-LLM container, e.g. "
               "`docker run --gpus all --ipc=host -v $PWD:/work nvcr.io/nvidia/tensorrt-llm/release:<version>` "
               "(see docker/), or `pip install tensorrt-llm` on a CUDA machine")
def read_engine_config(engine_dir: Path) -> dict:
    """The engine folder's config.json (written by trtllm-build)."""
    cfg = engine_dir / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"{engine_dir} is not a TensorRT-LLM engine folder: no config.json")
    raw = load_json(cfg)
    if not list(engine_dir.glob("rank*.engine")):
        raise ConfigError(f"{engine_dir} holds no rank*.engine file; build one with `trt-minitron build`")
    return raw


def supports_inflight_batching(cfg: dict) -> bool:
    """What examples/utils.py checks before choosing ModelRunnerCpp."""
    plugin = cfg.get("build_config", {}).get("plugin_config", {})
    return bool(plugin.get("gpt_attention_plugin") and plugin.get("remove_input_padding")
                and plugin.get("paged_kv_cache"))


def engine_world_size(cfg: dict) -> int:
    mapping = cfg.get("pretrained_config", {}).get("mapping", {})
    return int(mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1)))


class TrtllmBackend:
    """Engine runner; generate() hands unpadded int32 prompts to the runner and slices its outputs."""

    name = "trtllm"

    def __init__(self, model: str | Path, *, tokenizer: str | Path | None = None, max_batch_size: int = 8,
                 max_input_len: int | None = None, max_output_len: int = 100, max_beam_width: int = 1):
        found = trtllm_install.detect()
        if found is not None and not found.engine_path:  # 1.3+: the engine runtime is gone
            raise MissingDependencyError(found.engine_refusal(f"--backend trtllm {model} (an engine folder)"))
        try:
            import tensorrt_llm
            import tensorrt_llm.runtime as rt
        except ImportError as e:
            raise MissingDependencyError(f"{DOCKER_HINT} ({e})") from None
        engine_dir = Path(model)
        cfg = read_engine_config(engine_dir)
        world = engine_world_size(cfg)
        mpi_size = tensorrt_llm.mpi_world_size()
        if world != mpi_size:
            raise ConfigError(f"engine {engine_dir} was built for {world} GPU(s) but this process runs with "
                              f"{mpi_size} MPI rank(s); launch it as `mpirun -n {world} trt-minitron ...`")
        self.rank = tensorrt_llm.mpi_rank()
        self.is_main = self.rank == 0
        self.model = str(engine_dir)
        self.device = torch.device("cuda", self.rank % max(torch.cuda.device_count(), 1)) \
            if torch.cuda.is_available() else torch.device("cpu")
        tok_dir = Path(tokenizer) if tokenizer else engine_dir
        self.tokenizer = load_tokenizer(tok_dir)
        self.end_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)

        cpp = getattr(rt, "PYTHON_BINDINGS", False) and hasattr(rt, "ModelRunnerCpp")
        self.runner_kind = "cpp" if cpp and supports_inflight_batching(cfg) else "python"
        if self.runner_kind == "cpp":
            self.runner = rt.ModelRunnerCpp.from_dir(
                engine_dir=str(engine_dir), rank=self.rank, max_batch_size=max_batch_size,
                max_input_len=max_input_len, max_output_len=max_output_len, max_beam_width=max_beam_width)
        else:
            self.runner = rt.ModelRunner.from_dir(engine_dir=str(engine_dir), rank=self.rank,
                                                  max_output_len=max_output_len)

    def synchronize(self) -> None:
        synchronize(self.device)

    def close(self) -> None:
        self.runner = None

    def _call(self, batch: list[list[int]], sampling: Sampling, streaming: bool):
        ids = [torch.tensor(r, dtype=torch.int32) for r in batch]
        return self.runner.generate(
            ids, max_new_tokens=sampling.max_new_tokens, end_id=self.end_id, pad_id=self.pad_id,
            # TensorRT-LLM: top_k=1 is greedy, top_p=0.0 means "off".
            temperature=1.0 if sampling.greedy else sampling.temperature,
            top_k=1 if sampling.greedy else sampling.top_k,
            top_p=0.0 if sampling.greedy or sampling.top_p >= 1.0 else sampling.top_p,
            num_beams=sampling.num_beams, random_seed=sampling.seed,
            output_sequence_lengths=True, return_dict=True, streaming=streaming)

    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """Run the engine on a batch; on ranks other than 0 returns []."""
        sampling.validate()
        clock = Clock(self.device)
        streaming = on_token is not None
        outputs = self._call(batch, sampling, streaming)
        if streaming:
            seen = [len(r) for r in batch]
            last = None
            for step in outputs:
                if not self.is_main or not step:
                    continue
                clock.first()
                last = step
                for row, new in enumerate(self._rows(step, batch, sampling)[0]):
                    for tok in new[seen[row] - len(batch[row]):]:
                        on_token(row, tok)
                    seen[row] = len(batch[row]) + len(new)
            outputs = last
        latency = clock.stop()
        if not self.is_main or not outputs:
            return []
        rows, reasons = self._rows(outputs, batch, sampling)
        return [Generation(prompt_tokens=len(p), tokens=t, text=decode(self.tokenizer, t), finish_reason=r,
                           batch_latency_s=latency, ttft_s=clock.ttft if streaming else None)
                for p, t, r in zip(batch, rows, reasons)]

    def _rows(self, outputs: dict, batch: list[list[int]], sampling: Sampling):
        """Beam-0 generated ids per row: output_ids[i, 0, input_len:sequence_length], end token dropped."""
        out = outputs["output_ids"].cpu()
        lens = outputs["sequence_lengths"].cpu()
        rows, reasons = [], []
        for i, prompt in enumerate(batch):
            seq = out[i, 0, len(prompt):int(lens[i, 0])].tolist()
            toks, reason = split_at_end(seq, {self.end_id}, sampling.max_new_tokens)
            if reason == "length" and len(toks) < sampling.max_new_tokens:
                reason = "stop"  # the runner stopped it (end_id not counted in sequence_lengths)
            rows.append(toks)
            reasons.append(reason)
        return rows, reasons
