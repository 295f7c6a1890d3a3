"""``make bench``: the compute core's figures, written as JSON into ``bench/results/``.

* resources: LUT4 and FF per PE and for a 16x16 array from yosys ``synth_ecp5`` and
  ``synth_ice40`` (YoWASP), with LUT4 per partial-sum bit (the goal is about 2);
* utilization of decode and prefill shapes from the golden cycle model and measured in RTL
  (Verilator through cocotb), which must agree;
* simulated cycles per second of a 16x16 engine in Verilator (cocotb) and in Amaranth's simulator;
* link efficiency: bits on the link per weight uploaded, framing included (goal <= 1.65);
* the device core (``device``): the ``sim`` device (16x16 core in Verilator) running whole
  layers: simulated cycles per second (goal >= 1M), utilization from the device's own
  counters, link bytes per ``linear`` call with resident weights, and the control program's
  cycles before the first operand (Amaranth simulator);
* the bundled model (``model``, into ``bench/results/model.json``): ``models/tiny`` generating
  on ``emu`` and ``sim``: tokens per second, host overhead per token, device cycles and link
  bytes per token, and projected tokens per second on each board of ``sim.boards``;
* link faults (``faults``, into ``bench/results/faults.json``): 10^4 frames of random layers
  through ``host.faults`` at a byte error rate of 1e-3 on ``emu`` and ``sim``, every result
  checked against the golden model (wrong results must be 0), and a rate at which retries
  cannot succeed (a clear error, no result);
* garbage on the device (``fuzz``, into ``bench/results/fuzz.json``): 10^4 random valid and
  malformed requests to the RTL core in Verilator (``sim.fuzz``), each answered exactly as the
  emulator answers it and each followed by a valid request that must be answered;
* estimates (``estimate``, into ``bench/results/estimate.json``): ``tritium estimate`` of the
  bundled model on every board and of bitnet-b1.58-2B-4T over four links, and the sweep's best;
* where the cells go (``breakdown``, into ``bench/results/breakdown.json``): the iCEBreaker's
  and the ULX3S-85F's default devices synthesized with their hierarchy kept, per module.

Usage: ``python -m bench [--quick]
[--only resources,utilization,speed,link,device,model,faults,fuzz,estimate,breakdown]
[--out FILE]``. A run of some of the compute core's parts updates those in
``compute_core.json`` and keeps the rest. These are measurements, not tests: the machines
are shared, so quote ratios and cycle counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rtl.adder_tree import TreeEngine
from rtl.serial_tree import SerialTreeEngine
from rtl.synth import synthesize, synthesize_modules
from rtl.systolic import MatrixEngine, SystolicArray
from rtl.ternary_pe import TernaryPE
from sim import cycles, packing, schedule

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: what the model benchmark (and make demo) asks the bundled model to continue
MODEL_PROMPT = "The with statement"

# BitNet b1.58 2B-4T projection shapes (hidden 2560, FFN 6912), as (N, K).
BITNET_2B = {"attn_qo": (2560, 2560), "attn_kv": (640, 2560), "ffn_gate_up": (6912, 2560),
             "ffn_down": (2560, 6912)}


def lut4_equivalent(stats: dict) -> int:
    """LUT4 sites used: on ECP5 each CCU2C carry cell occupies two LUT4s; on iCE40 SB_CARRY
    rides along with a LUT that is already counted."""
    return stats["lut4"] + (2 * stats["carry"] if stats["family"] == "ecp5" else 0)


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def bench_resources(quick: bool) -> dict:
    out = {}
    psum = 16
    # ECP5 builds use the carry-cell PE (sim.boards.core_config); the generic one is what iCE40
    # builds use, also synthesized for ECP5 to show the difference.
    def targets(adder):
        parts = [("pe", lambda: TernaryPE(psum_width=psum, adder=adder), 1)]
        if not quick:
            parts += [
                ("array_16x16", lambda: SystolicArray(rows=16, cols=16, psum_width=psum,
                                                      adder=adder), 256),
                ("engine_16x16", lambda: MatrixEngine(rows=16, cols=16, psum_width=psum,
                                                      adder=adder), 256),
                # the adder-tree engine with as many products a cycle (rtl.adder_tree)
                ("tree_32x8", lambda: TreeEngine(k=32, lanes=8, adder=adder), 256),
            ]
        return parts

    # The UP5K's candidates for 128 products (docs/architecture.md, "The digit-serial tree
    # engine"): the parallel trees, and the digit-serial ones, a step in four cycles.
    ice40_only = [] if quick else [
        ("tree_32x4", lambda: TreeEngine(k=32, lanes=4), 128),
        ("serial_tree_32x4", lambda: SerialTreeEngine(k=32, lanes=4, digit_bits=2), 128),
    ]
    runs = [("ecp5", "ccu2c", ""), ("ecp5", "generic", "_generic"), ("ice40", "generic", "")]
    for family, adder, suffix in runs:
        for name, make, pes in targets(adder) + (ice40_only if family == "ice40" else []):
            progress(f"synth_{family} {name} ({adder} adder)")
            start = time.perf_counter()
            stats = synthesize(make(), family)
            lut = lut4_equivalent(stats)
            tree = "tree" in name               # no partial sums: nothing per psum bit
            out[f"{family}_{name}{suffix}"] = {
                "family": family, "adder": adder, "pes": pes, "psum_bits": None if tree else psum,
                "lut4": lut, "lut4_cells": stats["lut4"], "carry_cells": stats["carry"],
                "ff": stats["ff"], "ram": stats["ram"], "dsp": stats["dsp"],
                "lut4_per_pe": round(lut / pes, 2), "ff_per_pe": round(stats["ff"] / pes, 2),
                "lut4_per_psum_bit": None if tree else round(lut / pes / psum, 3),
                "synth_seconds": round(time.perf_counter() - start, 1),
            }
    return out


def board_breakdown(quick: bool) -> dict:
    """Where each board's cells go: its default device (core and UART) synthesized with the
    hierarchy kept, each module's own LUT4, FF, carry and RAM cells, the PEs summed (an
    array's ``pe_R_C`` modules; a tree engine's ``lane_N``, each ``k`` PEs)."""
    from boards import board as board_def
    from boards.build import board_device
    out = {}
    for name in ("icebreaker",) if quick else ("icebreaker", "ulx3s-85f"):
        b = board_def(name)
        progress(f"synth_{b.family} -noflatten: {name}'s device, {b.rows}x{b.cols}")
        start = time.perf_counter()
        modules = synthesize_modules(board_device(name), b.family)
        keys = ("lut4", "ff", "carry", "ram")
        parts, pes = {}, {k: 0 for k in ("count", *keys)}
        tree = b.engine != "array"
        for path, counts in modules.items():
            if re.search(r"\.lane_\d+$" if tree else r"\.pe_\d+_\d+$", path):
                pes["count"] += b.rows if tree else 1
                for k in keys:
                    pes[k] += counts[k]
            else:
                parts[path] = {k: counts[k] for k in keys}
        out[name] = {
            "family": b.family, "engine": b.engine, "rows": b.rows, "cols": b.cols,
            "total": {k: sum(c[k] for c in modules.values()) for k in keys},
            "pes": pes,
            "modules": dict(sorted(parts.items(), key=lambda kv: -kv[1]["lut4"])),
            "synth_seconds": round(time.perf_counter() - start, 1),
        }
    return out


def model_utilization() -> dict:
    out = {}
    for shape in ((16, 16), (32, 64)):
        cfg = schedule.ArrayConfig(*shape)
        for proj, (N, K) in BITNET_2B.items():
            for phase, M in (("decode", 1), ("prefill", 128)):
                plan = schedule.plan_linear(cfg, M, N, K)
                total = cycles.plan_cycles(plan)
                out[f"{shape[0]}x{shape[1]}_{proj}_{phase}"] = {
                    "rows": shape[0], "cols": shape[1], "M": M, "N": N, "K": K,
                    "mapping": plan.mapping, "passes": len(plan.passes), "cycles": total,
                    "utilization": round(cycles.utilization(plan, total), 4),
                    "overhead_cycles_per_pass": round((total - sum(plan.lengths))
                                                      / len(plan.passes), 3),
                }
    # the adder-tree engine with the 32x64 array's 2048 products a cycle (rtl.adder_tree)
    tree = schedule.TreeConfig(k=32, lanes=64)
    for proj, (N, K) in BITNET_2B.items():
        for phase, M in (("decode", 1), ("prefill", 128)):
            plan = schedule.plan_tree(tree, M, N, K)
            total = cycles.tree_plan_cycles(plan)
            out[f"tree_32x64_{proj}_{phase}"] = {
                "k": tree.k, "lanes": tree.lanes, "M": M, "N": N, "K": K,
                "passes": len(plan.passes), "cycles": total,
                "utilization": round(cycles.tree_utilization(plan, total), 4),
            }
    return out


def rtl_utilization_and_verilator_speed(quick: bool) -> dict:
    from sim.cocotb_runner import run_bench
    R = C = 16
    layers = {
        "decode": (1, 2 * R * C, 2560),          # M = 1: each weight used once
        "prefill": (2 * R, 4 * C, 2560),         # M >= rows
    }
    if quick:
        layers = {k: (M, N, 510) for k, (M, N, _) in layers.items()}
    report_path = RESULTS / "_verilator_run.json"
    config = {"rows": R, "cols": C, "psum_width": 16, "acc_width": 32, "seed": 7,
              "layers": layers, "report_path": str(report_path)}
    progress("Verilator: building and running the 16x16 engine at full rate")
    result = run_bench(lambda: MatrixEngine(rows=R, cols=C), name="bench_matrix_16x16",
                       test_module="sim.tb_matrix_bench", config=config, sim="verilator",
                       waves=False)
    if result.failed:
        raise RuntimeError(f"the throughput bench failed; see {result.log}")
    report = json.loads(report_path.read_text())
    report_path.unlink()
    return report


def amaranth_speed(cycles_to_run: int) -> dict:
    """Cycles per second of Amaranth's Python simulator on the 16x16 engine at full rate."""
    from amaranth.sim import Simulator
    R = C = 16
    dut = MatrixEngine(rows=R, cols=C)
    rng = np.random.default_rng(3)
    weights = [int.from_bytes(packing.pack_2bit(rng.integers(-1, 2, R * C)).tobytes(), "little")
               for _ in range(64)]
    acts = [{"data": [int(a) for a in rng.integers(-128, 128, R)], "last": (i % 255) == 254,
             "first_chunk": 1, "last_chunk": 1} for i in range(64)]
    done = {}

    async def drive(ctx):
        ctx.set(dut.act.valid, 1)
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.result.ready, 1)
        start = time.perf_counter()
        for t in range(cycles_to_run):
            ctx.set(dut.weights.payload.as_value(), weights[t % 64])
            ctx.set(dut.act.payload, acts[t % 64])
            await ctx.tick()
        done["seconds"] = time.perf_counter() - start

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.run()
    return {"rows": R, "cols": C, "cycles": cycles_to_run,
            "cycles_per_second": round(cycles_to_run / done["seconds"])}


