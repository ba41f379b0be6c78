"""MODEL_MAP entries trt-minitron's checkpoints use (tensorrt_llm/models/__init__.py, index file id 820782731):
LlamaForCausalLM -> LLaMAForCausalLM; GPTForCausalLM and NemotronForCausalLM -> GPTForCausalLM."""

from .gpt import GPTConfig, GPTForCausalLM
from .llama import LLaMAConfig, LLaMAForCausalLM
from .modeling_utils import PretrainedConfig, PretrainedModel

MODEL_MAP = {
    "GPTForCausalLM": GPTForCausalLM,
    "NemotronForCausalLM": GPTForCausalLM,
    "LlamaForCausalLM": LLaMAForCausalLM,
}

__all__ = ["MODEL_MAP", "PretrainedConfig", "PretrainedModel", "GPTConfig", "GPTForCausalLM", "LLaMAConfig",
           "LLaMAForCausalLM"]
