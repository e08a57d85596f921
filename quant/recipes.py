"""Tensor-type recipes: which ggml type each tensor of a model gets.

A recipe is a function ``(tensor name, layer info, model info) -> type name``. The llama.cpp
file types (Q4_K_M, IQ2_XS, ...) are one recipe family, a port of ``llama_tensor_get_type_impl``
in llama.cpp's ``src/llama-quant.cpp``; ``dynamic-gate`` is the seed's IQ-DynamicGate allocation.

``plan_types`` is the outer wrapper (``llama_tensor_get_type``): which tensors are quantized at
all, ``--token-embedding-type`` / ``--output-tensor-type``, ``--tensor-type`` regex overrides,
``--pure``, the running per-category counters, the block-size fallback, and the imatrix
requirement. It works on names, shapes and a few hyperparameters only, so it needs no tensor data.

Type names are ggml's, upper-cased ("Q4_K", "IQ2_XXS", "F16"); block sizes come from the one type
table in ``quant.types``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from quant.errors import QuantError
from quant.types import FTYPE_IDS, FTYPE_NAMES, TYPES, get_type  # noqa: F401 (re-exported)

# --- file types: llama-quantize's QUANT_OPTIONS, in its order -----------------------------------
# (name, llama_ftype id, default tensor type). Aliases share an id; a number given on the command
# line resolves to the first entry with that id, as llama-quantize's try_parse_ftype does.
QUANT_OPTIONS: tuple[tuple[str, int, str], ...] = (
    ("Q1_0", 40, "Q1_0"),
    ("Q2_0", 41, "Q2_0"),
    ("Q4_0", 2, "Q4_0"),
    ("Q4_1", 3, "Q4_1"),
    ("MXFP4_MOE", 38, "MXFP4"),
    ("Q5_0", 8, "Q5_0"),
    ("Q5_1", 9, "Q5_1"),
    ("IQ2_XXS", 19, "IQ2_XXS"),
    ("IQ2_XS", 20, "IQ2_XS"),
    ("IQ2_S", 28, "IQ2_XS"),
    ("IQ2_M", 29, "IQ2_S"),
    ("IQ1_S", 24, "IQ1_S"),
    ("IQ1_M", 31, "IQ1_M"),
    ("TQ1_0", 36, "TQ1_0"),
    ("TQ2_0", 37, "TQ2_0"),
    ("Q2_K", 10, "Q2_K"),
    ("Q2_K_S", 21, "Q2_K"),
    ("IQ3_XXS", 23, "IQ3_XXS"),
    ("IQ3_S", 26, "IQ3_S"),
    ("IQ3_M", 27, "IQ3_S"),
    ("Q3_K", 12, "Q3_K"),      # alias for Q3_K_M
    ("IQ3_XS", 22, "IQ3_S"),
    ("Q3_K_S", 11, "Q3_K"),
    ("Q3_K_M", 12, "Q3_K"),
    ("Q3_K_L", 13, "Q3_K"),
    ("IQ4_NL", 25, "IQ4_NL"),
    ("IQ4_XS", 30, "IQ4_XS"),
    ("Q4_K", 15, "Q4_K"),      # alias for Q4_K_M
    ("Q4_K_S", 14, "Q4_K"),
    ("Q4_K_M", 15, "Q4_K"),
    ("Q5_K", 17, "Q5_K"),      # alias for Q5_K_M
    ("Q5_K_S", 16, "Q5_K"),
    ("Q5_K_M", 17, "Q5_K"),
    ("Q6_K", 18, "Q6_K"),
    ("Q8_0", 7, "Q8_0"),
    ("F16", 1, "F16"),
    ("BF16", 32, "BF16"),
    ("F32", 0, "F32"),
    ("COPY", 0, "F32"),        # after F32 so that "0" means F32; COPY keeps every tensor as is
)

# llama_ftype names/ids (FTYPE_NAMES, FTYPE_IDS) and ggml types (TYPES): the one table, quant.types
NOT_QUANTIZED = frozenset(name for name, t in TYPES.items() if not t.is_quantized)


@dataclass(frozen=True)
class FileType:
    name: str           # as written by the user / llama-quantize's table ("Q4_K" is Q4_K_M's alias)
    ftype: int          # llama_ftype, written to general.file_type
    default_type: str   # the tensor type of the mixture's bulk
    only_copy: bool = False

    @property
    def canonical(self) -> str:
        """The name the mixing rules use ("Q4_K_M" for the alias "Q4_K")."""
        return FTYPE_NAMES[self.ftype] if not self.only_copy else "COPY"


def parse_ftype(text: str) -> FileType:
    """llama-quantize's ``try_parse_ftype``: a name (any case) or a llama_ftype number."""
    s = str(text).strip()
    for name, fid, default in QUANT_OPTIONS:
        if name.lower() == s.lower():
            return FileType(name, fid, default, only_copy=name == "COPY")
    m = re.match(r"\s*[+-]?\d+", s)  # std::stoi takes a numeric prefix
    if m:
        n = int(m.group(0))
        for name, fid, default in QUANT_OPTIONS:
            if fid == n:
                return FileType(name, fid, default, only_copy=name == "COPY")
    raise QuantError(f"invalid ftype '{text}' (known: {', '.join(n for n, _, _ in QUANT_OPTIONS)})")


