"""One small file per architecture; ``ARCHS`` maps general.architecture to its module."""
from runtime.models import deci, gemma3, llama

ARCHS = {"llama": llama, "deci": deci, "gemma3": gemma3}
