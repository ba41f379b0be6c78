"""Misbehaving OpenAI-compatible servers for the red-team tests (tests/test_bad_servers.py): FakeOpenAIServer with
its /v1/models or completions reply replaced by one misbehaviour, named in MODES. Raw HTTP on 127.0.0.1, so a
test controls every byte: invalid JSON, wrong types, missing fields, an error object with HTTP 200, streams
without [DONE] or that never end, silence before or after the headers, slow drips, huge bodies, wrong
content types, redirects, HTML error pages, usage that lies, connections closed mid-chunk.
Every endless behaviour stops when the client leaves or the server is shut down.
"""

from __future__ import annotations

import asyncio
import json
import time

from fake_openai import MODEL, WORDS, FakeOpenAIServer

FOREVER = 3600.0
LATE_S = 0.5


def _head(status: int, ctype: str | None = "application/json", length: int | None = None, extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def _body(writer, status: int, data: bytes | str, ctype: str | None = "application/json", extra: str = ""):
    data = data.encode() if isinstance(data, str) else data
    writer.write(_head(status, ctype, len(data), extra) + data)
    await writer.drain()


async def _chunk(writer, data: bytes | str) -> None:
    data = data.encode() if isinstance(data, str) else data
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _event(writer, obj) -> None:
    await _chunk(writer, f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n")


async def _end(writer) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def _piece(text: str | None, finish: str | None = None, chat: bool = False) -> dict:
    if chat:
        return {"id": "x", "object": "chat.completion.chunk", "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return {"id": "x", "object": "text_completion", "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def _usage(prompt=7, completion=2) -> dict:
    return {"id": "x", "object": "text_completion", "model": MODEL, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


async def _stream(writer, chat: bool, *events, done: bool = True, end: bool = True) -> None:
    """200 event stream: two words, then `events`, then [DONE] and the end of the body (each optional)."""
    writer.write(_head(200, "text/event-stream"))
    for word in WORDS[:2]:
        await _event(writer, _piece(" " + word, chat=chat))
    for e in events:
        await _event(writer, e)
    if done:
        await _event(writer, "[DONE]")
    if end:
        await _end(writer)


def _finished(**usage) -> tuple:
    return (_piece("", "length"), {**_usage(), "usage": {"prompt_tokens": 7, "completion_tokens": 2, **usage}})


async def _drip(writer, data: bytes, gap_s: float = 0.05) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        await asyncio.sleep(gap_s)


async def _silence(writer, *_):
    await asyncio.sleep(FOREVER)


async def _headers_then_silence(writer, *_):
    writer.write(_head(200, "text/event-stream"))
    await writer.drain()
    await asyncio.sleep(FOREVER)


async def _slow_stream(writer, chat, *_):
    events = b"".join(f"data: {json.dumps(e)}\n\n".encode()
                      for e in (_piece(" w0", chat=chat), *_finished()[:1])) + b"data: [DONE]\n\n"
    writer.write(_head(200, "text/event-stream", len(events)))
    await _drip(writer, events)


async def _endless(writer, chat, *_):
    writer.write(_head(200, "text/event-stream"))
    while True:  # ignores max_tokens
        await _event(writer, _piece(" w1", chat=chat))
        await asyncio.sleep(0.001)


async def _keepalive(writer, *_):
    writer.write(_head(200, "text/event-stream"))
    while True:  # SSE comments: bytes flow, nothing arrives
        await _chunk(writer, ": ping\n\n")
        await asyncio.sleep(0.05)


async def _huge_event(writer, *_):
    writer.write(_head(200, "text/event-stream"))
    while True:  # one event of endless 64 KiB data lines
        await _chunk(writer, b"data: " + b"x" * (64 << 10) + b"\n")


async def _late_finish(writer, chat, *_):
    writer.write(_head(200, "text/event-stream"))
    for word in WORDS[:2]:
        await _event(writer, _piece(" " + word, chat=chat))
    await asyncio.sleep(LATE_S)  # the finish_reason, usage and [DONE] come well after the last text
    for e in _finished():
        await _event(writer, e)
    await _event(writer, "[DONE]")
    await _end(writer)


async def _huge_line(writer, *_):
    writer.write(_head(200, "text/event-stream"))
    while True:  # one line that never ends
        await _chunk(writer, b"data: " + b"x" * (256 << 10))


async def _cut_mid_chunk(writer, chat, *_):
    writer.write(_head(200, "text/event-stream"))
    await _event(writer, _piece(" w0", chat=chat))
    data = f"data: {json.dumps(_piece(' w1', chat=chat))}\n\n".encode()
    writer.write(f"{len(data):x}\r\n".encode() + data[:10])
    await writer.drain()
    writer.transport.abort()


async def _bad_framing(writer, *_):
    writer.write(_head(200, "text/event-stream") + b"zz\r\nnot a chunk\r\n")
    await writer.drain()


async def _not_utf8(writer, *_):
    writer.write(_head(200, "text/event-stream"))
    await _chunk(writer, b"data: {\"choices\": [{\"text\": \"\xff\xfe\"}]}\n\n")
    await _end(writer)


async def _models_huge(writer, *_):
    writer.write(_head(200))
    await _chunk(writer, b'{"object": "list", "data": [')
    while True:
        await _chunk(writer, b" " * (1 << 20))


async def _models_drip(writer, *_):
    data = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
    writer.write(_head(200, length=len(data)))
    await _drip(writer, data)


async def _models_cut(writer, *_):
    writer.write(_head(200, length=200) + b'{"object": "list", ')
    await writer.drain()
    writer.transport.abort()


async def _models_silence_after_headers(writer, *_):
    writer.write(_head(200, length=100))
    await writer.drain()
    await asyncio.sleep(FOREVER)


HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>" \
           "<hr><center>nginx</center>\n</body></html>"
LIST = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
COMPLETION = {"id": "x", "object": "text_completion", "model": MODEL,
              "choices": [{"index": 0, "text": " w0 w1", "finish_reason": "length"}],
              "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


def _reply(status, data, ctype="application/json", extra=""):
    data = data if isinstance(data, str) else json.dumps(data)
    return lambda writer, *_: _body(writer, status, data, ctype, extra)


def _events(*events, done=True, end=True):
    return lambda writer, chat, *_: _stream(writer, chat, *events, done=done, end=end)


# name -> (endpoint "models" | "stream", reply coroutine (writer, chat)).
MODES = {
    # /v1/models
    "models-invalid-json": ("models", _reply(200, '{"object": "list", "data": [')),
    "models-not-an-object": ("models", _reply(200, [MODEL])),
    "models-data-wrong-type": ("models", _reply(200, {"object": "list", "data": MODEL})),
    "models-missing-data": ("models", _reply(200, {"object": "list"})),
    "models-missing-id": ("models", _reply(200, {"object": "list", "data": [{"object": "model"}]})),
    "models-id-wrong-type": ("models", _reply(200, {"object": "list", "data": [{"id": 42}]})),
    "models-error-in-200": ("models", _reply(200, {"error": {"message": "model is still loading", "code": 503}})),
    "models-html-200": ("models", _reply(200, "<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")),
    "models-empty-body": ("models", _reply(200, "", None)),
    "models-huge": ("models", _models_huge),
    "models-502-html": ("models", _reply(502, HTML_502, "text/html")),
    "models-redirect": ("models", _reply(307, "", None, "Location: http://127.0.0.1:9/v1/models\r\n")),
    "models-no-headers": ("models", _silence),
    "models-silence-after-headers": ("models", _models_silence_after_headers),
    "models-slow-drip": ("models", _models_drip),
    "models-closed-mid-body": ("models", _models_cut),
    "models-empty-list": ("models", _reply(200, {"object": "list", "data": []})),
    # completions / chat completions, streamed
    "stream-invalid-json": ("stream", _events('{"choices": [{"text": " w2"', *_finished())),
    "stream-not-an-object": ("stream", _events("[1, 2]", *_finished())),
    "stream-choices-wrong-type": ("stream", _events({"id": "x", "choices": "w2"}, *_finished())),
    "stream-text-wrong-type": ("stream", _events({"id": "x", "choices": [{"index": 0, "text": 5}]}, *_finished())),
    "stream-delta-wrong-type": ("stream", _events({"id": "x", "choices": [{"index": 0, "delta": "w2"}]})),
    "stream-finish-wrong-type": ("stream", _events({"id": "x", "choices": [{"text": "", "finish_reason": 1}]})),
    "stream-missing-choices": ("stream", _events({"id": "x", "object": "text_completion"}, *_finished())),
    "stream-two-choices": ("stream", _events({"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]})),
    "stream-empty-choices-only": ("stream", lambda w, chat, *_: _stream(w, chat, {"id": "x", "choices": []})),
    "stream-error-in-200": ("stream", _events({"error": {"message": "CUDA error: out of memory", "code": 500}})),
    "stream-error-string": ("stream", _events({"error": "generation failed: device lost"}, done=False)),
    "stream-no-finish-reason": ("stream", _events(done=False)),
    "stream-done-without-finish": ("stream", _events()),
    "stream-endless": ("stream", _endless),
    "stream-keepalive-forever": ("stream", _keepalive),
    "stream-no-headers": ("stream", _silence),
    "stream-silence-after-headers": ("stream", _headers_then_silence),
    "stream-slow-drip": ("stream", _slow_stream),
    "stream-huge-event": ("stream", _huge_event),
    "stream-huge-line": ("stream", _huge_line),
    "stream-json-not-sse": ("stream", _reply(200, COMPLETION)),
    "stream-html-200": ("stream", _reply(200, "<html><body>captive portal</body></html>", "text/html")),
    "stream-redirect": ("stream", _reply(302, "", None, "Location: http://127.0.0.1:9/v1/completions\r\n")),
    "stream-500-html": ("stream", _reply(500, "<!DOCTYPE html><html><head><title>Internal Server Error</title>"
                                               "</head><body>Traceback (most recent call last): ...</body></html>",
                                          "text/html")),
    "stream-503-text": ("stream", _reply(503, "overloaded, retry later\n", "text/plain")),
    "stream-422-detail": ("stream", _reply(422, {"detail": [{"loc": ["body", "model"], "msg": "Field required",
                                                             "type": "missing"}]})),
    "stream-usage-negative": ("stream", _events(*_finished(completion_tokens=-1))),
    "stream-usage-float": ("stream", _events(*_finished(completion_tokens=2.5))),
    "stream-usage-string": ("stream", _events(*_finished(prompt_tokens="7"))),
    "stream-usage-missing-count": ("stream", _events(_piece("", "length"),
                                                     {**_usage(), "usage": {"prompt_tokens": 7}})),
    "stream-usage-over-max-tokens": ("stream", _events(*_finished(completion_tokens=1000))),
    "stream-usage-under-chunks": ("stream", _events(*_finished(completion_tokens=1))),
    "stream-closed-mid-chunk": ("stream", _cut_mid_chunk),
    "stream-bad-chunked-framing": ("stream", _bad_framing),
    "stream-not-utf8": ("stream", _not_utf8),
    # Accepted: transformers serve ends its streams without [DONE]; an empty answer is one (bench counts it failed,
    # as AIPerf does); a finish_reason that comes late does not lengthen E2E.
    "stream-no-done": ("stream", _events(*_finished(), done=False)),
    "stream-empty-answer": ("stream", lambda w, chat, *_: _empty(w, chat)),
    "stream-late-finish": ("stream", _late_finish),
}


async def _empty(writer, chat) -> None:
    writer.write(_head(200, "text/event-stream"))
    await _event(writer, _piece("", "stop", chat=chat))
    await _event(writer, {**_usage(), "usage": {"prompt_tokens": 7, "completion_tokens": 0}})
    await _event(writer, "[DONE]")
    await _end(writer)


class BadServer(FakeOpenAIServer):
    """FakeOpenAIServer answering one endpoint with MODES[mode]; the other endpoint behaves."""

    def __init__(self, mode: str, **kw):
        super().__init__(**kw)
        self.mode = mode
        self.endpoint, self.reply = MODES[mode]

    async def _models(self, writer) -> None:
        if self.endpoint == "models":
            await self.reply(writer, False)
        else:
            await super()._models(writer)

    async def _completion(self, writer, req: dict, chat: bool = False) -> None:
        if self.endpoint != "stream":
            return await super()._completion(writer, req, chat)
        self.requests.append(req)
        self.arrivals.append(time.perf_counter())
        await self.reply(writer, chat)
