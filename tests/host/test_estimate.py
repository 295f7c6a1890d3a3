"""host.plan and host.estimate: the requests a call makes, counted without a device, and the
estimates built on them (cycles, link, energy, reports, plots, the sweep, the CLI).

The counts are checked against what a device really exchanges (the emulator here; the RTL
simulator and whole models in tests/models/test_run_model.py), the prices by hand from the
tables, and the energy ratios against the BitNet papers' published figures.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from firmware.commands import Command, DeviceInfo
from host import estimate as est
from host import open_device
from host.cli import main
from host.plan import CallCost, Request, RequestPlanner, WeightMemory
from firmware import machine
from firmware.programs import FIRMWARE, linear_args
from sim import boards, energy, numerics


def _random_emu_config(rng):
    rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    return dict(rows=rows, cols=cols, weight_words=int(rng.integers(40, 400)),
                act_bytes=int(rng.integers(30, 300)),
                result_rows=int(rng.integers(rows, 64)), max_payload=int(rng.integers(64, 300)))


@pytest.mark.parametrize("seed", range(4))
def test_planned_cost_is_what_the_device_exchanges(seed):
    """Random devices and layers, resident and streamed, K split or not: the planner's frames,
    bytes, runs and cycles equal what Device.linear sends, receives and the device counts."""
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(12):
        kw = _random_emu_config(rng)
        with open_device("emu", **kw) as dev:
            M, N = int(rng.integers(1, 20)), int(rng.integers(1, 60))
            K = int(rng.integers(1, 700 if rng.random() < 0.5 else kw["act_bytes"] + 1))
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            h = dev.load(w)
            scratch = dev.memory.largest()[1]
            before = dev.stats
            y = dev.linear(h, x)
            after = dev.stats
            assert np.array_equal(y, numerics.ternary_matmul(w, x))
            c = dev.planner.cost(M, N, K, resident=h.resident, scratch_words=scratch)
            got = {k: after[k] - before[k] for k in after}
            assert got["bytes_sent"] == c.bytes_sent
            assert got["bytes_received"] == c.bytes_received
            assert got["frames"] == c.frames and got["runs"] == c.runs
            assert got["waits"] == c.waits
            assert got["busy"] == c.busy_cycles
            assert got["model_cycles"] == c.array_cycles
            device_cycles = sum(got[k] for k in ("busy", "stall_input", "stall_drain",
                                                 "drain_tail"))
            assert device_cycles == c.array_cycles
            assert c.bytes_sent + c.bytes_received == (c.weight_bytes + c.act_bytes
                                                       + c.result_bytes + c.control_bytes)
            seen |= {("resident" if h.resident else "streamed"),
                     ("K split" if c.runs and K > (kw["act_bytes"] if h.resident else
                                                   min(kw["act_bytes"], scratch)) else "whole")}
    assert seen == {"resident", "streamed", "K split", "whole"}


def test_planned_cost_on_the_serial_trees():
    """The same on devices with the digit-serial trees, whose steps' words are 4 memory
    words and whose busy counter counts beats: 4 a step and 4 more a RUN (its stream's slot
    without digits)."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        rows, cols = int(rng.choice([2, 4, 8])), 4 * int(rng.integers(1, 3))
        kw = dict(rows=rows, cols=cols, engine="serial",
                  control=str(rng.choice(["processor", "hardwired"])),
                  weight_words=int(rng.integers(40, 400)),
                  act_bytes=rows * int(rng.integers(4, 40)),
                  result_rows=int(rng.integers(1, 64)), max_payload=int(rng.integers(64, 300)))
        with open_device("emu", **kw) as dev:
            M, N, K = (int(rng.integers(1, 10)), int(rng.integers(1, 40)),
                       int(rng.integers(1, 400)))
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            h = dev.load(w)
            scratch = dev.memory.largest()[1]
            before = dev.stats
            assert np.array_equal(dev.linear(h, x), numerics.ternary_matmul(w, x))
            got = {k: v - before[k] for k, v in dev.stats.items()}
            c = dev.planner.cost(M, N, K, resident=h.resident, scratch_words=scratch)
            assert (got["bytes_sent"], got["bytes_received"], got["frames"], got["runs"],
                    got["waits"]) == (c.bytes_sent, c.bytes_received, c.frames, c.runs,
                                      c.waits)
            assert got["busy"] == c.busy_cycles == 4 * (c.steps + c.runs)
            assert sum(got[k] for k in ("busy", "stall_input", "stall_drain",
                                        "drain_tail")) == c.array_cycles
            if c.runs == 1:     # every tile for every token, ceil(K / rows) steps each
                assert c.steps == M * -(-N // cols) * -(-K // rows)


def test_serial_trees_priced_by_hand():
    """A decode call of 128 x 128 on the UP5K's serial trees (k = 32, 4 lanes, 24 MHz): 32
    products a cycle, a memory word of 32 trits (64 bits, one SPRAM read)."""
    info = boards.board("icebreaker").device_info(rows=32, cols=4, engine="serial")
    # the SPRAMs' 2**19 trits in words of 32, 4 to a step's word
    assert (info.engine, info.weight_words) == (2, 2**19 // 32)
    work = est.Workload("one", "test", _config(hidden=128, intermediate=128, layers=1), None,
                        [("x", 128, 128)])
    r = est.estimate(work, board="icebreaker", info=info, freq_mhz=24)
    d = r["device"]
    assert (d["engine"], d["memory_cycles_per_word"]) == ("serial", 1)
    assert d["peak_macs_per_second"] == 32 * 24e6
    assert r["residency"]["weight_words"] == 2**19 // 128           # steps' words
    p = r["phases"]["decode"]
    # 32 tiles of one pass of 4 steps: 128 steps in 129 slots of 4 cycles, the result in
    # its capture cycle, log2(32) + 1 = 6 cycles after the last beat (the device core's
    # engine: no back-pressure; tests/unit/test_cycles.py)
    assert p["cycles"]["array"] == 129 * 4 + 6
    assert (p["cycles"]["busy"], p["cycles"]["steps"]) == (4 * 129, 128)
    assert p["cycles"]["memory"] == 4 * 129 and p["seconds"]["memory_wait"] == 0
    assert p["utilization"]["array"] == pytest.approx(128 * 128 / (32 * 522))
    # energy counted per step as on the parallel trees: 4 lanes' accumulations, 128 x 4 trits
    # and 32 activations read a step
    w = est._work(work, CallCost(steps=128, busy_cycles=516, passes=32),
                  RequestPlanner(info), macs=128 * 128, seconds=1.0)
    assert (w.accumulations, w.weight_bits, w.act_bits) == (128 * 4, 128 * 128 * 2,
                                                            128 * 32 * 8)


def test_weight_memory_places_as_load_many():
    """The placement the estimates assume is where Device.load_many puts the layers."""
    rng = np.random.default_rng(3)
    with open_device("emu", rows=2, cols=3, weight_words=300) as dev:
        ws = [rng.integers(-1, 2, (int(rng.integers(1, 14)), int(rng.integers(5, 60))))
              .astype(np.int8) for _ in range(9)]
        layers = [(dev.planner.resident_words(*w.shape), w.shape[1]) for w in ws]
        want = WeightMemory(300).place(layers)
        handles = dev.load_many(ws)
        assert [h.base for h in handles] == want
        assert None in want and any(b is not None for b in want)


def test_one_call_by_hand():
    """A decode call of 128 x 128 on the 8x16 iCEBreaker target, priced by hand."""
    b = boards.board("icebreaker-goal")
    info = b.device_info()
    planner = RequestPlanner(info)
    c = planner.cost(1, 128, 128, resident=True)
    # One tile of 128 outputs, one pass of K = 128: 128 steps, the 8-row drain and the drain
    # register's cycle.
    assert c.array_cycles == 128 + 8 + 1 and c.busy_cycles == 128 and c.runs == 1
    # Frames: WRITE_ACTS (4 + 128 bytes), RUN (26), one READ_RESULTS of 8 rows of 16 2-byte
    # sums (K <= 255), READ_COUNTERS; 7 bytes of framing each way on every frame.
    assert c.bytes_sent == (4 + 128 + 7) + (26 + 7) + (7 + 7) + 7
    assert c.bytes_received == 7 + 7 + (8 * 16 * 2 + 7) + (56 + 7)
    work = est.Workload("one", "test", _config(hidden=128, intermediate=128, layers=1), None,
                        [("x", 128, 128)])
    r = est.estimate(work, board="icebreaker-goal")
    d = r["phases"]["decode"]
    # SPRAM: 128 trits x 2 bits = 256 bits a word at 64 bits a cycle, 4 cycles a word.
    assert d["cycles"]["memory"] == 128 * 4 and d["cycles"]["array"] == 128 + 8 + 1
    assert d["seconds"]["memory_wait"] == pytest.approx((512 - 137) / 24e6)
    assert d["seconds"]["control"] == pytest.approx(planner.control_cycles(1, 128, 128) / 24e6)
    link = (c.bytes_sent + c.bytes_received) * 10 / 12e6
    assert d["seconds"]["link_acts_results"] + d["seconds"]["link_control"] == \
        pytest.approx(link)
    assert d["tokens_per_second"] == pytest.approx(1 / d["seconds"]["total"])
    assert d["bound"] == "link"
    assert est.estimate(work, board="icebreaker-goal", link="mem:10")["phases"]["decode"]["bound"] \
        == "memory"


def _config(*, hidden, intermediate, layers, heads=1, kv=1, head_dim=None):
    from host.checkpoint import BitNetConfig
    return BitNetConfig.from_dict({
        "model_type": "bitnet", "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": head_dim or hidden // heads, "vocab_size": 16,
        "quantization_config": {"quant_method": "bitnet"}})


def test_residency_and_streaming_on_the_2b_model():
    """bitnet-b1.58-2B-4T: 30 layers of q|k|v 3840x2560, o 2560x2560, gate|up 13824x2560,
    down 2560x6912, none of which fits the ULX3S-85F target's 512 words: all stream."""
    work = est.load_workload(preset="bitnet-b1.58-2B-4T")
    assert work.calls == [("qkv", 2560 + 2 * 640, 2560), ("o", 2560, 2560),
                          ("gate_up", 2 * 6912, 2560), ("down", 2560, 6912)]
    assert work.ternary_parameters == 30 * (3840 * 2560 + 2560 * 2560 + 13824 * 2560
                                            + 2560 * 6912)
    # Streamed weights cross the link every token, as base3 words of 2048 trits (410 bytes):
    # on the array a word is one element of K for 2048 outputs, on the goal's adder trees
    # (k = 32, 64 lanes) 32 elements of K for 64 outputs.
    array_words = sum(math.ceil(N / 2048) * K for _, N, K in work.calls) * 30
    tree_words = sum(math.ceil(N / 64) * math.ceil(K / 32) for _, N, K in work.calls) * 30
    for engine, words in (("array", array_words), ("tree", tree_words)):
        r = est.estimate(work, board="ulx3s-85f-goal", engine=engine)
        assert r["residency"]["streamed_calls"] == 120 and r["residency"]["upload_bytes"] == 0
        d = r["phases"]["decode"]
        assert d["cycles"]["busy"] == words
        # two words a frame of at most 1024 bytes: its address, header and CRC add 2 to 3%
        assert words * 410 <= d["bytes"]["weights"] < words * 410 * 1.03
        assert d["bound"] == "link"
    # On a 25.6 GB/s memory next to the array the same token is bound by the array.
    fast = est.estimate(work, board="ulx3s-85f-goal", link="mem:25.6")["phases"]["decode"]
    assert fast["tokens_per_second"] > 1000 * d["tokens_per_second"]


def test_energy_ratios_match_the_papers():
    """The BitNet b1.58 paper: 71.4x less arithmetic energy than FP16 at 7 nm (an FP16
    multiply-accumulate against an INT8 addition). At 45 nm the same table gives 50x. With
    zero trits skipped the ratio grows by 1 / (1 - zeros)."""
    work = est.load_workload(preset="bitnet-b1.58-2B-4T")
    for node, fp16 in (("7nm", 71.4), ("45nm", 50.0)):
        base = est.estimate(work, node=node)["phases"]["decode"]["energy"]["baselines"]
        assert base["ratio_fp16"]["dense"] == pytest.approx(fp16, abs=0.05)
        assert base["ratio_fp16"]["zeros_skipped"] == base["ratio_fp16"]["dense"]  # unknown
        assert 1 < base["ratio_int8"]["dense"] < base["ratio_fp16"]["dense"]
    tiny = est.load_workload(preset="tiny")
    assert 0.2 < tiny.zero_fraction < 0.5
    base = est.estimate(tiny)["phases"]["decode"]["energy"]["baselines"]
    assert base["ratio_fp16"]["zeros_skipped"] == pytest.approx(
        base["ratio_fp16"]["dense"] / (1 - tiny.zero_fraction))


def test_energy_grows_with_the_work():
    small = _config(hidden=64, intermediate=64, layers=2)
    big = _config(hidden=64, intermediate=64, layers=4)
    wider = _config(hidden=128, intermediate=256, layers=2)

    def joules(cfg, **kw):
        work = est.Workload("w", "test", cfg, 0.3, est._calls(cfg))
        return est.estimate(work, board="icebreaker-goal", **kw)["phases"]

    a, b, c = (joules(x)["decode"]["energy"]["joules"] for x in (small, big, wider))
    for part in ("arithmetic", "memory", "static", "total"):
        assert a[part] < b[part] and a[part] < c[part]
    assert b["arithmetic"] == pytest.approx(2 * a["arithmetic"])
    p1, p8 = joules(small)["prefill"], joules(small, batch=8)["prefill"]
    assert p8["energy"]["joules"]["arithmetic"] > 7 * p1["energy"]["joules"]["arithmetic"]
    assert a["not_counted"] == ["link"]           # no source for a UART's energy per bit
    with_link = joules(small, link="mem:1:hbm")["decode"]["energy"]["joules"]
    assert with_link["link"] > 0 and with_link["not_counted"] == []


def test_every_constant_has_a_source():
    for c in energy.CONSTANTS.values():
        assert c.unit and c.node
        assert c.source != "none" or c.value is None, c.key       # no number without a source
        assert c.value is None or c.value > 0
    assert energy.value("add_int8", "7nm") == 0.007


#: the report's keys (docs/estimates.md documents each)
TOP = {"schema", "model", "device", "link", "node", "residency", "phases", "constants"}
PHASE = {"tokens", "tokens_per_second", "seconds", "cycles", "bytes", "frames", "waits", "runs",
         "passes", "macs", "bound", "utilization", "calls", "layers", "projections", "energy"}
PROJECTION = {"name", "call", "N", "K", "share", "resident_layers", "seconds", "cycles",
              "bytes", "frames", "waits", "runs", "passes", "joules", "macs", "bound",
              "utilization"}


def test_json_report_schema():
    r = est.estimate(est.load_workload(preset="tiny"), board="ecpix5-85f", batch=5)
    r = json.loads(json.dumps(r))                                  # plain JSON
    assert set(r) == TOP and r["schema"] == est.SCHEMA
    assert set(r["phases"]) == {"decode", "prefill"}
    for name, p in r["phases"].items():
        assert set(p) == PHASE, name
        assert set(p["seconds"]) == {"compute", "memory_wait", "control", "link_weights",
                                     "link_acts_results", "link_control", "link_latency",
                                     "total"}
        assert p["seconds"]["total"] == pytest.approx(
            sum(v for k, v in p["seconds"].items() if k != "total"))
        assert len(p["layers"]) == 4 and len(p["calls"]) == 4
        assert sum(c["cycles"]["array"] for c in p["calls"]) == p["cycles"]["array"]
        for part in ("arithmetic", "memory", "total"):      # energy per layer adds up
            assert sum(x["joules"][part] for x in p["layers"]) == pytest.approx(
                p["energy"]["joules"][part])
            assert sum(x["joules"][part] for x in p["calls"]) == pytest.approx(
                p["energy"]["joules"][part])
        assert set(p["energy"]) == {"joules", "joules_per_token", "zero_fraction",
                                    "zeros_assumed", "activity", "baselines"}
        assert set(p["energy"]["activity"]) == {"ratio", "measured", "arithmetic_unscaled"}
    assert r["phases"]["prefill"]["tokens"] == 5
    with open(est.Path(__file__).resolve().parents[2] / "docs" / "estimates.md") as f:
        doc = f.read()
    for key in TOP | PHASE | PROJECTION:
        assert f"`{key}`" in doc, key
    for p in r["phases"].values():
        assert all(set(x) == PROJECTION for x in p["projections"])


def test_plots_written(tmp_path):
    r = est.estimate(est.load_workload(preset="tiny"), board="icebreaker", batch=4)
    paths = est.plot(r, tmp_path / "plots")
    assert [p.name for p in paths] == ["layers.png", "roofline.png", "energy.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_sweep_picks_a_fitting_configuration():
    s = est.sweep(est.load_workload(preset="tiny"), board_names=["ulx3s-12f", "icebreaker"])
    rows = {(x["board"], x["rows"], x["cols"]): x for x in s["candidates"]}
    # built and met timing (boards/sweeps): fits; 2x4 on the iCEBreaker was not built
    assert rows["ulx3s-12f", 16, 16]["lut4_basis"] == "built" and rows["ulx3s-12f", 16, 16]["fits"]
    assert rows["icebreaker", 2, 2]["fits"] and not rows["icebreaker", 4, 4]["fits"]
    assert not rows["ulx3s-12f", 32, 64]["fits"]                 # the fit says: far too big
    best = s["best"]
    assert best["fits"] and best["decode_tokens_per_second"] == max(
        x["decode_tokens_per_second"] for x in s["candidates"] if x["fits"])
    assert best["board"] in s["why"] and best["bound"] in s["why"]


@pytest.mark.parametrize("spec, kind, rate", [
    ("uart:3000000", "uart", 300_000), ("pcie:gen3x4", "pcie", 4 * 8e9 * 128 / 130 / 8),
    ("pcie:gen1", "pcie", 250e6), ("mem:25.6", "mem", 25.6e9), ("mem:256:hbm", "mem", 256e9)])
def test_link_specs(spec, kind, rate):
    ln = est.parse_link(spec)
    assert ln.kind == kind and ln.bytes_per_second == pytest.approx(rate)


def test_pcie_gen1_energy_is_the_ecp5_serdes_power_over_its_data_rate():
    """TN1261: an ECP5 SERDES channel draws 85 mW at up to 3.2 Gbps; a gen1 lane carries 2 Gbit/s
    of data after 8b/10b, so 42.5 pJ a data bit at any width. Gen2 and later: no source."""
    for spec in ("pcie:gen1", "pcie:gen1x4"):
        assert est.parse_link(spec).pj_per_bit == pytest.approx(85e-3 / 2e9 * 1e12)
    assert est.parse_link("pcie:gen2").pj_per_bit is None
    r = est.estimate(est.load_workload(preset="tiny"), board="ecpix5-85f", link="pcie:gen1x2")
    d = r["phases"]["decode"]
    bits = 8 * (d["bytes"]["sent"] + d["bytes"]["received"])
    assert d["energy"]["joules"]["link"] == pytest.approx(bits * 42.5e-12)
    assert d["seconds"]["link_latency"] == 0          # no USB bridge on a PCIe link


@pytest.mark.parametrize("spec", ["uart:0", "uart", "pcie:gen7", "pcie:gen3x3", "mem:-1",
                                  "mem:10:sram", "usb:12"])
def test_bad_link_specs(spec):
    with pytest.raises(ValueError, match="bad link spec"):
        est.parse_link(spec)


def test_cli_json_and_summary(capsys, tmp_path):
    assert main(["estimate", "--preset", "tiny", "--board", "icebreaker", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"]["board"] == "icebreaker" and out["residency"]["all_resident"]
    assert main(["estimate", "--preset", "bitnet-b1.58-2B-4T", "--rows", "16", "--cols", "16",
                 "--engine", "array", "--freq", "50", "--link", "pcie:gen2x4", "--batch", "32",
                 "--plot", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# bitnet-b1.58-2B-4T on ulx3s-85f (16x16 array at 50 MHz")
    assert "| prefill (32 tokens) |" in out and "FP16 71.4x" in out
    assert err.count("tritium: wrote") == 3
    assert main(["estimate", "--preset", "tiny", "--sweep", "--board", "ecpix5-85f"]) == 0
    assert "Best: ecpix5-85f" in capsys.readouterr().out
    # the board's engine or another: the tiny model's layers (q|k|v 384, o 128, gate|up 256
    # and down 128 outputs, K = 128) on the ULX3S-85F's trees of k = 32 for 64 lanes: 14
    # tiles of 4 steps; or on an array of the same shape
    assert main(["estimate", "--preset", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"]["engine"] == "tree" and out["device"]["rows"] == 32
    assert out["phases"]["decode"]["cycles"]["busy"] == 4 * (384 + 128 + 256 + 128) // 64 * 4
    assert main(["estimate", "--preset", "tiny", "--engine", "array", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["engine"] == "array"
    assert main(["estimate", "--preset", "tiny", "--board", "ulx3s-85f-goal"]) == 0
    assert "(adder trees, k = 32 x 64 lanes at 100 MHz" in capsys.readouterr().out
    assert main(["estimate", "--preset", "tiny", "--engine", "tree", "--rows", "12"]) == 2
    assert "power of two" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["estimate"], "give a model folder or --preset"),
    (["estimate", "--preset", "gpt"], "unknown preset 'gpt'"),
    (["estimate", "--preset", "tiny", "--link", "usb:1"], "bad link spec"),
    (["estimate", "--preset", "tiny", "--board", "nope"], "unknown board 'nope'"),
    (["estimate", "--preset", "tiny", "--batch", "0"], "batch must be a positive integer"),
    (["estimate", "--preset", "tiny", "--rows", "0"], "rows must be a positive integer"),
])
def test_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("tritium: error: ") and message in err


def test_cli_model_folder(capsys, tmp_path):
    assert main(["estimate", str(tmp_path / "missing")]) == 2
    assert "tritium: error:" in capsys.readouterr().err
    folder = est.BUNDLED
    assert main(["estimate", str(folder), "--board", "ulx3s-12f", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"]["name"] == "tiny" and r["model"]["zero_fraction"] > 0


def test_control_cycles_are_the_machines():
    """The control term of a call is the controller reference's count of the linear program
    (tests/rtl/test_controller.py checks that count against the RTL controller)."""
    info = DeviceInfo(rows=2, cols=3, weight_words=300, act_bytes=500, result_rows=60,
                      max_payload=256, program_words=64)
    planner = RequestPlanner(info)
    small, more_tiles = planner.control_cycles(1, 6, 10), planner.control_cycles(1, 60, 10)
    more_tokens = planner.control_cycles(9, 6, 10)
    # The bounds checks make two additions (2 cycles each) per tile and two per token; the
    # SWEEPs after the first are issued while the array streams and are not counted.
    assert more_tiles - small == 9 * 2 * 2
    assert more_tokens - small == 8 * 2 * 2
    program = list(FIRMWARE.words) + [0] * (64 - len(FIRMWARE))
    a = linear_args(0, 0, 0, 1, 60, 10)
    assert planner.control_cycles(1, 60, 10) == machine.run(program, a.entry, a.args,
                                                            planner.params).cycles - 9


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


@pytest.mark.parametrize("preset, board, batch", [("tiny", "ulx3s-25f", 3),
                                                   ("tiny", "ulx3s-85f", 1),
                                                   ("bitnet-b1.58-2B-4T", "ulx3s-85f", 2)])
def test_projections_add_up_to_their_calls(preset, board, batch):
    """q, k, v share out the qkv call and gate, up the gate_up call: every count adds up to
    the call's exactly and every time and energy to rounding; o and down are their calls."""
    work = est.load_workload(preset=preset)
    for p in est.estimate(work, board=board, batch=batch)["phases"].values():
        projs = p["projections"]
        assert [x["name"] for x in projs] == ["q", "k", "v", "o", "gate", "up", "down"]
        cfg = work.config
        assert [x["N"] for x in projs] == [cfg.projection_shape(f"{n}_proj")[0]
                                           for n in ("q", "k", "v", "o", "gate", "up", "down")]
        for call in p["calls"]:
            mine = [x for x in projs if x["call"] == call["name"]]
            assert sum(x["N"] for x in mine) == call["N"]
            assert sum(x["macs"] for x in mine) == call["macs"]
            for key in ("seconds", "cycles", "bytes", "joules", "frames", "waits", "runs",
                        "passes"):
                want = dict(_leaves({key: call[key]}))
                for path, v in want.items():
                    got = [dict(_leaves({key: x[key]}))[path] for x in mine]
                    if isinstance(v, bool) or v is None or isinstance(v, list):
                        assert all(g == v for g in got), path
                    elif isinstance(v, int):
                        assert sum(got) == v, path                   # exactly
                        assert all(isinstance(g, int) for g in got)
                    else:
                        assert sum(got) == pytest.approx(v, rel=1e-12, abs=1e-30), path
            if len(mine) == 1:                      # a call of one projection is itself
                assert {k: mine[0][k] for k in ("seconds", "cycles", "bytes", "joules")} == \
                    {k: call[k] for k in ("seconds", "cycles", "bytes", "joules")}
        # shares follow N: in the 2B model q is 4x k, so it takes about 4x k's bytes
        if preset.startswith("bitnet"):
            q, k = projs[0], projs[1]
            assert q["bytes"]["weights"] == pytest.approx(4 * k["bytes"]["weights"], rel=1e-6)
        # and the per-projection totals add up to the phase's
        assert sum(x["cycles"]["array"] for x in projs) == p["cycles"]["array"]
        assert sum(x["bytes"]["sent"] for x in projs) == p["bytes"]["sent"]


def test_split_int_is_exact_and_proportional():
    assert est._split_int(10, [1, 1, 1]) == [4, 3, 3]
    assert est._split_int(7, [5, 1, 1]) == [5, 1, 1]
    assert est._split_int(0, [3, 4]) == [0, 0]
    rng = np.random.default_rng(1)
    for _ in range(200):
        w = [int(x) for x in rng.integers(1, 50, int(rng.integers(1, 5)))]
        v = int(rng.integers(0, 10**12))
        parts = est._split_int(v, w)
        assert sum(parts) == v
        assert all(abs(p - v * x / sum(w)) < 1 for p, x in zip(parts, w))


def test_static_power_per_fpga_from_the_data_sheet_currents():
    """ECP5 standby: ICC at 1.1 V plus ICCAUX at 2.5 V, per device as the data sheet's table
    gives them; devices it was not found for stay not counted."""
    assert energy.static_constant("ECP5 LFE5U-25F").value == pytest.approx(0.077 * 1100
                                                                            + 0.016 * 2500)
    assert energy.static_constant("ECP5 LFE5U-12F") is energy.static_constant("ECP5 LFE5U-25F")
    assert energy.static_constant("ECP5 LFE5U-85F").value == pytest.approx(0.212 * 1100
                                                                            + 0.026 * 2500)
    assert energy.static_constant("ECP5 LFE5U-45F").value is None
    assert energy.static_constant("ECP5 LFE5UM5G-85F").value is None
    for b in boards.BOARDS.values():                    # every board has an entry
        energy.static_constant(b.fpga)
        energy.bridge_constant(b.bridge)
    with pytest.raises(KeyError, match="no static-power entry"):
        energy.static_constant("ECP5 LFE5U-99F")
    # the 12F's decode token: static power for the phase's time
    r = est.estimate(est.load_workload(preset="tiny"), board="ulx3s-12f")
    d = r["phases"]["decode"]
    assert d["energy"]["joules"]["static"] == pytest.approx(124.7e-3 * d["seconds"]["total"])
    e5 = est.estimate(est.load_workload(preset="tiny"), board="ecpix5-85f")
    assert "static" in e5["phases"]["decode"]["energy"]["joules"]["not_counted"]


def test_every_window_of_requests_waits_for_the_bridge_to_pass_its_answers_on():
    """An FTDI bridge holds a short answer up to its latency timer (1 ms in low-latency mode,
    sim.boards.BRIDGE_ANSWER_SECONDS), and the host waits for answers once per window of
    requests it sends ahead (host.plan), so each window adds that wait; a bridge without a
    figure (the iCELink) adds none, and says so. The wait is link time: it counts towards the
    link bound and the total."""
    work = est.load_workload(preset="tiny")
    assert est.parse_link("uart:12000000", bridge="FT2232H").answer_seconds == 1e-3
    assert est.parse_link("uart:3000000").answer_seconds is None
    for board, wait in (("ecpix5-85f", 1e-3), ("ulx3s-85f", 1e-3), ("icesugar", 0.0)):
        r = est.estimate(work, board=board, batch=4)
        for p in r["phases"].values():
            s = p["seconds"]
            assert 0 < p["waits"] < p["frames"]
            assert s["link_latency"] == pytest.approx(p["waits"] * wait)
            assert s["total"] == pytest.approx(sum(v for k, v in s.items() if k != "total"))
        if not wait:
            assert "answer latency not counted" in r["link"]["note"]
    # A PCIe link holds the host back itself: a resident decode call is one window.
    d = est.estimate(work, board="ecpix5-85f", link="pcie:gen1")["phases"]["decode"]
    assert d["waits"] == 16 and d["seconds"]["link_latency"] == 0
    # on the ECPIX-5 the waits still outweigh the bytes at 12 Mbaud: link-bound
    d = est.estimate(work, board="ecpix5-85f")["phases"]["decode"]
    s = d["seconds"]
    assert d["bound"] == "link" and s["link_latency"] > s["link_acts_results"]
    assert d["tokens_per_second"] == pytest.approx(1 / s["total"])


def test_windows_hold_what_the_uart_fifo_can_while_the_core_is_busy():
    """RequestPlanner.fits on hand-made requests: a 16-byte FIFO less 2 of slack, 300 kB/s
    and 30 MHz (100 cycles a byte time). While the core answers a request with 30 bytes (30
    byte times) the 14 bytes behind it fit, 15 do not; behind a 10,000-cycle RUN only what
    arrives in its time, however short the requests."""
    info = boards.board("ulx3s-12f").device_info(clock_hz=30e6)
    p = RequestPlanner(info, rx_buffer=16, bytes_per_second=300e3)
    rr, quick = Request(Command.READ_RESULTS, 14, 30, 0), Request(Command.READ_COUNTERS, 7, 63, 0)
    assert p.fits([rr, Request(Command.READ_RESULTS, 14, 7, 0)])
    assert not p.fits([rr, Request(Command.READ_RESULTS, 15, 7, 0)])
    run = Request(Command.RUN, 33, 7, 10_000)
    assert p.fits([run, rr]) and not p.fits([run, rr, quick])
    wa = Request(Command.WRITE_ACTS, 20, 7, 16)
    assert p.windows([wa, run, rr, quick]) == [(0, 3), (3, 4)]
    # without a FIFO limit, a state change after a read still starts a new window
    assert RequestPlanner(info).windows([wa, run, rr, quick, wa, run]) == [(0, 4), (4, 6)]
    # and without a clock to time the device by, nothing is sent ahead
    untimed = RequestPlanner(boards.board("ulx3s-12f").device_info(), rx_buffer=16)
    assert untimed.windows([wa, run, rr]) == [(0, 1), (1, 2), (2, 3)]


def test_uart_energy_is_the_bridge_power_while_bytes_move():
    """FT231X: 8 mA at 5 V = 40 mW; over a 3 Mbaud 8N1 link (2.4 Mbit/s of data) that is
    16.7 nJ a data bit, so a phase's link energy is 40 mW times its link time."""
    ln = est.parse_link("uart:3000000", bridge="FT231X")
    assert ln.pj_per_bit == pytest.approx(40e-3 / 2.4e6 * 1e12)
    assert est.parse_link("uart:3000000").pj_per_bit is None             # no bridge named
    assert est.parse_link("uart:12000000", bridge="FT2232H").pj_per_bit is None  # no source
    r = est.estimate(est.load_workload(preset="tiny"), board="ulx3s-45f", batch=4)
    for p in r["phases"].values():
        s = p["seconds"]
        link_s = s["link_weights"] + s["link_acts_results"] + s["link_control"]
        assert p["energy"]["joules"]["link"] == pytest.approx(40e-3 * link_s)
    with pytest.raises(KeyError, match="no power entry for USB bridge"):
        est.parse_link("uart:115200", bridge="CH340")


def test_measured_activity_scales_the_additions_of_the_bundled_model_only():
    """The bundled model's INT8 additions cost the measured activity (sim.toggles) times the
    random-operand figure; the accumulator's 32-bit additions and other models are as they
    were."""
    ratio = energy.value("activity_tiny")
    assert 0.5 < ratio < 1.0                   # real activations are small: fewer flips
    tiny = est.load_workload(preset="tiny")
    assert tiny.activity == ratio
    d = est.estimate(tiny, board="icebreaker-goal")["phases"]["decode"]
    a = d["energy"]["activity"]
    assert a["measured"] and a["ratio"] == ratio
    adds = d["macs"] * (1 - tiny.zero_fraction) * energy.value("add_int8", "7nm") * 1e-12
    acc = d["energy"]["joules"]["arithmetic"] - ratio * adds
    assert a["arithmetic_unscaled"] == pytest.approx(adds + acc)
    assert acc == pytest.approx(d["passes"] * 128 * energy.value("add_int32", "7nm") * 1e-12)
    big = est.estimate(est.load_workload(preset="bitnet-b1.58-2B-4T"))["phases"]["decode"]
    assert big["energy"]["activity"] == {"ratio": 1.0, "measured": False, "arithmetic_unscaled":
                                         big["energy"]["joules"]["arithmetic"]}
