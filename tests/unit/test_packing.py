"""Tests of sim.packing: the ternary weight packing formats.

The vectorized implementation is checked against a deliberately naive pure-Python reference
written here from the format definitions (loops over ints, nothing shared with sim.packing),
plus hand-computed bytes for each format.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import packing

FLAT_FORMATS = ["base3", "2bit", "1bit"]
ALL_FORMATS = ["base3", "2bit", "hf", "1bit"]
SHAPES = [(1, 1), (1,), (7,), (5,), (13,), (3, 7), (4, 9), (8, 3), (2, 3, 5), (16, 33), (64, 100)]


# ---------------------------------------------------------------------------------------------
# Naive reference (pure Python, straight from the definitions)
# ---------------------------------------------------------------------------------------------

def ref_pack_base3(trits: list[int]) -> list[int]:
    out = []
    for start in range(0, len(trits), 5):
        group = trits[start:start + 5]
        group = group + [0] * (5 - len(group))
        byte = 0
        for j, t in enumerate(group):
            byte += (t + 1) * 3 ** j
        out.append(byte)
    return out


def ref_unpack_base3(data: list[int], n: int) -> list[int]:
    trits = []
    for byte in data:
        for _ in range(5):
            trits.append(byte % 3 - 1)
            byte //= 3
    return trits[:n]


def ref_pack_2bit(trits: list[int]) -> list[int]:
    out = []
    for start in range(0, len(trits), 4):
        group = trits[start:start + 4]
        group = group + [0] * (4 - len(group))
        byte = 0
        for j, t in enumerate(group):
            byte |= (t + 1) << (2 * j)
        out.append(byte)
    return out


def ref_unpack_2bit(data: list[int], n: int) -> list[int]:
    trits = []
    for byte in data:
        for j in range(4):
            trits.append(((byte >> (2 * j)) & 3) - 1)
    return trits[:n]


def ref_pack_hf(w: list[list[int]]) -> list[list[int]]:
    out_rows, in_cols = len(w), len(w[0])
    n = out_rows // 4
    packed = [[0] * in_cols for _ in range(n)]
    for r in range(n):
        for c in range(in_cols):
            for i in range(4):
                packed[r][c] |= (w[i * n + r][c] + 1) << (2 * i)
    return packed


def ref_unpack_hf(packed: list[list[int]], out_rows: int, in_cols: int) -> list[list[int]]:
    n = out_rows // 4
    w = [[0] * in_cols for _ in range(out_rows)]
    for r in range(n):
        for c in range(in_cols):
            for i in range(4):
                w[i * n + r][c] = ((packed[r][c] >> (2 * i)) & 3) - 1
    return w


def ref_pack_1bit(trits: list[int]) -> list[int]:
    out = []
    for start in range(0, len(trits), 8):
        byte = 0
        for j, t in enumerate(trits[start:start + 8]):
            if t == 1:
                byte |= 1 << j
        out.append(byte)
    return out


def ref_unpack_1bit(data: list[int], n: int) -> list[int]:
    trits = []
    for byte in data:
        for j in range(8):
            trits.append(1 if (byte >> j) & 1 else -1)
    return trits[:n]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def random_trits(rng: np.random.Generator, shape, fmt: str) -> np.ndarray:
    """Random weights valid for ``fmt`` (binary for 1bit, ternary otherwise)."""
    if fmt == "1bit":
        return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)
    return rng.integers(-1, 2, size=shape, dtype=np.int8)


def shape_ok(fmt: str, shape) -> bool:
    """hf packs 2-D weights whose number of rows is a multiple of 4; the rest take any shape."""
    return fmt != "hf" or (len(shape) == 2 and shape[0] % 4 == 0)


ROUND_TRIP_CASES = [(fmt, shape) for fmt in ALL_FORMATS for shape in SHAPES if shape_ok(fmt, shape)]


# ---------------------------------------------------------------------------------------------
# Formats table
# ---------------------------------------------------------------------------------------------

def test_formats_table():
    assert set(packing.FORMATS) == set(ALL_FORMATS)
    expected = {"base3": (5, 1.6), "2bit": (4, 2.0), "hf": (4, 2.0), "1bit": (8, 1.0)}
    for name, (tpb, bpw) in expected.items():
        f = packing.FORMATS[name]
        assert f.name == name
        assert f.trits_per_byte == tpb
        assert f.bits_per_weight == pytest.approx(8 / tpb) == pytest.approx(bpw)
    with pytest.raises(Exception):
        packing.FORMATS["base3"].trits_per_byte = 4   # frozen


def test_packed_size():
    # 1.6 bits per weight: a million trits fit in 200 000 bytes.
    assert packing.packed_size(10**6, "base3") == 200_000
    assert packing.packed_size(10**6, "2bit") == 250_000
    assert packing.packed_size(10**6, "hf") == 250_000
    assert packing.packed_size(10**6, "1bit") == 125_000
    assert packing.packed_size(0, "base3") == 0
    assert packing.packed_size(1, "base3") == 1
    assert packing.packed_size(6, "base3") == 2
    assert packing.packed_size(9, "1bit") == 2
    assert packing.packed_size(5, packing.FORMATS["2bit"]) == 2


def test_base3_million_trits_is_200000_bytes():
    w = np.random.default_rng(1).integers(-1, 2, size=10**6, dtype=np.int8)
    packed = packing.pack(w, "base3")
    assert packed.dtype == np.uint8 and packed.shape == (200_000,)
    assert packed.nbytes * 8 / w.size == pytest.approx(1.6)
    np.testing.assert_array_equal(packing.unpack(packed, "base3", w.shape), w)


# ---------------------------------------------------------------------------------------------
# Round trips and agreement with the reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, shape", ROUND_TRIP_CASES, ids=str)
def test_round_trip(fmt, shape):
    rng = np.random.default_rng([ALL_FORMATS.index(fmt), SHAPES.index(shape)])
    w = random_trits(rng, shape, fmt)
    packed = packing.pack(w, fmt)
    assert packed.dtype == np.uint8
    if fmt == "hf":
        assert packed.shape == (shape[0] // 4, shape[1])
    else:
        assert packed.shape == (math.ceil(w.size / packing.FORMATS[fmt].trits_per_byte),)
        assert packed.size == packing.packed_size(w.size, fmt)
    back = packing.unpack(packed, fmt, shape)
    assert back.dtype == np.int8 and back.shape == w.shape
    np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("fmt", FLAT_FORMATS)
def test_flat_formats_match_reference(fmt):
    ref_pack = {"base3": ref_pack_base3, "2bit": ref_pack_2bit, "1bit": ref_pack_1bit}[fmt]
    ref_unpack = {"base3": ref_unpack_base3, "2bit": ref_unpack_2bit,
                  "1bit": ref_unpack_1bit}[fmt]
    rng = np.random.default_rng(7)
    for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 17, 39, 40, 41, 257, 1000, 3001]:
        w = random_trits(rng, (n,), fmt)
        trits = [int(t) for t in w]
        expected = ref_pack(trits)
        packed = packing.pack(w, fmt)
        assert packed.tolist() == expected, f"{fmt}, n={n}"
        # Named functions and the dispatcher agree.
        named = getattr(packing, f"pack_{fmt}")(w)
        assert named.tolist() == expected
        assert packing.unpack(packed, fmt, n).tolist() == ref_unpack(expected, n) == trits


@pytest.mark.parametrize("fmt", ["base3", "2bit"])
def test_unpack_every_valid_byte_matches_reference(fmt):
    """Exhaustive over all valid bytes: each decodes as the reference says."""
    valid = range(243) if fmt == "base3" else [
        b for b in range(256) if all((b >> (2 * j)) & 3 != 3 for j in range(4))]
    data = list(valid)
    tpb = packing.FORMATS[fmt].trits_per_byte
    n = len(data) * tpb
    ref_unpack = ref_unpack_base3 if fmt == "base3" else ref_unpack_2bit
    got = packing.unpack(np.array(data, dtype=np.uint8), fmt, (n,))
    assert got.tolist() == ref_unpack(data, n)


def test_1bit_unpack_every_byte():
    data = list(range(256))
    got = packing.unpack(np.array(data, dtype=np.uint8), "1bit", (256 * 8,))
    assert got.tolist() == ref_unpack_1bit(data, 256 * 8)


def test_hf_matches_reference():
    rng = np.random.default_rng(11)
    for shape in [(4, 1), (4, 5), (8, 3), (12, 7), (32, 17)]:
        w = rng.integers(-1, 2, size=shape, dtype=np.int8)
        expected = ref_pack_hf(w.tolist())
        packed = packing.pack(w, "hf")
        assert packed.tolist() == expected
        assert packing.pack_hf(w).tolist() == expected
        assert packing.unpack(packed, "hf", shape).tolist() == ref_unpack_hf(expected, *shape)
        assert packing.unpack_hf(packed, shape).tolist() == w.tolist()


def test_padding_is_trit_zero_and_ignored():
    # base3: one trit +1 -> code 2, four pad trits 0 -> code 1: 2 + 3 + 9 + 27 + 81 = 122.
    assert packing.pack([1], "base3").tolist() == [122]
    # 2bit: one trit -1 -> code 00, three pad codes 01: 0b01_01_01_00 = 84.
    assert packing.pack([-1], "2bit").tolist() == [0b01010100]
    # 1bit: pad bits are 0; set pad bits are ignored on unpack.
    assert packing.pack([1, 1, -1], "1bit").tolist() == [0b011]
    assert packing.unpack(np.array([0xFB], np.uint8), "1bit", (3,)).tolist() == [1, 1, -1]
    # base3 / 2bit padding trits are not returned either.
    assert packing.unpack(np.array([242], np.uint8), "base3", (2,)).tolist() == [1, 1]
    assert packing.unpack(np.array([0b10101010], np.uint8), "2bit", (1,)).tolist() == [1]


def test_accepts_float_trits_and_bytes():
    w = np.array([[1.0, 0.0, -1.0, 1.0, 1.0]], dtype=np.float32)
    assert packing.pack(w, "base3").tolist() == [221]
    assert packing.unpack(bytes([221]), "base3", (1, 5)).tolist() == [[1, 0, -1, 1, 1]]
    assert packing.unpack([221], "base3", 5).tolist() == [1, 0, -1, 1, 1]


def test_empty():
    for fmt in FLAT_FORMATS:
        packed = packing.pack(np.zeros(0, np.int8), fmt)
        assert packed.dtype == np.uint8 and packed.shape == (0,)
        assert packing.unpack(packed, fmt, (0,)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------------------------

def test_base3_by_hand():
    # trits [1, 0, -1, 1, 1] -> codes t+1 = [2, 1, 0, 2, 2]
    # byte = 2*1 + 1*3 + 0*9 + 2*27 + 2*81 = 2 + 3 + 0 + 54 + 162 = 221
    # second byte: trits [-1] + pad [0, 0, 0, 0] -> codes [0, 1, 1, 1, 1]
    # byte = 0*1 + 1*3 + 1*9 + 1*27 + 1*81 = 120
    w = np.array([1, 0, -1, 1, 1, -1], dtype=np.int8)
    assert packing.pack(w, "base3").tolist() == [221, 120]
    assert packing.unpack_base3(np.array([221, 120], np.uint8), (6,)).tolist() == w.tolist()
    # all -1 -> 0; all +1 -> 2*(1+3+9+27+81) = 242 (the largest valid byte)
    assert packing.pack_base3([-1] * 5).tolist() == [0]
    assert packing.pack_base3([1] * 5).tolist() == [242]


def test_2bit_by_hand():
    # trits [1, 0, -1, 1] -> codes [2, 1, 0, 2] at bits 0-1, 2-3, 4-5, 6-7:
    # 2 | 1<<2 | 0<<4 | 2<<6 = 2 + 4 + 0 + 128 = 134 = 0b10_00_01_10
    # trits [0, -1] + pad [0, 0] -> codes [1, 0, 1, 1]: 1 + 0 + 16 + 64 = 81 = 0b01_01_00_01
    w = np.array([[1, 0, -1], [1, 0, -1]], dtype=np.int8)
    assert packing.pack(w, "2bit").tolist() == [0b10000110, 0b01010001] == [134, 81]
    assert packing.unpack_2bit(np.array([134, 81], np.uint8), (2, 3)).tolist() == w.tolist()


def test_1bit_by_hand():
    # trits [1, -1, -1, 1, 1, 1, -1, 1] -> bits LSB first 1,0,0,1,1,1,0,1
    # = 1 + 8 + 16 + 32 + 128 = 185 = 0b1011_1001
    # trit [1] + pad -> 0b0000_0001 = 1
    w = np.array([1, -1, -1, 1, 1, 1, -1, 1, 1], dtype=np.int8)
    assert packing.pack(w, "1bit").tolist() == [185, 1]
    assert packing.unpack_1bit(np.array([185, 1], np.uint8), (9,)).tolist() == w.tolist()


def test_hf_layout_by_hand():
    # (out, in) = (8, 2), n = out/4 = 2: byte [r, c] holds rows r, 2 + r, 4 + r, 6 + r
    # in bits 0-1, 2-3, 4-5, 6-7.
    w = np.array([
        [1, -1],    # row 0: i=0, r=0
        [0, 1],     # row 1: i=0, r=1
        [-1, 0],    # row 2: i=1, r=0
        [1, 1],     # row 3: i=1, r=1
        [0, -1],    # row 4: i=2, r=0
        [-1, -1],   # row 5: i=2, r=1
        [1, 0],     # row 6: i=3, r=0
        [0, 1],     # row 7: i=3, r=1
    ], dtype=np.int8)
    # byte [0, 0] = rows 0,2,4,6 col 0 = trits 1,-1,0,1 -> codes 2,0,1,2
    #             = 2 + 0<<2 + 1<<4 + 2<<6 = 2 + 0 + 16 + 128 = 146
    # byte [0, 1] = rows 0,2,4,6 col 1 = trits -1,0,-1,0 -> codes 0,1,0,1 = 0 + 4 + 0 + 64 = 68
    # byte [1, 0] = rows 1,3,5,7 col 0 = trits 0,1,-1,0 -> codes 1,2,0,1 = 1 + 8 + 0 + 64 = 73
    # byte [1, 1] = rows 1,3,5,7 col 1 = trits 1,1,-1,1 -> codes 2,2,0,2 = 2 + 8 + 0 + 128 = 138
    packed = packing.pack(w, "hf")
    assert packed.shape == (2, 2)
    assert packed.tolist() == [[146, 68], [73, 138]]
    # Bit-field check of the row mapping i*n + r for every byte.
    n = 2
    for r in range(n):
        for c in range(2):
            for i in range(4):
                assert (int(packed[r, c]) >> (2 * i)) & 3 == w[i * n + r, c] + 1
    np.testing.assert_array_equal(packing.unpack(packed, "hf", (8, 2)), w)


# ---------------------------------------------------------------------------------------------
# Invalid inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_non_ternary_value_reported_with_index(fmt):
    w = np.ones((4, 3), dtype=np.int8)
    w[2, 1] = 2
    with pytest.raises(ValueError, match=r"not ternary.*value 2 at index \(2, 1\)"):
        packing.pack(w, fmt)


@pytest.mark.parametrize("bad", [0.5, np.nan, np.inf, -2.0])
def test_non_integer_floats_rejected(bad):
    w = np.zeros(6, dtype=np.float64)
    w[4] = bad
    with pytest.raises(ValueError, match=r"not ternary.*index \(4,\)"):
        packing.pack(w, "base3")


def test_non_numeric_dtype_rejected():
    with pytest.raises(ValueError, match="dtype"):
        packing.pack(np.array(["1", "0"]), "2bit")


def test_base3_byte_243_rejected():
    data = np.array([0, 242, 243, 255], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"base3.*byte 243.*byte index 2.*242"):
        packing.unpack(data, "base3", (20,))


def test_2bit_code_3_rejected():
    data = np.array([0x55, 0x55, 0b01110101], dtype=np.uint8)   # code 3 in bits 4-5 of byte 2
    with pytest.raises(ValueError, match=r"2bit.*byte 117.*byte index 2.*code 3"):
        packing.unpack(data, "2bit", (12,))


def test_hf_code_3_rejected():
    data = np.full((2, 3), 0x55, dtype=np.uint8)
    data[1, 2] = 0b11010101
    with pytest.raises(ValueError, match=r"hf.*byte 213.*byte index \(1, 2\).*code 3"):
        packing.unpack(data, "hf", (8, 3))


def test_1bit_zero_rejected():
    w = np.array([[1, -1, 1], [1, 0, -1]], dtype=np.int8)
    with pytest.raises(ValueError, match=r"1bit.*binary.*0 at index \(1, 1\)"):
        packing.pack(w, "1bit")


@pytest.mark.parametrize("fmt", FLAT_FORMATS)
def test_wrong_packed_length(fmt):
    good = packing.pack(random_trits(np.random.default_rng(3), (41,), fmt), fmt)
    for data in (good[:-1], np.concatenate([good, good[:1]])):
        with pytest.raises(ValueError, match=rf"{fmt}: packed length {data.size} does not match"):
            packing.unpack(data, fmt, (41,))


def test_hf_wrong_packed_shape():
    with pytest.raises(ValueError, match=r"hf: packed shape \(2, 3\).*expected \(3, 3\)"):
        packing.unpack(np.zeros((2, 3), np.uint8), "hf", (12, 3))


def test_hf_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 4"):
        packing.pack(np.zeros((6, 4), np.int8), "hf")
    with pytest.raises(ValueError, match="2-D"):
        packing.pack(np.zeros(8, np.int8), "hf")
    with pytest.raises(ValueError, match="2-D"):
        packing.pack(np.zeros((4, 2, 2), np.int8), "hf")
    with pytest.raises(ValueError, match="multiple of 4"):
        packing.unpack(np.zeros((1, 4), np.uint8), "hf", (5, 4))


def test_unknown_format():
    with pytest.raises(ValueError, match=r"unknown packing format '3bit'.*base3.*2bit.*hf.*1bit"):
        packing.pack(np.zeros(4, np.int8), "3bit")
    with pytest.raises(ValueError, match="unknown packing format"):
        packing.unpack(np.zeros(1, np.uint8), "ternary", (4,))
    with pytest.raises(ValueError, match="unknown packing format"):
        packing.packed_size(10, "base4")


def test_packed_data_must_be_bytes():
    with pytest.raises(ValueError, match="uint8"):
        packing.unpack(np.array([1.0]), "base3", (5,))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        packing.unpack(np.array([256]), "2bit", (4,))
    with pytest.raises(ValueError, match="1-D"):
        packing.unpack(np.zeros((1, 1), np.uint8), "base3", (5,))
