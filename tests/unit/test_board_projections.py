"""Projections onto boards (sim.boards rows priced by host.estimate): figures worked out by
hand from the board's table."""

import pytest

from host import estimate as est
from sim import boards, cycles


def _work(calls, layers=1):
    from host.checkpoint import BitNetConfig
    cfg = BitNetConfig.from_dict({
        "model_type": "bitnet", "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": layers, "num_attention_heads": 1, "num_key_value_heads": 1,
        "head_dim": 8, "vocab_size": 16, "quantization_config": {"quant_method": "bitnet"}})
    return est.Workload("by-hand", "test", cfg, None, calls)


def test_builds_as_the_boards_make_them():
    ice = boards.board("icebreaker-goal").device_info()
    # the four 256-kbit SPRAMs as 2-bit codes: 524,288 trits, 4,096 words of 8x16
    assert (ice.rows, ice.cols, ice.weight_words) == (8, 16, 4096)
    assert ice.act_bytes == 2048 and ice.counter_bits == 32 and ice.clock_hz == 24_000_000
    ecp = boards.board("ecpix5-85f").device_info()
    assert (ecp.weight_words, ecp.act_bytes, ecp.counter_bits) == (boards.ECPIX5_WORDS, 4096, 64)
    # another shape keeps the board's weight memory in trits
    assert boards.board("ecpix5-85f").device_info(8, 8).weight_words == 8 * boards.ECPIX5_WORDS
    assert boards.board("icebreaker-goal").family == "ice40"
    assert boards.board("ulx3s-12f").family == "ecp5"


def test_a_tree_row_reports_what_its_core_would():
    """The 85F goal's row is the adder trees: its INFO is the one the device core it would
    be built with reports, engine included (sim.boards.core_config, rtl.core.DeviceCore)."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from rtl.core import DeviceCore
    b = boards.board("ulx3s-85f-goal")
    info = b.device_info()
    # only its INFO is wanted: the core is never elaborated, so collect it with the warning off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        core_info = DeviceCore(**boards.core_config(32, 64, 512, "ecp5", "tree"),
                               clock_hz=int(b.clock_hz), frame_timeout=1 << 16).info
        gc.collect()
    assert info == core_info and info.tree and info.weight_words == 512
    # the array on the same row: the same trits in as many words of 2048
    assert not b.device_info(engine="array").tree
    with pytest.raises(ValueError, match="power of two"):
        b.device_info(24, 64)
    with pytest.raises(ValueError, match="unknown engine"):
        b.device_info(engine="systolic")


def test_padding_decides_what_is_resident():
    # N = 64 takes a whole tile of 128 outputs on the 8x16 iCEBreaker target: 32 such
    # calls of K = 128 fill its 4096 words exactly, one more streams.
    fits = est.estimate(_work([("x", 64, 128)] * 32), board="icebreaker-goal")["residency"]
    assert fits["all_resident"] and fits["resident_words"] == 4096
    over = est.estimate(_work([("x", 64, 128)] * 33), board="icebreaker-goal")
    assert over["residency"]["streamed_calls"] >= 1
    # Streamed weights cross the link every token: 128 words of 26 base3 bytes (128 trits)
    # for each streamed call, in frames of at most 1024 bytes.
    d = over["phases"]["decode"]
    streamed = over["residency"]["streamed_calls"]
    assert d["bytes"]["weights"] >= streamed * 128 * 26


def test_ulx3s_is_compute_bound_on_a_fast_memory():
    w = _work([("x", 2048, 100)])
    r = est.estimate(w, board="ulx3s-85f-goal", link="mem:1000", engine="array")
    d = r["phases"]["decode"]
    # 32x64 at 100 MHz, a word of 2048 trits read whole every cycle (114 x 36-bit EBR); the
    # array drains 32 rows through its drain register
    assert r["device"]["engine"] == "array"
    assert d["cycles"]["memory"] == 100 and d["cycles"]["array"] == 100 + 32 + 1
    assert d["bound"] == "compute"


def test_the_85f_goal_is_the_adder_trees():
    """The goal's row runs k = 32 trees for 64 lanes: N = 2048 is 32 passes of 64 outputs,
    each K = 100 in ceil(100 / 32) = 4 steps of a word. A pass's last step waits for the
    previous pass's result, latency + 2 = log2(32) + 3 = 8 cycles after its own last step; the
    last result leaves latency + 1 = 7 cycles after the last step: 4 + 31 * 8 + 7 cycles."""
    w = _work([("x", 2048, 100)])
    r = est.estimate(w, board="ulx3s-85f-goal", link="mem:1000")
    d = r["phases"]["decode"]
    assert r["device"]["engine"] == "tree" and r["device"]["pes"] == 2048
    assert d["cycles"]["busy"] == 32 * 4 and d["cycles"]["memory"] == 32 * 4
    assert d["cycles"]["array"] == 4 + 31 * 8 + 7
    assert d["bound"] == "compute"
    # one result row a pass, 64 int32 sums (4 bytes each while K is past the int16 bound)
    assert d["passes"] == 32


def test_measured_16x16_board_and_the_bundled_model():
    # The bundled model's device calls per layer (q|k|v, o, gate|up, down; K = 128 each) on a
    # 16x16 array: 2 + 1 + 1 + 1 tiles of 256 outputs, 128 words each, 640 words a layer.
    work = est.load_workload(preset="tiny")
    r = est.estimate(work, board="ulx3s-45f")
    assert r["residency"]["all_resident"] and r["residency"]["resident_words"] == 4 * 640
    d = r["phases"]["decode"]
    ulx3s_45f = boards.board("ulx3s-45f")
    assert d["cycles"]["memory"] == 4 * 640
    # the one-tile calls: 128 steps, 16 rows drained, a cycle for the drain register
    assert d["cycles"]["array"] == 4 * (cycles.full_rate_cycles(ulx3s_45f.array, [128] * 2)
                                        + 3 * (128 + 16 + 1))
    assert not est.estimate(work, board="ulx3s-12f")["residency"]["all_resident"]


def test_unknown_board():
    with pytest.raises(ValueError, match="unknown board 'nope'; known: ulx3s-85f, icebreaker, "
                                         "ulx3s-12f, ulx3s-45f, ulx3s-25f, ecpix5-85f, "
                                         "orangecrab-85f, icesugar, upduino-v3, "
                                         "ulx3s-85f-goal, icebreaker-goal"):
        boards.board("nope")
