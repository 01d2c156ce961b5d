"""pgolf.artifact: codecs round-trip and refuse bombs; the container round-trips bit-exactly and
refuses every single-byte corruption, every truncation, pickles and malformed headers with an
ArtifactError; the export driver reloads exactly what the grid dequantizes."""

import ast
import hashlib
import io
import json
import os
import pickle
import struct
import tokenize
import zlib
from pathlib import Path

import pytest
import torch

from pgolf.artifact import codecs
from pgolf.artifact import format as fmt
from pgolf.artifact.format import (
    MAGIC,
    build_artifact,
    pack_artifact,
    parse_artifact,
    read_artifact,
    write_artifact,
)
from pgolf.config import ExportConfig
from pgolf.errors import ArtifactError, ConfigError
from pgolf.export.driver import (
    EXPORT_SCHEMES,
    _split,
    export_model,
    load_model_state,
    write_export,
)
from pgolf.quant import grid
from pgolf.quant.grid import QuantTensor
from pgolf.roles import Role

PKG = Path(fmt.__file__).resolve().parent.parent  # the pgolf package


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and _bits(a) == _bits(b)


# --------------------------------------------------------------------------- codecs

_RNG = torch.Generator().manual_seed(0)
SAMPLES = {
    "empty": b"",
    "one": b"\x00",
    "random": bytes(torch.randint(0, 256, (5000,), generator=_RNG, dtype=torch.uint8).tolist()),
    "int8-weights": (torch.randn(20000, generator=_RNG) * 10).round().clamp(-127, 127).to(torch.int8).numpy().tobytes(),
    "repetitive": b"abc" * 30000,
}


@pytest.mark.parametrize("codec", sorted(codecs.CODECS))
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_codec_round_trip(codec, sample):
    data = SAMPLES[sample]
    comp = codecs.compress(data, codec)
    assert codecs.decompress(comp, codec, len(data)) == data
    assert codecs.decompress(comp, codec, len(data) + 100) == data


@pytest.mark.parametrize("codec", sorted(codecs.CODECS))
def test_codec_refuses_bomb_truncation_and_trailing_bytes(codec):
    data = SAMPLES["repetitive"]
    comp = codecs.compress(data, codec)
    with pytest.raises(codecs.DecompressionError):
        codecs.decompress(comp, codec, len(data) - 1)
    if codec == "none":
        return
    assert len(comp) < len(data) // 10
    for cut in range(len(comp)):
        with pytest.raises(codecs.DecompressionError):
            codecs.decompress(comp[:cut], codec, len(data))
    with pytest.raises(codecs.DecompressionError):
        codecs.decompress(comp + b"\x00", codec, len(data))


def test_zlib9_is_the_baseline_stream():
    data = SAMPLES["int8-weights"]
    assert codecs.compress(data, "zlib-9") == zlib.compress(data, 9)


def test_unknown_codec_lists_known():
    with pytest.raises(ConfigError, match="zlib-9"):
        codecs.compress(b"x", "gzip-5")


# --------------------------------------------------------------------------- container


