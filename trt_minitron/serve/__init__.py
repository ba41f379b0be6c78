"""`trt-minitron serve` (run.py: run_server): start trtllm-serve or transformers serve on an engine or Hugging
Face folder (routes.py decides the command line), wait for /health, stop it cleanly."""
