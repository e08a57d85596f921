"""One small file per architecture; ``ARCHS`` maps a config.json ``architectures`` name to its
module (``model_from_config``, ``write_params``), as ``runtime.models.ARCHS`` does for GGUF archs."""
from ggufkit.convert import deci, llama

ARCHS = {name: module for module in (llama, deci) for name in module.HF_ARCHITECTURES}
