"""Weights in the UP5K's SPRAMs (``rtl.spram``): the device core built as iCE40 boards build it,
simulated in Verilator with yosys' own model of ``SB_SPRAM256KA``.

Each array width lays its words out differently (two words to a 16-bit location at 2x2, one
at 2x4, across two SPRAMs at 4x4), so each is filled to its capacity with layers and every
layer is checked afterwards: a word written to the wrong bank, lane or half would corrupt a
layer loaded earlier or later.
"""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from host import open_device
from rtl.core import DeviceCore
from rtl.spram import SPRAM_DEPTH, SPRAM_WIDTH, SPRAMS, SPRAMWeights, spram_words
from sim import numerics
from sim.cocotb_runner import tool_missing


@pytest.mark.parametrize("rows,cols", [(2, 2), (2, 4), (4, 4)])
def test_layers_filling_the_sprams_stay_exact(rows, cols):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    pes = rows * cols
    words = spram_words(2 * pes)
    # The four SPRAMs hold 1 Mbit, 2 bits a trit, whatever the word width.
    assert words * pes == SPRAMS * SPRAM_DEPTH * SPRAM_WIDTH // 2
    rng = np.random.default_rng(pes)
    K = 250
    # Layers of one whole tile count each, filling all but a few words.
    tiles_per_layer = words // K // 4
    layers = []
    with open_device("sim", rows=rows, cols=cols, weight_words=words, weight_ram="spram",
                     act_bytes=1024, result_rows=tiles_per_layer * rows,
                     progress=lambda msg: None) as dev:
        assert dev.info["weight_words"] == words
        for _ in range(4):
            w = rng.integers(-1, 2, (tiles_per_layer * pes, K)).astype(np.int8)
            layers.append((w, dev.load(w)))
        for w, h in layers:
            x = rng.integers(-128, 128, (2, K)).astype(np.int8)
            assert np.array_equal(dev.linear(h, x), numerics.ternary_matmul(w, x))


def test_spram_layouts_refused():
    assert spram_words(8) == 131072 and spram_words(32) == 32768
    with pytest.raises(ValueError, match="4, 8, 16, 32 or 64 bits"):
        spram_words(256)                      # 8x16: wider than the four SPRAMs side by side
    # The half-built objects would warn (UnusedElaboratable) when collected: collect them here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="weight_ram must be None or 'spram'"):
            DeviceCore(rows=2, cols=2, weight_ram="bram")
        with pytest.raises(ValueError, match="4, 8, 16, 32 or 64 bits"):
            DeviceCore(rows=8, cols=16, weight_ram="spram")
        with pytest.raises(ValueError, match="do not fit the UP5K's SPRAMs"):
            SPRAMWeights(word_bits=8, depth=131073)
        gc.collect()
