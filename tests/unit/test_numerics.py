"""Tests of sim.numerics: the numerics contract (quantization, exact ternary matmul, widths).

References here are deliberately naive (per-row Python loops over float32 scalars and Python
ints) and share nothing with the vectorized implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import numerics

SEED = 20240601


# ---------------------------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------------------------

def ref_quantize_row(row) -> tuple[list[int], np.float32]:
    """One token, straight from the definition: float32 throughout, round half to even, clip."""
    vals = [np.float32(v) for v in row]
    amax = np.float32(0.0)
    for v in vals:
        if abs(v) > amax:
            amax = abs(v)
    s = np.float32(127.0) / max(amax, np.float32(1e-5))
    assert isinstance(s, np.float32)
    q = []
    for v in vals:
        p = v * s                          # float32 product, like the reference
        assert isinstance(p, np.float32)
        r = round(float(p))                # Python's round() on a float is half-to-even
        q.append(min(127, max(-128, r)))
    return q, s


def ref_quantize(x) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(-1, x.shape[-1])
    qs, ss = [], []
    for row in flat:
        q, s = ref_quantize_row(row)
        qs.append(q)
        ss.append(s)
    return (np.array(qs, dtype=np.int64).reshape(x.shape),
            np.array(ss, dtype=np.float32).reshape(x.shape[:-1] + (1,)))


def ref_matmul(w, x) -> list[list[int]]:
    """y[m][n] = sum_k w[n][k] * x[m][k], a triple loop over Python ints."""
    w = [[int(v) for v in row] for row in np.asarray(w)]
    x = [[int(v) for v in row] for row in np.asarray(x)]
    N, K, M = len(w), len(w[0]), len(x)
    y = [[0] * N for _ in range(M)]
    for m in range(M):
        for n in range(N):
            acc = 0
            for k in range(K):
                acc += w[n][k] * x[m][k]
            y[m][n] = acc
    return y


# ---------------------------------------------------------------------------------------------
# quantize_activations
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 16), (3, 4, 33), (64,), (2, 1, 2560)])
def test_quantize_matches_naive_reference(shape):
    rng = np.random.default_rng([SEED, *shape])
    scale = rng.choice([1e-3, 1.0, 30.0, 1e4], size=shape[:-1] + (1,))
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    q, s = numerics.quantize_activations(x)
    rq, rs = ref_quantize(x)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert s.dtype == np.float32 and s.shape == x.shape[:-1] + (1,)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    # absmax maps to +-127 exactly, and x ~= q / s within half a step
    assert (np.abs(q).max(axis=-1) == 127).all()
    assert np.abs(x - q / s).max() <= (0.5 + 1e-3) / s.min()


def test_quantize_float64_input_is_evaluated_in_float32():
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((4, 50)) * 3.0          # float64
    q, s = numerics.quantize_activations(x)
    rq, rs = ref_quantize(x.astype(np.float32))
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)


def test_quantize_ties_round_half_to_even():
    # amax = 127 gives s = 1.0 exactly: every x.5 is an exact tie after scaling.
    row1 = [127.0, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5, 4.5]
    exp1 = [127, 0, 2, 2, 4, 0, -2, -2, 126, -126, 4]
    # amax = 254 gives s = 0.5 exactly: odd integers become ties.
    row2 = [254.0, 1.0, 3.0, 5.0, -1.0, -3.0, -5.0, 253.0, -7.0, 9.0, 0.0]
    exp2 = [127, 0, 2, 2, 0, -2, -2, 126, -4, 4, 0]
    q, s = numerics.quantize_activations(np.array([row1, row2], dtype=np.float32))
    assert s[:, 0].tolist() == [1.0, 0.5]
    assert q.tolist() == [exp1, exp2]
    rq, _ = ref_quantize([row1, row2])
    assert rq.tolist() == [exp1, exp2]


def test_quantize_all_zero_token_uses_eps_clamp():
    x = np.zeros((3, 8), dtype=np.float32)
    x[1] = np.linspace(-2, 2, 8)
    x[2, :2] = [1e-6, -4e-6]          # below the clamp: scaled by 127/1e-5, not to +-127
    q, s = numerics.quantize_activations(x)
    clamp_scale = np.float32(127.0) / np.float32(1e-5)
    assert np.isfinite(s).all()
    assert s[0, 0] == clamp_scale and s[2, 0] == clamp_scale
    assert (q[0] == 0).all()
    # 1e-6 * 1.27e7 = 12.7 -> 13; -4e-6 * 1.27e7 = -50.8 -> -51
    assert q[2, :2].tolist() == [13, -51]
    assert (q[2, 2:] == 0).all()
    rq, rs = ref_quantize(x)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)


def test_quantize_negative_absmax_maps_to_minus_127():
    x = np.array([[-3.0, 1.0, 2.0, 0.0],
                  [-1e-2, 5e-3, -5e-3, 1e-3],
                  [-1000.0, 999.0, -999.0, 1.0]], dtype=np.float32)
    q, s = numerics.quantize_activations(x)
    assert q[:, 0].tolist() == [-127, -127, -127]      # never -128: quantization is symmetric
    assert q.min() >= -127
    rq, rs = ref_quantize(x)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad):
    x = np.ones((2, 5), dtype=np.float32)
    x[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        numerics.quantize_activations(x)


# ---------------------------------------------------------------------------------------------
# ternary_matmul
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trial", range(12))
def test_matmul_matches_triple_loop(trial):
    rng = np.random.default_rng([SEED, trial])
    M, N, K = (int(v) for v in rng.integers(1, 12, size=3))
    w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
    y = numerics.ternary_matmul(w, x)
    assert y.dtype == np.int32 and y.shape == (M, N)
    assert y.tolist() == ref_matmul(w, x), f"seed [{SEED}, {trial}]"


def test_matmul_accepts_other_integer_and_float_trit_dtypes():
    rng = np.random.default_rng(SEED)
    w = rng.integers(-1, 2, size=(5, 9))
    x = rng.integers(-128, 128, size=(3, 9))
    expected = ref_matmul(w, x)
    assert numerics.ternary_matmul(w.astype(np.int64), x.astype(np.int32)).tolist() == expected
    assert numerics.ternary_matmul(w.astype(np.float32), x.astype(np.int16)).tolist() == expected


def test_matmul_extremes_k16384():
    K = 16384
    ones = np.ones((2, K), dtype=np.int8)
    # all -1 weights x -128: every product is +128, y = K*128 = 16384*128 = 2097152
    assert (numerics.ternary_matmul(-ones, np.full((3, K), -128, np.int8)) == 2097152).all()
    # all +1 x -128: y = -K*128 = -2097152
    assert (numerics.ternary_matmul(ones, np.full((3, K), -128, np.int8)) == -2097152).all()
    # all +1 x +127: y = K*127 = 2080768; all -1 x +127: -2080768
    assert (numerics.ternary_matmul(ones, np.full((1, K), 127, np.int8)) == 2080768).all()
    assert (numerics.ternary_matmul(-ones, np.full((1, K), 127, np.int8)) == -2080768).all()
    # alternating -128/+127 activations with +1 weights: (K/2)*(-128 + 127) = -8192
    x = np.tile(np.array([-128, 127], np.int8), K // 2)[None, :]
    assert numerics.ternary_matmul(ones, x).tolist() == [[-8192, -8192]]
    # weights matching the sign of each activation: (K/2)*(128 + 127) = 8192*255 = 2088960
    w = np.tile(np.array([-1, 1], np.int8), K // 2)[None, :]
    assert numerics.ternary_matmul(w, x).tolist() == [[2088960]]


def test_matmul_rejects_non_ternary_weights_naming_value_and_index():
    x = np.zeros((2, 4), np.int8)
    w = np.zeros((3, 4), np.int8)
    w[1, 2] = 2
    with pytest.raises(ValueError, match=r"value 2 at index \(1, 2\)"):
        numerics.ternary_matmul(w, x)
    w = np.zeros((3, 4), np.int8)
    w[2, 0] = -2
    w[2, 3] = 5
    with pytest.raises(ValueError, match=r"value -2 at index \(2, 0\)"):   # the first one
        numerics.ternary_matmul(w, x)
    w = np.zeros((3, 4), np.float32)
    w[0, 3] = 0.5
    with pytest.raises(ValueError, match=r"value 0\.5 at index \(0, 3\)"):
        numerics.ternary_matmul(w, x)
    w = np.zeros((3, 4), np.float64)
    w[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"value nan at index \(2, 1\)"):
        numerics.ternary_matmul(w, x)
    w = np.full((3, 4), 255, np.uint8)
    with pytest.raises(ValueError, match=r"value 255 at index \(0, 0\)"):
        numerics.ternary_matmul(w, x)
    with pytest.raises(ValueError, match="dtype"):
        numerics.ternary_matmul(np.array([["1", "0"]]), np.zeros((1, 2), np.int8))


def test_matmul_rejects_non_int8_activations():
    w = np.ones((2, 3), np.int8)
    with pytest.raises(ValueError, match="integer array"):
        numerics.ternary_matmul(w, np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[-128, 127\].*\[0, 128\]"):
        numerics.ternary_matmul(w, np.array([[0, 128, 1]], np.int16))
    with pytest.raises(ValueError, match=r"\[-128, 127\].*\[-129, 0\]"):
        numerics.ternary_matmul(w, np.array([[-129, 0, 0]], np.int32))


def test_matmul_rejects_shape_errors():
    with pytest.raises(ValueError, match="K mismatch: w has K=4, x has K=5"):
        numerics.ternary_matmul(np.ones((3, 4), np.int8), np.ones((2, 5), np.int8))
    with pytest.raises(ValueError, match="shapes"):
        numerics.ternary_matmul(np.ones((4,), np.int8), np.ones((2, 4), np.int8))
    with pytest.raises(ValueError, match="shapes"):
        numerics.ternary_matmul(np.ones((3, 4), np.int8), np.ones((1, 2, 4), np.int8))


# ---------------------------------------------------------------------------------------------
# max_exact_k and the width bounds
# ---------------------------------------------------------------------------------------------

# The extreme sum is K * 128 (weights all -1, activations all -128), which must be <= 2**(b-1)-1.
#   b = 16: 32767 // 128 = 255          (255*128 = 32640 <= 32767, 256*128 = 32768 > 32767)
#   b = 22: 2097151 // 128 = 16383      (16383*128 = 2097024, 16384*128 = 2097152 > 2097151)
#   b = 32: 2147483647 // 128 = 16777215 (16777215*128 = 2147483520, 16777216*128 = 2**31)
#   b = 10: 511 // 128 = 3              (3*128 = 384, 4*128 = 512 > 511)
HAND_K = {16: 255, 22: 16383, 32: 16777215, 10: 3, 9: 1}


@pytest.mark.parametrize("bits", sorted(HAND_K))
def test_max_exact_k_by_hand(bits):
    k = numerics.max_exact_k(bits)
    assert k == HAND_K[bits]
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    assert k * 128 <= hi and -k * 128 >= lo             # K fits at both extremes
    assert (k + 1) * 128 > hi                           # K+1 with all -1 x -128 would not


def test_max_exact_k_other_act_width():
    # 4-bit activations: max |w*x| = 8; 16-bit sums: 32767 // 8 = 4095
    assert numerics.max_abs_product(4) == 8
    assert numerics.max_exact_k(16, act_bits=4) == 4095
    assert numerics.max_abs_product() == 128


def test_max_exact_k_16_bits_with_real_matmul():
    k = numerics.max_exact_k(16)
    ok = numerics.ternary_matmul(-np.ones((1, k), np.int8), np.full((1, k), -128, np.int8))
    assert ok.item() == 32640 <= np.iinfo(np.int16).max
    assert (ok.astype(np.int16) == ok).all()
    over = numerics.ternary_matmul(-np.ones((1, k + 1), np.int8),
                                   np.full((1, k + 1), -128, np.int8))
    assert over.item() == 32768 > np.iinfo(np.int16).max


def test_to_int32_at_k_max_32():
    k = numerics.max_exact_k(32)
    assert numerics.to_int32(np.array([k * 128, -k * 128], np.int64)).tolist() == \
        [2147483520, -2147483520]
    with pytest.raises(OverflowError):
        numerics.to_int32(np.array([(k + 1) * 128], np.int64))
    # the negative extreme -(K+1)*128 = -2**31 still fits int32: only the positive side binds
    assert numerics.to_int32(np.array([-(k + 1) * 128], np.int64)).item() == -(1 << 31)
