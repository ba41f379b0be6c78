"""MODEL_MAP entries of the two classes the fake models, transcribed from tensorrt_llm/models/__init__.py (index
file id 820782731): every key mapped to LLaMAForCausalLM or GPTForCausalLM there (MistralForCausalLM included)."""

from .gpt import GPTConfig, GPTForCausalLM
from .llama import LLaMAConfig, LLaMAForCausalLM
from .modeling_utils import PretrainedConfig, PretrainedModel

_GPT = ("GPT2LMHeadModel", "GPT2LMHeadCustomModel", "GPTBigCodeForCausalLM", "Starcoder2ForCausalLM",
        "FuyuForCausalLM", "Kosmos2ForConditionalGeneration", "JAISLMHeadModel", "GPTForCausalLM",
        "NemotronForCausalLM")
_LLAMA = ("LlamaForCausalLM", "LlavaLlamaModel", "ExaoneForCausalLM", "MistralForCausalLM", "MixtralForCausalLM",
          "ArcticForCausalLM", "InternLMForCausalLM", "InternLM2ForCausalLM", "InternLMXComposer2ForCausalLM",
          "GraniteForCausalLM", "GraniteMoeForCausalLM", "SkyworkForCausalLM")
MODEL_MAP = {**{name: GPTForCausalLM for name in _GPT}, **{name: LLaMAForCausalLM for name in _LLAMA}}

__all__ = ["MODEL_MAP", "PretrainedConfig", "PretrainedModel", "GPTConfig", "GPTForCausalLM", "LLaMAConfig",
           "LLaMAForCausalLM"]
