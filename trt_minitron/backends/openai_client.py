"""One streamed request to an OpenAI-compatible server (official `openai` client), timestamped per chunk.

Shared by the `openai` backend (generate, summarize) and `bench`. A request never raises: what went
wrong (HTTP status and the server's own message, connection loss, timeout) is kept in
`RequestRecord.error` so that a load test counts failures instead of stopping at the first one.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, MissingDependencyError, TrtMinitronError
from ..options import APIS

INSTALL_HINT = "pip install 'trt-minitron[serve]' (or pip install openai)"


class ServerError(TrtMinitronError):
    """The server cannot be reached, names no usable model, or failed a request the command cannot do without."""


def require_openai():
    """The `openai` module, or a one-line error saying how to install it."""
    try:
        import openai
    except ImportError:
        raise MissingDependencyError(f"talking to an OpenAI-compatible server needs the openai client: {INSTALL_HINT}") \
            from None
    return openai


def make_client(base_url: str, timeout_s: float):
    """An AsyncOpenAI client without retries (a benchmark must see every failure); create it inside the event loop."""
    openai = require_openai()
    return openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
                              timeout=timeout_s, max_retries=0)


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
    timeout_s: float = 600.0  # whole request, first byte to last chunk

    def validate(self) -> None:
        if self.api not in APIS:
            raise ConfigError(f"unknown API {self.api!r}; choose one of {', '.join(APIS)}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.timeout_s <= 0:
            raise ConfigError(f"request timeout must be > 0, got {self.timeout_s}")

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
    first_token_s: float | None = None
    finished_s: float | None = None  # set only when the answer completed
    ended_s: float | None = None  # when the request ended, completed or not
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


def server_message(err) -> str:
    """The server's own words from an openai APIStatusError/APIError body (OpenAI, FastAPI and trtllm shapes)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    if isinstance(body, str) and body:
        return body
    response = getattr(err, "response", None)
    try:
        text = response.text if response is not None else ""
    except Exception:  # a streamed body that was not read
        text = ""
    return (text or getattr(err, "message", "") or str(err))[:500]


def describe_error(err: BaseException, timeout_s: float) -> str:
    """One line for a failed request: HTTP status + server message, connection loss, or timeout."""
    openai = require_openai()
    if isinstance(err, asyncio.TimeoutError) or isinstance(err, openai.APITimeoutError):
        return f"timeout: no complete answer within {timeout_s:g} s"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {server_message(err)}"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return f"connection error: {type(cause).__name__ + ': ' + str(cause) if cause else err}"
    if isinstance(err, openai.APIError):
        return f"server error in stream: {server_message(err)}"
    return f"{type(err).__name__}: {err}"


async def _consume(client, model: str, prompt: str, params: RequestParams, rec: RequestRecord, clock: Callable,
                   on_text: Callable[[str], None] | None) -> None:
    kwargs = params.create_kwargs()
    if params.api == "chat":
        stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                      **kwargs)
    else:
        stream = await client.completions.create(model=model, prompt=prompt, **kwargs)
    async for chunk in stream:
        t = clock()
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            rec.usage_prompt_tokens = usage.prompt_tokens
            rec.usage_completion_tokens = usage.completion_tokens
        for choice in chunk.choices or ():
            piece = choice.delta.content if params.api == "chat" else choice.text
            if piece:
                if rec.first_token_s is None:
                    rec.first_token_s = t
                rec.chunk_s.append(t)
                rec.text += piece
                if on_text is not None:
                    on_text(piece)
            if choice.finish_reason:
                rec.finish_reason = choice.finish_reason


async def stream_request(client, model: str, prompt: str, params: RequestParams, rec: RequestRecord, t0: float,
                         on_text: Callable[[str], None] | None = None) -> RequestRecord:
    """Send one streamed request and fill `rec` in place (times relative to perf_counter() t0); never raises."""
    clock = lambda: time.perf_counter() - t0
    rec.sent_s = clock()
    try:
        await asyncio.wait_for(_consume(client, model, prompt, params, rec, clock, on_text), params.timeout_s)
        if rec.finish_reason is None:
            rec.error = "stream ended without a finish_reason (server stopped mid-answer?)"
        else:
            rec.finished_s = clock()
    except asyncio.CancelledError:
        rec.error = "cancelled: the run's --max-duration was reached"
        rec.ended_s = clock()
        raise
    except Exception as e:  # every failure is data for the report
        rec.error = describe_error(e, params.timeout_s)
    rec.ended_s = clock()
    return rec


async def resolve_model(client, base_url: str, served_model: str | None) -> str:
    """The model name to send: --served-model, else the only model /v1/models lists."""
    openai = require_openai()
    try:
        page = await client.models.list()
    except openai.APIConnectionError as e:
        raise ServerError(f"cannot reach {base_url}: {describe_error(e, 0)}; is the server up? "
                          "(`trt-minitron serve MODEL` starts one)") from None
    except openai.APIStatusError as e:
        if served_model:
            return served_model  # a server without /v1/models: trust the name given
        raise ServerError(f"{base_url}/models answered HTTP {e.status_code} ({server_message(e)}); "
                          "pass --served-model NAME") from None
    ids = [m.id for m in page.data]
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
