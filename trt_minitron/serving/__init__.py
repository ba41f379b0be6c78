"""Serving: start trtllm-serve / transformers serve (launch), talk to any OpenAI-compatible server (client),
and measure it under load (bench, stats, report)."""
