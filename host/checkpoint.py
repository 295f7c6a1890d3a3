"""BitNet b1.58 checkpoints: safetensors + JSON in, ternary weights and float32 tensors out.

::

    ckpt = load_checkpoint("models/tiny")       # config.json + model.safetensors (or shards)
    ckpt.config.hidden_size                     # every dimension comes from config.json
    lin = ckpt.layers[0].q_proj                 # TernaryLinear: int8 trits (N, K) + scale
    y = lin.dequantize(y_int, s)                # the linear_class rule, in float32

Only safetensors and JSON are read. Pickle-based formats (``.bin``, ``.pt``, ...) are refused:
unpickling runs arbitrary code from the file, and a model folder is exactly what people
download from strangers. The safetensors reader is a small one of our own (no dependency) and
trusts nothing in the file: every header field, offset and length is checked against the file
before any data is read, and every problem is one :class:`CheckpointError` naming the file and
the tensor.

Projection weights are accepted in the forms that exist in the wild (listed in
:func:`load_checkpoint`) and all come out the same way, as :class:`TernaryLinear`, so the
runtime has one path. The numerics of the activations stay in
:mod:`sim.numerics` and the HF packing in :mod:`sim.packing`; this module only decides which
trits and which scale a checkpoint means.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from sim import numerics, packing

__all__ = [
    "CheckpointError", "SafetensorsFile", "read_safetensors", "write_safetensors",
    "bf16_to_float32", "float32_to_bf16", "BitNetConfig", "TernaryLinear", "Layer",
    "Checkpoint", "load_checkpoint", "save_checkpoint", "PROJECTIONS", "LINEAR_CLASSES",
]


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file (and tensor)."""


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

