"""`trt-minitron generate` (run.py: run_generate): prompts in, completions out, through any backend."""
