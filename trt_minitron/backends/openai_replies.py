"""What an OpenAI-compatible server answers, checked as input: every reply is validated against what the
OpenAI API promises, and one that breaks it is one line naming the endpoint and what was wrong.

Pure functions on bytes and parsed JSON (openai_client.py and openai_connection.py do the I/O): HTTP error
bodies (JSON, HTML, text) summarised, server-sent events split with a size cap, /v1/models lists and completion
chunks checked field by field, usage counts checked against what the stream carried.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import AsyncIterator

from ..errors import TrtMinitronError, one_line

MAX_EVENT_BYTES = 1 << 20  # one streamed chunk (a few tokens of JSON are ~300 bytes)
MAX_BODY_BYTES = 16 << 20  # a whole non-streamed reply (/v1/models)
MAX_ERROR_BYTES = 64 << 10  # what is read of an error page


class ServerError(TrtMinitronError):
    """The server cannot be reached, names no usable model, or failed a request the command cannot do without."""


class BadReply(ServerError):
    """A reply that breaks the OpenAI API: not JSON, wrong types, missing fields, usage that lies, too large."""

    def __init__(self, endpoint: str, what: str):
        super().__init__(f"{endpoint}: {what}")


class HTTPFailure(ServerError):
    """A non-2xx answer, with the server's own words (a redirect is one too: it is never followed)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status} (empty body)")


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def snippet(text: str | bytes, limit: int = 120) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(one_line(text, limit)) if text.strip() else "an empty body"


def error_message(obj) -> str | None:
    """The message of an OpenAI (`{"error": {"message"}}`), trtllm-serve (`{"message"}`), FastAPI (`{"detail"}`) or
    transformers serve (`{"error": "..."}`) error object; None when `obj` is not one."""
    if not isinstance(obj, dict):
        return None
    inner = obj.get("error")
    if isinstance(inner, dict):
        return one_line(inner.get("message") or json.dumps(inner), 300)
    if isinstance(inner, str) and inner:
        return one_line(inner, 300)
    if obj.get("object") == "error" and obj.get("message"):
        return one_line(obj["message"], 300)
    detail = obj.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict) and detail[0].get("msg"):
        return one_line(detail[0]["msg"], 300)  # FastAPI's validation errors
    if detail:
        return one_line(detail, 300)
    return None


def status_message(content_type: str, body: bytes) -> str:
    """The server's words from an error body: the JSON error message, an HTML page's title, or the text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        msg = error_message(json.loads(text))
    except ValueError:
        msg = None
    if msg:
        return msg
    if "html" in content_type or text.lstrip().lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        text = "HTML page: " + html.unescape(text)
    return one_line(text, 300)


def parse_json(endpoint: str, what: str, data: bytes | str):
    """JSON of a reply, or a BadReply saying it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        reason = f"{e.msg} at char {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise BadReply(endpoint, f"{what} is not valid JSON ({reason}): {snippet(data)}") from None


def model_ids(endpoint: str, obj) -> list[str]:
    """The ids of a /v1/models list (`{"data": [{"id": ...}, ...]}`)."""
    if error_message(obj):
        raise BadReply(endpoint, f"the server answered an error with HTTP 200: {error_message(obj)}")
    if not isinstance(obj, dict):
        raise BadReply(endpoint, f"the model list is {_kind(obj)}, not a JSON object")
    data = obj.get("data")
    if not isinstance(data, list):
        raise BadReply(endpoint, f"the model list's 'data' is {_kind(data) if 'data' in obj else 'missing'}, "
                                 "not a list")
    ids = []
    for i, m in enumerate(data):
        mid = m.get("id") if isinstance(m, dict) else None
        if not isinstance(mid, str) or not mid:
            raise BadReply(endpoint, f"model {i} of the list has no 'id' string: {snippet(json.dumps(m))}")
        ids.append(mid)
    return ids


