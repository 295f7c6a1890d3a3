"""Ternary weight packing formats: the single definition of how trits become bytes.

Weights are int8 arrays of trits {-1, 0, +1} (see :mod:`sim.numerics`). Storing them one per
byte wastes 5x the memory bandwidth the accelerator is bound by, so weights travel and live
packed in one of these formats:

========  ===============  ===============  ==================================================
name      trits per byte   bits per weight  layout
========  ===============  ===============  ==================================================
base3     5                1.6              ``byte = sum_j (t_j + 1) * 3**j`` over 5
                                            consecutive trits of the flattened (row-major)
                                            array; bytes 243..255 are invalid. The densest
                                            byte-aligned ternary code (3**5 = 243 <= 256).
2bit      4                2.0              ``code = t + 1`` (00 = -1, 01 = 0, 10 = +1,
                                            11 invalid); trit j of a group of 4 in bits
                                            2j..2j+1 (low bits first). Cheap to decode in
                                            logic: no division by 3.
hf        4                2.0              Hugging Face BitNet layout of a 2-D weight
                                            ``(out, in)``: uint8 ``(out/4, in)``, byte
                                            ``[r, c]`` holds row ``i*out/4 + r`` in bits
                                            2i..2i+1, ``code = t + 1``. Lets checkpoints be
                                            loaded without repacking on the host side.
1bit      8                1.0              binary weights {-1, +1} only: bit 1 = +1,
                                            bit 0 = -1, trit j of a group of 8 in bit j
                                            (LSB first). For binary (BitNet b1) layers.
========  ===============  ===============  ==================================================

The flat formats (base3, 2bit, 1bit) pack into a 1-D uint8 array of
``ceil(size / trits_per_byte)`` bytes; the last byte is padded with trit 0 (bit 0 for 1bit),
and the padding is ignored on unpack. Because the packed bytes do not record the shape,
``unpack`` takes the original trit-array shape and checks the packed length against it.

Everything is vectorized NumPy (lookup tables, shifts, ``packbits``): these functions run on
multi-million-weight matrices. Every error is a ``ValueError`` whose message says what is
wrong and where, since the messages reach users loading checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from . import numerics

__all__ = [
    "PackingFormat", "FORMATS", "trit_code", "get_format", "packed_size", "pack", "unpack",
    "pack_base3", "unpack_base3", "pack_2bit", "unpack_2bit",
    "pack_hf", "unpack_hf", "pack_1bit", "unpack_1bit",
]


@dataclass(frozen=True)
class PackingFormat:
    """Static description of one packing format (used for sizing buffers and estimates)."""

    name: str
    trits_per_byte: int
    bits_per_weight: float


FORMATS: dict[str, PackingFormat] = {
    "base3": PackingFormat("base3", 5, 1.6),
    "2bit": PackingFormat("2bit", 4, 2.0),
    "hf": PackingFormat("hf", 4, 2.0),
    "1bit": PackingFormat("1bit", 8, 1.0),
}

FormatLike = Union[str, PackingFormat]

BASE3_MAX_BYTE = 3 ** 5 - 1   # 242: the largest valid base3 byte
INVALID_CODE = 3              # 2-bit code "11" is not a trit in the 2bit and hf formats


def trit_code(t: int) -> int:
    """The 2-bit code of a trit in the 2bit and hf formats (and in the array's weight wires)."""
    if t not in (-1, 0, 1):
        raise ValueError(f"not a trit: {t!r}")
    return t + 1


def _build_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte -> trits lookup tables, built once at import so that unpacking is a single gather.

    Returns ``(base3, two_bit, two_bit_valid)``: ``base3[b]`` is the 5 trits of base3 byte
    ``b`` (b < 243), ``two_bit[b]`` the 4 trits of 2bit byte ``b`` (an invalid code 3 decodes
    as +2 here and is rejected via ``two_bit_valid[b]`` before anyone sees it).
    """
    b = np.arange(256, dtype=np.int16)
    base3 = (np.stack([(b[:243] // 3 ** j) % 3 for j in range(5)], axis=1) - 1).astype(np.int8)
    codes = np.stack([(b >> (2 * j)) & 3 for j in range(4)], axis=1)
    two_bit = (codes - 1).astype(np.int8)
    valid = (codes != INVALID_CODE).all(axis=1)
    for t in (base3, two_bit, valid):
        t.setflags(write=False)
    return base3, two_bit, valid


_BASE3_LUT, _2BIT_LUT, _2BIT_VALID = _build_tables()
_BASE3_POWERS = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
_2BIT_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def get_format(fmt: FormatLike) -> PackingFormat:
    """Resolve a format name (or pass a :class:`PackingFormat` through); unknown -> ValueError."""
    if isinstance(fmt, PackingFormat):
        name = fmt.name
    else:
        name = fmt
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in FORMATS)
        raise ValueError(f"unknown packing format {fmt!r}; known formats: {known}") from None


def packed_size(n_trits: int, fmt: FormatLike) -> int:
    """Number of bytes that ``n_trits`` weights occupy in format ``fmt`` (last byte padded)."""
    f = get_format(fmt)
    n = int(n_trits)
    if n < 0:
        raise ValueError(f"n_trits must be >= 0, got {n_trits}")
    return -(-n // f.trits_per_byte)


def _normalize_shape(shape) -> tuple[int, ...]:
    """Turn an int or a sequence of ints into a shape tuple, rejecting negative dimensions."""
    try:
        shp = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in shp):
        raise ValueError(f"shape must not have negative dimensions, got {shp}")
    return shp


def _as_bytes(data, fmt_name: str) -> np.ndarray:
    """Return packed ``data`` as a uint8 array.

    Accepts uint8 arrays, Python ``bytes``-likes, and other integer arrays whose values all fit
    in a byte (so a list of ints or an int64 array read from a file also works).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    a = np.asarray(data)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "iu":
        raise ValueError(f"{fmt_name}: packed data must be bytes (uint8), got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{fmt_name}: packed data must be bytes in [0, 255], "
                         f"got range [{a.min()}, {a.max()}]")
    return a.astype(np.uint8)


def _flat_bytes(data, fmt_name: str, shape) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Validate packed data of a flat format against the trit shape it should unpack to."""
    f = FORMATS[fmt_name]
    b = _as_bytes(data, fmt_name)
    shp = _normalize_shape(shape)
    size = int(np.prod(shp, dtype=np.int64))
    if b.ndim != 1:
        raise ValueError(f"{fmt_name}: packed data must be 1-D, got shape {b.shape}")
    expected = packed_size(size, f)
    if b.size != expected:
        raise ValueError(f"{fmt_name}: packed length {b.size} does not match shape {shp}: "
                         f"{size} trits need {expected} bytes ({f.trits_per_byte} per byte)")
    return b, shp, size


def _codes_padded(trits, group: int, what: str) -> np.ndarray:
    """Validated trits -> flat uint8 codes ``t + 1``, padded with code 1 (trit 0) to ``group``."""
    flat = numerics.check_ternary(trits, what).ravel()
    pad = -flat.size % group
    codes = np.empty(flat.size + pad, dtype=np.uint8)
    np.add(flat, 1, out=codes[:flat.size], casting="unsafe")
    codes[flat.size:] = 1
    return codes.reshape(-1, group)


def _first_bad_byte(bad: np.ndarray, b: np.ndarray, fmt_name: str, why: str) -> ValueError:
    """Build the error for the first invalid packed byte (index as a tuple for 2-D data)."""
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
    where = idx[0] if len(idx) == 1 else idx
    return ValueError(f"{fmt_name}: invalid byte {int(b[idx])} (0x{int(b[idx]):02x}) "
                      f"at byte index {where}: {why}")


# ---------------------------------------------------------------------------------------------
# base3: 5 trits per byte
# ---------------------------------------------------------------------------------------------

def pack_base3(trits) -> np.ndarray:
    """Pack trits 5 per byte as ``sum_j (t_j + 1) * 3**j`` (flattened row-major, padded)."""
    codes = _codes_padded(trits, 5, "base3: trits")
    # Every partial sum stays <= 242, so uint8 arithmetic cannot overflow.
    return (codes @ _BASE3_POWERS).astype(np.uint8, copy=False)


def unpack_base3(data, shape) -> np.ndarray:
    """Unpack base3 bytes to an int8 trit array of ``shape``; bytes > 242 are rejected."""
    b, shp, size = _flat_bytes(data, "base3", shape)
    bad = b > BASE3_MAX_BYTE
    if bad.any():
        raise _first_bad_byte(bad, b, "base3",
                              f"base3 bytes hold 5 trits and must be <= {BASE3_MAX_BYTE}")
    return _BASE3_LUT[b].reshape(-1)[:size].reshape(shp)


# ---------------------------------------------------------------------------------------------
# 2bit: 4 trits per byte, code t + 1, low bits first
# ---------------------------------------------------------------------------------------------

def pack_2bit(trits) -> np.ndarray:
    """Pack trits 4 per byte, trit j in bits 2j..2j+1 as ``t + 1`` (flattened, padded)."""
    codes = _codes_padded(trits, 4, "2bit: trits")
    return np.bitwise_or.reduce(codes << _2BIT_SHIFTS, axis=1).astype(np.uint8)


def unpack_2bit(data, shape) -> np.ndarray:
    """Unpack 2bit bytes to an int8 trit array of ``shape``; code 3 ("11") is rejected."""
    b, shp, size = _flat_bytes(data, "2bit", shape)
    bad = ~_2BIT_VALID[b]
    if bad.any():
        raise _first_bad_byte(bad, b, "2bit", "contains the 2-bit code 3 ('11'), "
                              "which is not a trit (valid codes: 0=-1, 1=0, 2=+1)")
    return _2BIT_LUT[b].reshape(-1)[:size].reshape(shp)


# ---------------------------------------------------------------------------------------------
# hf: Hugging Face BitNet layout, (out, in) -> (out/4, in)
# ---------------------------------------------------------------------------------------------

def _hf_check_shape(shape) -> tuple[int, int]:
    shp = _normalize_shape(shape)
    if len(shp) != 2:
        raise ValueError(f"hf: the Hugging Face layout packs a 2-D weight (out, in), "
                         f"got shape {shp}")
    if shp[0] % 4:
        raise ValueError(f"hf: the number of output rows must be a multiple of 4 "
                         f"(4 rows share a byte), got shape {shp}")
    return shp


def pack_hf(trits) -> np.ndarray:
    """Pack a 2-D ``(out, in)`` trit weight in the Hugging Face BitNet layout.

    Returns uint8 ``(out/4, in)``; with ``n = out/4`` byte ``[r, c]`` holds the trit of row
    ``i*n + r`` (i = 0..3) in bits 2i..2i+1 as ``t + 1``. This is the layout of the
    ``weight`` tensors of BitNet checkpoints on the Hugging Face hub.
    """
    w = numerics.check_ternary(trits, "hf: trits")
    out, inp = _hf_check_shape(w.shape)
    codes = (w + 1).astype(np.uint8).reshape(4, out // 4, inp)
    packed = codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)
    return packed.astype(np.uint8)


def unpack_hf(data, shape) -> np.ndarray:
    """Unpack a Hugging Face BitNet packed weight to int8 of ``shape = (out, in)``."""
    out, inp = _hf_check_shape(shape)
    b = _as_bytes(data, "hf")
    if b.shape != (out // 4, inp):
        raise ValueError(f"hf: packed shape {b.shape} does not match weight shape "
                         f"{(out, inp)}: expected ({out // 4}, {inp})")
    bad = ~_2BIT_VALID[b]
    if bad.any():
        raise _first_bad_byte(bad, b, "hf", "contains the 2-bit code 3 ('11'), "
                              "which is not a trit (valid codes: 0=-1, 1=0, 2=+1)")
    # _2BIT_LUT[b][r, c, i] is the trit of row i*n + r: bring i to the front, then flatten.
    return np.ascontiguousarray(np.moveaxis(_2BIT_LUT[b], 2, 0)).reshape(out, inp)


# ---------------------------------------------------------------------------------------------
# 1bit: binary weights, 8 per byte, LSB first
# ---------------------------------------------------------------------------------------------

def pack_1bit(trits) -> np.ndarray:
    """Pack binary weights {-1, +1} 8 per byte, bit j = 1 for +1 (LSB first, zero padded).

    A 0 has no encoding in this format, so it is an error rather than silently becoming -1.
    """
    w = numerics.check_ternary(trits, "1bit: trits")
    zero = w == 0
    if zero.any():
        idx = tuple(int(i) for i in np.argwhere(zero)[0])
        raise ValueError(f"1bit: the 1bit format holds binary weights (-1 or +1) only, "
                         f"got 0 at index {idx}; use base3, 2bit or hf for ternary weights")
    return np.packbits(w.ravel() > 0, bitorder="little")


def unpack_1bit(data, shape) -> np.ndarray:
    """Unpack 1bit bytes to int8 {-1, +1} of ``shape``; padding bits are ignored."""
    b, shp, size = _flat_bytes(data, "1bit", shape)
    bits = np.unpackbits(b, count=size, bitorder="little").view(np.int8)
    return (2 * bits - 1).reshape(shp)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

_PACK = {"base3": pack_base3, "2bit": pack_2bit, "hf": pack_hf, "1bit": pack_1bit}
_UNPACK = {"base3": unpack_base3, "2bit": unpack_2bit, "hf": unpack_hf, "1bit": unpack_1bit}


def pack(trits, fmt: FormatLike) -> np.ndarray:
    """Pack a trit array into format ``fmt`` (a name in :data:`FORMATS`); returns uint8."""
    return _PACK[get_format(fmt).name](trits)


def unpack(data, fmt: FormatLike, shape) -> np.ndarray:
    """Unpack ``data`` in format ``fmt`` to an int8 trit array of the original ``shape``."""
    return _UNPACK[get_format(fmt).name](data, shape)
