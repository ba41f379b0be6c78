"""The HTTP side of talking to an OpenAI-compatible server: the official `openai` client set up without retries or
redirects, every request bounded by `Timeouts` (connect, first byte, total), error answers read with a size cap,
and one line for whatever went wrong.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from typing import AsyncIterator

from ..errors import MissingDependencyError
from ..options import Timeouts
from .openai_replies import MAX_ERROR_BYTES, BadReply, HTTPFailure, ServerError, status_message

INSTALL_HINT = "pip install 'trt-minitron[serve]' (or pip install openai)"


def require_openai():
    """The `openai` module, or a one-line error saying how to install it."""
    try:
        import openai
    except ImportError:
        raise MissingDependencyError(f"talking to an OpenAI-compatible server needs the openai client: {INSTALL_HINT}") \
            from None
    return openai


def make_client(base_url: str, timeouts: Timeouts):
    """An AsyncOpenAI client without retries (a benchmark must see every failure) or redirects, bounded by
    `timeouts`, whose non-2xx answers raise HTTPFailure; create it inside the event loop."""
    openai = require_openai()
    limit = openai.Timeout(timeouts.total_s, connect=timeouts.connect)
    http = openai.DefaultAsyncHttpxClient(timeout=limit, follow_redirects=False,
                                          event_hooks={"response": [_refuse_failures]})
    return openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
                              timeout=limit, max_retries=0, http_client=http)


async def _refuse_failures(response) -> None:
    """httpx response hook: a non-2xx answer becomes HTTPFailure from the first bytes of its body (an error page
    can be any size), a redirect one that names its target (it is not followed: POSTs would be resent)."""
    status = response.status_code
    if status < 300:
        return
    try:
        location = response.headers.get("location")
        if status < 400 and location:
            raise HTTPFailure(status, f"redirect to {location} (redirects are not followed: give the server's own URL)")
        body = await read_capped(response.aiter_bytes(), MAX_ERROR_BYTES)
        raise HTTPFailure(status, status_message(response.headers.get("content-type", ""), body))
    finally:
        await response.aclose()


async def read_capped(pieces: AsyncIterator[bytes], limit: int, endpoint: str | None = None) -> bytes:
    """The body up to `limit` bytes: more is a BadReply for `endpoint`, or cut off when no endpoint is given."""
    body = bytearray()
    async for piece in pieces:
        body += piece
        if len(body) > limit:
            if endpoint is None:
                return bytes(body[:limit])
            raise BadReply(endpoint, f"the reply is larger than {limit >> 20} MiB")
    return bytes(body)


async def open_within(stack: AsyncExitStack, call, timeouts: Timeouts):
    """Send a request (a `with_streaming_response` call) and wait for the answer's headers, within the first-byte limit."""
    try:
        return await asyncio.wait_for(stack.enter_async_context(call), timeouts.first_byte)
    except asyncio.TimeoutError:
        raise ServerError(f"timeout: no response headers within {timeouts.first_byte:g} s (--request-timeout "
                          "first-byte)") from None


def our_error(err: BaseException) -> ServerError | None:
    """The HTTPFailure/BadReply/ServerError behind `err` (openai 1.x wraps what an httpx hook raises)."""
    for e in (err, err.__cause__):
        if isinstance(e, ServerError):
            return e
    return None


def transport_error(err: BaseException) -> bool:
    """An error of the HTTP layer under openai (raised as is while a streamed body is read)."""
    return type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "anyio", "h11")


def server_failure(err: BaseException) -> bool:
    """Whether `err` is the server's doing (an answer, a timeout, the connection), not a bug of ours."""
    openai = require_openai()
    return our_error(err) is not None or isinstance(err, (asyncio.TimeoutError, openai.APIError)) or \
        transport_error(err)


def describe_error(err: BaseException, timeouts: Timeouts) -> str:
    """One line for a failed request: HTTP status + server message, a bad reply, connection loss, or timeout."""
    ours = our_error(err)
    if ours is not None:
        return str(ours)
    total = f"timeout: the answer was not complete within {timeouts.total_s:g} s (--request-timeout total)"
    if isinstance(err, asyncio.TimeoutError):
        return total
    openai = require_openai()
    if isinstance(err, openai.APITimeoutError):
        if type(err.__cause__).__name__ == "ConnectTimeout":
            return f"timeout: no connection within {timeouts.connect:g} s (--request-timeout connect)"
        return total
    if isinstance(err, openai.APIStatusError):  # not raised while _refuse_failures is installed
        return f"HTTP {err.status_code}"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return f"connection error: {type(cause).__name__ + ': ' + str(cause) if cause else err}"
    if transport_error(err):  # raised while reading the body
        return f"connection error: {type(err).__name__}: {err}"
    return f"{type(err).__name__}: {err}"
