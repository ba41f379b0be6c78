"""`trt-minitron bench` (run.py: run_bench): load an OpenAI-compatible server with a sweep of concurrencies or
request rates; vLLM's metric definitions (stats.py); the table, JSON report and plot (report.py)."""