def _mixed_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 7, generator=g)
    f[0, 0], f[0, 1], f[0, 2] = float("nan"), float("-inf"), -0.0
    return {
        "f32": f,
        "bf16": torch.randn(3, 4, generator=g).bfloat16(),
        "f16": torch.randn(6, generator=g).half(),
        "f64": torch.randn(2, 2, 2, generator=g, dtype=torch.float64),
        "i8": torch.randint(-128, 128, (9,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 256, (4, 1), generator=g, dtype=torch.uint8),
        "i16": torch.randint(-(2**15), 2**15, (3,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-(2**31), 2**31 - 1, (3,), generator=g, dtype=torch.int32),
        "i64": torch.tensor([-(2**63), 2**63 - 1, 0]),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "noncontig": torch.arange(12.0).reshape(3, 4).T,
        "ünïcode name": torch.ones(1),
    }


@pytest.mark.parametrize("codec", sorted(codecs.CODECS))
def test_round_trip_bit_exact(tmp_path, codec):
    tensors = _mixed_tensors()
    path = tmp_path / "model.pgolf"
    n = write_artifact(path, tensors, codec=codec, meta={"tokenizer_sha256": "ab" * 32, "x": [1, 2.5, None]})
    assert n == path.stat().st_size
    out, header = read_artifact(path)
    assert list(out) == list(tensors)
    for name, t in tensors.items():
        qt = out[name]
        assert qt.scheme == "raw" and list(qt.parts) == ["w"]
        assert _same(qt.parts["w"], t.contiguous()), name
        assert qt.shape == tuple(t.shape) and qt.dtype == t.dtype
    assert header["codec"] == codec and header["meta"]["x"] == [1, 2.5, None]


def test_layout_byte_by_byte():
    tensors = {"a": torch.arange(6, dtype=torch.int16), "b": torch.ones(2, 2)}
    blob, header = pack_artifact(tensors, codec="none", meta={"k": 1}, scheme="raw")
    assert blob[:6] == b"PGOLF\x00"
    version, hlen = struct.unpack_from("<HI", blob, 6)
    assert version == 1
    assert json.loads(blob[12 : 12 + hlen]) == header
    assert blob[12 + hlen : 44 + hlen] == hashlib.sha256(blob[: 12 + hlen]).digest()
    payload = blob[44 + hlen :]
    assert payload == _bits(tensors["a"]) + _bits(tensors["b"])  # codec none: raw concat-v1
    pay = header["payload"]
    assert pay["compressed_bytes"] == pay["raw_bytes"] == len(payload) == 12 + 16
    assert pay["sha256_raw"] == hashlib.sha256(payload).hexdigest()
    assert header["tensors"]["b"]["parts"]["w"] == {"dtype": "float32", "shape": [2, 2], "offset": 12, "nbytes": 16}
    assert header["layout"] == "concat-v1"
    assert build_artifact(tensors, codec="none", meta={"k": 1}) == blob  # deterministic


def _small_blob() -> bytes:
    tensors = {
        "q": QuantTensor(
            "int8_row",
            {"q": torch.tensor([[1, -2, 3], [4, 5, -6]], dtype=torch.int8), "scale": torch.tensor([0.5, 0.25]).half()},
            (2, 3),
            torch.float32,
        ),
        "m": torch.tensor([True, False]),
    }
    return build_artifact(tensors, codec="zlib-9", meta={"n": 1})


def test_every_single_byte_flip_is_refused():
    blob = _small_blob()
    parse_artifact(blob)  # the pristine blob is fine
    assert len(blob) < 2000
    for pos in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[pos] ^= mask
            with pytest.raises(ArtifactError):
                parse_artifact(bytes(bad), source="model.pgolf")


def test_every_truncation_and_any_extension_is_refused():
    blob = _small_blob()
    for cut in range(len(blob)):
        with pytest.raises(ArtifactError):
            parse_artifact(blob[:cut])
    with pytest.raises(ArtifactError, match="unexpected bytes after the payload"):
        parse_artifact(blob + b"\x00")


def test_error_messages_name_file_and_problem(tmp_path):
    blob = _small_blob()
    path = tmp_path / "model.pgolf"
    path.write_bytes(blob[:-3])
    with pytest.raises(ArtifactError) as e:
        read_artifact(path)
    comp = json.loads(blob[12 : 12 + struct.unpack_from("<I", blob, 8)[0]])["payload"]["compressed_bytes"]
    assert str(e.value) == f"{path}: truncated: expected {comp} payload bytes, found {comp - 3}"
    bad = bytearray(blob)
    bad[-1] ^= 1
    path.write_bytes(bytes(bad))
    with pytest.raises(ArtifactError, match=r"model\.pgolf: checksum mismatch: payload altered or corrupt$"):
        read_artifact(path)
    path.write_bytes(b"PK\x03\x04" + blob)
    with pytest.raises(ArtifactError, match=r"model\.pgolf: not a pgolf artifact \(bad magic\)$"):
        read_artifact(path)
    with pytest.raises(ArtifactError, match="no such artifact"):
        read_artifact(tmp_path / "missing.pgolf")
    with pytest.raises(ArtifactError, match="directory"):
        read_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="version 3"):
        parse_artifact(blob[:6] + struct.pack("<H", 3) + blob[8:])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "model.pgolf"
    torch.save({"w": torch.ones(3)}, path)
    with pytest.raises(ArtifactError, match="bad magic"):
        read_artifact(path)
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ArtifactError, match="bad magic"):
        read_artifact(path)
    # A pickle inside a well-formed container (valid checksums) under a layout we do not read.
    payload = pickle.dumps(_Evil())
    with pytest.raises(ArtifactError, match="unknown payload layout 'pickle'"):
        parse_artifact(_craft(payload, layout="pickle", tensors={}))
    # ...or declared as raw bytes of a tensor with a non-whitelisted dtype.
    entry = {"scheme": "raw", "dtype": "object", "shape": [len(payload)],
             "parts": {"w": {"dtype": "object", "shape": [len(payload)], "offset": 0, "nbytes": len(payload)}}}
    with pytest.raises(ArtifactError, match="dtype 'object' is not allowed"):
        parse_artifact(_craft(payload, tensors={"w": entry}))