#: safetensors dtype -> little-endian numpy dtype of the stored bytes (BF16 is stored as
#: uint16 bit patterns and widened to float32 on read: NumPy has no bfloat16)
DTYPES = {
    "BOOL": np.dtype("|b1"), "U8": np.dtype("|u1"), "I8": np.dtype("|i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_NUMPY_TO_ST = {np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
                np.dtype(np.uint16): "U16", np.dtype(np.int16): "I16",
                np.dtype(np.float16): "F16", np.dtype(np.uint32): "U32",
                np.dtype(np.int32): "I32", np.dtype(np.float32): "F32",
                np.dtype(np.uint64): "U64", np.dtype(np.int64): "I64",
                np.dtype(np.float64): "F64"}
#: the safetensors library refuses larger headers; so do we (a hostile length must not make
#: us allocate gigabytes before anything is checked)
MAX_HEADER_BYTES = 100 * 1024 * 1024
_HEADER_LENGTH_BYTES = 8


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bf16 is the high half of a float32, exactly."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest, ties to even (as torch
    does); NaN stays a (quiet) NaN instead of rounding into infinity."""
    f = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = f.view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a safetensors header, already validated against the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int          # byte offsets into the data section
    end: int


def _reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"duplicate keys {sorted(dup)}")
    return dict(pairs)


class SafetensorsFile:
    """A safetensors file whose header has been checked; tensors are read on demand.

    Reading on demand lets the loader check a tensor's shape before it reads (and converts)
    megabytes of data, and keeps peak memory at one tensor plus the result.
    """

    def __init__(self, path):
        self.path = Path(path)
        p = self.path
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"{p}: file not found") from None
        except OSError as e:
            raise CheckpointError(f"{p}: cannot read: {e.strerror or e}") from None
        if not p.is_file():
            raise CheckpointError(f"{p}: not a regular file")
        if size < _HEADER_LENGTH_BYTES:
            raise CheckpointError(f"{p}: not a safetensors file: {size} bytes, shorter than the "
                                  f"{_HEADER_LENGTH_BYTES}-byte header length")
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(_HEADER_LENGTH_BYTES), "little")
            if n > size - _HEADER_LENGTH_BYTES:
                raise CheckpointError(
                    f"{p}: not a safetensors file or truncated: the header claims {n} bytes but "
                    f"the file has only {size - _HEADER_LENGTH_BYTES} after the length field")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{p}: header of {n} bytes is larger than the "
                                      f"{MAX_HEADER_BYTES}-byte limit")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{p}: header is not valid UTF-8 JSON ({e}); not a "
                                  f"safetensors file?") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{p}: header must be a JSON object, got "
                                  f"{type(header).__name__}")
        self.data_start = _HEADER_LENGTH_BYTES + n
        self.data_size = size - self.data_start
        meta = header.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict) and all(
                isinstance(v, str) for v in meta.values())):
            raise CheckpointError(f"{p}: __metadata__ must map strings to strings")
        self.metadata: dict[str, str] = dict(meta or {})
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            self.tensors[name] = self._check_entry(name, entry)
        # No two tensors may share bytes: a crafted header could otherwise alias them.
        spans = sorted((t.begin, t.end, t.name) for t in self.tensors.values()
                       if t.end > t.begin)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise CheckpointError(f"{p}: tensors {n0!r} (bytes {b0}..{e0}) and {n1!r} "
                                      f"(bytes {b1}..{e1}) overlap")

    def _check_entry(self, name: str, entry) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: header entry must be an object")
        missing = {"dtype", "shape", "data_offsets"} - entry.keys()
        if missing:
            raise CheckpointError(f"{where}: header entry lacks {sorted(missing)}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise CheckpointError(f"{where}: unsupported dtype {dtype!r} (supported: "
                                  f"{', '.join(DTYPES)})")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: shape must be a list of non-negative integers, "
                                  f"got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))
                and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: data_offsets must be [begin, end] with "
                                  f"0 <= begin <= end, got {offsets!r}")
        begin, end = offsets
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != nbytes:
            raise CheckpointError(f"{where}: data_offsets {offsets} hold {end - begin} bytes, "
                                  f"but {dtype} {tuple(shape)} needs {nbytes}")
        if end > self.data_size:
            raise CheckpointError(f"{where}: data ends at byte {end} but the file holds only "
                                  f"{self.data_size} data bytes (truncated file?)")
        return TensorInfo(name, dtype, tuple(shape), begin, end)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name) -> bool:
        return name in self.tensors

    def __repr__(self):
        return f"<SafetensorsFile {self.path}: {len(self.tensors)} tensor(s)>"

    def read(self, name: str, *, raw_bf16: bool = False) -> np.ndarray:
        """A tensor as a native-endian NumPy array; BF16 widened to float32 (or, with
        ``raw_bf16``, its uint16 bit patterns)."""
        try:
            t = self.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor {name!r}") from None
        with open(self.path, "rb") as f:
            f.seek(self.data_start + t.begin)
            data = f.read(t.end - t.begin)
        if len(data) != t.end - t.begin:        # the file shrank since the header was read
            raise CheckpointError(f"{self.path}: tensor {name!r}: short read ({len(data)} of "
                                  f"{t.end - t.begin} bytes)")
        a = np.frombuffer(data, dtype=DTYPES[t.dtype]).reshape(t.shape)
        if t.dtype == "BF16" and not raw_bf16:
            return bf16_to_float32(a)
        return a.astype(a.dtype.newbyteorder("="), copy=True)


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file (BF16 as float32)."""
    f = SafetensorsFile(path)
    return {name: f.read(name) for name in f.keys()}


