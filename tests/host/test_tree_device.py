"""``Device`` on a device built with the adder-tree engine (INFO's ``engine``): the host lays
weights out as tree beats, pads activations to whole steps of k and splits layers that do not
fit (streamed weights, K split across runs, tokens across result buffers), with exact results
and the device's counters equal to the tree's cycle model; on the emulator and on the RTL core
in Verilator."""

import numpy as np
import pytest

from host import open_device
from sim import numerics, schedule
from sim.cocotb_runner import tool_missing


def device_cycles(stats) -> int:
    return sum(stats[k] for k in ("busy", "stall_input", "stall_drain", "drain_tail"))


def rand_layer(rng, M, N, K):
    return (rng.integers(-1, 2, (N, K)).astype(np.int8),
            rng.integers(-128, 128, (M, K)).astype(np.int8))


def check(dev, w, x):
    before = dict(dev.stats)
    y = dev.linear(w, x)
    assert np.array_equal(y, numerics.ternary_matmul(w, x))
    after = dev.stats
    assert device_cycles(after) - device_cycles(before) == \
        after["model_cycles"] - before["model_cycles"]
    return after["runs"] - before["runs"]


def test_tree_layers_resident_on_the_emulator():
    rng = np.random.default_rng(11)
    with open_device("emu", rows=8, cols=5, engine="tree") as dev:
        assert dev.planner.tree is not None and dev.info["engine"] == 1
        for M, N, K in ((1, 13, 700), (6, 5, 8), (3, 1, 1), (2, 40, 257)):
            w, x = rand_layer(rng, M, N, K)
            h = dev.load(w)
            assert h.resident and h.n_words == -(-N // 5) * -(-K // 8)
            assert check(dev, w, x) == 1
            dev.free(h)


def test_tree_layers_split_to_fit():
    """Weight memory for half the layer (streamed), an activation buffer shorter than one
    token's K (split K, results added on the host) and a result buffer of 4 rows (tokens
    and tiles in several runs)."""
    rng = np.random.default_rng(12)
    w, x = rand_layer(rng, 7, 11, 300)          # 3 tiles of 4 lanes, 38 steps of 8
    with open_device("emu", rows=8, cols=4, engine="tree", weight_words=60) as dev:
        h = dev.load(w)
        assert h.streamed
        assert check(dev, w, x) > 1
    with open_device("emu", rows=8, cols=4, engine="tree", act_bytes=96, result_rows=4) as dev:
        assert dev.planner.act_steps == 12
        assert check(dev, w, x) > 1


@pytest.mark.parametrize("engine,lanes", [("tree", 2), ("serial", 4)])
def test_extremes_k_16384(engine, lanes):
    with open_device("emu", rows=32, cols=lanes, engine=engine, act_bytes=16384) as dev:
        for wv, xv in ((-1, -128), (1, -128), (-1, 127)):
            w = np.full((lanes, 16384), wv, dtype=np.int8)
            x = np.full((1, 16384), xv, dtype=np.int8)
            assert (dev.linear(w, x) == wv * xv * 16384).all()


@pytest.mark.parametrize("registered", [True, False])
def test_tree_core_in_verilator(registered):
    """The RTL core (as ECP5 builds it: carry-cell pairs, registered ports; and without the
    registers) behind the same host: exact, counters equal to the model, split layers too."""
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    rng = np.random.default_rng(13)
    options = dict(pe_adder="ccu2c") if registered else dict(registered_ports=False)
    with open_device("sim", progress=lambda msg: None, rows=4, cols=3, engine="tree",
                     weight_words=96, act_bytes=256, result_rows=16, max_payload=256,
                     **options) as dev:
        for M, N, K in ((1, 7, 50), (5, 5, 13), (2, 2, 1), (3, 7, 300)):
            w, x = rand_layer(rng, M, N, K)
            check(dev, w, x)
        plan = schedule.plan_tree(dev.planner.tree, 1, 7, 50)
        before = dict(dev.stats)
        dev.linear(*rand_layer(rng, 1, 7, 50))      # fits: one RUN, every step busy once
        assert dev.stats["busy"] - before["busy"] == sum(plan.lengths)


@pytest.mark.parametrize("spec", ["emu", "sim"])
def test_linear_hardwired(spec):
    """A device with no control processor (``control="hardwired"``, INFO's program_words 0:
    the UP5K's kind): the host loads no program and runs the same layers, resident, streamed
    and split, exact, the counters equal to the model; a program load is refused."""
    if spec == "sim" and tool_missing("verilator"):
        pytest.skip(tool_missing("verilator"))
    rng = np.random.default_rng(14)
    extra = dict(progress=lambda msg: None, registered_ports=False) if spec == "sim" else {}
    with open_device(spec, rows=4, cols=4, engine="tree", control="hardwired",
                     weight_words=96, act_bytes=256, result_rows=16, max_payload=256,
                     **extra) as dev:
        assert dev.info["program_words"] == 0 and dev.planner.hardwired
        for M, N, K in ((1, 7, 50), (5, 5, 13), (2, 2, 1), (3, 9, 300)):
            w, x = rand_layer(rng, M, N, K)
            check(dev, w, x)
        with pytest.raises(ValueError, match="no program memory: its linear is hardwired"):
            dev.load_program([0])


def test_a_buffer_of_part_words_is_refused_alike():
    """The emulator and the RTL core refuse it with the same words (``TreeConfig.act_words``)."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from rtl.core import DeviceCore
    # (a constructor that raises leaves an elaboratable behind: collected here, unwarned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for make in (lambda: open_device("emu", rows=8, cols=2, engine="tree", act_bytes=100),
                     lambda: DeviceCore(rows=8, cols=2, engine="tree", act_bytes=100)):
            with pytest.raises(ValueError, match=r"act_bytes \(100\) must be a multiple"):
                make()
        gc.collect()