def _craft(raw: bytes, *, codec: str = "none", comp: bytes | None = None, **overrides) -> bytes:
    """A container with valid checksums around any header: tests the schema checks behind them."""
    if comp is None:
        comp = codecs.compress(raw, codec) if codec in codecs.CODECS else raw
    n = len(raw)
    header = {
        "format": "pgolf-artifact", "format_version": 1, "scheme": "raw", "codec": codec, "layout": "concat-v1",
        "payload": {"compressed_bytes": len(comp), "raw_bytes": n, "sha256_compressed": hashlib.sha256(comp).hexdigest(),
                    "sha256_raw": hashlib.sha256(raw).hexdigest()},
        "tensors": {"w": {"scheme": "raw", "dtype": "uint8", "shape": [n],
                          "parts": {"w": {"dtype": "uint8", "shape": [n], "offset": 0, "nbytes": n}}}},
        "meta": {},
    }
    for k, v in overrides.items():
        if k in header["payload"]:
            header["payload"][k] = v
        else:
            header[k] = v
    h = json.dumps(header).encode()
    prefix = MAGIC + struct.pack("<HI", 1, len(h)) + h
    return prefix + hashlib.sha256(prefix).digest() + comp


def _part(dtype, shape, offset, nbytes):
    return {"dtype": dtype, "shape": shape, "offset": offset, "nbytes": nbytes}


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"tensors": {"w": {"scheme": "raw", "dtype": "uint8", "shape": [8], "parts": {"w": _part("uint8", [8], 0, 8)}}}},
         "past the 4-byte payload"),
        ({"tensors": {"w": {"scheme": "raw", "dtype": "uint8", "shape": [2], "parts": {"w": _part("uint8", [2], 0, 2)}}}},
         "covers 2 bytes of the 4-byte payload"),
        ({"tensors": {"a": {"scheme": "raw", "dtype": "uint8", "shape": [2], "parts": {"w": _part("uint8", [2], 0, 2)}},
                      "b": {"scheme": "raw", "dtype": "uint8", "shape": [2], "parts": {"w": _part("uint8", [2], 1, 2)}}}},
         "does not follow"),
        ({"tensors": {"w": {"scheme": "raw", "dtype": "int32", "shape": [1], "parts": {"w": _part("int32", [2], 0, 4)}}}},
         "nbytes 4 != 2 elements"),
        ({"tensors": {"w": {"scheme": "raw", "dtype": "uint8", "shape": [-4], "parts": {"w": _part("uint8", [4], 0, 4)}}}},
         "shape must be"),
        ({"tensors": {"w": {"scheme": "raw", "dtype": "uint8", "shape": [True], "parts": {"w": _part("uint8", [4], 0, 4)}}}},
         "shape must be"),
        ({"tensors": {"w": {"scheme": "raw", "dtype": "complex64", "shape": [], "parts": {}}}}, "not allowed"),
        ({"tensors": {"w": {"dtype": "uint8", "shape": [4], "parts": {"w": _part("uint8", [4], 0, 4)}}}}, "missing 'scheme'"),
        ({"tensors": []}, "tensors must be dict"),
        ({"codec": "lrzip"}, "unknown codec 'lrzip'"),
        ({"format_version": 7}, "disagrees"),
        ({"raw_bytes": "4"}, "raw_bytes must be int"),
        ({"sha256_raw": "xyz"}, "not a sha256"),
        ({"meta": None}, "meta must be dict"),
    ],
)
def test_malformed_headers_are_refused(overrides, needle):
    with pytest.raises(ArtifactError, match=needle):
        parse_artifact(_craft(b"\x01\x02\x03\x04", **overrides))