def write_safetensors(path, tensors: Mapping[str, np.ndarray], *,
                      dtypes: Mapping[str, str] | None = None,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) as a safetensors file.

    The stored dtype follows the array's dtype, unless ``dtypes`` names another for a tensor
    (``"BF16"`` rounds float32 to nearest even; ``"F16"`` / ``"F32"`` cast). The header is padded
    with spaces to a multiple of 8 bytes, as the safetensors library does, so that tensor data
    stays aligned for readers that map the file.
    """
    dtypes = dict(dtypes or {})
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtypes given for tensors that are not written: {sorted(unknown)}")
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        a = np.asarray(value)
        st = dtypes.get(name) or _NUMPY_TO_ST.get(a.dtype)
        if st is None:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} has no safetensors equivalent")
        if st == "BF16":
            data = float32_to_bf16(a).astype("<u2")
        elif st in DTYPES:
            data = a.astype(DTYPES[st])
        else:
            raise ValueError(f"tensor {name!r}: unknown safetensors dtype {st!r}")
        raw = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(_HEADER_LENGTH_BYTES, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)        # a crash never leaves a half-written checkpoint behind


# ---------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------

LINEAR_CLASSES = ("autobitlinear", "bitlinear")
#: per layer: projection name -> the module that holds it
PROJECTIONS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
               "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
NORMS = {"input_layernorm": "", "post_attention_layernorm": "",
         "attn_sub_norm": "self_attn.", "ffn_sub_norm": "mlp."}


@dataclass(frozen=True)
class BitNetConfig:
    """What the forward pass needs from ``config.json``, checked.

    The dimensions have no defaults: a config that does not state them is not one we can trust
    to match the tensors. The rest defaults as transformers' ``BitNetConfig`` does, except that
    a missing ``eos_token_id`` means "no end token" rather than Llama 3's id, which may not
    even exist in a small vocabulary.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    linear_class: str
    weight_bits: int          # 2 for ternary (b1.58), 1 for binary (BitNet 2023)

    def projection_shape(self, name: str) -> tuple[int, int]:
        """``(out, in)`` of a projection."""
        H, I = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q),
                "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}[name]

    def norm_size(self, name: str) -> int:
        return {"input_layernorm": self.hidden_size, "post_attention_layernorm":
                self.hidden_size, "attn_sub_norm": self.num_attention_heads * self.head_dim,
                "ffn_sub_norm": self.intermediate_size}[name]

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> "BitNetConfig":
        def fail(msg):
            raise CheckpointError(f"{where}: {msg}")

        if not isinstance(d, dict):
            fail("must be a JSON object")
        if d.get("model_type") != "bitnet":
            fail(f"model_type is {d.get('model_type')!r}, expected 'bitnet' (a BitNet b1.58 "
                 f"checkpoint)")
        qc = d.get("quantization_config")
        if not isinstance(qc, dict) or qc.get("quant_method") != "bitnet":
            got = qc.get("quant_method") if isinstance(qc, dict) else qc
            fail(f"quantization_config.quant_method is {got!r}, expected 'bitnet'")
        # transformers' BitNetQuantConfig defaults linear_class to "bitlinear"; so do we.
        linear_class = qc.get("linear_class", "bitlinear")
        if linear_class not in LINEAR_CLASSES:
            fail(f"quantization_config.linear_class is {linear_class!r}, expected one of "
                 f"{list(LINEAR_CLASSES)}")
        weight_bits = qc.get("weight_bits", 2)
        if weight_bits not in (1, 2):
            fail(f"quantization_config.weight_bits is {weight_bits!r}, expected 2 (ternary) "
                 f"or 1 (binary)")
        act = d.get("hidden_act", "relu2")
        if act != "relu2":
            fail(f"hidden_act is {act!r}; only 'relu2' (BitNet b1.58) is implemented")
        if d.get("attention_bias") or d.get("mlp_bias"):
            fail("attention_bias / mlp_bias are set; BitNet projections have no biases")

        def integer(key, default=None, minimum=1):
            v = d.get(key)
            if v is None:               # absent or null (configs write "head_dim": null)
                v = default
            if v is None:
                fail(f"{key} is missing")
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                fail(f"{key} must be an integer >= {minimum}, got {v!r}")
            return v

        def positive(v, key):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (
                    math.isfinite(v) and v > 0):
                fail(f"{key} must be a positive number, got {v!r}")
            return float(v)

        hidden = integer("hidden_size")
        heads = integer("num_attention_heads")
        kv_heads = integer("num_key_value_heads", heads)
        if heads % kv_heads:
            fail(f"num_attention_heads {heads} is not a multiple of num_key_value_heads "
                 f"{kv_heads}")
        if d.get("head_dim") is None and hidden % heads:
            fail(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads} "
                 f"and no head_dim is given")
        head_dim = integer("head_dim", hidden // heads)
        if head_dim % 2:
            fail(f"head_dim {head_dim} must be even (RoPE rotates halves)")
        vocab = integer("vocab_size")

        theta = d.get("rope_theta")
        for key in ("rope_scaling", "rope_parameters"):
            rope = d.get(key)
            if rope is None:
                continue
            if not isinstance(rope, dict):
                fail(f"{key} must be an object or null, got {rope!r}")
            kind = rope.get("rope_type", rope.get("type", "default"))
            if kind != "default":
                fail(f"{key}: RoPE type {kind!r} is not implemented (only the default "
                     f"rotation)")
            theta = rope.get("rope_theta", theta)      # transformers 5 keeps it here

        def token_ids(key):
            v = d.get(key)
            vs = [] if v is None else (v if isinstance(v, list) else [v])
            for t in vs:
                if not isinstance(t, int) or isinstance(t, bool) or t < 0:
                    fail(f"{key} must be a token id or a list of them, got {v!r}")
            return vs

        bos = token_ids("bos_token_id")
        tie = d.get("tie_word_embeddings", False)
        if not isinstance(tie, bool):
            fail(f"tie_word_embeddings must be true or false, got {tie!r}")
        return cls(
            hidden_size=hidden, intermediate_size=integer("intermediate_size"),
            num_hidden_layers=integer("num_hidden_layers"), num_attention_heads=heads,
            num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
            rms_norm_eps=positive(d.get("rms_norm_eps", 1e-5), "rms_norm_eps"),
            rope_theta=positive(500000.0 if theta is None else theta, "rope_theta"),
            tie_word_embeddings=tie,
            max_position_embeddings=integer("max_position_embeddings", 2048),
            bos_token_id=bos[0] if bos else None, eos_token_ids=tuple(token_ids("eos_token_id")),
            linear_class=linear_class, weight_bits=weight_bits)


# ---------------------------------------------------------------------------------------------
# The model's tensors
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TernaryLinear:
    """One BitLinear projection: trits for the device, a float32 scale for the host.

    ``linear_class`` is the rule that turns the device's exact sums back into floats, given the
    per-token activation scale ``s`` of :func:`sim.numerics.quantize_activations`:

    * ``"autobitlinear"``: ``y = y_int / s * scale`` (the scale is about mean|W|; also what a
      checkpoint of float weights quantized here means);
    * ``"bitlinear"``: ``y = y_int / (s * scale)`` (transformers' legacy ``BitLinear``).

    ``form`` records how the checkpoint stored it: ``"packed"`` (HF uint8 + ``weight_scale``),
    ``"ternary"`` (trit values stored unpacked + ``weight_scale``), ``"absmean"`` (float weights
    quantized on load) or ``"binary"`` (float weights, BitNet 2023 sign quantization).
    """

    name: str
    trits: np.ndarray
    scale: np.float32
    linear_class: str
    form: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.trits.shape

    def dequantize(self, y_int: np.ndarray, s: np.ndarray) -> np.ndarray:
        """float32 outputs from exact sums ``y_int`` (M, N) and activation scales ``s`` (M, 1)."""
        y = np.asarray(y_int).astype(np.float32)
        s = np.asarray(s, dtype=np.float32)
        if self.linear_class == "autobitlinear":
            return y / s * self.scale
        return y / (s * self.scale)


@dataclass(frozen=True, eq=False)
class Layer:
    """One decoder layer: seven projections and four RMSNorm weights (float32)."""

    q_proj: TernaryLinear
    k_proj: TernaryLinear
    v_proj: TernaryLinear
    o_proj: TernaryLinear
    gate_proj: TernaryLinear
    up_proj: TernaryLinear
    down_proj: TernaryLinear
    input_layernorm: np.ndarray
    post_attention_layernorm: np.ndarray
    attn_sub_norm: np.ndarray
    ffn_sub_norm: np.ndarray

    def projections(self) -> Iterator[tuple[str, TernaryLinear]]:
        for name in PROJECTIONS:
            yield name, getattr(self, name)


@dataclass(eq=False)
class Checkpoint:
    """A loaded BitNet model: config, ternary projections and float32 tensors.

    ``lm_head`` is ``embed_tokens`` itself when the embeddings are tied. ``tokenizer_path`` is
    the folder's ``tokenizer.json`` if it has one (the runtime needs the optional
    ``tokenizers`` package to use it).
    """

    path: Path | None
    config: BitNetConfig
    raw_config: dict
    embed_tokens: np.ndarray
    layers: list[Layer]
    norm: np.ndarray
    lm_head: np.ndarray
    tokenizer_path: Path | None = None
    unused_tensors: list[str] = field(default_factory=list)

    def projections(self) -> Iterator[tuple[int, str, TernaryLinear]]:
        """``(layer index, projection name, TernaryLinear)`` in execution order."""
        for i, layer in enumerate(self.layers):
            for name, lin in layer.projections():
                yield i, name, lin

    @property
    def forms(self) -> dict[str, int]:
        """How many projections were stored in each form (see :class:`TernaryLinear`)."""
        out: dict[str, int] = {}
        for _, _, lin in self.projections():
            out[lin.form] = out.get(lin.form, 0) + 1
        return out

    def __repr__(self):
        c = self.config
        return (f"<Checkpoint {self.path}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                f"{c.num_attention_heads}/{c.num_key_value_heads} heads, vocab {c.vocab_size}, "
                f"{c.linear_class}>")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-(\d+)-of-(\d+)\.safetensors$")


class _Tensors:
    """The safetensors files of a folder seen as one namespace (shards included)."""

    def __init__(self, folder: Path):
        self.files: dict[str, SafetensorsFile] = {}      # tensor name -> its file
        self._weight_map: dict[str, str] = {}
        index = folder / INDEX_FILE
        if (folder / SINGLE_FILE).is_file():
            paths = [folder / SINGLE_FILE]
        elif index.is_file():
            paths = self._from_index(folder, index)
        else:
            shards = sorted(p for p in folder.iterdir() if _SHARD.match(p.name))
            if not shards:
                self._no_safetensors(folder)
            totals = {_SHARD.match(p.name).group(2) for p in shards}
            expected = int(next(iter(totals)))
            if len(totals) > 1 or len(shards) != expected:
                raise CheckpointError(f"{folder}: incomplete or mixed shards "
                                      f"{[p.name for p in shards]} and no {INDEX_FILE}")
            paths = shards
        for p in paths:
            f = SafetensorsFile(p)
            for name in f.keys():
                if name in self.files:
                    raise CheckpointError(f"{p}: tensor {name!r} is also in "
                                          f"{self.files[name].path}")
                self.files[name] = f
        for name, shard in self._weight_map.items():
            if name not in self.files or self.files[name].path.name != shard:
                raise CheckpointError(f"{index}: tensor {name!r} is mapped to {shard}, "
                                      f"which does not hold it")

    def _from_index(self, folder: Path, index: Path) -> list[Path]:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{index}: cannot read the shard index: {e}") from None
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
        names = sorted(set(wm.values()))
        for n in names:
            # Only plain file names next to the index: never a path out of the folder.
            if Path(n).name != n or n in (".", "..") or not n.endswith(".safetensors"):
                raise CheckpointError(f"{index}: shard {n!r} is not a .safetensors file name "
                                      f"in this folder")
        self._weight_map = dict(wm)
        return [folder / n for n in names]

    @staticmethod
    def _no_safetensors(folder: Path):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{folder}: only pickle-based weights ({', '.join(pickles)}) and no "
                f"{SINGLE_FILE}. Only safetensors + JSON checkpoints are accepted: loading a "
                f"pickle runs arbitrary code from the file. Convert it where you trust it "
                f"(e.g. save_pretrained(..., safe_serialization=True)).")
        raise CheckpointError(f"{folder}: no {SINGLE_FILE} (nor {INDEX_FILE} with shards)")

    def __contains__(self, name) -> bool:
        return name in self.files

    def info(self, name: str) -> TensorInfo:
        return self.files[name].tensors[name]

    def where(self, name: str) -> str:
        return f"{self.files[name].path}: tensor {name!r}"

    def read(self, name: str, **kw) -> np.ndarray:
        return self.files[name].read(name, **kw)