def parse_type(text: str) -> str:
    """A ggml type name, case-insensitive, as llama-quantize's ``parse_ggml_type``."""
    for name in TYPES:
        if name.lower() == str(text).strip().lower():
            return name
    raise QuantError(f"invalid ggml_type '{text}'")


def is_quantized(type_name: str) -> bool:
    return type_name not in NOT_QUANTIZED


def block_size(type_name: str) -> int:
    """Elements per block, from the type table (F16/F32/BF16: 1)."""
    return int(get_type(type_name).block_size)


# --- tensor categories (tensor_get_category) ----------------------------------------------------

TOKEN_EMBD, ATTN_Q, ATTN_V, ATTN_K, ATTN_QKV, ATTN_KV_B, ATTN_OUTPUT = (
    "token_embd", "attn_q", "attn_v", "attn_k", "attn_qkv", "attn_kv_b", "attn_output")
FFN_UP, FFN_GATE, FFN_DOWN, OUTPUT, OTHER = "ffn_up", "ffn_gate", "ffn_down", "output", "other"

# checked in this order; (category, substring). Exact names first.
_CATEGORY_SUBSTRINGS = (
    (ATTN_QKV, "attn_qkv.weight"), (ATTN_KV_B, "attn_kv_b.weight"), (ATTN_V, "attn_v.weight"),
    (ATTN_K, "attn_k.weight"), (ATTN_Q, "attn_q.weight"), (ATTN_OUTPUT, "attn_output.weight"),
    (FFN_UP, "ffn_up"), (FFN_GATE, "ffn_gate"), (FFN_DOWN, "ffn_down"),
)
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")


def category(name: str) -> str:
    if name == "output.weight":
        return OUTPUT
    if name in TOKEN_EMBD_NAMES:
        return TOKEN_EMBD
    for cat, sub in _CATEGORY_SUBSTRINGS:
        if sub in name:
            return cat
    return OTHER


def is_attn_v_like(cat: str) -> bool:
    return cat in (ATTN_V, ATTN_QKV, ATTN_KV_B)


# --- which tensors are quantized at all (tensor_allows_quantization) ---------------------------

# substrings that keep a tensor in its input type (norms, routers, tiny or positional tensors)
_KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
    ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_KEEP_NAMES = ("position_embd.weight", "token_types.weight")