def test_json_trouble_is_refused():
    def wrap(h: bytes) -> bytes:
        prefix = MAGIC + struct.pack("<HI", 1, len(h)) + h
        return prefix + hashlib.sha256(prefix).digest()

    for h in (b"{", b"\xff\xfe", b"[]", b'{"a":1,"a":2}', b"[" * 100000, b"null"):
        with pytest.raises(ArtifactError):
            parse_artifact(wrap(h))


def test_decompression_bomb_and_size_limits_are_refused():
    raw = b"\x00" * 100
    bomb = zlib.compress(b"\x00" * 10_000_000, 9)  # 10 MB from ~10 KB, header claims 100 bytes
    with pytest.raises(ArtifactError, match="does not decompress"):
        parse_artifact(_craft(raw, codec="zlib-9", comp=bomb))
    with pytest.raises(ArtifactError, match="over the 50-byte limit"):
        parse_artifact(_craft(raw), max_raw_bytes=50)
    with pytest.raises(ArtifactError, match="decompressed payload differs"):
        parse_artifact(_craft(raw, sha256_raw=hashlib.sha256(b"other").hexdigest()))


def test_bool_bytes_must_be_0_or_1():
    entry = {"scheme": "raw", "dtype": "bool", "shape": [2], "parts": {"w": _part("bool", [2], 0, 2)}}
    parse_artifact(_craft(b"\x01\x00", tensors={"w": entry}))
    with pytest.raises(ArtifactError, match="bool"):
        parse_artifact(_craft(b"\x02\x00", tensors={"w": entry}))


def test_write_refuses_bad_inputs(tmp_path):
    with pytest.raises(ArtifactError, match="not allowed"):
        build_artifact({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ArtifactError, match="meta"):
        build_artifact({"a": torch.zeros(1)}, meta={"x": object()})
    with pytest.raises(ArtifactError, match="meta"):
        build_artifact({"a": torch.zeros(1)}, meta={"x": float("nan")})
    with pytest.raises(ConfigError, match="unknown codec"):
        write_artifact(tmp_path / "x.pgolf", {"a": torch.zeros(1)}, codec="rar")
    assert not (tmp_path / "x.pgolf").exists()


@pytest.mark.parametrize("module", ["artifact/format.py", "artifact/format_v2.py", "artifact/codecs.py", "artifact/streams.py", "export/driver.py"])
def test_load_path_never_unpickles(module):
    src = (PKG / module).read_text()
    banned = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & banned
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in banned
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"eval", "exec", "__import__"}
    # grep the code itself (docstrings and comments may mention pickle; code may not)
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    code = "".join(t.string for t in toks if t.type in (tokenize.NAME, tokenize.OP))
    for needle in ("torch.load", "pickle", "weights_only", "np.load", "numpy.load", "torch.jit"):
        assert needle not in code


