"""Bad input to ``ggufkit convert``: one clear GGUFKitError line, exit status 1, and no output file.

Each case builds a broken variant of the deci-tiny checkpoint (unchanged files are symlinked).
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ggufkit.cli import main
from ggufkit.convert import base as convert_base
from ggufkit.convert import convert
from ggufkit.errors import GGUFKitError

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def variant(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a checkpoint dir: symlinks to every file except those in ``skip``."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).symlink_to(f)
    return dst


def edit_json(d: Path, name: str, fn) -> None:
    obj = json.loads((d / name).read_text())
    fn(obj)
    (d / name).unlink()
    (d / name).write_text(json.dumps(obj))


def rewrite_shard(src: Path, dst: Path, fn) -> None:
    """Copy a safetensors shard with its header dict edited by ``fn``."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    fn(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])


def assert_fails(model_dir: Path, out_dir: Path, *message_parts: str) -> None:
    out = out_dir / "out.gguf"
    with pytest.raises(GGUFKitError) as e:
        convert(model_dir, out, "f16")
    msg = str(e.value)
    assert "\n" not in msg
    for part in message_parts:
        assert part in msg, msg
    assert not out.exists()
    assert not list(out_dir.glob(".out.gguf*")), "temporary file left behind"


def test_missing_shard(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    assert_fails(d, tmp_path, "missing shard", SHARD2)


def test_truncated_shard(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    raw = (deci_ckpt / SHARD2).read_bytes()
    (d / SHARD2).write_bytes(raw[: len(raw) // 2])
    assert_fails(d, tmp_path, "corrupt shard", SHARD2)


def test_garbage_shard_header(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    (d / SHARD2).write_bytes(struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 64)
    assert_fails(d, tmp_path, "corrupt shard", SHARD2)


def test_tensor_missing_from_shard(deci_ckpt, tmp_path):
    """The index lists a tensor that no shard holds."""
    d = variant(deci_ckpt, tmp_path / "m", skip=("model.safetensors.index.json",))
    (d / "model.safetensors.index.json").write_text((deci_ckpt / "model.safetensors.index.json").read_text())
    edit_json(d, "model.safetensors.index.json",
              lambda o: o["weight_map"].__setitem__("model.layers.0.mlp.extra_proj.weight", SHARD1))
    assert_fails(d, tmp_path, "model.layers.0.mlp.extra_proj.weight", "missing")


def test_tensor_missing_from_index(deci_ckpt, tmp_path):
    """A shard holds a tensor the index does not list."""
    d = variant(deci_ckpt, tmp_path / "m", skip=("model.safetensors.index.json",))
    (d / "model.safetensors.index.json").write_text((deci_ckpt / "model.safetensors.index.json").read_text())
    edit_json(d, "model.safetensors.index.json", lambda o: o["weight_map"].pop("model.norm.weight"))
    assert_fails(d, tmp_path, "model.norm.weight", "index")


def test_required_tensor_absent(deci_ckpt, tmp_path):
    """Index and shards agree, but a weight the config needs is not there."""
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2, "model.safetensors.index.json"))
    rewrite_shard(deci_ckpt / SHARD2, d / SHARD2, lambda h: h.pop("model.norm.weight"))
    (d / "model.safetensors.index.json").write_text((deci_ckpt / "model.safetensors.index.json").read_text())
    edit_json(d, "model.safetensors.index.json", lambda o: o["weight_map"].pop("model.norm.weight"))
    assert_fails(d, tmp_path, "model.norm.weight", "missing")


def test_shape_disagrees_with_config(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=("config.json",))
    (d / "config.json").write_text((deci_ckpt / "config.json").read_text())
    edit_json(d, "config.json", lambda c: c["block_configs"][0]["ffn"].__setitem__("ffn_mult", 2.5))
    assert_fails(d, tmp_path, "model.layers.0.mlp.", "shape", "config.json")


def test_kv_heads_disagree_with_config(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=("config.json",))
    (d / "config.json").write_text((deci_ckpt / "config.json").read_text())
    edit_json(d, "config.json", lambda c: c["block_configs"][1]["attention"].__setitem__("n_heads_in_group", 4))
    assert_fails(d, tmp_path, "model.layers.1.self_attn.k_proj.weight", "shape")


def test_unknown_architecture(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=("config.json",))
    (d / "config.json").write_text((deci_ckpt / "config.json").read_text())
    edit_json(d, "config.json", lambda c: c.__setitem__("architectures", ["MambaForCausalLM"]))
    assert_fails(d, tmp_path, "unknown architecture", "MambaForCausalLM")


def test_unsupported_dtype(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    rewrite_shard(deci_ckpt / SHARD2, d / SHARD2, lambda h: h["model.norm.weight"].__setitem__("dtype", "I16"))
    assert_fails(d, tmp_path, "unsupported dtype I16", "model.norm.weight")


@pytest.mark.parametrize("fname", ["pytorch_model.bin", "consolidated.pth", "model.pt"])
def test_pickle_refused(deci_ckpt, tmp_path, fname):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").symlink_to(deci_ckpt / "config.json")
    marker = tmp_path / "unpickled"
    # a pickle that would create `marker` if anything unpickled it
    payload = b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."
    (d / fname).write_bytes(payload)
    assert_fails(d, tmp_path, "refusing pickle checkpoint", fname)
    assert not marker.exists()


def test_missing_config(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=("config.json",))
    assert_fails(d, tmp_path, "config.json not found")


def test_interrupted_convert_leaves_nothing(deci_ckpt, tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing tensor data: no OUT file and no temporary file."""
    real = convert_base.tensor_chunks
    calls = {"n": 0}

    def interrupted(t):
        for chunk in real(t):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(convert_base, "tensor_chunks", interrupted)
    out = tmp_path / "out.gguf"
    with pytest.raises(KeyboardInterrupt):
        convert(deci_ckpt, out, "f16")
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))


def test_existing_output_untouched_on_failure(deci_ckpt, tmp_path):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous")
    with pytest.raises(GGUFKitError):
        convert(d, out, "f16")
    assert out.read_bytes() == b"previous"


def test_cli_error_one_line_exit_1(deci_ckpt, tmp_path, capsys):
    d = variant(deci_ckpt, tmp_path / "m", skip=(SHARD2,))
    with pytest.raises(SystemExit) as e:
        main(["convert", str(d), "-o", str(tmp_path / "out.gguf"), "--outtype", "q8_0"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: missing shard") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out.gguf").exists()


def test_cli_subprocess_exit_code(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    res = subprocess.run([sys.executable, "-m", "ggufkit", "convert", str(d), "-o", str(tmp_path / "o.gguf")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == "error: refusing pickle checkpoint pytorch_model.bin (it could run arbitrary code); " \
                                 "convert it to safetensors first"
    assert not (tmp_path / "o.gguf").exists()
