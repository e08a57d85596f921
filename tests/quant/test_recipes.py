"""quant/recipes.py against llama-quantize's own type choices (golden, from tools/golden/gen_recipe_golden.py).

Every llama-quantize file type on five models (the deci-tiny and llama-tiny fixtures, the
Super-49B layer structure, an 80-layer GQA llama, and a llama with odd row lengths), plain,
``--pure`` and with an imatrix, plus --tensor-type / --output-tensor-type /
--token-embedding-type / --leave-output-tensor cases.
"""
from __future__ import annotations

import gzip
import json

import pytest

from quant.errors import QuantError
from quant.recipes import (
    QUANT_OPTIONS, QuantOptions, TensorIn, dynamic_gate, dynamic_gate_edge, model_info,
    parse_ftype, parse_tensor_type, parse_type, plan_types, tensor_order, use_more_bits,
)
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "recipes"
MODELS = sorted(p.name[: -len(".json.gz")] for p in GOLDEN.glob("*.json.gz"))


def load(model: str) -> dict:
    with gzip.open(GOLDEN / f"{model}.json.gz") as f:
        return json.load(f)


def options_from_args(args: list[str]) -> QuantOptions:
    kw: dict = {"tensor_types": []}
    it = iter(args)
    for a in it:
        if a == "--pure":
            kw["pure"] = True
        elif a == "--leave-output-tensor":
            kw["leave_output_tensor"] = True
        elif a == "--tensor-type":
            kw["tensor_types"].append(parse_tensor_type(next(it)))
        elif a == "--output-tensor-type":
            kw["output_tensor_type"] = parse_type(next(it))
        elif a == "--token-embedding-type":
            kw["token_embedding_type"] = parse_type(next(it))
        else:
            raise AssertionError(a)
    kw["tensor_types"] = tuple(kw["tensor_types"])
    return QuantOptions(**kw)


def plan(doc: dict, case: str):
    ftype_name, mode = case.split("/")
    tensors = [TensorIn(n, tuple(s), t) for n, s, t in doc["tensors"]]
    tensors = [tensors[i] for i in tensor_order([t.name for t in tensors])]
    model = model_info(doc["kv"], has_imatrix=mode == "imatrix")
    if mode in ("plain", "imatrix"):
        opts = QuantOptions()
    elif mode == "pure":
        opts = QuantOptions(pure=True)
    else:
        opts = options_from_args(doc["option_cases"][mode])
    return tensors, plan_types(tensors, model, parse_ftype(ftype_name), opts)


