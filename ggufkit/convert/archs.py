"""One small file per architecture; ``ARCHS`` maps a config.json ``architectures`` name to its
module (``model_from_config``, ``write_params``), as ``runtime.models.ARCHS`` does for GGUF archs."""
from ggufkit.convert import deci, llama, qwen2, qwen3

ARCHS = {name: module for module in (llama, deci, qwen2, qwen3) for name in module.HF_ARCHITECTURES}
