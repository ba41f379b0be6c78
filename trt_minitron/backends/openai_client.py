"""One streamed request to an OpenAI-compatible server (official `openai` client), timestamped per chunk.

Shared by the `openai` backend (generate, summarize) and `bench`. A request never raises: what went
wrong (HTTP status and the server's own message, a reply that breaks the API, connection loss, timeout)
is kept in `RequestRecord.error` so that a load test counts failures instead of stopping at the first one.
Every reply is checked (openai_replies.py); every request is bounded by `options.Timeouts` (openai_connection.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..options import APIS, Timeouts
from .openai_connection import (
    describe_error,
    make_client,
    open_within,
    our_error,
    read_capped,
    require_openai,
    server_failure,
)
from .openai_replies import (
    MAX_BODY_BYTES,
    MAX_ERROR_BYTES,
    BadReply,
    HTTPFailure,
    ServerError,
    check_usage,
    error_message,
    model_ids,
    parse_json,
    read_chunk,
    snippet,
    sse_data,
)

__all__ = ["RequestParams", "RequestRecord", "ServerError", "make_client", "resolve_model", "stream_request"]


def completions_url(base_url: str, api: str) -> str:
    """The endpoint a request of `api` goes to."""
    return base_url.rstrip("/") + ("/chat/completions" if api == "chat" else "/completions")


@dataclass(frozen=True, kw_only=True)
class RequestParams:
    """Sampling and endpoint settings of every request of a run."""

    max_tokens: int
    api: str = "completions"  # /v1/completions (prompt text) or /v1/chat/completions (one user message)
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # not an OpenAI field (vLLM and trtllm-serve accept it): sent only when > 0
    seed: int | None = None
    ignore_eos: bool = False  # likewise an extension; servers with strict schemas reject it
    timeouts: Timeouts = field(default_factory=Timeouts)

    def validate(self) -> None:
        if self.api not in APIS:
            raise ConfigError(f"unknown API {self.api!r}; choose one of {', '.join(APIS)}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        self.timeouts.validate()

    def create_kwargs(self) -> dict:
        kw = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "stream": True,
              "stream_options": {"include_usage": True}}
        if self.seed is not None:
            kw["seed"] = self.seed
        extra = {k: v for k, v in (("top_k", self.top_k), ("ignore_eos", self.ignore_eos)) if v}
        if extra:
            kw["extra_body"] = extra
        return kw


@dataclass(kw_only=True)
class RequestRecord:
    """One request: times in seconds since the run's clock started, the streamed text, and any error."""

    index: int
    prompt_id: str
    sent_s: float | None = None
    first_token_s: float | None = None  # the first chunk that carried text
    # Set only when the answer completed: its last chunk with text (AIPerf's end of a request), or the stream's
    # end when no chunk carried text.
    finished_s: float | None = None
    ended_s: float | None = None  # when the request ended, completed or not (the stream closed)
    chunk_s: list[float] = field(default_factory=list)  # arrival of every chunk that carried text
    text: str = ""
    finish_reason: str | None = None
    usage_prompt_tokens: int | None = None  # from the server's usage chunk, when it sends one
    usage_completion_tokens: int | None = None
    text_tokens: int | None = None  # the tokenizer's count of `text` (filled in by the caller)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finished_s is not None

    @property
    def output_tokens(self) -> int | None:
        """The server's completion_tokens when it reports usage, else the tokenizer's count of the text."""
        return self.usage_completion_tokens if self.usage_completion_tokens is not None else self.text_tokens

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None or self.sent_s is None else self.first_token_s - self.sent_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.finished_s is None or self.sent_s is None else self.finished_s - self.sent_s

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_s, self.chunk_s[1:])]


async def _consume(client, model: str, prompt: str, params: RequestParams, rec: RequestRecord, clock: Callable,
                   on_text: Callable[[str], None] | None) -> None:
    kwargs = params.create_kwargs()
    endpoint = completions_url(str(client.base_url), params.api)
    if params.api == "chat":
        call = client.chat.completions.with_streaming_response.create(
            model=model, messages=[{"role": "user", "content": prompt}], **kwargs)
    else:
        call = client.completions.with_streaming_response.create(model=model, prompt=prompt, **kwargs)
    done = False
    async with AsyncExitStack() as stack:
        response = await open_within(stack, call, params.timeouts)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            body = await read_capped(response.iter_bytes(), MAX_ERROR_BYTES)
            try:
                message = error_message(json.loads(body))
            except ValueError:
                message = None
            if message:
                raise BadReply(endpoint, f"the server answered an error with HTTP {response.status_code}: {message}")
            raise BadReply(endpoint, f"the answer is {ctype or 'of no Content-Type'}, not a text/event-stream "
                                     f"(stream: true was asked): {snippet(body)}")
        n = 0
        async for data in sse_data(response.iter_bytes(), endpoint):
            t = clock()
            if data.strip() == "[DONE]":
                done = True
                break  # the stream's end: what the server does after it does not hold the request
            n += 1
            chunk = read_chunk(endpoint, parse_json(endpoint, f"stream chunk {n}", data), params.api, n)
            if chunk.usage is not None:
                rec.usage_prompt_tokens, rec.usage_completion_tokens = chunk.usage
            if chunk.text:
                if len(rec.chunk_s) == params.max_tokens:
                    raise BadReply(endpoint, f"the stream carries more than max_tokens={params.max_tokens} chunks "
                                             "of text: the server ignores max_tokens")
                if rec.first_token_s is None:
                    rec.first_token_s = t
                rec.chunk_s.append(t)
                rec.text += chunk.text
                if on_text is not None:
                    on_text(chunk.text)
            if chunk.finish_reason:
                rec.finish_reason = chunk.finish_reason
    if rec.finish_reason is None:
        raise BadReply(endpoint, "the stream ended without a finish_reason " +
                       ("([DONE] came first)" if done else "or [DONE] (the server stopped mid-answer?)"))
    if rec.usage_completion_tokens is not None:
        check_usage(endpoint, rec.usage_completion_tokens, len(rec.chunk_s), params.max_tokens)