def _float_tensor(t: _Tensors, name: str, shape: tuple[int, ...], folder: Path) -> np.ndarray:
    if name not in t:
        raise CheckpointError(f"{folder}: missing tensor {name!r} (expected shape {shape})")
    info = t.info(name)
    if info.shape != shape:
        raise CheckpointError(f"{t.where(name)}: shape {info.shape} does not match the config: "
                              f"expected {shape}")
    if info.dtype not in ("BF16", "F16", "F32", "F64"):
        raise CheckpointError(f"{t.where(name)}: dtype {info.dtype}, expected a float tensor")
    a = t.read(name).astype(np.float32)
    if not np.isfinite(a).all():
        raise CheckpointError(f"{t.where(name)}: contains NaN or infinite values")
    return a


def _projection(t: _Tensors, name: str, shape: tuple[int, int], cfg: BitNetConfig,
                folder: Path) -> TernaryLinear:
    """Decide the trits and the scale of one projection, whatever form it was stored in."""
    wname = name + ".weight"
    sname = name + ".weight_scale"
    N, K = shape
    if wname not in t:
        raise CheckpointError(f"{folder}: missing tensor {wname!r} (expected {shape}, or "
                              f"packed uint8 {(N // 4, K)})")
    info = t.info(wname)
    where = t.where(wname)
    has_scale = sname in t
    scale = None
    if has_scale:
        sinfo = t.info(sname)
        if sinfo.shape not in ((1,), ()) or sinfo.dtype not in ("BF16", "F16", "F32", "F64"):
            raise CheckpointError(f"{t.where(sname)}: expected a float of shape (1,), got "
                                  f"{sinfo.dtype} {sinfo.shape}")
        scale = np.float32(t.read(sname).reshape(()))
        if not (np.isfinite(scale) and scale > 0):
            raise CheckpointError(f"{t.where(sname)}: weight scale must be a positive finite "
                                  f"number, got {scale}")

    if info.dtype == "U8" and N % 4 == 0 and info.shape == (N // 4, K):
        if scale is None:
            raise CheckpointError(f"{where}: packed ternary weight without {sname!r}")
        try:
            trits = packing.unpack_hf(t.read(wname), shape)
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from None
        form = "packed"
        if cfg.weight_bits == 1 and not trits.all():
            raise CheckpointError(f"{where}: the config says binary weights (weight_bits 1) "
                                  f"but the packed weight holds zeros")
        return TernaryLinear(wname, trits, scale, cfg.linear_class, form)
    if info.shape != shape:
        packed = f" or packed uint8 {(N // 4, K)}" if N % 4 == 0 else ""
        raise CheckpointError(f"{where}: shape {info.shape} ({info.dtype}) does not match the "
                              f"config: expected {shape}{packed}")
    if info.dtype == "U8":
        raise CheckpointError(f"{where}: uint8 weight of the unpacked shape {shape}; packed "
                              f"weights are ({N // 4}, {K}), unpacked ones signed or float")
    if info.dtype == "BOOL":
        raise CheckpointError(f"{where}: boolean weights are not a BitNet form")
    w = t.read(wname)
    if scale is not None:
        # Offline autobitlinear checkpoints may store the trits unpacked next to their scale.
        try:
            trits = numerics.check_ternary(w, f"{where}")
        except ValueError as e:
            raise CheckpointError(f"{e}; an unpacked weight with a {sname!r} must hold trits")
        if cfg.weight_bits == 1 and not trits.all():
            raise CheckpointError(f"{where}: binary config (weight_bits 1) but the weight "
                                  f"holds zeros")
        return TernaryLinear(wname, np.ascontiguousarray(trits), scale, cfg.linear_class,
                             "ternary")
    wf = w.astype(np.float32)
    if not np.isfinite(wf).all():
        raise CheckpointError(f"{where}: contains NaN or infinite values")
    mean_abs = np.float32(np.mean(np.abs(wf), dtype=np.float32))
    if cfg.weight_bits == 1:
        # BitNet (2023): sign(W - mean W) with sign(0) = +1, output scaled by beta = mean|W|.
        centered = wf - np.float32(np.mean(wf, dtype=np.float32))
        trits = np.where(centered < 0, -1, 1).astype(np.int8)
        scale = max(mean_abs, np.float32(numerics.ACT_EPS))
        form = "binary"
    else:
        # absmean, as transformers' WeightQuant: W * (1 / clamp(mean|W|, 1e-5)), rounded
        # half to even, clipped to a trit; the scale multiplies the output.
        scale = max(mean_abs, np.float32(numerics.ACT_EPS))
        inv = np.float32(1.0) / scale
        trits = np.clip(np.rint(wf * inv), -1, 1).astype(np.int8)
        form = "absmean"
    return TernaryLinear(wname, trits, np.float32(scale), "autobitlinear", form)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json (a BitNet checkpoint folder holds "
                              f"config.json and model.safetensors)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from None


def load_checkpoint(folder) -> Checkpoint:
    """Load a BitNet b1.58 checkpoint folder (``config.json`` + safetensors).

    Projection weights may be stored as:

    * HF packed: uint8 ``(out/4, in)`` (:func:`sim.packing.unpack_hf`) with ``weight_scale``
      ``(1,)``, applied by the config's ``linear_class`` rule;
    * unpacked trits (any numeric dtype holding exactly -1/0/+1) with ``weight_scale``;
    * unpacked float weights without a scale: quantized here with absmean (``scale =
      max(mean|W|, 1e-5)``, trits ``clip(round(W / scale), -1, 1)``), or, when
      ``quantization_config.weight_bits`` is 1, binary (``sign(W - mean W)``, 0 -> +1,
      ``scale = mean|W|``); both multiply (autobitlinear semantics), since that is what the
      scale computed here means, whatever the config's ``linear_class``.

    Every shape is checked against the config. Tensors the model does not use are listed in
    ``Checkpoint.unused_tensors`` rather than refused (``rotary_emb.inv_freq`` buffers, say).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory (a BitNet checkpoint folder holds "
                              f"config.json and model.safetensors)")
    raw = _read_config(folder)
    cfg = BitNetConfig.from_dict(raw, str(folder / "config.json"))
    t = _Tensors(folder)
    used: set[str] = set()

    def flt(name, shape):
        used.add(name)
        return _float_tensor(t, name, shape, folder)

    H, V = cfg.hidden_size, cfg.vocab_size
    embed = flt("model.embed_tokens.weight", (V, H))
    layers = []
    for i in range(cfg.num_hidden_layers):
        parts = {}
        for proj, module in PROJECTIONS.items():
            name = f"model.layers.{i}.{module}.{proj}"
            used.update((name + ".weight", name + ".weight_scale"))
            parts[proj] = _projection(t, name, cfg.projection_shape(proj), cfg, folder)
        for norm, prefix in NORMS.items():
            parts[norm] = flt(f"model.layers.{i}.{prefix}{norm}.weight", (cfg.norm_size(norm),))
        layers.append(Layer(**parts))
    norm = flt("model.norm.weight", (H,))
    if cfg.tie_word_embeddings:
        lm_head = embed
    else:
        lm_head = flt("lm_head.weight", (V, H))
    tok = folder / "tokenizer.json"
    return Checkpoint(path=folder, config=cfg, raw_config=raw, embed_tokens=embed,
                      layers=layers, norm=norm, lm_head=lm_head,
                      tokenizer_path=tok if tok.is_file() else None,
                      unused_tensors=sorted(set(t.files) - used))


def save_checkpoint(folder, config: dict, tensors: Mapping[str, np.ndarray], *,
                    float_dtype: str = "BF16") -> Path:
    """Write a checkpoint in the HF packed format that :func:`load_checkpoint` reads.

    ``tensors`` maps HF names to arrays: each projection ``...{q,k,v,o,gate,up,down}_proj.weight``
    as trits (N, K) (packed here with :func:`sim.packing.pack_hf`) with its
    ``...weight_scale`` as a float (stored with shape (1,): transformers rejects a 0-d scale);
    every other tensor as floats. Floats are stored as ``float_dtype`` (``"BF16"`` like
    released checkpoints, rounded to nearest even; ``"F16"`` or ``"F32"``). ``config`` is
    written as ``config.json`` unchanged. Returns the folder.
    """
    if float_dtype not in ("BF16", "F16", "F32"):
        raise ValueError(f"float_dtype must be 'BF16', 'F16' or 'F32', got {float_dtype!r}")
    folder = Path(folder)
    proj = re.compile(r"\.(" + "|".join(PROJECTIONS) + r")\.weight$")
    out: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, value in tensors.items():
        a = np.asarray(value)
        if proj.search(name):
            if a.ndim != 2:
                raise ValueError(f"{name}: a projection weight must be 2-D trits, got shape "
                                 f"{a.shape}")
            try:
                out[name] = packing.pack_hf(a)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            if name + "_scale" not in tensors:
                raise ValueError(f"{name}: no {name + '_scale'} given")
            continue
        if name.endswith(".weight_scale"):
            a = np.asarray(a, dtype=np.float32).reshape(-1)
            if a.shape != (1,):
                raise ValueError(f"{name}: a weight scale is one number, got shape {a.shape}")
        elif a.dtype.kind != "f":
            raise ValueError(f"{name}: expected a float tensor, got dtype {a.dtype}")
        out[name] = np.asarray(a, dtype=np.float32)
        dtypes[name] = float_dtype
    folder.mkdir(parents=True, exist_ok=True)      # only once everything is known to be good
    write_safetensors(folder / SINGLE_FILE, out, dtypes=dtypes,
                      metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