def ggml_n_dims(shape: Sequence[int]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count; at least 1. shape is ne order."""
    n = 1
    for i, d in enumerate(shape):
        if d > 1:
            n = i + 1
    return n


def allows_quantization(name: str, shape: Sequence[int], *, only_copy: bool = False,
                        quantize_output_tensor: bool = True) -> bool:
    """llama.cpp's tensor_allows_quantization (glm5-next's extra exclusions are not ported)."""
    if only_copy or ggml_n_dims(shape) < 2:
        return False
    if not name.endswith("weight"):
        return False
    if not quantize_output_tensor and name == "output.weight":
        return False
    if name in _KEEP_NAMES:
        return False
    return not any(s in name for s in _KEEP_SUBSTRINGS)


# --- model and layer info -----------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    """What the mixing rules read from the model (hparams) and from the run."""
    arch: str = "llama"
    n_layer: int = 0            # block_count (n_layer_all): n_ffn_down = n_ffn_gate = n_ffn_up
    n_gqa: int = 0              # n_head(0) // n_head_kv(0); 0 when layer 0 has no KV heads
    n_expert: int = 0
    is_70b: bool = False        # llama.cpp's LLM_TYPE_70B (attn_v gets Q5_K instead of Q3_K/Q4_K)
    has_imatrix: bool = False
    tied_embeddings: bool = True  # no output.weight in the file


@dataclass(frozen=True)
class LayerInfo:
    """Where a tensor sits: its shape (ggml ne order) and the running per-category counters.

    The counters are llama.cpp's ``qs.i_attention_wv`` etc.: how many tensors of that category
    went through the mixing rules before this one (file order). For DeciLM ``n_attention_wv``
    counts only layers that have attention; ``n_layer`` counts every block.
    """
    shape: tuple[int, ...]
    i_attention_wv: int = 0
    n_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0
    n_layer: int = 0


Recipe = Callable[[str, LayerInfo, ModelInfo], str]



def layer_of(name: str) -> int:
    """``sscanf(name, "blk.%d.")``; -1 for tensors outside the blocks."""
    m = re.match(r"blk\.\s*([+-]?\d+)", name)
    return int(m.group(1)) if m else -1


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    # C integer division truncates toward zero; (i - n/8) % 3 is C's remainder (sign of dividend)
    a = i_layer - _cdiv(n_layers, 8)
    return i_layer < _cdiv(n_layers, 8) or i_layer >= _cdiv(7 * n_layers, 8) or _cmod(a, 3) == 2


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cmod(a: int, b: int) -> int:
    return a - b * _cdiv(a, b)


# --- the llama.cpp mixture (llama_tensor_get_type_impl) ------------------------------------------

_IQ2_FAMILY = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")


def llama_mix(ftype: str, default_type: str, *, output_tensor_type: str | None = None,
              token_embedding_type: str | None = None) -> Recipe:
    """The recipe of llama.cpp file type ``ftype`` (canonical name, e.g. "Q4_K_M")."""

    def recipe(name: str, layer: LayerInfo, model: ModelInfo) -> str:
        return _llama_mix_one(ftype, default_type, name, layer, model,
                              output_tensor_type, token_embedding_type)

    recipe.__name__ = f"llama_mix_{ftype}"
    return recipe


def _layer_index(counter: int, n_layer: int, name: str, model: ModelInfo) -> tuple[int, int]:
    if model.n_expert > 1:  # experts are not consecutive: read the layer from the name
        i = layer_of(name)
        if not re.match(r"blk\.\s*[+-]?\d+", name):
            raise QuantError(f"Failed to determine layer for tensor {name}")
        if i < 0 or i >= n_layer:
            raise QuantError(f"Bad layer {i} for tensor {name}. Must be in [0, {n_layer})")
        return i, n_layer
    return counter, n_layer


def _llama_mix_one(ftype: str, new_type: str, name: str, layer: LayerInfo, model: ModelInfo,
                   output_tensor_type: str | None, token_embedding_type: str | None) -> str:
    cat = category(name)
    arch = model.arch
    gqa = model.n_gqa
    n_exp = model.n_expert

    if cat == OUTPUT or (model.tied_embeddings and cat == TOKEN_EMBD):
        if output_tensor_type is not None:
            return output_tensor_type
        nx = layer.shape[0]
        if ftype == "MXFP4_MOE":
            return "Q8_0"
        if arch == "falcon" or nx % block_size(new_type) != 0:
            return "Q8_0"
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
            return "Q5_K"
        if new_type != "Q8_0":
            return "Q6_K"
        return new_type

    if ftype == "MXFP4_MOE":
        # MoE tensors (3-D experts) -> MXFP4, the rest -> Q8_0 (bailingmoe3 special case not ported)
        return "MXFP4" if len(layer.shape) > 2 and layer.shape[2] > 1 else "Q8_0"

    if cat == TOKEN_EMBD:
        if token_embedding_type is not None:
            return token_embedding_type
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "Q2_K"
        if ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "IQ3_S"
        if ftype in ("TQ1_0", "TQ2_0", "Q2_0"):
            return "Q4_K"
        return new_type

    if ftype in _IQ2_FAMILY:
        if is_attn_v_like(cat):
            if gqa >= 4 or n_exp >= 4:
                return "Q4_K"
            return "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
        if n_exp == 8 and cat == ATTN_K:
            return "Q4_K"
        if cat == FFN_DOWN:
            if layer.i_ffn_down < _cdiv(layer.n_layer, 8):
                return "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
            return new_type
        if cat == ATTN_OUTPUT:
            if n_exp == 8:
                return "Q5_K"
            if ftype in ("IQ1_S", "IQ1_M"):
                return "IQ2_XXS"
            if ftype in ("IQ2_S", "IQ2_M"):
                return "IQ3_S"
        return new_type

    if is_attn_v_like(cat):
        i, n = layer.i_attention_wv, layer.n_attention_wv
        if ftype == "Q2_K":
            new_type = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ftype == "Q2_K_S" and gqa >= 4:
            new_type = "Q4_K"
        elif ftype == "IQ3_XXS":
            new_type = "Q4_K" if gqa >= 4 else ("IQ3_S" if not model.has_imatrix else "IQ3_XXS")
        elif ftype in ("IQ3_XS", "IQ3_S") and gqa >= 4:
            new_type = "Q4_K"
        elif ftype == "IQ3_M":
            new_type = "Q4_K"
        elif ftype == "Q3_K_M":
            new_type = "Q5_K" if i < 2 else "Q4_K"
        elif ftype == "Q3_K_L":
            new_type = "Q5_K"
        elif ftype in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
            new_type = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
            new_type = "Q6_K"
        elif ftype == "Q4_K_S" and i < 4:
            new_type = "Q5_K"
        if model.is_70b and new_type in ("Q3_K", "Q4_K"):
            # 8 heads share attn_v in the 70B: more bits for a small size increase
            new_type = "Q5_K"
        if n_exp == 8:
            new_type = "Q8_0"
        return new_type

    if cat == ATTN_K:
        if n_exp == 8:
            return "Q8_0"
        if ftype == "IQ3_XS":
            return "IQ3_XXS"
        if ftype == "IQ3_XXS":
            return "IQ2_S"
        return new_type

    if cat == ATTN_Q:
        if ftype == "IQ3_XS":
            return "IQ3_XXS"
        if ftype == "IQ3_XXS":
            return "IQ2_S"
        return new_type

    if cat == FFN_DOWN:
        i_layer, n_layer = _layer_index(layer.i_ffn_down, layer.n_layer, name, model)
        n8 = _cdiv(n_layer, 8)
        if ftype == "Q2_K":
            new_type = "Q3_K"
        elif ftype == "Q2_K_S":
            if i_layer < n8:
                new_type = "Q4_K"
        elif ftype == "IQ3_XXS" and not model.has_imatrix:
            new_type = "Q4_K" if i_layer < n8 else "Q3_K"
        elif ftype == "Q3_K_M":
            if i_layer < _cdiv(n_layer, 16):
                new_type = "Q5_K"
            elif arch != "falcon" or use_more_bits(i_layer, n_layer):
                new_type = "Q4_K"
            else:
                new_type = "Q3_K"
        elif ftype == "IQ3_M" and (i_layer < n8 or (n_exp == 8 and use_more_bits(i_layer, n_layer))):
            new_type = "Q4_K"
        elif ftype == "Q3_K_L":
            new_type = "Q4_K" if arch == "falcon" else "Q5_K"
        elif ftype == "Q4_K_M":
            if arch == "falcon":
                new_type = ("Q6_K" if i_layer < _cdiv(n_layer, 16) else
                            "Q5_K" if use_more_bits(i_layer, n_layer) else "Q4_K")
            elif use_more_bits(i_layer, n_layer):
                new_type = "Q6_K"
        elif i_layer < n8 and ftype in ("IQ4_NL", "IQ4_XS") and not model.has_imatrix:
            new_type = "Q5_K"
        elif ftype == "Q5_K_M" and use_more_bits(i_layer, n_layer):
            new_type = "Q6_K"
        elif ftype == "Q4_K_S" and arch != "falcon" and i_layer < n8:
            new_type = "Q5_K"
        elif ftype in ("Q4_0", "Q5_0") and model.has_imatrix and i_layer < n8:
            # guard against craziness in the first ffn_down layers (only with an imatrix)
            new_type = "Q4_1" if ftype == "Q4_0" else "Q5_1"
        return new_type

    if cat == ATTN_OUTPUT:
        if arch != "falcon":
            if n_exp == 8:
                if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S",
                             "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS"):
                    new_type = "Q5_K"
            else:
                new_type = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K",
                            "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(ftype, new_type)
        elif ftype == "Q3_K_L":
            new_type = "Q4_K"
        return new_type

    if cat == ATTN_QKV:
        if ftype in ("Q3_K_M", "Q3_K_L", "IQ3_M"):
            return "Q4_K"
        if ftype == "Q4_K_M":
            return "Q5_K"
        if ftype == "Q5_K_M":
            return "Q6_K"
        return new_type

    if cat in (FFN_GATE, FFN_UP):
        counter = layer.i_ffn_gate if cat == FFN_GATE else layer.i_ffn_up
        i_layer, n_layer = _layer_index(counter, layer.n_layer, name, model)
        if ftype == "IQ3_XS" and _cdiv(n_layer, 8) <= i_layer < _cdiv(7 * n_layer, 8):
            return "IQ3_XXS"
        return new_type

    return new_type


# --- the seed's IQ-DynamicGate allocation -------------------------------------------------------

def dynamic_gate_edge(n_layer: int) -> int:
    """Layers at each end that get IQ4_XS: n_layer/4 rounded half up (80 -> 20, 7 -> 2, 4 -> 1)."""
    return (n_layer + 2) // 4


def dynamic_gate(name: str, layer: LayerInfo, model: ModelInfo) -> str:
    """IQ-DynamicGate: a layer's band is decided by its block index over block_count.

    - token_embd and output: Q5_K;
    - blocks ``i < e`` or ``i >= n_layer - e`` (e = ``dynamic_gate_edge``): every weight IQ4_XS;
    - the middle blocks: attention weights (attn_q/k/v/qkv/output, DeciLM's linear attn_output
      included) and ffn_down IQ3_S; ffn_gate and ffn_up IQ2_XXS; any other 2-D weight IQ3_S.

    DeciLM's uneven layers need no special case: a layer without attention (or FFN) simply has no
    such tensors, and the band comes from the block index, not from a per-category counter.
    """
    cat = category(name)
    if cat in (TOKEN_EMBD, OUTPUT):
        return "Q5_K"
    i = layer_of(name)
    e = dynamic_gate_edge(model.n_layer)
    if i < 0 or i < e or i >= model.n_layer - e:
        return "IQ4_XS"
    if cat in (FFN_GATE, FFN_UP):
        return "IQ2_XXS"
    return "IQ3_S"


RECIPES: dict[str, Recipe] = {"dynamic-gate": dynamic_gate}


# --- a type per tensor: the budgeted allocation's result ----------------------------------------

@dataclass(frozen=True)
class FixedRecipe:
    """A recipe that names every tensor's type (the budgeted allocation's result, ``ggufkit.budget``).

    ``plan_types`` gives each listed tensor its type (with the block-size fallback, as for any
    recipe) and keeps every tensor not listed in its input type. ``tensor_type_lines`` exports it
    as llama-quantize's ``--tensor-type-file``: one anchored pattern per tensor, which makes
    llama-quantize (and ``ggufkit quantize --tensor-type-file``) write the same file."""
    name: str
    types: tuple[tuple[str, str], ...]      # (tensor name, type name), in file order

    def type_of(self, name: str) -> str | None:
        return dict(self.types).get(name)

    def tensor_type_lines(self) -> list[str]:
        return [f"^{re.escape(n).replace(chr(92) + '_', '_')}$={t.lower()}" for n, t in self.types]


def fixed(types, name: str = "allocation") -> FixedRecipe:
    """A ``FixedRecipe`` from {tensor name: type} (or (name, type) pairs)."""
    items = types.items() if hasattr(types, "items") else types
    return FixedRecipe(name, tuple((str(n), parse_type(t)) for n, t in items))


# --- the outer wrapper: plan every tensor's type -------------------------------------------------

@dataclass(frozen=True)
class TensorIn:
    name: str
    shape: tuple[int, ...]   # ggml ne order (ne[0] = row length)
    type: str                # current type name


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    src_type: str
    dst_type: str
    allows_quantization: bool
    requires_imatrix: bool
    fallback: str | None = None   # llama.cpp's warning text when the block-size fallback applied


@dataclass(frozen=True)
class QuantOptions:
    """llama-quantize's options that decide tensor types (names as on its command line)."""
    pure: bool = False
    output_tensor_type: str | None = None     # --output-tensor-type
    token_embedding_type: str | None = None   # --token-embedding-type
    tensor_types: tuple[tuple[str, str], ...] = ()  # --tensor-type PATTERN=TYPE, in order
    leave_output_tensor: bool = False         # --leave-output-tensor
    recipe: "str | FixedRecipe | None" = None  # --recipe NAME (replaces the llama.cpp mixture), or
                                              # a FixedRecipe (a type per tensor)


