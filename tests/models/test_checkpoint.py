"""host.checkpoint: the safetensors reader/writer, the storage forms of BitNet projections, and
one clear CheckpointError for every kind of bad input (checked against the reference reader
where it helps)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from host import Checkpoint, CheckpointError, load_checkpoint, run_model, save_checkpoint
from host.checkpoint import (PROJECTIONS, SafetensorsFile, bf16_to_float32, float32_to_bf16,
                             read_safetensors, write_safetensors)
from checkpoint_edits import rewrite
from reference import read_safetensors as reference_read
from reference import unpack as reference_unpack


def raw_safetensors(path, header: dict, data: bytes = b"", length: int | None = None):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

def test_roundtrip_all_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "u8": rng.integers(0, 256, (3, 5)).astype(np.uint8),
        "i8": rng.integers(-128, 128, (7,)).astype(np.int8),
        "f16": rng.standard_normal((2, 3)).astype(np.float16),
        "f32": rng.standard_normal((4, 1, 2)).astype(np.float32),
        "i64": np.arange(5, dtype=np.int64),
        "scalar": np.float32(3.5),
        "empty": np.zeros((0, 4), np.float32),
        "bf16": rng.standard_normal((6,)).astype(np.float32),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, dtypes={"bf16": "BF16"}, metadata={"format": "pt"})
    assert (8 + struct.unpack("<Q", path.read_bytes()[:8])[0]) % 8 == 0   # aligned data
    back = read_safetensors(path)
    ref = reference_read(path)
    for name, a in tensors.items():
        want = bf16_to_float32(float32_to_bf16(a)) if name == "bf16" else np.asarray(a)
        assert back[name].dtype == want.dtype and back[name].shape == want.shape, name
        assert np.array_equal(back[name], want), name
        assert np.array_equal(ref[name], want), name
    assert SafetensorsFile(path).metadata == {"format": "pt"}


def test_bf16_rounds_to_nearest_even():
    f = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20, -2.5,
                  np.inf, -np.inf, 3.4e38], np.float32)
    bits = float32_to_bf16(f)
    # 1+2^-8 is halfway between 1 and 1+2^-7: ties to even (1.0); 1+3*2^-8 ties up to 1+2^-6.
    assert list(bf16_to_float32(bits)) == [1.0, 1.0, 1.0 + 2 ** -6, 1.0 + 2 ** -7, -2.5,
                                           np.inf, -np.inf, np.inf]
    # A NaN whose payload sits in the low half only must not round into infinity.
    nan = np.array([0x7FC00000, 0x7F800001, 0xFF800001], np.uint32).view(np.float32)
    assert np.isnan(bf16_to_float32(float32_to_bf16(nan))).all()


@pytest.mark.parametrize("case,match", [
    ("missing", "file not found"),
    ("tiny", "shorter than the 8-byte header length"),
    ("long_header", "header claims 1000 bytes"),
    ("garbage", "not valid UTF-8 JSON"),
    ("not_object", "must be a JSON object"),
    ("dtype", "unsupported dtype 'F8_E4M3'"),
    ("shape", "shape must be a list of non-negative integers"),
    ("size", "hold 4 bytes, but F32 \\(2,\\) needs 8"),
    ("truncated", "data ends at byte 8 but the file holds only 4"),
    ("overlap", "'a' .* and 'b' .* overlap"),
    ("offsets", "data_offsets must be \\[begin, end\\]"),
    ("duplicate", "duplicate keys"),
    ("entry", "lacks \\['data_offsets'\\]"),
])
def test_bad_safetensors(tmp_path, case, match):
    p = tmp_path / "bad.safetensors"
    f32 = lambda b, e, shape=(2,): {"dtype": "F32", "shape": list(shape), "data_offsets": [b, e]}
    if case == "tiny":
        p.write_bytes(b"\x01\x02")
    elif case == "long_header":
        raw_safetensors(p, {}, length=1000)
    elif case == "garbage":
        p.write_bytes(struct.pack("<Q", 6) + b"\xff\xfe{\x00ab")
    elif case == "not_object":
        raw_safetensors(p, [1, 2])
    elif case == "dtype":
        raw_safetensors(p, {"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}},
                        b"\0")
    elif case == "shape":
        raw_safetensors(p, {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
                        bytes(8))
    elif case == "size":
        raw_safetensors(p, {"a": f32(0, 4)}, bytes(8))
    elif case == "truncated":
        raw_safetensors(p, {"a": f32(0, 8)}, bytes(4))
    elif case == "overlap":
        raw_safetensors(p, {"a": f32(0, 8), "b": f32(4, 12)}, bytes(12))
    elif case == "offsets":
        raw_safetensors(p, {"a": f32(8, 0)}, bytes(8))
    elif case == "duplicate":
        text = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {}}'
        p.write_bytes(struct.pack("<Q", len(text)) + text + b"\0")
    elif case == "entry":
        raw_safetensors(p, {"a": {"dtype": "U8", "shape": [1]}}, b"\0")
    with pytest.raises(CheckpointError, match=match) as e:
        read_safetensors(p)
    assert str(p) in str(e.value)


# ---------------------------------------------------------------------------------------------
# Loading checkpoints
# ---------------------------------------------------------------------------------------------

def test_packed_checkpoint_loads_what_was_saved(make_model, tmp_path):
    cfg = make_model.config(shape="gqa5", tied=False, linear_class="bitlinear")
    tensors = make_model.tensors(cfg, seed=3)
    folder = save_checkpoint(tmp_path / "m", cfg, tensors)
    ck = load_checkpoint(folder)
    c = ck.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size, c.num_hidden_layers) == (40, 5, 1, 8, 76, 97, 2)
    assert c.linear_class == "bitlinear" and not c.tie_word_embeddings
    assert ck.forms == {"packed": 14} and ck.unused_tensors == []
    raw = reference_read(folder / "model.safetensors")
    for i, name, lin in ck.projections():
        key = f"model.layers.{i}.{PROJECTIONS[name]}.{name}.weight"
        assert lin.name == key and lin.linear_class == "bitlinear"
        assert np.array_equal(lin.trits, tensors[key])
        assert np.array_equal(reference_unpack(raw[key]), tensors[key])
        assert raw[key + "_scale"].shape == (1,)
        assert lin.scale == bf16_to_float32(float32_to_bf16(tensors[key + "_scale"]))
    assert np.array_equal(ck.lm_head, raw["lm_head.weight"])
    assert ck.lm_head.dtype == np.float32


def test_tied_head_is_the_embedding(make_model):
    ck = load_checkpoint(make_model(tied=True))
    assert ck.lm_head is ck.embed_tokens


def test_config_defaults_and_rope_parameters(make_model):
    folder = make_model()
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["num_key_value_heads"], cfg["rope_theta"], cfg["quantization_config"]["linear_class"]
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1234.0}
    cfg["eos_token_id"] = [5, 7]
    cfg["head_dim"] = None                     # as some configs write it: the default applies
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="k_proj.weight.*does not match the config"):
        load_checkpoint(folder)                # kv heads now default to all 4 heads
    cfg["num_key_value_heads"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    c = load_checkpoint(folder).config
    assert (c.head_dim, c.rope_theta, c.eos_token_ids) == (12, 1234.0, (5, 7))
    assert c.linear_class == "bitlinear"       # transformers' BitNetQuantConfig default


def unpacked_tensors(tensors, convert):
    """The same model with every projection stored by ``convert(trits, scale) -> dict``."""
    out = {}
    for name, a in tensors.items():
        if name.endswith("_proj.weight"):
            out.update({name + k: v for k, v in
                        convert(a, tensors[name + "_scale"]).items()})
        elif not name.endswith("weight_scale"):
            out[name] = a
    return out


def test_storage_forms_agree(make_model, tmp_path):
    cfg = make_model.config(tied=False)
    tensors = make_model.tensors(cfg, seed=5)
    packed = load_checkpoint(save_checkpoint(tmp_path / "packed", cfg, tensors,
                                             float_dtype="F32"))

    # Trits stored unpacked (bf16 -1/0/+1) next to their scale: the same model, bit for bit.
    def ternary(t, s):
        return {"": t.astype(np.float32), "_scale": np.array([s], np.float32)}

    folder = tmp_path / "ternary"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    t2 = unpacked_tensors(tensors, ternary)
    write_safetensors(folder / "model.safetensors", t2,
                      dtypes={k: "BF16" for k in t2 if k.endswith("_proj.weight")})
    tern = load_checkpoint(folder)
    assert tern.forms == {"ternary": 14}

    # Float weights whose absmean quantization gives back the trits and a scale of mean|W|.
    def absmean(t, s):
        nonzero = np.count_nonzero(t) / t.size
        return {"": (t * np.float32(s / nonzero)).astype(np.float32)}

    folder = tmp_path / "absmean"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "model.safetensors", unpacked_tensors(tensors, absmean))
    am = load_checkpoint(folder)
    assert am.forms == {"absmean": 14}

    for (_, _, a), (_, _, b), (_, _, c) in zip(packed.projections(), tern.projections(),
                                               am.projections()):
        assert np.array_equal(a.trits, b.trits) and a.scale == b.scale
        assert np.array_equal(a.trits, c.trits) and c.linear_class == "autobitlinear"
        assert np.isclose(c.scale, a.scale, rtol=1e-6)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    r_packed = run_model(packed, prompt, max_new_tokens=3)
    r_tern = run_model(tern, prompt, max_new_tokens=3)
    assert r_packed.tokens == r_tern.tokens
    assert np.array_equal(r_packed.logits, r_tern.logits)


def test_absmean_quantization_of_real_floats(make_model, tmp_path):
    cfg = make_model.config()
    tensors = make_model.tensors(cfg)
    rng = np.random.default_rng(9)
    floats = unpacked_tensors(tensors, lambda t, s: {
        "": (0.05 * rng.standard_normal(t.shape)).astype(np.float32)})
    folder = tmp_path / "floats"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "model.safetensors", floats)
    ck = load_checkpoint(folder)
    for _, _, lin in ck.projections():
        w = floats[lin.name].astype(np.float64)
        scale = np.abs(w).mean()
        assert np.isclose(lin.scale, scale, rtol=1e-5)
        expected = np.clip(np.round(w / scale), -1, 1)
        near_half = np.abs(np.abs(w / scale) - 0.5) < 1e-5      # rounding ties may differ
        assert np.array_equal(lin.trits[~near_half], expected[~near_half])
        assert (lin.trits == 0).any() and (lin.trits != 0).any()


def binary_floats(shape, rng, offset):
    """Dyadic floats (multiples of 2**-6 around ``offset``) whose float32 mean is exactly
    ``offset`` and whose [0, 0] entry equals it: every sum is exact in float32."""
    w = rng.choice(np.array([-3, -1, 1, 3], np.float32), shape) * np.float32(2 ** -6)
    w[0, 0] = 0
    w[0, 1] -= w.sum(dtype=np.float64)
    return (w + np.float32(offset)).astype(np.float32)


def test_binary_weights(make_model, tmp_path):
    cfg = make_model.config(weight_bits=1)
    tensors = make_model.tensors(make_model.config())
    rng = np.random.default_rng(4)
    offset = 2 ** -5
    floats = unpacked_tensors(tensors, lambda t, s: {"": binary_floats(t.shape, rng, offset)})
    folder = tmp_path / "binary"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "model.safetensors", floats)
    ck = load_checkpoint(folder)
    assert ck.forms == {"binary": 14}
    for _, _, lin in ck.projections():
        w = floats[lin.name]
        assert np.float32(np.mean(w, dtype=np.float32)) == np.float32(offset)
        assert lin.trits[0, 0] == 1                      # W - mean(W) == 0 counts as +1
        assert np.array_equal(lin.trits, np.where(w < offset, -1, 1))   # centred, not sign(W)
        assert ((w > 0) & (lin.trits < 0)).any()
        assert np.isclose(lin.scale, np.abs(w.astype(np.float64)).mean(), rtol=1e-6)
        assert lin.linear_class == "autobitlinear"

    # The same binary trits and scales in the packed format give the same model exactly.
    packed = {}
    for i, name, lin in ck.projections():
        key = f"model.layers.{i}.{PROJECTIONS[name]}.{name}.weight"
        packed[key], packed[key + "_scale"] = lin.trits, lin.scale
    packed.update({k: v for k, v in floats.items() if not k.endswith("_proj.weight")})
    pcfg = make_model.config(weight_bits=1)
    ck2 = load_checkpoint(save_checkpoint(tmp_path / "bpacked", pcfg, packed,
                                          float_dtype="F32"))
    assert ck2.forms == {"packed": 14}
    r1 = run_model(ck, [1, 2, 3], max_new_tokens=2)
    r2 = run_model(ck2, [1, 2, 3], max_new_tokens=2)
    assert r1.tokens == r2.tokens and np.array_equal(r1.logits, r2.logits)

    # A binary config with zeros in the packed weights is a contradiction.
    q = "model.layers.0.self_attn.q_proj.weight"
    packed[q] = tensors[q]
    with pytest.raises(CheckpointError, match="binary weights .* holds zeros"):
        load_checkpoint(save_checkpoint(tmp_path / "bad", pcfg, packed))


def test_shards_with_and_without_index(make_model, tmp_path):
    folder = make_model(tied=False)
    whole = load_checkpoint(folder)
    tensors = read_safetensors(folder / "model.safetensors")
    st = SafetensorsFile(folder / "model.safetensors")
    dtypes = {k: t.dtype for k, t in st.tensors.items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((folder / "config.json").read_text())
    for fname, part in shards.items():
        write_safetensors(sharded / fname, {k: tensors[k] for k in part},
                          dtypes={k: dtypes[k] for k in part})
    weight_map = {k: f for f, part in shards.items() for k in part}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}))
    for ck in (load_checkpoint(sharded),):
        for (_, _, a), (_, _, b) in zip(whole.projections(), ck.projections()):
            assert np.array_equal(a.trits, b.trits) and a.scale == b.scale
        assert np.array_equal(ck.lm_head, whole.lm_head)
    (sharded / "model.safetensors.index.json").unlink()
    assert load_checkpoint(sharded).forms == {"packed": 14}
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete or mixed shards"):
        load_checkpoint(sharded)
    weight_map["model.norm.weight"] = "../model.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="not a .safetensors file name in this folder"):
        load_checkpoint(sharded)


def test_unused_tensors_are_listed(make_model):
    folder = make_model()
    tensors = read_safetensors(folder / "model.safetensors")
    st = SafetensorsFile(folder / "model.safetensors")
    tensors["model.rotary_emb.inv_freq"] = np.ones(6, np.float32)
    write_safetensors(folder / "model.safetensors", tensors,
                      dtypes={k: t.dtype for k, t in st.tensors.items()})
    assert load_checkpoint(folder).unused_tensors == ["model.rotary_emb.inv_freq"]


# ---------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error each
# ---------------------------------------------------------------------------------------------

def test_missing_folder_and_config(make_model, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    folder = make_model()
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(folder)


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(model_type="llama"), "model_type is 'llama', expected 'bitnet'"),
    (lambda c: c["quantization_config"].update(quant_method="gptq"), "quant_method is 'gptq'"),
    (lambda c: c["quantization_config"].update(linear_class="x"), "linear_class is 'x'"),
    (lambda c: c.pop("hidden_size"), "hidden_size is missing"),
    (lambda c: c.update(num_key_value_heads=3), "not a multiple of num_key_value_heads 3"),
    (lambda c: c.update(hidden_act="silu"), "only 'relu2'"),
    (lambda c: c.update(rope_scaling={"rope_type": "llama3"}), "rope_scaling: RoPE type"),
    (lambda c: c.update(rms_norm_eps=-1), "rms_norm_eps must be a positive number"),
])
def test_bad_config(make_model, change, match):
    folder = make_model()
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(folder)


def test_config_not_json(make_model):
    folder = make_model()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(folder)


def test_missing_safetensors(make_model):
    folder = make_model()
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(folder)


def test_pickle_only_is_refused(make_model):
    folder = make_model()
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not going to be unpickled")
    with pytest.raises(CheckpointError, match="pytorch_model.bin") as e:
        load_checkpoint(folder)
    assert "Only safetensors + JSON checkpoints are accepted" in str(e.value)
    assert "arbitrary code" in str(e.value)


def test_truncated_safetensors(make_model):
    folder = make_model()
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(folder)
    assert "model.safetensors" in str(e.value)


def test_header_garbage(make_model):
    folder = make_model()
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00garbage, not a JSON header!!!!\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not valid UTF-8 JSON"):
        load_checkpoint(folder)


def test_wrong_shape_names_tensor_and_shapes(make_model):
    folder = make_model()
    name = "model.layers.1.mlp.down_proj.weight"
    rewrite(folder, lambda t, d: t.update({name: t[name][:, :-4]}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    msg = str(e.value)
    assert name in msg and "(12, 88)" in msg and "(48, 92)" in msg and "(12, 92)" in msg

    folder = make_model("norm")
    name = "model.layers.0.mlp.ffn_sub_norm.weight"
    rewrite(folder, lambda t, d: t.update({name: t[name][:-1]}))
    with pytest.raises(CheckpointError, match=f"'{name}': shape \\(91,\\) does not match the "
                                              f"config: expected \\(92,\\)"):
        load_checkpoint(folder)


def test_missing_tensors_are_named(make_model):
    folder = make_model(tied=False)
    rewrite(folder, lambda t, d: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match="missing tensor 'lm_head.weight'"):
        load_checkpoint(folder)
    folder = make_model("noscale")
    name = "model.layers.0.self_attn.v_proj.weight_scale"
    rewrite(folder, lambda t, d: t.pop(name))
    with pytest.raises(CheckpointError, match="packed ternary weight without "
                                              "'model.layers.0.self_attn.v_proj.weight_scale'"):
        load_checkpoint(folder)


def test_packed_code_3_is_refused(make_model):
    folder = make_model()
    name = "model.layers.0.self_attn.o_proj.weight"

    def poison(t, d):
        w = t[name].copy()
        w[2, 5] = 0b01_11_01_01          # the second quarter's row 2 holds code 3
        t[name] = w
    rewrite(folder, poison)
    with pytest.raises(CheckpointError, match=f"'{name}'.*code 3") as e:
        load_checkpoint(folder)
    assert "(2, 5)" in str(e.value)


def test_bad_weight_scale(make_model):
    folder = make_model()
    name = "model.layers.0.mlp.up_proj.weight_scale"
    rewrite(folder, lambda t, d: (t.update({name: np.float32(-0.5) * np.ones(1, np.float32)}),
                                  d.update({name: "F32"})))
    with pytest.raises(CheckpointError, match="weight scale must be a positive"):
        load_checkpoint(folder)


def test_save_checkpoint_refuses_non_trits(make_model, tmp_path):
    cfg = make_model.config()
    tensors = make_model.tensors(cfg)
    name = "model.layers.0.self_attn.q_proj.weight"
    bad = dict(tensors, **{name: tensors[name] * 2})
    with pytest.raises(ValueError, match=f"{name}: .*not ternary"):
        save_checkpoint(tmp_path / "x", cfg, bad)
    bad = {k: v for k, v in tensors.items() if k != name + "_scale"}
    with pytest.raises(ValueError, match="no .*weight_scale given"):
        save_checkpoint(tmp_path / "y", cfg, bad)


def test_checkpoint_repr(make_model):
    ck = load_checkpoint(make_model(shape="mha"))
    assert isinstance(ck, Checkpoint)
    assert "2 layers, hidden 44, 2/2 heads, vocab 97, autobitlinear" in repr(ck)