async def stream_request(client, model: str, prompt: str, params: RequestParams, rec: RequestRecord, t0: float,
                         on_text: Callable[[str], None] | None = None) -> RequestRecord:
    """Send one streamed request and fill `rec` in place (times relative to perf_counter() t0); never raises."""
    clock = lambda: time.perf_counter() - t0
    rec.sent_s = clock()
    try:
        await asyncio.wait_for(_consume(client, model, prompt, params, rec, clock, on_text), params.timeouts.total_s)
        rec.finished_s = rec.chunk_s[-1] if rec.chunk_s else clock()
    except asyncio.CancelledError:
        rec.error = "cancelled: the run's --max-duration was reached"
        rec.ended_s = clock()
        raise
    except Exception as e:  # every failure of the server is data for the report
        if not server_failure(e):
            raise
        rec.error = describe_error(e, params.timeouts)
    rec.ended_s = clock()
    return rec


async def list_models(client, timeouts: Timeouts) -> list[str]:
    """The ids /v1/models lists, checked; bounded by `timeouts`."""
    endpoint = str(client.base_url).rstrip("/") + "/models"

    async def get() -> list[str]:
        async with AsyncExitStack() as stack:
            response = await open_within(stack, client.models.with_streaming_response.list(), timeouts)
            body = await read_capped(response.iter_bytes(), MAX_BODY_BYTES, endpoint)
            ctype = response.headers.get("content-type") or "no Content-Type"
        return model_ids(endpoint, parse_json(endpoint, f"the model list ({ctype})", body))

    return await asyncio.wait_for(get(), timeouts.total_s)


async def resolve_model(client, base_url: str, served_model: str | None, timeouts: Timeouts) -> str:
    """The model name to send: --served-model, else the only model /v1/models lists."""
    openai = require_openai()
    try:
        ids = await list_models(client, timeouts)
    except Exception as e:
        if not server_failure(e):
            raise
        ours = our_error(e)
        if isinstance(ours, HTTPFailure) and ours.status >= 400:
            if served_model:
                return served_model  # a server without /v1/models: trust the name given
            raise ServerError(f"{base_url}/models answered {ours}; pass --served-model NAME") from None
        if isinstance(ours, HTTPFailure):
            raise ServerError(f"{base_url}/models answered {ours}") from None
        if isinstance(ours, BadReply):
            raise ours from None
        if isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError):
            raise ServerError(f"cannot reach {base_url}: {describe_error(e, timeouts)}; is the server up? "
                              "(`trt-minitron serve MODEL` starts one)") from None
        raise ServerError(f"{base_url}/models: {describe_error(e, timeouts)}") from None
    if served_model:
        return served_model
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ServerError(f"{base_url}/models lists no model; pass --served-model NAME")
    raise ServerError(f"{base_url}/models lists {len(ids)} models ({', '.join(ids[:5])}"
                      f"{', ...' if len(ids) > 5 else ''}); choose one with --served-model NAME")


def prompt_text(tokenizer, ids: list[int]) -> str:
    """Text to send for prompt ids: decoded with special tokens, minus a leading BOS the server's tokenizer adds again."""
    bos = tokenizer.bos_token_id
    if ids and bos is not None and ids[0] == bos:
        probe = tokenizer("a")["input_ids"]
        if probe and probe[0] == bos:
            ids = ids[1:]
    return tokenizer.decode(ids, skip_special_tokens=False)


def server_tokenizer(tokenizer: str | None, model_id: str):
    """The tokenizer for prompts and token counts: --tokenizer, else the served model when it is a local folder."""
    from .base import load_tokenizer

    if tokenizer:
        return load_tokenizer(tokenizer)
    if Path(model_id).is_dir():
        return load_tokenizer(model_id)
    raise ConfigError(f"the server's model {model_id!r} is not a folder here; pass --tokenizer DIR (the served "
                      "model's tokenizer: it builds the prompts and counts tokens the server does not report)")
