"""A weight memory whose depth is not a power of two, in banks (``rtl.core.weight_bank_depths``):
the device core built as ECP5 boards build it (``registered_ports``), simulated in Verilator.

The memory is filled to its last word with layers, so every bank holds parts of them, and every
layer is checked afterwards: a word written to or read from the wrong bank, or a bank chosen a
cycle early or late between the read registers, would corrupt one of them.
"""

import numpy as np
import pytest

from host import open_device
from rtl.core import weight_bank_depths
from sim import numerics
from sim.cocotb_runner import tool_missing


@pytest.mark.parametrize("words", [1, 2, 3, 12, 41, 2560, 4095])
def test_banks_are_aligned_powers_of_two(words):
    depths = weight_bank_depths(words)
    assert sum(depths) == words
    assert depths == sorted(depths, reverse=True) and len(set(depths)) == len(depths)
    offset = 0
    for depth in depths:
        assert depth & (depth - 1) == 0 and offset % depth == 0
        offset += depth


def test_no_banks_for_no_words():
    with pytest.raises(ValueError, match="at least one word"):
        weight_bank_depths(0)


@pytest.mark.parametrize("rows,cols,words,ks", [
    (2, 3, 41, [10, 10, 10, 11]),       # banks of 32, 8 and 1 words
    (3, 2, 24, [5, 7, 12]),             # 16 and 8
])
def test_layers_across_the_banks_stay_exact(rows, cols, words, ks):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    assert len(weight_bank_depths(words)) > 1 and sum(ks) == words
    rng = np.random.default_rng(words)
    layers = []
    with open_device("sim", rows=rows, cols=cols, weight_words=words, act_bytes=1024,
                     result_rows=64, progress=lambda msg: None) as dev:
        assert dev.info["weight_words"] == words
        # One tile each (rows * cols outputs), K words each: together every word.
        for k in ks:
            w = rng.integers(-1, 2, (rows * cols, k)).astype(np.int8)
            layers.append((w, dev.load(w)))
        assert all(h.resident for _, h in layers) and dev.memory.free_words == 0
        for w, h in reversed(layers):
            x = rng.integers(-128, 128, (3, w.shape[1])).astype(np.int8)
            assert np.array_equal(dev.linear(h, x), numerics.ternary_matmul(w, x))