async def sse_data(pieces: AsyncIterator[bytes], endpoint: str, limit: int = MAX_EVENT_BYTES) -> AsyncIterator[str]:
    """The data of each server-sent event (text/event-stream); an event or line over `limit` bytes is a BadReply.

    Fields other than `data:` (event, id, retry, comments) carry nothing a completion needs and are skipped.
    """
    buf, data, size = b"", [], 0
    async for piece in pieces:
        buf += piece
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl].rstrip(b"\r"), buf[nl + 1:]
            if not line:
                if data:
                    yield _text(endpoint, b"\n".join(data))
                data, size = [], 0
            elif line.startswith(b"data:"):
                data.append(_value(line))
                size += len(data[-1])
                if size > limit:
                    raise BadReply(endpoint, f"a stream event is larger than {limit >> 10} KiB")
        if len(buf) > limit:
            raise BadReply(endpoint, f"a stream line is longer than {limit >> 10} KiB")
    if buf.startswith(b"data:"):  # a last line without its newline
        data.append(_value(buf))
    if data:  # a last event without its blank line
        yield _text(endpoint, b"\n".join(data))


def _value(line: bytes) -> bytes:
    """The value of a `data:` line (one space after the colon is not part of it)."""
    return line[6:] if line.startswith(b"data: ") else line[5:]


def _text(endpoint: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadReply(endpoint, f"a stream event is not UTF-8 text: {snippet(data)}") from None


@dataclass(frozen=True)
class Chunk:
    """What one streamed completion chunk carries."""

    text: str  # "" when it carries none
    finish_reason: str | None
    usage: tuple[int, int] | None  # (prompt_tokens, completion_tokens)


def read_chunk(endpoint: str, obj, api: str, n: int) -> Chunk:
    """Check chunk number `n` of a /v1/completions (`api="completions"`) or /v1/chat/completions stream."""
    where = f"stream chunk {n}"
    message = error_message(obj)
    if message:
        raise BadReply(endpoint, f"server error in the stream: {message}")
    if not isinstance(obj, dict):
        raise BadReply(endpoint, f"{where} is {_kind(obj)}, not a JSON object")
    usage = read_usage(endpoint, obj.get("usage"), where)
    choices = obj.get("choices")
    if choices is None and usage is None:
        raise BadReply(endpoint, f"{where} has no 'choices'")
    if not isinstance(choices, (list, type(None))):
        raise BadReply(endpoint, f"{where}: 'choices' is {_kind(choices)}, not a list")
    choices = choices or []
    if len(choices) > 1:
        raise BadReply(endpoint, f"{where} has {len(choices)} choices; one was asked for")
    text, finish = "", None
    for choice in choices:
        if not isinstance(choice, dict):
            raise BadReply(endpoint, f"{where}: the choice is {_kind(choice)}, not a JSON object")
        if api == "chat":
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise BadReply(endpoint, f"{where}: 'delta' is {_kind(delta)}, not a JSON object")
            piece, field = delta.get("content"), "delta.content"
        else:
            piece, field = choice.get("text"), "text"
        if not isinstance(piece, (str, type(None))):
            raise BadReply(endpoint, f"{where}: '{field}' is {_kind(piece)}, not a string")
        finish = choice.get("finish_reason")
        if not isinstance(finish, (str, type(None))):
            raise BadReply(endpoint, f"{where}: 'finish_reason' is {_kind(finish)}, not a string")
        text = piece or ""
    return Chunk(text, finish or None, usage)


def read_usage(endpoint: str, usage, where: str) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of a usage object; counts must be integers >= 0."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise BadReply(endpoint, f"{where}: 'usage' is {_kind(usage)}, not a JSON object")
    counts = []
    for key in ("prompt_tokens", "completion_tokens"):
        v = usage.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BadReply(endpoint, f"{where}: usage.{key} is {json.dumps(v) if key in usage else 'missing'}, "
                                     "not a count of tokens")
        counts.append(v)
    return counts[0], counts[1]


def check_usage(endpoint: str, completion_tokens: int, text_chunks: int, max_tokens: int) -> None:
    """Usage that contradicts the stream: more tokens than max_tokens, or fewer than the chunks of text it carried."""
    if completion_tokens > max_tokens:
        raise BadReply(endpoint, f"usage.completion_tokens is {completion_tokens}, more than max_tokens={max_tokens}")
    if completion_tokens < text_chunks:
        raise BadReply(endpoint, f"usage.completion_tokens is {completion_tokens}, but the stream carried "
                                 f"{text_chunks} chunks of text")