def parse_tensor_type(arg: str) -> tuple[str, str]:
    """``--tensor-type PATTERN=TYPE``: the pattern is lower-cased, as llama-quantize does."""
    if "=" not in arg:
        raise QuantError(f"malformed tensor type '{arg}'")
    pat, _, typ = arg.partition("=")
    if not pat:
        raise QuantError("missing tensor name")
    if not typ:
        raise QuantError("missing quantization type")
    return pat.lower(), parse_type(typ)


def _compile(pattern: str) -> re.Pattern:
    # std::regex (ECMAScript) and Python re agree on the patterns people write here
    try:
        return re.compile(pattern)
    except re.error as e:
        raise QuantError(f"bad tensor type pattern '{pattern}': {e}") from None


def fallback_type(name: str, ncols: int, target: str) -> tuple[str, str | None]:
    """tensor_type_fallback: a type whose block divides the row length, and the warning."""
    qk = block_size(target)
    if ncols % qk == 0:
        return target, None
    if target in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"):
        ret = "IQ4_NL"
    elif target in ("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"):
        ret = "Q4_0"
    elif target == "Q4_K":
        ret = "Q5_0"
    elif target == "Q5_K":
        ret = "Q5_1"
    elif target == "Q6_K":
        ret = "Q8_0"
    elif qk <= 32:
        ret = target
    else:
        raise QuantError(f"no tensor type fallback is defined for type {target.lower()}")
    note = f"{name}: ncols {ncols} not divisible by {qk} (required for type {target})"
    if ncols % block_size(ret) != 0:
        ret = "F16"
        note += " (must use F16 due to unusual shape)"
    return ret, note + f" -> falling back to {ret}"


