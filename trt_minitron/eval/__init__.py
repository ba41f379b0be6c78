"""The CNN/DailyMail task shared by summarize, bench, quantize (calibration) and verify (quantized checkpoints):
records from the hub or a file and prompt token ids (data.py); ROUGE, bootstrap intervals and latency
statistics (metrics.py)."""
