"""The numerics contract of tritium: the single definition of what the device computes.

* Weights are trits {-1, 0, +1} (int8), one float scale per tensor lives on the host.
* Activations are int8, quantized per token (last axis) with absmax scaling:
  ``s = 127 / max(max|x|, 1e-5)``, ``x_q = clip(round_half_even(x * s), -128, 127)``,
  evaluated in float32 exactly like the BitNet reference implementation.
* The device returns ``y[m, n] = sum_k W[n, k] * x_q[m, k]`` exactly, as int32.

Everything else (RTL tests, host runtime, estimates) imports these functions instead of
re-deriving them.
"""

from __future__ import annotations

import numpy as np

ACT_BITS = 8
ACT_MIN = -(1 << (ACT_BITS - 1))
ACT_MAX = (1 << (ACT_BITS - 1)) - 1
ACT_QMAX = 127.0      # absmax maps to +127, never to -128 (symmetric quantization)
ACT_EPS = 1e-5        # clamp of max|x| so that an all-zero token does not divide by zero
RESULT_BITS = 32      # the device returns int32


def check_ternary(w, what: str = "weights") -> np.ndarray:
    """Return ``w`` as int8 if every element is -1, 0 or +1; raise ValueError otherwise.

    Floats holding exact -1.0/0.0/1.0 are accepted (checkpoints often store them that way);
    the message names the first offending value and its index, since it reaches users.
    """
    a = np.asarray(w)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what}: expected a numeric array of trits -1/0/+1, got dtype {a.dtype}")
    if a.dtype.kind == "b":
        return a.astype(np.int8)
    if a.dtype.kind in "iu":
        bad = (a > 1) | (a < -1) if a.dtype.kind == "i" else a > 1
    else:
        bad = ~np.isin(a, (-1.0, 0.0, 1.0))   # also catches 0.5, NaN and inf
    if bad.any():
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
        raise ValueError(f"{what}: not ternary, value {a[idx].item()!r} at index {idx} "
                         f"(every weight must be -1, 0 or +1)")
    return a.astype(np.int8, copy=False)


def check_int8(x: np.ndarray, what: str = "activations") -> np.ndarray:
    """Return ``x`` as int8 if it holds integers in [-128, 127]; raise ValueError otherwise."""
    a = np.asarray(x)
    if a.dtype.kind not in "biu":
        raise ValueError(f"{what}: expected an integer array (int8), got dtype {a.dtype}")
    if a.size and (a.min() < ACT_MIN or a.max() > ACT_MAX):
        raise ValueError(f"{what}: values must lie in [{ACT_MIN}, {ACT_MAX}], "
                         f"got range [{a.min().item()}, {a.max().item()}]")
    return a.astype(np.int8)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8 quantization, as BitNet b1.58 defines it.

    Returns ``(x_q, s)``: int8 values of ``x``'s shape and the float32 scale per token with a
    trailing axis of 1, so that ``x ~= x_q / s``.
    """
    xf = np.asarray(x, dtype=np.float32)
    if xf.ndim == 0 or xf.shape[-1] == 0:
        raise ValueError(f"activations need a non-empty last axis (one token per row), "
                         f"got shape {xf.shape}")
    if not np.isfinite(xf).all():
        raise ValueError("activations contain NaN or infinite values")
    amax = np.max(np.abs(xf), axis=-1, keepdims=True)
    s = np.float32(ACT_QMAX) / np.maximum(amax, np.float32(ACT_EPS))
    # np.rint rounds half to even, as torch.round does.
    q = np.clip(np.rint(xf * s), ACT_MIN, ACT_MAX).astype(np.int8)
    return q, s.astype(np.float32)


def ternary_matmul(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact ``y = x @ w.T`` for trits ``w`` (N, K) and int8 ``x`` (M, K); int32 (M, N).

    Computed in int64 and narrowed to int32 only after checking that nothing is lost.
    """
    w = check_ternary(w)
    x = check_int8(x)
    if w.ndim != 2 or x.ndim != 2:
        raise ValueError(f"expected w (N, K) and x (M, K), got shapes {w.shape} and {x.shape}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"K mismatch: w has K={w.shape[1]}, x has K={x.shape[1]}")
    y = x.astype(np.int64) @ w.astype(np.int64).T
    return to_int32(y)


def to_int32(y: np.ndarray) -> np.ndarray:
    """Narrow exact integer results to int32, refusing anything that would wrap."""
    lo, hi = -(1 << (RESULT_BITS - 1)), (1 << (RESULT_BITS - 1)) - 1
    if y.size and (y.min() < lo or y.max() > hi):
        raise OverflowError("result does not fit int32")
    return y.astype(np.int32)


def max_abs_product(act_bits: int = ACT_BITS) -> int:
    """Largest |w * x| for a trit and a signed ``act_bits`` activation: |-1 * -128| = 128."""
    return 1 << (act_bits - 1)


def max_exact_k(acc_bits: int, act_bits: int = ACT_BITS) -> int:
    """Largest K whose dot products always fit a signed ``acc_bits`` accumulator.

    The extreme sum is K * 128 (every weight -1 against activation -128), which must not
    exceed 2**(acc_bits-1) - 1.
    """
    return ((1 << (acc_bits - 1)) - 1) // max_abs_product(act_bits)
