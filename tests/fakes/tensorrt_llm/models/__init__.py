"""MODEL_MAP entries trt-minitron's checkpoints use (tensorrt_llm/models/__init__.py)."""

from .modeling_utils import PretrainedConfig, PretrainedModel


class GPTForCausalLM(PretrainedModel):
    pass


class LLaMAForCausalLM(PretrainedModel):
    pass


MODEL_MAP = {
    "GPTForCausalLM": GPTForCausalLM,
    "NemotronForCausalLM": GPTForCausalLM,
    "LlamaForCausalLM": LLaMAForCausalLM,
}

__all__ = ["MODEL_MAP", "PretrainedConfig", "PretrainedModel", "GPTForCausalLM", "LLaMAForCausalLM"]
