"""CompletionOutput with the real fields (tensorrt_llm/executor/result.py @a678b91aafbe) and a GenerationResult that
iterates as the real one does (__iter__ returns self, __next__ takes one step, result() waits; `outputs[i].token_ids`
grows by the step's tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Union


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: Optional[List[int]] = field(default_factory=list)
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[List[Any]] = field(default_factory=list)
    prompt_logprobs: Optional[List[Any]] = field(default_factory=list)
    finish_reason: Optional[Literal["stop", "length", "timeout", "cancelled"]] = None
    stop_reason: Optional[Union[int, str]] = None
    generation_logits: Optional[Any] = None
    additional_context_outputs: Optional[Dict[str, Any]] = None
    additional_generation_outputs: Optional[Dict[str, Any]] = None
    disaggregated_params: Optional[Any] = None
    request_perf_metrics: Optional[Any] = None

    @property
    def length(self) -> int:
        return len(self.token_ids)


class GenerationResult:
    """Replays precomputed tokens: one token per step, so streaming sees them arrive one by one."""

    def __init__(self, request_id: int, prompt_token_ids: List[int], tokens: List[int], finish_reason: str,
                 stop_reason, streaming: bool):
        self.request_id, self.prompt_token_ids = request_id, list(prompt_token_ids)
        self._tokens, self._reason, self._stop_reason = tokens, finish_reason, stop_reason
        self._streaming = streaming
        self.outputs = [CompletionOutput(0)]
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done

    def _result_step(self):
        out = self.outputs[0]
        n = len(out.token_ids)
        out.token_ids.extend(self._tokens[n:n + 1] if self._streaming else self._tokens[n:])
        if len(out.token_ids) == len(self._tokens):
            out.finish_reason, out.stop_reason, self._done = self._reason, self._stop_reason, True

    def result(self, timeout: Optional[float] = None):
        while not self._done:
            self._result_step()
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        self._result_step()
        return self
