"""`trt-minitron summarize` (run.py: run_summarize): CNN/DailyMail summaries from one or more backends,
ROUGE with intervals, timing, paired comparison, the JSON report."""
