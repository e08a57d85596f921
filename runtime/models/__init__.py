"""One small file per architecture; ``ARCHS`` maps general.architecture to its module."""
from runtime.models import deci, gemma2, gemma3, llama, mistral3, phi3, qwen2, qwen3

ARCHS = {"llama": llama, "deci": deci, "gemma3": gemma3, "qwen2": qwen2, "qwen3": qwen3, "phi3": phi3,
         "gemma2": gemma2, "mistral3": mistral3}
