"""`openai` backend: any OpenAI-compatible server (trtllm-serve, transformers serve, vLLM...) over HTTP, streamed.

MODEL is the server's URL (`http://HOST:PORT/v1`); the model name comes from /v1/models or --served-model,
the tokenizer from --tokenizer or the served model's folder. The Backend protocol hands over token ids;
they are sent as text (/v1/completions takes token ids only on some servers), without the BOS token the
server's tokenizer adds again. The returned text is re-tokenized for `Generation.tokens`: token counts
follow the local tokenizer, which can merge what the server generated as separate tokens ("\\n" "\\n").
Up to `concurrency` requests are in flight, each bounded by `timeouts`; a failed request (HTTP error, a reply
that breaks the API, timeout) stops the command with one line saying what the server did.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import ConfigError
from ..options import Timeouts, normalize_url
from .base import Generation, Sampling, TokenCallback
from .openai_client import (
    RequestParams,
    RequestRecord,
    ServerError,
    completions_url,
    make_client,
    prompt_text,
    resolve_model,
    server_tokenizer,
    stream_request,
)


class OpenAIBackend:
    """Requests to a server; generate() sends every row of the batch with at most `concurrency` in flight."""

    name = "openai"
    is_main = True

    def __init__(self, url: str, *, served_model: str | None = None, tokenizer: str | None = None,
                 concurrency: int = 1, api: str = "completions", timeouts: Timeouts = Timeouts()):
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        self.base_url = normalize_url(url)
        self.model = self.base_url
        self.api, self.timeouts = api, timeouts
        self.concurrency = concurrency
        self.served_model = asyncio.run(self._resolve(served_model))
        self.tokenizer = server_tokenizer(tokenizer, self.served_model)
        self.end_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.last_records: list[RequestRecord] = []

    async def _resolve(self, served_model: str | None) -> str:
        client = make_client(self.base_url, self.timeouts)
        try:
            return await resolve_model(client, self.base_url, served_model, self.timeouts)
        finally:
            await client.close()

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def prompt_text(self, ids: list[int]) -> str:
        return prompt_text(self.tokenizer, ids)

    def params(self, sampling: Sampling) -> RequestParams:
        greedy = sampling.greedy
        return RequestParams(max_tokens=sampling.max_new_tokens, api=self.api,
                             temperature=0.0 if greedy else sampling.temperature,
                             top_p=1.0 if greedy else sampling.top_p, top_k=0 if greedy else sampling.top_k,
                             seed=None if greedy else sampling.seed, timeouts=self.timeouts)

    def generate(self, batch: list[list[int]], sampling: Sampling,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """One streamed request per prompt; Generations in order, ttft_s per request, batch_latency_s = wall time."""
        sampling.validate()
        if sampling.num_beams != 1:
            raise ConfigError("the openai backend decodes one beam per request; use --num-beams 1")
        params = self.params(sampling)
        params.validate()
        prompts = [self.prompt_text(ids) for ids in batch]
        start = time.perf_counter()
        records = asyncio.run(self._run(prompts, params, on_token))
        wall = time.perf_counter() - start
        self.last_records = records
        failed = [r for r in records if not r.ok]
        if failed:
            endpoint = completions_url(self.base_url, self.api)
            first = failed[0].error.removeprefix(f"{endpoint}: ")
            raise ServerError(f"{len(failed)} of {len(records)} request(s) to {endpoint} failed; first: {first}")
        gens = []
        for ids, rec in zip(batch, records, strict=True):
            tokens = list(self.tokenizer(rec.text, add_special_tokens=False)["input_ids"])
            rec.text_tokens = len(tokens)
            gens.append(Generation(
                prompt_tokens=rec.usage_prompt_tokens if rec.usage_prompt_tokens is not None else len(ids),
                tokens=tokens, text=rec.text, finish_reason=rec.finish_reason or "stop", batch_latency_s=wall,
                ttft_s=rec.ttft_s,
                extra={"e2e_s": rec.e2e_s, "server_completion_tokens": rec.usage_completion_tokens,
                       "chunks": len(rec.chunk_s)}))
        return gens

    async def _run(self, prompts: list[str], params: RequestParams,
                   on_token: TokenCallback | None) -> list[RequestRecord]:
        client = make_client(self.base_url, params.timeouts)
        gate = asyncio.Semaphore(self.concurrency)
        t0 = time.perf_counter()

        def emitter(row: int):
            if on_token is None:
                return None
            return lambda piece: [on_token(row, t) for t in self.tokenizer(piece, add_special_tokens=False)["input_ids"]]

        async def one(i: int, prompt: str) -> RequestRecord:
            async with gate:
                rec = RequestRecord(index=i, prompt_id=str(i))
                return await stream_request(client, self.served_model, prompt, params, rec, t0, emitter(i))

        try:
            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
        finally:
            await client.close()
