"""A tiny OpenAI-compatible HTTP server for the failure cases only (the real-server tests use transformers
serve): raw asyncio HTTP/1.1 with chunked SSE, so a test controls exactly how a request fails.

Behaviour by a word in the prompt: FAIL -> HTTP 500 with an OpenAI-style error body; REJECT -> HTTP 400 with
trtllm-serve's flat error body; SLOW -> one chunk, then silence; CUT -> two chunks, then the connection
drops. Anything else streams `tokens` words, one per chunk, `delay_s` apart, then usage and [DONE].
`kill_after(n)`: after n completion requests the server stops listening and drops every connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

MODEL = "fake-model"
WORDS = [f"w{i}" for i in range(64)]


class FakeOpenAIServer:
    def __init__(self, tokens: int = 4, delay_s: float = 0.01):
        self.tokens, self.delay_s = tokens, delay_s
        self.port: int | None = None
        self.requests: list[dict] = []  # completion request bodies, in arrival order
        self.arrivals: list[float] = []  # perf_counter() at each arrival (/v1/models and completions)
        self.models_requests = 0
        self._kill_after: int | None = None
        self._writers: set = set()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill_after(self, n: int) -> None:
        self._kill_after = n

    async def _kill(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    async def _shutdown(self) -> None:
        await self._kill()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, reader, writer) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if path.endswith("/models"):
                    self.models_requests += 1
                    self.arrivals.append(time.perf_counter())
                    await self._models(writer)
                elif path.endswith("/completions"):
                    await self._completion(writer, json.loads(body), chat=path.endswith("/chat/completions"))
                else:
                    await self._json(writer, 404, {"detail": "Not Found"})
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the server shuts down
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _models(self, writer) -> None:
        await self._json(writer, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _json(self, writer, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        await writer.drain()

    async def _chunk(self, writer, obj) -> None:
        data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _completion(self, writer, req: dict, chat: bool = False) -> None:
        self.requests.append(req)
        self.arrivals.append(time.perf_counter())
        if self._kill_after is not None and len(self.requests) > self._kill_after:
            await self._kill()
            return
        prompt = req["messages"][-1]["content"] if chat else req.get("prompt", "")
        kind = "chat.completion.chunk" if chat else "text_completion"
        piece = (lambda text: {"index": 0, "delta": {"content": text}, "finish_reason": None}) if chat else \
            (lambda text: {"index": 0, "text": text, "finish_reason": None})
        if "FAIL" in prompt:
            await self._json(writer, 500, {"error": {"message": "fake failure: the model exploded",
                                                     "type": "InternalServerError", "code": 500}})
            return
        if "REJECT" in prompt:
            await self._json(writer, 400, {"object": "error", "message": "prompt too long for max_seq_len",
                                           "type": "BadRequestError", "param": None, "code": 400})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        n = min(req.get("max_tokens") or self.tokens, self.tokens)
        for i in range(n):
            await asyncio.sleep(self.delay_s)
            await self._chunk(writer, {"id": "x", "object": kind, "model": MODEL, "choices": [piece(" " + WORDS[i])]})
            if "SLOW" in prompt:
                await asyncio.sleep(3600)
            if "CUT" in prompt and i == 1:
                writer.transport.abort()
                return
        await self._chunk(writer, {"id": "x", "object": kind, "model": MODEL,
                                   "choices": [{**piece(""), "finish_reason": "length"}]})
        await self._chunk(writer, {"id": "x", "object": kind, "model": MODEL, "choices": [],
                                   "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}})
        await self._chunk(writer, "[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def make_word_tokenizer(path, texts: list[str]):
    """A word-level tokenizer trained on `texts` (plus the fake server's words), saved for AutoTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(texts + [" ".join(WORDS)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.save_pretrained(str(path))
    return path
