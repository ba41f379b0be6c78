"""`trt-minitron build` (run.py: build, dry_run): a TensorRT-LLM checkpoint to engines through TensorRT-LLM's
Python build API (api.py, the one module that calls it), with the memory plan (plan.py) checked first."""
