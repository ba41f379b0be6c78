"""What trt-minitron knows about TensorRT-LLM beyond one command: which generation is installed (install.py, read
from its files), what a model folder is to it (folders.py: an engine or a Hugging Face folder), and the LLM API
settings a Hugging Face or unified checkpoint implies (llmapi_args.py)."""
