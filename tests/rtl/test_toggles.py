"""sim.toggles: the PE's partial-sum toggles as Verilator's toggle coverage counts them on the
RTL, against the NumPy count the activity measurement uses for the whole model."""

from __future__ import annotations

import numpy as np
import pytest

from sim import toggles
from sim.cocotb_runner import tool_missing

pytestmark = pytest.mark.skipif(tool_missing("verilator") is not None,
                                reason=str(tool_missing("verilator")))


def test_numpy_count_by_hand():
    # one pass of 3 steps: psum 0 -> 5 (0b101: 2 flips) -> 5 - 2 = 3 (0b011: 2 flips)
    # -> capture: psum back to 0 (0b011 -> 0: 2 flips)
    acts = np.array([[5, 2, 7]], np.int8)
    trits = np.array([[1, -1, 1]], np.int8)
    assert toggles.psum_toggles(acts, trits) == 6
    # a negative sum flips the high bits: 0 -> -1 (16 flips) -> back to 0 at the capture
    assert toggles.psum_toggles(np.array([[1, 0]], np.int8), np.array([[-1, 0]], np.int8)) == 32
    # zero trits change nothing but the capture's return to 0
    assert toggles.psum_toggles(np.array([[9, 9]], np.int8), np.array([[0, 0]], np.int8)) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_rtl_toggle_coverage_equals_the_numpy_count(seed, tmp_path_factory):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 200))
    acts = rng.integers(-128, 128, (30, K)).astype(np.int8)
    # random trits, with whole passes of small activations and of zeros mixed in
    trits = rng.integers(-1, 2, (30, K)).astype(np.int8)
    acts[:5] = rng.integers(-3, 4, (5, K))
    trits[5:8] = 0
    r = toggles.measure_rtl(acts, trits, tmp_path_factory.getbasetemp() / "toggles")
    assert r["cycles"] == acts.size
    assert r["psum_toggles"] == toggles.psum_toggles(acts, trits) > 0


def test_streams_are_each_outputs_passes():
    w = np.array([[1, 0, -1], [0, 1, 1]], np.int8)
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
    a, t = toggles.streams(w, x)
    assert a.tolist() == [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]]
    assert t.tolist() == [[1, 0, -1], [1, 0, -1], [0, 1, 1], [0, 1, 1]]
    # each pass's final partial sum is the output the layer computes
    assert (np.sum(a.astype(int) * t, axis=1).reshape(2, 2).T == x.astype(int) @ w.T).all()
