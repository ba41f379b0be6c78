"""LLM with the real constructor and generate signatures (tensorrt_llm/llmapi/llm.py @4c05a74891e4, BaseLLM), its
arguments validated as the real one does (unknown kwarg -> ValueError, then the pydantic TorchLlmArgs), generating
greedily (or by seeded sampling) with transformers on the CPU in float32.

Per request, as the real API: the prompt plus max_tokens may not exceed max_seq_len (ValueError); generation stops at
end_id unless ignore_eos; the end token is kept in token_ids when INCLUDE_END_TOKEN (monkeypatch it: whether the real
PyTorch sampler reports it was not confirmed from the source, so the caller must handle both).
"""

from __future__ import annotations

from itertools import count
from pathlib import Path
from typing import Any, List, Literal, Optional, Sequence, Union

from .._calls import CALLS
from ..executor.result import GenerationResult
from ..sampling_params import SamplingParams
from .llm_args import TorchLlmArgs

INCLUDE_END_TOKEN = True
_IDS = count()


class RequestOutput(GenerationResult):
    """Fields as the real RequestOutput repr lists them: request_id, prompt, prompt_token_ids, outputs, finished."""

    prompt: Optional[str] = None


class LLM:
    def __init__(self,
                 model: Union[str, Path],
                 tokenizer: Optional[Union[str, Path, Any]] = None,
                 tokenizer_mode: Literal["auto", "slow"] = "auto",
                 skip_tokenizer_init: bool = False,
                 trust_remote_code: bool = False,
                 tensor_parallel_size: int = 1,
                 dtype: str = "auto",
                 revision: Optional[str] = None,
                 tokenizer_revision: Optional[str] = None,
                 **kwargs: Any) -> None:
        valid = set(TorchLlmArgs.model_fields) | {"_mpi_session", "backend"}
        for key in kwargs:
            if key not in valid:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        self.args = TorchLlmArgs(model=model, tokenizer=tokenizer, tokenizer_mode=tokenizer_mode,
                                 skip_tokenizer_init=skip_tokenizer_init, trust_remote_code=trust_remote_code,
                                 tensor_parallel_size=tensor_parallel_size, dtype=dtype, revision=revision,
                                 tokenizer_revision=tokenizer_revision, **kwargs)
        CALLS.append(("LLM", {"model": model, "tokenizer": tokenizer, "tensor_parallel_size": tensor_parallel_size,
                              "dtype": dtype, **kwargs}))
        import torch
        from transformers import AutoModelForCausalLM

        self._net = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
        self._shutdown = False

    def _request(self, inputs, sampling_params: Optional[SamplingParams], streaming: bool) -> RequestOutput:
        import torch

        if self._shutdown:
            raise RuntimeError("LLM is shutting down")
        if isinstance(inputs, dict):
            inputs = inputs["prompt_token_ids"]
        if not (isinstance(inputs, list) and inputs and all(isinstance(t, int) for t in inputs)):
            raise TypeError(f"the fake takes token-id prompts only, got {type(inputs)}")
        sp = sampling_params or SamplingParams()
        seq = self.args.max_seq_len
        if seq is not None and len(inputs) + sp.max_tokens > seq:
            raise ValueError(f"The sum of prompt length ({len(inputs)}) and max_tokens ({sp.max_tokens}) should not "
                             f"exceed max_seq_len ({seq})")
        CALLS.append(("LLM.generate", {"prompt_token_ids": list(inputs), "sampling_params": sp,
                                       "streaming": streaming}))
        greedy = sp._greedy_decoding
        gen = None if greedy else torch.Generator().manual_seed(sp.seed or 0)
        ids, tokens, reason, stop = torch.tensor([inputs]), [], "length", None
        with torch.no_grad():
            for _ in range(sp.max_tokens):  # a whole forward per token: slow, and independent of any KV cache
                logits = self._net(input_ids=ids).logits[0, -1].float()
                if greedy:
                    tok = int(logits.argmax())
                else:
                    probs = (logits / (sp.temperature or 1.0)).softmax(-1)
                    tok = int(torch.multinomial(probs, 1, generator=gen))
                ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
                if tok == sp.end_id and not sp.ignore_eos:
                    reason, stop = "stop", tok
                    if INCLUDE_END_TOKEN:
                        tokens.append(tok)
                    break
                tokens.append(tok)
        result = RequestOutput(next(_IDS), inputs, tokens, reason, stop, streaming)
        return result

    def generate(self,
                 inputs: Union[Any, Sequence[Any]],
                 sampling_params: Optional[Union[SamplingParams, List[SamplingParams]]] = None,
                 use_tqdm: bool = True,
                 lora_request=None,
                 prompt_adapter_request=None,
                 kv_cache_retention_config=None,
                 disaggregated_params=None,
                 scheduling_params=None,
                 cache_salt=None):
        unbatched = not isinstance(inputs, list) or isinstance(inputs[0], int)
        batch = [inputs] if unbatched else inputs
        outs = []
        for i, one in enumerate(batch):
            sp = sampling_params[i] if isinstance(sampling_params, list) else sampling_params
            outs.append(self._request(one, sp, streaming=False).result())
        return outs[0] if unbatched else outs

    def generate_async(self, inputs, sampling_params: Optional[SamplingParams] = None, lora_request=None,
                       prompt_adapter_request=None, streaming: bool = False, kv_cache_retention_config=None,
                       disaggregated_params=None, _postproc_params=None, scheduling_params=None,
                       cache_salt=None) -> RequestOutput:
        return self._request(inputs, sampling_params, streaming)

    def shutdown(self) -> None:
        self._shutdown = True
        CALLS.append(("LLM.shutdown", {}))
