"""`trt-minitron export` (run.py: run_export): plan every output tensor from the source's shapes, then write
rank files in one streaming pass (transfer.py), or an unsharded Hugging Face checkpoint (hf_writer.py)."""
