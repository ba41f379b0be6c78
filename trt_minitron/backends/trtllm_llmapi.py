"""`trtllm` backend on a Hugging Face or ModelOpt unified folder: the LLM API of TensorRT-LLM's PyTorch backend.

The calls and the NVIDIA/TensorRT-LLM source each was checked against (tests/fakes13 has the same signatures):
  tensorrt_llm.LLM(model, tokenizer=..., **TorchLlmArgs fields)   llmapi/llm.py @4c05a74891e4 BaseLLM.__init__ (an
                                                                  unknown keyword raises ValueError); field names:
                                                                  llmapi/llm_args.py @0004396720054f (llmapi_args.py)
  tensorrt_llm.llmapi.KvCacheConfig / CudaGraphConfig            llmapi/llm_args.py @0004396720054f
  tensorrt_llm.SamplingParams(max_tokens, end_id, pad_id, top_k,  sampling_params.py (index file id 416251432):
      temperature, top_p, seed, detokenize)                       top_k=1 is greedy (params_imply_greedy_decoding)
  LLM.generate(list of token-id lists, sampling_params, use_tqdm) llmapi/llm.py @4c05a74891e4: a list of int lists is
                                                                  a batch; returns one RequestOutput per prompt
  LLM.generate_async(ids, sampling_params, streaming=True)        iterated: GenerationResult.__iter__/__next__
                                                                  (executor/result.py @a678b91aafbe)
  RequestOutput.outputs[0].token_ids / finish_reason              CompletionOutput, executor/result.py @a678b91aafbe
  LLM.shutdown()                                                  llmapi/llm.py
The LLM starts its own tp*pp workers (MPI spawned in-process), so this process is the only rank. Output ids are cut at
the first end token whether or not the runtime reports it, the rule every backend follows (base.split_at_end).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, MissingDependencyError, one_line
from ..options import BackendSpec
from ..trtllm import install as trtllm_install
from ..trtllm.llmapi_args import derive, read_hf_checkpoint
from .base import Clock, Generation, Sampling, TokenCallback, decode, load_tokenizer, split_at_end, synchronize


def sampling_params(sampling: Sampling, end_id: int, pad_id: int) -> dict:
    """SamplingParams keywords: greedy as top_k=1; token ids out, our tokenizer decodes (as for every backend)."""
    out = {"max_tokens": sampling.max_new_tokens, "end_id": end_id, "pad_id": pad_id, "detokenize": False}
    if sampling.greedy:
        out["top_k"] = 1
    else:
        out.update(temperature=sampling.temperature, seed=sampling.seed, top_p=sampling.top_p)
        if sampling.top_k > 0:
            out["top_k"] = sampling.top_k
    return out


class LlmApiBackend:
    """tensorrt_llm.LLM on an HF folder; generate() submits the batch's token ids and cuts each output at EOS."""

    name = "trtllm"
    is_main = True

    def __init__(self, spec: BackendSpec):
        found = trtllm_install.require(f"--backend trtllm {spec.model} (a Hugging Face folder)", engine=False)
        try:
            from tensorrt_llm import LLM
            from tensorrt_llm.llmapi import CudaGraphConfig, KvCacheConfig
        except ImportError as e:
            raise MissingDependencyError(f"tensorrt_llm {found.version} is installed but cannot be imported: "
                                         f"{one_line(e, 300)}") from None

        self.spec = spec
        self.model = str(spec.model)
        self.version = found.version
        ckpt = read_hf_checkpoint(spec.model)
        seq = spec.max_input_len + spec.max_output_len if spec.max_input_len else None
        self.settings = derive(ckpt, tp_size=spec.tp_size, pp_size=spec.pp_size, max_batch_size=spec.max_batch_size,
                               max_seq_len=seq, kv_cache_free_gpu_memory_fraction=spec.kv_cache_free_gpu_memory_fraction)
        if spec.max_beam_width > 1:
            raise ConfigError("--num-beams > 1 is not supported by the trtllm backend on a Hugging Face folder")
        tok_dir = Path(spec.tokenizer) if spec.tokenizer else Path(spec.model)
        self.tokenizer = load_tokenizer(tok_dir)
        self.end_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        kwargs = self.settings.llm_kwargs()
        kwargs["kv_cache_config"] = KvCacheConfig(**kwargs["kv_cache_config"])
        kwargs["cuda_graph_config"] = CudaGraphConfig(**kwargs["cuda_graph_config"])
        self.llm = LLM(model=str(spec.model), tokenizer=str(tok_dir), **kwargs)

    def synchronize(self) -> None:
        synchronize(self.device)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """Run the batch through the LLM API; with on_token, stream (one request per prompt) and time the first token."""
        from tensorrt_llm import SamplingParams

        sampling.validate()
        params = SamplingParams(**sampling_params(sampling, self.end_id, self.pad_id))
        clock = Clock(self.device)
        if on_token is None:
            outputs = [r.outputs[0] for r in self.llm.generate(batch, sampling_params=params, use_tqdm=False)]
        else:
            outputs = [self._stream(row, ids, params, sampling, clock, on_token) for row, ids in enumerate(batch)]
        latency = clock.stop()
        gens = []
        for prompt, out in zip(batch, outputs):
            toks, reason = split_at_end(list(out.token_ids), {self.end_id}, sampling.max_new_tokens)
            if reason == "length" and out.finish_reason == "stop":
                reason = "stop"  # the runtime stopped at the end id and did not report it
            gens.append(Generation(prompt_tokens=len(prompt), tokens=toks, text=decode(self.tokenizer, toks),
                                   finish_reason=reason, batch_latency_s=latency,
                                   ttft_s=clock.ttft if on_token else None))
        return gens

    def _stream(self, row: int, ids: list[int], params, sampling: Sampling, clock: Clock, on_token: TokenCallback):
        """One streamed request: every new token (up to the end id) to on_token once; its final CompletionOutput."""
        seen, step = 0, None
        for step in self.llm.generate_async(ids, sampling_params=params, streaming=True):
            toks = split_at_end(list(step.outputs[0].token_ids), {self.end_id}, sampling.max_new_tokens)[0]
            if step.outputs[0].token_ids:
                clock.first()
            for t in toks[seen:]:
                on_token(row, t)
            seen = max(seen, len(toks))
        return step.outputs[0]