# The types llama-quantize will not write without an imatrix (tensor_requires_imatrix), the one
# "needs an imatrix" rule of the tools (quantize, the budgeted allocation). Not to be confused with
# quant.types' QType.refuses_without_imatrix, ggml's narrower ggml_quantize_requires_imatrix
# (IQ2_XXS, IQ2_XS, IQ1_S): the types whose quantizer itself refuses to run without importance weights.
IMATRIX_TYPES = frozenset({"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"})


def requires_imatrix(name: str, dst_type: str, ftype: str) -> bool:
    """tensor_requires_imatrix: the IMATRIX_TYPES, and Q2_K inside a Q2_K_S file (never for the
    token embedding or output.weight)."""
    if name in TOKEN_EMBD_NAMES or name == "output.weight":
        return False
    if dst_type in IMATRIX_TYPES:
        return True
    return dst_type == "Q2_K" and ftype == "Q2_K_S"


def tensor_order(names: Sequence[str]) -> list[int]:
    """llama.cpp's weights_map order: by block number (-1 outside blocks), then by name bytes."""
    return sorted(range(len(names)), key=lambda i: (layer_of(names[i]), names[i].encode()))


def plan_types(tensors: Sequence[TensorIn], model: ModelInfo, ftype: FileType,
               opts: QuantOptions = QuantOptions()) -> list[TensorPlan]:
    """Every tensor's target type, in the given (file) order: llama_tensor_get_type for each.

    ``model.tied_embeddings`` is recomputed here from the tensor names.
    """
    model = replace(model, tied_embeddings=not any(t.name == "output.weight" for t in tensors))
    name = ftype.canonical
    default = ftype.default_type
    patterns = [(_compile(p), t) for p, t in opts.tensor_types]
    fixed_types = dict(opts.recipe.types) if isinstance(opts.recipe, FixedRecipe) else None
    if fixed_types is not None:
        if opts.pure:
            raise QuantError("a pure quantization and a recipe cannot be used together")
        mix = None
    elif opts.recipe is not None:
        if opts.recipe not in RECIPES:
            raise QuantError(f"unknown recipe '{opts.recipe}' (known: {', '.join(RECIPES)})")
        if opts.pure:
            raise QuantError("a pure quantization and a recipe cannot be used together")
        mix = RECIPES[opts.recipe]
    else:
        mix = llama_mix(name, default, output_tensor_type=opts.output_tensor_type,
                        token_embedding_type=opts.token_embedding_type)

    n_attention_wv = sum(is_attn_v_like(category(t.name)) for t in tensors)
    counters = {ATTN_V: 0, FFN_DOWN: 0, FFN_GATE: 0, FFN_UP: 0}
    plans = []
    for t in tensors:
        cat = category(t.name)
        allowed = allows_quantization(t.name, t.shape, only_copy=ftype.only_copy,
                                      quantize_output_tensor=not opts.leave_output_tensor)
        dst, note = t.type, None
        if not allowed:
            pass
        elif fixed_types is not None:
            if t.name in fixed_types:
                dst, note = fallback_type(t.name, t.shape[0], fixed_types[t.name])
        elif opts.token_embedding_type is not None and cat == TOKEN_EMBD and not (
                t.name == "per_layer_token_embd.weight"
                and any(p.search(t.name) for p, _ in patterns)):
            dst = opts.token_embedding_type
        elif opts.output_tensor_type is not None and cat == OUTPUT:
            dst = opts.output_tensor_type
        else:
            dst = default
            if is_quantized(default):
                manual = False
                for p, typ in patterns:
                    if p.search(t.name):
                        dst, manual = typ, True
                        break
                if not manual and not opts.pure:
                    layer = LayerInfo(
                        shape=tuple(t.shape), i_attention_wv=counters[ATTN_V],
                        n_attention_wv=n_attention_wv, i_ffn_down=counters[FFN_DOWN],
                        i_ffn_gate=counters[FFN_GATE], i_ffn_up=counters[FFN_UP],
                        n_layer=model.n_layer)
                    dst = mix(t.name, layer, model)
                    # llama.cpp bumps a category's counter each time the mixing sees one
                    # (in the branches where the counter is ever read; elsewhere it is unused)
                    key = ATTN_V if is_attn_v_like(cat) else cat
                    if key in counters:
                        counters[key] += 1
                dst, note = fallback_type(t.name, t.shape[0], dst)
        plans.append(TensorPlan(
            name=t.name, shape=tuple(t.shape), src_type=t.type, dst_type=dst,
            allows_quantization=allowed, requires_imatrix=requires_imatrix(t.name, dst, name),
            fallback=note))
    return plans


