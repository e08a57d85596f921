"""Code the tests share (and the tools under tools/ that make or check the tests' data).

  tiny_models      the tiny GGUF builders (on gguf-py's writer and ggufkit.synthetic), the CUDA model cases
  quantize_cases   a tiny llama GGUF and the llama-quantize cases run on it (tests/golden/quantize)
  vocab_cases      vocab metadata builders and hard texts for the tokenizer goldens
  super49b_header  a header-only GGUF with Nemotron-Super-49B's real block configuration
  qtensors         random quantized blocks with sane fp16 scales, for kernel tests and benchmarks
  quant_backends   quant's numpy reference and Numba kernels agree bit for bit on one input

REPO, GOLDENS and DATA are the repository root, the committed goldens and the committed input files."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDENS = REPO / "tests" / "golden"
DATA = REPO / "tests" / "data"