# --------------------------------------------------------------------------- export


def _fake_gpt_state(dtype=torch.float32, layers: int = 2, vocab: int = 512, d: int = 256, kv: int = 128):
    """Baseline names and shapes (GQA, ReLU² MLP ×2, U-Net skips) at a tiny size: tok_emb and mlp
    weights exceed 65,536 elements (int8_row), c_q/proj are exactly 65,536 (fp16 passthrough)."""
    g = torch.Generator().manual_seed(5)
    sd = {"tok_emb.weight": torch.randn(vocab, d, generator=g) * 0.05}
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "attn.c_q.weight"] = torch.randn(d, d, generator=g) * 0.02
        sd[p + "attn.c_k.weight"] = torch.randn(kv, d, generator=g) * 0.02
        sd[p + "attn.c_v.weight"] = torch.randn(kv, d, generator=g) * 0.02
        sd[p + "attn.proj.weight"] = torch.randn(d, d, generator=g) * 0.02
        sd[p + "attn.q_gain"] = torch.full((4,), 1.5)
        sd[p + "mlp.fc.weight"] = torch.randn(2 * d, d, generator=g) * 0.02
        sd[p + "mlp.proj.weight"] = torch.randn(d, 2 * d, generator=g) * 0.02
        sd[p + "attn_scale"] = torch.rand(d, generator=g)
        sd[p + "mlp_scale"] = torch.rand(d, generator=g)
        sd[p + "resid_mix"] = torch.rand(2, d, generator=g)
    sd["skip_weights"] = torch.rand(layers // 2, d, generator=g)
    return {k: (v.to(dtype) if v.ndim == 2 and "resid_mix" not in k and "skip" not in k else v) for k, v in sd.items()}


_SUFFIX_ROLES = {"attn.c_q.weight": Role.ATTN_Q, "attn.c_k.weight": Role.ATTN_K, "attn.c_v.weight": Role.ATTN_V,
                 "attn.proj.weight": Role.ATTN_O, "attn.q_gain": Role.CONTROL, "mlp.fc.weight": Role.MLP_UP,
                 "mlp.proj.weight": Role.MLP_DOWN, "attn_scale": Role.CONTROL, "mlp_scale": Role.CONTROL,
                 "resid_mix": Role.CONTROL}


def _fake_roles(sd):
    """The roles the GPT declares for these tensors (written out here, as a model would declare them)."""
    roles = {"tok_emb.weight": Role.EMBED, "skip_weights": Role.CONTROL}
    roles |= {n: _SUFFIX_ROLES[n.split(".", 2)[2]] for n in sd if n.startswith("blocks.")}
    return roles


def test_fake_roles_are_the_models():
    from pgolf.config import ModelConfig
    from pgolf.model.gpt import model_roles

    sd = _fake_gpt_state()
    cfg = ModelConfig(vocab_size=512, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2)
    assert _fake_roles(sd) == model_roles(cfg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_write_load_equals_grid_dequantize(tmp_path, dtype):
    sd = _fake_gpt_state(dtype)
    roles = _fake_roles(sd)
    res = export_model(sd, ExportConfig(scheme="int8_zlib"), roles=roles, meta={"config": {"a": 1}})
    path = tmp_path / "model.pgolf"
    assert write_export(path, res) == res.model_bytes == len(res.blob) == path.stat().st_size
    state, header = load_model_state(path)
    expected = grid.dequantize_state_dict(grid.quantize_state_dict(sd, grid.int8_policy_for(roles)))
    assert list(state) == list(sd)
    for name, t in sd.items():
        assert state[name].dtype == t.dtype and state[name].shape == t.shape, name
        assert torch.equal(state[name], expected[name]), name
    assert header["scheme"] == "int8_zlib" and header["codec"] == "zlib-9"
    assert header["meta"]["config"] == {"a": 1} and header["meta"]["export_scheme"] == "int8_zlib"
    schemes = {r.name: r.scheme for r in res.rows}
    assert schemes["tok_emb.weight"] == schemes["blocks.1.mlp.fc.weight"] == "int8_row"
    assert schemes["blocks.0.attn.c_q.weight"] == ("fp16" if dtype == torch.float32 else "fp16")
    assert schemes["blocks.0.attn_scale"] == schemes["skip_weights"] == schemes["blocks.0.attn.q_gain"] == "fp32"
    # the dequantized model is close to the original: int8 steps of ≤ 1/127 on these weights
    assert (state["tok_emb.weight"].float() - sd["tok_emb.weight"].float()).abs().max() <= 0.5 / 127 * 1.07


def test_export_rows_account_for_every_byte():
    sd = _fake_gpt_state()
    res = export_model(sd, ExportConfig(), roles=_fake_roles(sd))
    hlen = struct.unpack_from("<I", res.blob, 8)[0]
    assert res.model_bytes == 12 + hlen + 32 + res.payload_compressed_bytes
    assert [r.name for r in res.rows] == list(sd)
    assert sum(r.quant_bytes for r in res.rows) == res.payload_raw_bytes
    assert sum(r.compressed_bytes for r in res.rows) == res.payload_compressed_bytes
    for r in res.rows:
        assert r.raw_bytes == sd[r.name].numel() * sd[r.name].element_size()
        assert r.shape == tuple(sd[r.name].shape)
    row = {r.name: r for r in res.rows}["tok_emb.weight"]
    assert row.quant_bytes == 512 * 256 + 2 * 512  # int8 values + fp16 row scales
    prop = export_model(sd, ExportConfig(), roles=_fake_roles(sd), share_estimate="proportional")
    assert prop.blob == res.blob
    assert sum(r.compressed_bytes for r in prop.rows) == prop.payload_compressed_bytes
    for r in prop.rows:  # within one byte of the exact proportional share
        exact = prop.payload_compressed_bytes * r.quant_bytes / prop.payload_raw_bytes
        assert abs(r.compressed_bytes - exact) < 1


def test_split_is_exact_and_proportional():
    g = torch.Generator().manual_seed(6)
    for _ in range(200):
        k = int(torch.randint(1, 12, (1,), generator=g))
        w = torch.randint(0, 1000, (k,), generator=g).tolist()
        total = int(torch.randint(0, 100000, (1,), generator=g))
        s = _split(total, w)
        assert sum(s) == total and all(x >= 0 for x in s)
        if sum(w):
            assert all(abs(x - total * wi / sum(w)) < 1 for x, wi in zip(s, w, strict=True))
    assert _split(7, [0, 0]) == [7, 0] and _split(5, []) == []


def test_unknown_export_scheme_lists_known():
    with pytest.raises(ConfigError) as e:
        export_model({"a": torch.zeros(2)}, ExportConfig(scheme="int4_magic"), roles={"a": Role.CONTROL})
    assert "int4_magic" in str(e.value) and all(k in str(e.value) for k in EXPORT_SCHEMES)


def test_load_refuses_inconsistent_quant_parts(tmp_path):
    path = tmp_path / "bad.pgolf"
    bad_scale = QuantTensor("int8_row", {"q": torch.zeros(4, 3, dtype=torch.int8), "scale": torch.ones(3).half()},
                            (4, 3), torch.float32)
    write_artifact(path, {"w": bad_scale})
    with pytest.raises(ArtifactError, match=r"bad\.pgolf: tensor w: scheme int8_row part 'scale'"):
        load_model_state(path)
    write_artifact(path, {"w": QuantTensor("int3_magic", {"w": torch.zeros(2)}, (2,), torch.float32)})
    with pytest.raises(ArtifactError, match="unknown quant scheme 'int3_magic'"):
        load_model_state(path)
