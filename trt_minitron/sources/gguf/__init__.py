"""GGUF files (llama.cpp): the header and tensor index (format.py), block dequantization streamed row by row
(dequant.py), the HF config.json a file implies (config.py), its tokenizer (tokenizer.py), and the Source
(source.py)."""