# --- model info from GGUF metadata ---------------------------------------------------------------

def _first(v, default=0) -> int:
    if v is None:
        return default
    if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0):   # arrays: lists or numpy
        return int(v[0]) if len(v) else default
    return int(v)


def model_info(kv: dict, *, has_imatrix: bool = False) -> ModelInfo:
    """ModelInfo from a GGUF's key/values (``quant.gguf.GGUFReader.fields``)."""
    arch = str(kv.get("general.architecture", "llama"))
    n_layer = _first(kv.get(f"{arch}.block_count"), 0)
    n_head = _first(kv.get(f"{arch}.attention.head_count"), 0)
    hkv = kv.get(f"{arch}.attention.head_count_kv")
    n_head_kv = n_head if hkv is None else _first(hkv, 0)
    n_expert = _first(kv.get(f"{arch}.expert_count"), 0)
    n_gqa = n_head // n_head_kv if n_head_kv else 0
    if arch == "llama":
        is_70b = n_expert != 8 and n_layer == 80 and n_head != n_head_kv
    elif arch == "deci":
        is_70b = n_layer == 80
    else:
        is_70b = False
    return ModelInfo(arch=arch, n_layer=n_layer, n_gqa=n_gqa, n_expert=n_expert, is_70b=is_70b,
                     has_imatrix=has_imatrix)
