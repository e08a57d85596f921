"""Mistral 3 / Ministral 3 text model (llama.cpp ``src/models/mistral3.cpp``): Llama (NORM RoPE,
Q/K permuted at conversion) with YaRN rope scaling and optional llama4-style attention
temperature scaling of Q by position:

    q *= 1 + attention.temperature_scale * log(floor(pos / n_ctx_orig) + 1)

(n_ctx_orig = rope.scaling.original_context_length). Dense FFN only (MoE variants are not run).
Plain Mistral 7B / Nemo GGUFs are written as arch ``llama`` and run as llama.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dc_fields

import numpy as np

from runtime.errors import ModelError
from runtime.models import llama
from runtime.models.base import Hparams


@dataclass(frozen=True)
class Hparams3(Hparams):
    temp_scale: float = 0.0            # attention.temperature_scale (0: off)
    temp_floor: int = 0                # n_ctx_orig_yarn


def read_hparams(fields: dict, tensors: dict) -> Hparams3:
    if int(fields.get("mistral3.expert_count", 0) or 0) > 0:
        raise ModelError("mistral3 with experts (MoE) is not supported")
    h = llama.read_hparams(fields, tensors, arch="mistral3")
    scale = float(fields.get("mistral3.attention.temperature_scale", 0.0))
    floor = int(fields.get("mistral3.rope.scaling.original_context_length", h.n_ctx_train))
    if scale and not floor:
        raise ModelError("invalid n_ctx_orig_yarn for attention temperature scaling")
    return Hparams3(**{f.name: getattr(h, f.name) for f in dc_fields(Hparams)}, temp_scale=scale, temp_floor=floor)


class Model(llama.Model):
    step_style = None          # not llama's layer (runtime.step runs the per-op path)
    def rope_qk(self, il, q, k, pos, cache):
        q, k = super().rope_qk(il, q, k, pos, cache)
        hp = self.hp
        if hp.temp_scale:
            s = np.log(np.floor(pos.astype(np.float32) / np.float32(hp.temp_floor)) + 1.0) * hp.temp_scale + 1.0
            be = self.backend(il)
            q = be.from_host((be.to_host(q) * s.astype(np.float32)[:, None, None]).astype(np.float32))
        return q, k