@pytest.mark.parametrize("model", MODELS)
def test_types_match_llama_quantize(model):
    doc = load(model)
    assert len(doc["cases"]) >= 3 * len(QUANT_OPTIONS)
    mismatches = []
    for case, expected in doc["cases"].items():
        try:
            tensors, plans = plan(doc, case)
        except QuantError as e:
            got = f"error: {e}"
            if got != expected:
                mismatches.append((case, "error", got, expected))
            continue
        if isinstance(expected, str):
            mismatches.append((case, "expected error", expected, "got a plan"))
            continue
        assert [t.name for t in tensors] == doc["order"], "tensor order differs from llama.cpp"
        for p, want in zip(plans, expected):
            if p.dst_type != want:
                mismatches.append((case, p.name, p.dst_type, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


def test_golden_covers_every_file_type_and_the_fixtures():
    assert {"deci-tiny", "llama-tiny", "deci-super49b", "llama-odd"} <= set(MODELS)
    doc = load("deci-tiny")
    for name, _, _ in QUANT_OPTIONS:
        for mode in ("plain", "pure", "imatrix"):
            assert f"{name}/{mode}" in doc["cases"]


def test_deci_attn_v_counts_only_attention_layers():
    # Super-49B: 49 attention layers -> use_more_bits runs over 49 attn_v, not 80 blocks
    doc = load("deci-super49b")
    tensors, plans = plan(doc, "Q4_K_M/plain")
    attn_v = [p for p in plans if p.name.endswith("attn_v.weight")]
    assert len(attn_v) == 49
    want = ["Q6_K" if use_more_bits(i, 49) else "Q5_K" for i in range(49)]  # 70B: Q4_K -> Q5_K
    assert [p.dst_type for p in attn_v] == want


def test_use_more_bits_schedule():
    assert [i for i in range(16) if use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]


def test_parse_ftype_names_numbers_and_aliases():
    assert parse_ftype("q4_k_m").ftype == 15
    assert parse_ftype("Q4_K").canonical == "Q4_K_M"
    assert parse_ftype("15").name == "Q4_K"       # first entry with that id, as llama-quantize
    assert parse_ftype("0").name == "F32" and not parse_ftype("0").only_copy
    assert parse_ftype("COPY").only_copy
    assert parse_ftype("MXFP4_MOE").default_type == "MXFP4"
    with pytest.raises(QuantError, match="invalid ftype"):
        parse_ftype("Q9_K")
    with pytest.raises(QuantError, match="invalid ggml_type"):
        parse_type("q7_0")
    with pytest.raises(QuantError, match="malformed"):
        parse_tensor_type("attn_v")


# --- the dynamic-gate recipe ----------------------------------------------------------------------

def _gate_plan(model: str, n_edge_expected: int):
    doc = load(model)
    tensors = [TensorIn(n, tuple(s), t) for n, s, t in doc["tensors"]]
    info = model_info(doc["kv"], has_imatrix=True)
    assert dynamic_gate_edge(info.n_layer) == n_edge_expected
    plans = plan_types(tensors, info, parse_ftype("IQ2_XXS"), QuantOptions(recipe="dynamic-gate"))
    return info, {p.name: p for p in plans}


def test_dynamic_gate_on_deci_uneven_layers():
    # deci-tiny: 7 blocks; edge = 2 -> blocks 0,1 and 5,6 IQ4_XS; 2,3,4 middle.
    # block 2 has no attention, block 3 only a linear attn_output, block 5 nothing at all.
    info, p = _gate_plan("deci-tiny", 2)
    assert p["token_embd.weight"].dst_type == "Q5_K"
    assert p["output.weight"].dst_type == "Q5_K"
    for i in (0, 1, 6):
        for w in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            assert p[f"blk.{i}.{w}.weight"].dst_type == "IQ4_XS"
    assert p["blk.2.ffn_gate.weight"].dst_type == "IQ2_XXS"
    assert p["blk.2.ffn_up.weight"].dst_type == "IQ2_XXS"
    assert p["blk.2.ffn_down.weight"].dst_type == "IQ3_S"
    assert "blk.2.attn_q.weight" not in p
    assert p["blk.3.attn_output.weight"].dst_type == "IQ3_S"      # linear attention
    assert p["blk.4.attn_v.weight"].dst_type == "IQ3_S"
    assert p["blk.4.ffn_up.weight"].dst_type == "IQ2_XXS"
    assert not any(n.startswith("blk.5.") for n in p)
    assert p["blk.0.attn_norm.weight"].dst_type == "F32"          # norms stay
    assert p["blk.2.ffn_gate.weight"].requires_imatrix
    assert not p["blk.0.ffn_gate.weight"].requires_imatrix


def test_dynamic_gate_on_super49b_and_odd_rows():
    info, p = _gate_plan("deci-super49b", 20)
    bands = {}
    for n, pl in p.items():
        if n.startswith("blk.") and n.endswith("ffn_up.weight"):
            bands[int(n.split(".")[1])] = pl.dst_type
    assert [i for i, t in sorted(bands.items()) if t == "IQ4_XS"] == [*range(20), *range(60, 80)]
    assert all(bands[i] == "IQ2_XXS" for i in range(20, 60))
    assert "blk.45.attn_v.weight" not in p                        # attention-free layer
    assert p["blk.41.attn_v.weight"].dst_type == "IQ3_S"
    # odd rows: IQ types fall back to IQ4_NL / F16 as llama.cpp's rule says
    info, p = _gate_plan("llama-odd", 2)
    assert p["blk.0.attn_q.weight"].dst_type == "IQ4_NL"          # 320 columns
    assert p["blk.0.ffn_down.weight"].dst_type == "F16"           # 400 columns
    assert p["token_embd.weight"].dst_type == "Q5_1"              # tied, Q5_K -> Q5_1 for 320


def test_dynamic_gate_direct_call_and_conflicts():
    from quant.recipes import LayerInfo, ModelInfo
    m = ModelInfo(n_layer=4)
    layer = LayerInfo(shape=(256, 256))
    assert [dynamic_gate(f"blk.{i}.ffn_gate.weight", layer, m) for i in range(4)] == \
        ["IQ4_XS", "IQ2_XXS", "IQ2_XXS", "IQ4_XS"]
    with pytest.raises(QuantError, match="a pure quantization and a recipe"):
        plan_types([], m, parse_ftype("IQ2_XXS"), QuantOptions(recipe="dynamic-gate", pure=True))
    with pytest.raises(QuantError, match="unknown recipe"):
        plan_types([], m, parse_ftype("IQ2_XXS"), QuantOptions(recipe="nope"))