def link_efficiency() -> dict:
    """Bytes on the link per weight uploaded (base3 words plus framing), on the emulator:
    the protocol's bytes do not depend on the device behind it."""
    from host import open_device
    out = {}
    for rows, cols, max_payload in ((16, 16, 1024), (16, 16, 4096), (8, 8, 1024)):
        with open_device("emu", rows=rows, cols=cols, weight_words=1 << 17,
                         max_payload=max_payload) as dev:
            w = np.random.default_rng(0).integers(-1, 2, (2560, 2560)).astype(np.int8)
            before = dev.stats["bytes_sent"]
            dev.load(w)
            sent = dev.stats["bytes_sent"] - before
        out[f"{rows}x{cols}_payload{max_payload}"] = {
            "weights": int(w.size), "bytes_sent": sent,
            "bits_per_weight": round(8 * sent / w.size, 4),
        }
    return out


def control_cycles(rows: int, cols: int, M: int, N: int, K: int) -> dict:
    """Cycles the ``linear`` program spends before its first sweep and in total, with the
    sequencer always ready and idle (Amaranth simulator of rtl.controller)."""
    from amaranth.sim import Simulator

    from firmware.isa import param_values
    from firmware.programs import FIRMWARE, linear_args
    from rtl.controller import Controller
    cfg = schedule.ArrayConfig(rows, cols)
    params = param_values(rows=rows, cols=cols, weight_words=1 << 16, act_bytes=1 << 16,
                          result_rows=1 << 12, pass_k_max=cfg.pass_k_max, k_max=cfg.k_max)
    dut = Controller(program_words=64, params=params, init=FIRMWARE.words)
    a = linear_args(0, 0, 0, M, N, K)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.entry, a.entry)
        for i, v in enumerate(a.args):
            ctx.set(dut.args[i], v)
        ctx.set(dut.start, 1)
        ctx.set(dut.idle, 1)
        ctx.set(dut.sweep.ready, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        t = 1
        while not ctx.get(dut.done):
            if ctx.get(dut.sweep.valid):
                seen.setdefault("first_sweep", t)
            await ctx.tick()
            t += 1
        seen["done"] = t

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    plan = schedule.plan_linear(schedule.ArrayConfig(rows, cols), M, N, K, mapping="outputs")
    stream = cycles.plan_cycles(plan)
    return {"rows": rows, "cols": cols, "M": M, "N": N, "K": K,
            "cycles_to_first_sweep": seen["first_sweep"], "stream_cycles": stream,
            "control_fraction": round(seen["first_sweep"] / (seen["first_sweep"] + stream), 4)}


def device_core(quick: bool) -> dict:
    """Whole layers on the ``sim`` device, measured from its own counters; link bytes per
    resident ``linear`` call on ``emu`` (the protocol's bytes do not depend on the device)."""
    from firmware.commands import Command
    from firmware.programs import linear_args
    from host import open_device
    out = {"control": {"linear_decode_16x16": control_cycles(16, 16, 1, 512, 2560)}}
    rng = np.random.default_rng(1)
    rows = cols = 8 if quick else 16
    # Two tiles of outputs for decode, one for prefill (16x16: N = 512 and 256), and a long
    # one (65k cycles) that shows the streaming rate with the RUN round trip amortized.
    layers = {"decode": (1, 2 * rows * cols, 2560), "prefill": (16, rows * cols, 2560),
              "long": (8, rows * cols, 8192)}
    repeats = 3     # the machine is shared: the best of three runs is the simulator's speed
    progress(f"sim device {rows}x{cols}: building / running whole layers")
    sim_out = {}
    with open_device("sim", rows=rows, cols=cols, weight_words=8192, act_bytes=65536,
                     result_rows=1024, max_payload=4096) as dev:
        for name, (M, N, K) in layers.items():
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            h = dev.load(w)
            dev._write_acts(0, x.tobytes())
            run = linear_args(h.base, 0, 0, M, N, K)
            times = []
            for _ in range(repeats):
                dev._request(Command.CLEAR_COUNTERS)
                t0 = time.perf_counter()
                dev.run_program(run.entry, *run.args, timeout=120.0)
                times.append(time.perf_counter() - t0)
            seconds = min(times)
            c = dev.read_counters()
            counted = c.busy + c.stall_input + c.stall_drain + c.drain_tail
            plan = schedule.plan_linear(dev.config, M, N, K, mapping="outputs")
            y = dev.linear(h, x)
            assert (y == x.astype(np.int64) @ w.T.astype(np.int64)).all(), "sim device wrong"
            sim_out[name] = {
                "M": M, "N": N, "K": K, "device_cycles": counted,
                "model_cycles": cycles.plan_cycles(plan),
                "utilization": round(plan.useful_macs / (dev.config.pes * counted), 4),
                "run_seconds": round(seconds, 3),
                "simulated_cycles_per_second": round(counted / seconds),
                "simulated_cycles_per_second_runs": [round(counted / t) for t in times],
            }
            dev.free(h)
    out[f"sim_{rows}x{cols}"] = sim_out
    link = {}
    with open_device("emu", rows=16, cols=16, weight_words=1 << 15) as dev:
        for name, (M, N, K) in {"decode_2560x2560": (1, 2560, 2560),
                                "prefill16_2560x2560": (16, 2560, 2560)}.items():
            h = dev.load(rng.integers(-1, 2, (N, K)).astype(np.int8))
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            before = dev.stats
            dev.linear(h, x)
            after = dev.stats
            sent = after["bytes_sent"] - before["bytes_sent"]
            received = after["bytes_received"] - before["bytes_received"]
            link[name] = {"M": M, "N": N, "K": K, "bytes_sent": sent,
                          "bytes_received": received, "frames": after["frames"] - before["frames"],
                          "payload_bytes": M * K + 4 * M * N,
                          "overhead": round((sent + received) / (M * K + 4 * M * N) - 1, 4)}
            dev.free(h)
    out["resident_linear_link_bytes"] = link
    return out


def model_runs(quick: bool) -> dict:
    """The bundled model (models/tiny) generating text on ``emu`` and ``sim``: tokens per
    second of wall time, where a decode token's host time goes (device calls vs the rest),
    device cycles and link bytes per token, and the projection onto each board."""
    from host import run_model
    folder = ROOT / "models" / "tiny"
    new = 8 if quick else 48
    out = {"model": str(folder.relative_to(ROOT)), "prompt": MODEL_PROMPT,
           "max_new_tokens": new, "greedy": True}
    tokens = {}
    for spec in ("emu", "sim"):
        progress(f"models/tiny on {spec}: {new} tokens")
        r = run_model(folder, MODEL_PROMPT, device=spec, max_new_tokens=new)
        tokens[spec] = r.tokens
        s = r.stats
        steps = s["generated_tokens"] - 1
        dec = s["decode"]
        out[spec] = {
            "array": f"{s['array']['rows']}x{s['array']['cols']}",
            "prompt_tokens": s["prompt_tokens"], "generated_tokens": s["generated_tokens"],
            "resident_calls": s["upload"]["resident"],
            "streamed_calls": s["upload"]["streamed"],
            "tokens_per_second": round(s["tokens_per_second"], 2),
            "decode_tokens_per_second": round(s["decode_tokens_per_second"], 2),
            "per_decode_token": {
                "host_ms": round(1e3 * s["decode_seconds"] / steps, 3),
                "device_calls_ms": round(1e3 * dec["linear_seconds"] / steps, 3),
                "host_overhead_ms": round(1e3 * (s["decode_seconds"] - dec["linear_seconds"])
                                          / steps, 3),
                "device_cycles": dec["device_cycles"] / steps,
                "bytes_sent": dec["bytes_sent"] / steps,
                "bytes_received": dec["bytes_received"] / steps,
                "linear_calls": dec["linear_calls"] / steps,
            },
            "device_cycles_equal_model": dec["device_cycles"] == dec["model_cycles"],
        }
    # The projections (tritium estimate's decode phase on each board) depend on the model
    # only: take the last run's.
    out["projected"] = {name: {k: p[k] for k in ("basis", "array", "clock_mhz", "baud",
                                                 "resident", "tokens_per_second", "bound")}
                        for name, p in s["projected"].items()}
    out["same_tokens_emu_sim"] = tokens["emu"] == tokens["sim"]
    return out


def estimate_runs(quick: bool) -> dict:
    """``tritium estimate`` of the bundled model on every board, and of bitnet-b1.58-2B-4T
    on the largest shape the ECP5 fit puts on the ULX3S-85F over each kind of link: the
    figures docs/estimates.md quotes, and the best shape of the sweep."""
    from host import estimate as est
    from sim import boards as board_table

    def brief(r):
        out = {"device": f"{r['device']['board']} {r['device']['rows']}x{r['device']['cols']} "
                         f"at {r['device']['clock_hz'] / 1e6:g} MHz",
               "engine": r["device"]["engine"], "link": r["link"]["spec"],
               "resident": r["residency"]["all_resident"]}
        for name, p in r["phases"].items():
            out[name] = {"tokens": p["tokens"], "tokens_per_second": p["tokens_per_second"],
                         "bound": p["bound"], "seconds": p["seconds"], "cycles": p["cycles"],
                         "bytes": p["bytes"], "utilization": p["utilization"],
                         "joules_per_token": p["energy"]["joules_per_token"]}
        out["ratios"] = {k: r["phases"]["decode"]["energy"]["baselines"][k]
                         for k in ("ratio_fp16", "ratio_int8")}
        return out

    tiny = est.load_workload(preset="tiny")
    big = est.load_workload(preset="bitnet-b1.58-2B-4T")
    links = ("uart:3000000", "pcie:gen1x1", "pcie:gen2x1", "mem:25.6", "mem:460:hbm")
    return {
        "command": "tritium estimate --preset tiny --board BOARD --batch 16; tritium estimate "
                   "--preset bitnet-b1.58-2B-4T --board ulx3s-85f-goal [--engine array --rows "
                   "16 --cols 64] --link LINK --batch 64",
        "tiny": {name: brief(est.estimate(tiny, board=name, batch=16))
                 for name in board_table.BOARDS},
        # the largest array the ECP5 line fits on the 85F, and the goal's adder trees
        "bitnet-b1.58-2B-4T": {link: brief(est.estimate(big, board="ulx3s-85f-goal", rows=16,
                                                        cols=64, link=link, batch=64,
                                                        engine="array"))
                               for link in links},
        "bitnet-b1.58-2B-4T_trees_32x64": {
            link: brief(est.estimate(big, board="ulx3s-85f-goal", link=link, batch=64))
            for link in links},
        "sweep_best": {"tiny": est.sweep(tiny)["why"],
                       "bitnet-b1.58-2B-4T over mem:25.6":
                           est.sweep(big, link="mem:25.6")["why"]},
    }


def fault_runs(quick: bool) -> dict:
    """Random layers through injected link faults until ``frames`` request frames have gone
    out, on ``emu`` and on ``sim`` (4x4 cores), every result checked."""
    from host import open_device
    from host.device import DeviceTimeout
    from sim import numerics
    frames = 1000 if quick else 10_000
    small = dict(rows=4, cols=4, weight_words=256, act_bytes=1024, result_rows=64,
                 max_payload=256)
    link = dict(retries=16, max_frame=256)
    out = {"rate": 1e-3, "frames_goal": frames, "link": link}

    def layers(rng):
        while True:
            N, K, M = int(rng.integers(1, 48)), int(rng.integers(1, 300)), int(rng.integers(1, 7))
            yield (rng.integers(-1, 2, (N, K)).astype(np.int8),
                   rng.integers(numerics.ACT_MIN, numerics.ACT_MAX + 1, (M, K)).astype(np.int8))

    for spec, extra in (("emu", {}), ("sim", {"timeout": 0.3, "frame_timeout": 4096})):
        progress(f"faults: {frames} frames at 1e-3 per byte on {spec}")
        rng = np.random.default_rng(21)
        calls = wrong = errors = 0
        start = time.perf_counter()
        with open_device(spec, faults={"rate": 1e-3, "seed": 21}, **link, **small,
                         **extra) as dev:
            gen = layers(rng)
            while dev.stats["frames"] < frames:
                w, x = next(gen)
                try:
                    y = dev.linear(w, x)
                except DeviceTimeout:
                    errors += 1
                    continue
                calls += 1
                wrong += not np.array_equal(y, numerics.ternary_matmul(w, x))
            s = dev.stats
            out[spec] = {"frames": s["frames"], "linear_calls": calls,
                         "wrong_results": wrong, "clear_errors": errors,
                         "retries": s["retries"], "timeouts": s["timeouts"],
                         "device_frames_bad": s["device_frames_bad"],
                         "injected": dict(dev.transport.injected),
                         "bytes_sent": s["bytes_sent"], "bytes_received": s["bytes_received"],
                         "seconds": round(time.perf_counter() - start, 1)}
    # Hopeless: a clean open, then one byte in five damaged. Every call must end in
    # DeviceTimeout, none in a result (wrong or right).
    from host.faults import FaultyTransport
    results = errors = 0
    gen = layers(np.random.default_rng(22))
    with open_device("emu", **link, **small) as dev:
        dev.transport = FaultyTransport(dev.transport, {"rate": 0.2, "seed": 22})
        for _ in range(20):
            w, x = next(gen)
            try:
                dev.linear(w, x)
                results += 1
            except DeviceTimeout:
                errors += 1
    out["hopeless_rate_0.2"] = {"linear_calls": 20, "results": results, "clear_errors": errors}
    return out


def fuzz_runs(quick: bool) -> dict:
    """sim.fuzz against a small RTL core: requests sent, by kind, and the time it took."""
    from sim.fuzz import DevicePair, fuzz
    from sim.verilator_device import core_config
    count = 1000 if quick else 10_000
    config = core_config(2, 3, weight_words=2048, act_bytes=1024, result_rows=64,
                         max_payload=64, frame_timeout=200)
    progress(f"fuzz: {count} random and malformed requests to the RTL core")
    pair = DevicePair(config)
    start = time.perf_counter()
    try:
        sent = fuzz(pair, count, seed=1, progress=lambda msg: progress(f"fuzz: {msg}"))
    finally:
        pair.close()
    return {"requests": count, "each_followed_by_a_valid_request": True,
            "answers_equal_emulator": True, "by_kind": sent,
            "config": {k: config[k] for k in ("rows", "cols", "max_payload", "frame_timeout")},
            "seconds": round(time.perf_counter() - start, 1)}


PARTS = ("resources", "utilization", "speed", "link", "device", "model", "faults", "fuzz",
         "estimate", "breakdown")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs only (for a smoke test)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "compute_core.json",
                        help="where the compute core's parts go (model: bench/results/model.json)")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    header = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        "quick": args.quick,
    }
    # Parts with a file of their own: bench/results/<part>.json.
    for part, run in (("fuzz", fuzz_runs), ("faults", fault_runs), ("model", model_runs),
                      ("estimate", estimate_runs), ("breakdown", board_breakdown)):
        if part in parts:
            out = RESULTS / f"{part}.json"
            out.write_text(json.dumps({"bench": part, **header, **run(args.quick)},
                                      indent=2) + "\n")
            progress(f"wrote {out}")
            parts.discard(part)
    if not parts:
        return 0
    # A run of some parts keeps the other parts' figures from the last full run.
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.update({"bench": "compute_core", **header})
    if "resources" in parts:
        report["resources"] = bench_resources(args.quick)
    if "utilization" in parts or "speed" in parts:
        report["utilization_model"] = model_utilization()
        rtl = rtl_utilization_and_verilator_speed(args.quick)
        report["utilization_rtl"] = {k: {kk: v[kk] for kk in
                                         ("M", "N", "K", "mapping", "rtl_cycles", "model_cycles",
                                          "utilization")} for k, v in rtl.items()}
        report["speed"] = {
            "verilator_cocotb_16x16": {k: v["sim_cycles_per_second"] for k, v in rtl.items()},
        }
        if "speed" in parts:
            progress("Amaranth simulator: 16x16 engine at full rate")
            report["speed"]["amaranth_16x16"] = amaranth_speed(500 if args.quick else 3000)
    if "link" in parts:
        report["link"] = link_efficiency()
    if "device" in parts:
        report["device"] = device_core(args.quick)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {args.out}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
