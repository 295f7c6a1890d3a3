"""Cycle, time and energy estimates of a BitNet model on a tritium device: ``tritium estimate``.

Nothing here runs the model. The estimate plans every device call a token makes exactly as
:class:`~host.device.Device` would send it (``host.plan``: the same split into runs, the same
frames, the same residency of weights) on the device a board's build would be (``sim.boards``),
and prices it:

* **cycles**: per call, the array's cycles from the golden cycle model (``sim.cycles``), the
  controller's from its reference (``firmware.machine``: ``Outcome.cycles``), and the weight
  memory's (a word of ``word_trits`` 2-bit codes, ``rows*cols`` but on the serial trees, read
  ``memory_bits_per_cycle`` bits a cycle, a word every busy cycle: the array waits for the
  slower of the two);
* **link**: every byte of every frame both ways (weights of streamed layers, activations and
  results, and the RUN / READ_COUNTERS frames), at the link's rate, and a USB bridge's
  latency once per window of requests (``host.plan``: the host sends a window back to back
  and waits for its answers before the next), so link time and device time add up;
* **energy**: ``sim.energy`` on the counted work.

The time of a token is ``sum over calls of (max(array, memory) + control) / clock + link``;
its **bound** is the largest of compute (array), memory and link. The language model head,
norms, attention and sampling run on the host and are not counted (the host is not modelled).
``run_model``'s projections (``stats["projected"]``) are :func:`project` of this module.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from firmware.commands import DeviceInfo
from rtl.uart import DEFAULT_FIFO_DEPTH as UART_FIFO_DEPTH
from sim import boards, energy

from .checkpoint import BitNetConfig, load_checkpoint
from .model import GROUPS
from .plan import CallCost, RequestPlanner, WeightMemory

__all__ = ["PRESETS", "SCHEMA", "TREES", "Link", "parse_link", "Workload", "load_workload",
           "workload_of", "estimate", "project", "sweep", "markdown", "sweep_markdown", "plot"]

#: version of the JSON report's layout (docs/estimates.md); bumped on any incompatible change
SCHEMA = "tritium-estimate/1"

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "tiny"
DEFAULT_BOARD = "ulx3s-85f"
DEFAULT_NODE = "7nm"

#: What the reports call each engine's trees (the array has none).
TREES = {"tree": "adder trees", "serial": "digit-serial adder trees"}

#: The device calls a token makes per layer, as run_model makes them (``host.model.GROUPS``:
#: q|k|v stacked, o, gate|up stacked, down), with the names the reports give them.
CALLS = tuple(zip(("qkv", "o", "gate_up", "down"), GROUPS))

PRESETS: dict[str, dict] = {
    # microsoft/bitnet-b1.58-2B-4T's config.json (the dimensions issue #6 lists)
    "bitnet-b1.58-2B-4T": {
        "model_type": "bitnet", "hidden_act": "relu2", "hidden_size": 2560,
        "intermediate_size": 6912, "num_hidden_layers": 30, "num_attention_heads": 20,
        "num_key_value_heads": 5, "head_dim": 128, "vocab_size": 128256,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear"},
    },
    # the bundled model (its config.json, and its weights for the share of zero trits)
    "tiny": {"folder": str(BUNDLED)},
}

#: bytes per second per lane after line coding: 8b/10b for generations 1 and 2, 128b/130b
#: for 3 to 5 (TLP and DLLP overheads not counted)
PCIE_LANE_BYTES = {1: 2.5e9 * 8 / 10 / 8, 2: 5e9 * 8 / 10 / 8, 3: 8e9 * 128 / 130 / 8,
                   4: 16e9 * 128 / 130 / 8, 5: 32e9 * 128 / 130 / 8}


@dataclass(frozen=True)
class Link:
    """How bytes move between the host (or a memory) and the array."""
    spec: str
    kind: str                   # "uart", "pcie" or "mem"
    bytes_per_second: float
    pj_per_bit: float | None    # None: no source (energy.CONSTANTS)
    note: str = ""
    #: the wait, once per window of requests, before the answers reach the host (a USB
    #: bridge's latency timer, ``sim.boards.BRIDGE_ANSWER_SECONDS``); None: not counted
    answer_seconds: float | None = None

    def as_dict(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "bytes_per_second": self.bytes_per_second,
                "pj_per_bit": self.pj_per_bit, "answer_seconds": self.answer_seconds,
                "note": self.note}


def parse_link(spec: str, bridge: str | None = None) -> Link:
    """``uart:BAUD`` (8N1: 10 bits a byte), ``pcie:genG[xW]`` (G 1-5, W 1-16 lanes, default 1),
    or ``mem:GBPS[:ddr|hbm]`` (an on-board memory of GBPS gigabytes per second next to the
    array, weights and activations alike streamed from it).

    A UART's energy per data bit is its USB bridge's (``bridge``, e.g. ``"FT231X"``) supply
    power over the data bit rate, ``P / (8 * bytes_per_second)``: the whole chip's power
    charged to the time the link is moving bytes, an upper bound. Without a bridge, or with
    one whose power no source gives, a UART's energy is not counted. A bridge also holds each
    short answer for up to its latency timer (``answer_seconds``, where known)."""
    s = spec.strip().lower()
    m = re.fullmatch(r"uart:(\d+)", s)
    if m and int(m.group(1)) > 0:
        baud = int(m.group(1))
        rate = baud / boards.UART_BITS_PER_BYTE
        mw = energy.bridge_constant(bridge).value if bridge else None
        pj = None if mw is None else mw * 1e-3 / (8 * rate) * 1e12
        note = f"{baud} baud, 8N1 ({boards.UART_BITS_PER_BYTE} bits a byte)"
        wait = boards.BRIDGE_ANSWER_SECONDS.get(bridge) if bridge else None
        if bridge:
            note += (f"; {bridge} bridge, " + (f"{mw:g} mW over the data bit rate" if mw
                                               else "power not in the energy table"))
            note += (f", answers held up to {wait * 1e3:g} ms (latency timer)" if wait
                     else ", its answer latency not counted")
        return Link(spec, "uart", rate, pj, note=note, answer_seconds=wait)
    m = re.fullmatch(r"pcie:gen([1-5])(?:x(\d+))?", s)
    if m:
        gen, lanes = int(m.group(1)), int(m.group(2) or 1)
        if lanes in (1, 2, 4, 8, 16):
            # gen1 is within the ECP5 SERDES's 3.2 Gbps: its channel power over a lane's data
            # bits (the same per bit at any width); later generations have no source here
            pj = (energy.value("serdes_ecp5") * 1e-3 / (8 * PCIE_LANE_BYTES[1]) * 1e12
                  if gen == 1 else energy.value("pcie_bit"))
            return Link(spec, "pcie", lanes * PCIE_LANE_BYTES[gen], pj,
                        note=f"PCIe gen{gen} x{lanes} after line coding; packet overheads "
                             f"not counted" + ("; the card's SERDES energy only" if pj else ""))
    m = re.fullmatch(r"mem:(\d+(?:\.\d+)?)(?::(ddr|hbm))?", s)
    if m and float(m.group(1)) > 0:
        kind = m.group(2) or "ddr"
        return Link(spec, "mem", float(m.group(1)) * 1e9, energy.value(f"{kind}_bit"),
                    note=f"{kind.upper()} at {m.group(1)} GB/s")
    raise ValueError(f"bad link spec {spec!r}: expected uart:BAUD, pcie:genG[xW] (G 1-5, W 1, "
                     f"2, 4, 8 or 16) or mem:GBPS[:ddr|hbm]")


@dataclass
class Workload:
    """A model's shape as the device sees it."""
    name: str
    source: str                         # "preset" or the model folder
    config: BitNetConfig
    zero_fraction: float | None         # share of zero trits; None when the weights are unknown
    calls: list[tuple[str, int, int]] = field(default_factory=list)   # (name, N, K) a layer
    # measured switching activity of the array's additions against random operands
    # (sim.toggles); None: not measured, the per-operation figures are used as they are
    activity: float | None = None

    @property
    def activity_ratio(self) -> float:
        """The factor on the additions' energy: the measured activity, else 1."""
        return 1.0 if self.activity is None else self.activity

    @property
    def ternary_parameters(self) -> int:
        return self.config.num_hidden_layers * sum(N * K for _, N, K in self.calls)


def projections_of(work: "Workload") -> dict[str, list[tuple[str, int]]]:
    """The projections of each device call of ``work`` and their outputs: ``{"qkv": [("q",
    Nq), ("k", Nk), ("v", Nv)], "o": [("o", N)], ...}``. A call that is not one of ``CALLS``
    (a hand-made workload) is its own single projection."""
    groups = dict(CALLS)
    out = {}
    for name, N, K in work.calls:
        if name in groups:
            parts = [(p.removesuffix("_proj"), work.config.projection_shape(p)[0])
                     for p in groups[name]]
            if sum(n for _, n in parts) != N:
                raise ValueError(f"{work.name}: call {name} has N={N}, its projections "
                                 f"{parts} do not add up to it")
            out[name] = parts
        else:
            out[name] = [(name, N)]
    return out


def _split_int(v: int, weights: list[int]) -> list[int]:
    """``v`` in proportion to ``weights``, in integers that add up to ``v`` (largest
    remainder; ties go to the earlier part)."""
    total = sum(weights)
    exact = [v * w / total for w in weights]
    parts = [v * w // total for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:v - sum(parts)]:
        parts[i] += 1
    return parts


def _split(value, weights: list[int]):
    """A call's report (nested dicts of counts, seconds and joules) in proportion to
    ``weights``: integers by largest remainder, so they add up exactly; floats as shares, the
    last part taking what the others leave so that they add up to the call's (to rounding);
    anything else (None, names, lists) repeated."""
    n = len(weights)
    if isinstance(value, dict):
        parts = [dict() for _ in range(n)]
        for k, v in value.items():
            for part, x in zip(parts, _split(v, weights)):
                part[k] = x
        return parts
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [value] * n
    if isinstance(value, int):
        return _split_int(value, weights)
    total = sum(weights)
    parts = [value * w / total for w in weights[:-1]]
    return parts + [value - sum(parts)]


def _calls(cfg: BitNetConfig) -> list[tuple[str, int, int]]:
    out = []
    for name, group in CALLS:
        shapes = [cfg.projection_shape(p) for p in group]
        out.append((name, sum(N for N, _ in shapes), shapes[0][1]))
    return out


def load_workload(model: str | Path | None = None, preset: str | None = None) -> Workload:
    """The workload of a model folder (config.json and its weights) or of a preset."""
    if (model is None) == (preset is None):
        raise ValueError("give a model folder or a preset, not both")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        p = PRESETS[preset]
        if "folder" not in p:
            cfg = BitNetConfig.from_dict(p, where=f"preset {preset}")
            return Workload(preset, "preset", cfg, None, _calls(cfg))
        model = p["folder"]
    return workload_of(load_checkpoint(model), preset or Path(model).name, str(model))


def workload_of(ckpt, name: str, source: str) -> Workload:
    """The workload of a loaded checkpoint (``host.checkpoint.Checkpoint``)."""
    total = zeros = 0
    for layer in ckpt.layers:
        for _, group in CALLS:
            for proj in group:
                t = getattr(layer, proj).trits
                total += t.size
                zeros += int((t == 0).sum())
    # the activity was measured on the bundled model only (python -m sim.toggles)
    activity = (energy.value("activity_tiny")
                if Path(source).resolve() == BUNDLED.resolve() else None)
    return Workload(name, source, ckpt.config, zeros / total, _calls(ckpt.config), activity)


# -- the estimate ------------------------------------------------------------------------------

def _device(board: str, rows, cols, freq_mhz, engine=None):
    b = boards.board(board)
    clock = freq_mhz * 1e6 if freq_mhz else b.clock_hz
    if clock <= 0:
        raise ValueError(f"the clock must be positive, got {freq_mhz} MHz")
    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    info = b.device_info(rows, cols, clock, engine)
    return b, info, clock


def _phase(work: Workload, planner: RequestPlanner, bases: list, scratch: int, M: int,
           clock: float, cycles_per_word: int, link: Link, joules) -> tuple[dict, CallCost]:
    """Every call of ``M`` tokens through every layer: per call kind, per layer and in total
    (``joules(cost, macs, seconds)`` prices the energy of calls and layers); and the total
    cost, which the caller prices with the baselines."""
    cfg = work.config
    seconds_keys = ("compute", "memory_wait", "control", "link_weights", "link_acts_results",
                    "link_control", "link_latency")
    cache: dict[tuple, CallCost] = {}
    per_call = {name: {"N": N, "K": K, "resident_layers": 0, "cost": CallCost()}
                for name, N, K in work.calls}
    layers, total = [], CallCost()
    i = 0
    for _ in range(cfg.num_hidden_layers):
        lc = CallCost()
        for name, N, K in work.calls:
            resident = bases[i] is not None
            i += 1
            key = (M, N, K, resident)
            if key not in cache:
                cache[key] = planner.cost(M, N, K, resident=resident, scratch_words=scratch)
            c = cache[key]
            per_call[name]["cost"].add(c)
            per_call[name]["resident_layers"] += resident
            lc.add(c)
        layers.append(lc)
        total.add(lc)

    def priced(c: CallCost, macs: int) -> dict:
        # a weight-memory word every busy cycle (a step's on the array and the parallel
        # trees, a lane group's beat on the serial trees)
        memory_cycles = c.busy_cycles * cycles_per_word
        s = {"compute": c.array_cycles / clock,
             "memory_wait": max(0, memory_cycles - c.array_cycles) / clock,
             "control": c.control_cycles / clock,
             "link_weights": c.weight_bytes / link.bytes_per_second,
             "link_acts_results": (c.act_bytes + c.result_bytes) / link.bytes_per_second,
             "link_control": c.control_bytes / link.bytes_per_second,
             # the host waits once a window of requests (host.plan), and the bridge may hold
             # the answers that long
             "link_latency": c.waits * (link.answer_seconds or 0.0)}
        s["total"] = sum(s[k] for k in seconds_keys)
        link_s = (s["link_weights"] + s["link_acts_results"] + s["link_control"] +
                  s["link_latency"])
        bounds = {"compute": c.array_cycles / clock, "memory": memory_cycles / clock,
                  "link": link_s}
        return {
            "seconds": s,
            "cycles": {"array": c.array_cycles, "busy": c.busy_cycles, "steps": c.steps,
                       "memory": memory_cycles, "control": c.control_cycles},
            "bytes": {"sent": c.bytes_sent, "received": c.bytes_received,
                      "weights": c.weight_bytes, "acts": c.act_bytes, "results": c.result_bytes,
                      "control": c.control_bytes},
            "frames": c.frames, "waits": c.waits, "runs": c.runs, "passes": c.passes,
            "macs": macs,
            "bound": max(bounds, key=bounds.get),
            # product-cycles doing a useful multiply-accumulate (the engine's products a
            # cycle: its PEs, or pes / D on the serial trees), over the array's cycles and
            # over the whole time (link and control included)
            "utilization": {"array": macs / (planner.products_per_cycle * c.array_cycles)
                            if c.array_cycles else 0.0,
                            "overall": macs / (planner.products_per_cycle * s["total"] * clock)
                            if s["total"] else 0.0},
        }

    def with_joules(c: CallCost, macs: int) -> dict:
        d = priced(c, macs)
        d["joules"] = joules(c, macs, d["seconds"]["total"])
        return d

    layer_macs = M * sum(N * K for _, N, K in work.calls)
    out = priced(total, layer_macs * cfg.num_hidden_layers)
    out["tokens"] = M
    out["tokens_per_second"] = M / out["seconds"]["total"]
    out["calls"] = [{"name": name, "N": d["N"], "K": d["K"],
                     "resident_layers": d["resident_layers"],
                     **with_joules(d["cost"], M * d["N"] * d["K"] * cfg.num_hidden_layers)}
                    for name, d in per_call.items()]
    out["layers"] = [{"layer": j, **with_joules(c, layer_macs)} for j, c in enumerate(layers)]
    # Per projection: a stacked call (q|k|v, gate|up) is one set of requests on the device, so
    # its counts are shared out in proportion to each projection's outputs N (its share of
    # the call's weight trits, as K is common); the bound and utilization are the call's.
    parts = projections_of(work)
    out["projections"] = []
    for call in out["calls"]:
        names, ns = zip(*parts[call["name"]])
        counted = {k: v for k, v in call.items()
                   if k in ("seconds", "cycles", "bytes", "frames", "waits", "runs", "passes",
                            "joules")}
        for name, n, share in zip(names, ns, _split(counted, list(ns))):
            out["projections"].append({
                "name": name, "call": call["name"], "N": n, "K": call["K"],
                "share": n / call["N"], "resident_layers": call["resident_layers"], **share,
                "macs": M * n * call["K"] * cfg.num_hidden_layers,
                "bound": call["bound"], "utilization": call["utilization"]})
    return out, total


def _work(work: Workload, c: CallCost, planner: RequestPlanner, macs: int,
          seconds: float, activity: float | None = None) -> energy.Work:
    """What the energy model counts of the calls ``c`` (``macs`` of them, in ``seconds``)."""
    nonzero = 1.0 - work.zero_fraction if work.zero_fraction is not None else 1.0
    cfg = planner.config
    # The array adds each PE's sum of a pass into the accumulator once; the trees add each
    # lane's sum every step. Every step reads its rows x cols trits (one weight word, or on
    # the serial trees D lane groups'), and an activation byte (the array) or k of them (the
    # trees, whole or as D digits). The serial trees' per-digit work (D narrower trees and
    # Horner additions a lane and step) is taken as the same additions as the parallel
    # trees' (the same bits added): not counted apart.
    accumulations = (c.steps * cfg.cols if planner.tree else c.passes * cfg.pes)
    return energy.Work(
        macs=macs, nonzero_macs=macs * nonzero,
        accumulations=accumulations,
        weight_bits=c.steps * cfg.pes * boards.TRIT_BITS,
        act_bits=c.steps * planner.unit * cfg.act_bits,
        # each result row is written once by the accumulator and read once by READ_RESULTS
        result_bits=2 * c.result_rows * cfg.cols * cfg.acc_bits,
        link_bits=8 * (c.bytes_sent + c.bytes_received),
        seconds=seconds,
        activity=work.activity_ratio if activity is None else activity)


def estimate(work: Workload, *, board: str = DEFAULT_BOARD, rows: int | None = None,
             cols: int | None = None, freq_mhz: float | None = None, link: str | None = None,
             batch: int = 1, node: str = DEFAULT_NODE, static_mw: float | None = None,
             max_frame: int | None = None, info: DeviceInfo | None = None,
             engine: str | None = None) -> dict:
    """The JSON report (schema ``SCHEMA``, docs/estimates.md) of ``work`` on ``board``: the
    decode phase (one token through every layer) and the prefill of ``batch`` tokens.

    ``info`` (a device's ``INFO``, e.g. ``DeviceInfo(**dev.info)``) replaces the board's build
    with that device's array and memories; the board still gives the weight memory's read
    width, the FPGA family and the default link. ``max_frame`` is ``Device(max_frame=)``.
    ``engine`` ("array", "tree" or "serial") replaces the board's engine
    (``sim.boards.Board.engine``)."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    energy.check_node(node)
    b, board_info, clock = _device(board, rows, cols, freq_mhz, engine)
    if info is None:
        info = board_info
    elif not freq_mhz and info.clock_hz:
        clock = info.clock_hz
    # a UART on this board goes through its USB bridge, whatever the rate
    ln = parse_link(link or f"uart:{b.baud}", bridge=b.bridge or None)
    # A UART has no flow control: the host sends ahead only what the board's receive FIFO
    # holds while the core is busy, as Device does on a serial port (host.plan).
    planner = RequestPlanner(info, max_frame, bytes_per_second=ln.bytes_per_second,
                             rx_buffer=UART_FIFO_DEPTH if ln.kind == "uart" else None)
    cfg = planner.config
    k_max = planner.tree.k_max if planner.tree else cfg.k_max
    if max(K for _, _, K in work.calls) > k_max:
        raise ValueError(f"{work.name}: K up to {max(K for _, _, K in work.calls)} exceeds the "
                         f"device's k_max {k_max}")
    cycles_per_word = math.ceil(info.word_trits * boards.TRIT_BITS / b.memory_bits_per_cycle)
    # Residency as Device.load_many decides it, layer by layer, call by call (in steps' words).
    memory = WeightMemory(planner.weight_capacity)
    layers = [(planner.resident_words(N, K), planner.step(K))     # (words, a tile's words)
              for _ in range(work.config.num_hidden_layers) for _, N, K in work.calls]
    bases = memory.place(layers)
    scratch = memory.largest()[1]
    resident_words = sum(n for (n, _), base in zip(layers, bases) if base is not None)
    upload = sum(planner.upload_bytes(n) for (n, _), base in zip(layers, bases)
                 if base is not None)
    if static_mw is None:
        static_mw = energy.static_constant(b.fpga).value

    def of_work(w: energy.Work) -> dict:
        return energy.energy(w, node=node, link_pj_per_bit=ln.pj_per_bit, static_mw=static_mw)

    def joules(c: CallCost, macs: int, seconds: float) -> dict:
        return of_work(_work(work, c, planner, macs, seconds))

    phases = {}
    for phase, M in (("decode", 1), ("prefill", batch)):
        p, total = _phase(work, planner, bases, scratch, M, clock, cycles_per_word, ln, joules)
        w = _work(work, total, planner, p["macs"], p["seconds"]["total"])
        e = of_work(w)
        p["energy"] = {
            "joules": e,
            "joules_per_token": {k: (v / M if isinstance(v, float) else v) for k, v in e.items()},
            "zero_fraction": work.zero_fraction, "zeros_assumed": work.zero_fraction is None,
            "activity": {"ratio": work.activity_ratio,
                         "measured": work.activity is not None,
                         "arithmetic_unscaled": energy.energy(
                             _work(work, total, planner, p["macs"], p["seconds"]["total"],
                                   activity=1.0),
                             node=node, link_pj_per_bit=None, static_mw=None)["arithmetic"]},
            "baselines": energy.baselines(w, node=node)}
        phases[phase] = p
    mc = work.config
    return {
        "schema": SCHEMA,
        "model": {"name": work.name, "source": work.source,
                  "layers": mc.num_hidden_layers, "hidden_size": mc.hidden_size,
                  "intermediate_size": mc.intermediate_size,
                  "attention_heads": mc.num_attention_heads,
                  "kv_heads": mc.num_key_value_heads, "vocab_size": mc.vocab_size,
                  "ternary_parameters": work.ternary_parameters,
                  "zero_fraction": work.zero_fraction},
        "device": {"board": b.name, "fpga": b.fpga, "family": b.family, "basis": b.basis,
                   "engine": info.engine_name,
                   "rows": cfg.rows, "cols": cfg.cols, "pes": cfg.pes, "clock_hz": clock,
                   "weight_words": info.weight_words, "act_bytes": info.act_bytes,
                   "result_rows": info.result_rows,
                   "memory_bits_per_cycle": b.memory_bits_per_cycle,
                   "memory_cycles_per_word": cycles_per_word,
                   "peak_macs_per_second": planner.products_per_cycle * clock},
        "link": ln.as_dict(),
        "node": node,
        "residency": {"resident_calls": sum(x is not None for x in bases),
                      "streamed_calls": sum(x is None for x in bases),
                      "resident_words": resident_words,
                      "words_needed": sum(n for n, _ in layers),
                      "weight_words": planner.weight_capacity,
                      "all_resident": all(x is not None for x in bases),
                      "upload_bytes": upload,
                      "upload_seconds": upload / ln.bytes_per_second},
        "phases": phases,
        "constants": energy.table_rows(),
    }


def project(work: Workload, names=None) -> dict:
    """Decode tokens per second of ``work`` on each board of ``sim.boards`` (its own link):
    ``run_model``'s ``stats["projected"]``."""
    out = {}
    for name in names or boards.BOARDS:
        b = boards.board(name)
        r = estimate(work, board=name)
        d = r["phases"]["decode"]
        out[name] = {"board": name, "basis": b.basis, "array": f"{b.rows}x{b.cols}",
                     "engine": b.engine,
                     "clock_mhz": b.clock_hz / 1e6, "baud": b.baud,
                     "resident": r["residency"]["all_resident"],
                     "tokens_per_second": d["tokens_per_second"], "bound": d["bound"],
                     "seconds": d["seconds"], "cycles": d["cycles"]}
    return out


# -- design-space sweep ----------------------------------------------------------------------

SWEEPS = Path(__file__).resolve().parents[1] / "boards" / "sweeps"

#: array shapes the sweep tries (cols >= rows, as the boards' builds are laid out)
SWEEP_SHAPES = tuple((r, c) for r in (2, 4, 8, 16, 32) for c in (2, 4, 8, 16, 32, 64)
                     if r <= c <= 4 * r)


def _measured_builds() -> dict[str, list[dict]]:
    """Built runs of the array engine in the checked-in sweeps (``make sweep``), by FPGA
    family (the adder trees' LUT4s a PE follow another line)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(SWEEPS.glob("*.json")):
        for run in json.loads(path.read_text()).get("runs", []):
            if run.get("built") and run.get("lut4") and run.get("engine", "array") == "array":
                out.setdefault(run["fpga"], []).append(run)
    return out


def logic_fit(runs: list[dict]) -> tuple[float, float] | None:
    """LUT4s = base + per_pe * PEs, least squares over measured builds of several sizes; None
    with fewer than three sizes to fit."""
    points = sorted({(r["pes"], r["lut4"]) for r in runs})
    if len({p for p, _ in points}) < 3:
        return None
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(l for _, l in points) / n
    per_pe = (sum((p - mx) * (l - my) for p, l in points)
              / sum((p - mx) ** 2 for p, _ in points))
    return my - per_pe * mx, per_pe


def sweep(work: Workload, *, board_names=None, link: str | None = None, batch: int = 1,
          node: str = DEFAULT_NODE, margin: float = 0.9) -> dict:
    """Every array shape of ``SWEEP_SHAPES`` on every board (the array engine, whatever the
    board's row says): which fit, and the best for ``work`` by
    decode tokens per second. A shape that was built runs at its build's clock and UART rate;
    the others at the board's row in ``sim.boards`` (its target or measured default).

    Whether a shape fits comes from measured builds only: a shape built on the board (its
    report), or, for a family with builds of three or more sizes, a straight-line fit of LUT4s
    against PEs that stays under ``margin`` of the board's LUT4s (room for routing). Weight
    memory is the board's (the same trits whatever the shape)."""
    measured = _measured_builds()
    rows = []
    for name in board_names or boards.BOARDS:
        b = boards.board(name)
        runs = measured.get(b.family, [])
        fit = logic_fit(runs)
        available = b.lut4
        for r, c in SWEEP_SHAPES:
            built = next((x for x in runs if x["board"] == name and (x["rows"], x["cols"]) ==
                          (r, c)), None)
            freq, via = None, link
            if built is not None:
                # as built: its clock and UART rate, which may differ from the board's row
                lut4, basis = built["lut4"], "built"
                fits = built["timing_met"]
                freq, via = built["target_mhz"], link or f"uart:{built['baud']}"
            elif fit is not None:
                lut4, basis = round(fit[0] + fit[1] * r * c), "fit"
                fits = lut4 <= margin * available
            else:
                lut4, basis, fits = None, "unknown", False
            try:
                e = estimate(work, board=name, rows=r, cols=c, freq_mhz=freq, link=via,
                             batch=batch, node=node, engine="array")
            except ValueError:
                continue                    # K beyond this shape's k_max: not a candidate
            d, p = e["phases"]["decode"], e["phases"]["prefill"]
            rows.append({"board": name, "rows": r, "cols": c, "pes": r * c,
                         "clock_mhz": e["device"]["clock_hz"] / 1e6, "link": e["link"]["spec"],
                         "clock_basis": "built" if built is not None else b.basis,
                         "lut4": lut4, "lut4_available": available, "lut4_basis": basis,
                         "fits": bool(fits), "resident": e["residency"]["all_resident"],
                         "decode_tokens_per_second": d["tokens_per_second"],
                         "prefill_tokens_per_second": p["tokens_per_second"],
                         "bound": d["bound"],
                         "joules_per_token": d["energy"]["joules_per_token"]["total"]})
    fitting = [x for x in rows if x["fits"]]
    best = max(fitting, key=lambda x: (x["decode_tokens_per_second"], -x["pes"]), default=None)
    why = None
    if best is not None:
        same_board = [x for x in fitting if x["board"] == best["board"]]
        bigger = [x for x in same_board if x["pes"] > best["pes"]]
        why = (f"{best['board']} {best['rows']}x{best['cols']} at {best['clock_mhz']:g} MHz "
               f"({best['link']}; LUT4s: {best['lut4_basis']}, clock: {best['clock_basis']}): "
               f"{best['decode_tokens_per_second']:.4g} decode tokens/s, bound by "
               f"{best['bound']}; weights "
               f"{'resident' if best['resident'] else 'streamed every token'}")
        if best["bound"] == "link":
            why += ("; a larger array would not be faster: the link, not the array, sets the "
                    "pace" if bigger else "")
    return {"schema": SCHEMA + "/sweep", "model": work.name, "node": node, "batch": batch,
            "link": link, "margin": margin,
            "fits_from": {fam: {"builds": len(runs), "fit": logic_fit(runs)}
                          for fam, runs in measured.items()},
            "candidates": rows, "best": best, "why": why}


# -- reports -----------------------------------------------------------------------------------

def _si(v: float, unit: str) -> str:
    if v is None:
        return "not counted"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                          (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def markdown(r: dict) -> str:
    """A short Markdown summary of an :func:`estimate` report."""
    m, d, ln = r["model"], r["device"], r["link"]
    res = r["residency"]
    trees = TREES.get(d.get("engine"))
    shape = (f"{trees}, k = {d['rows']} x {d['cols']} lanes" if trees
             else f"{d['rows']}x{d['cols']} array")
    lines = [f"# {m['name']} on {d['board']} ({shape} at "
             f"{d['clock_hz'] / 1e6:g} MHz, {ln['spec']})", "",
             f"- model: {m['layers']} layers, hidden {m['hidden_size']}, FFN "
             f"{m['intermediate_size']}, {m['ternary_parameters']:,} ternary weights"
             + (f", {m['zero_fraction']:.1%} zero" if m["zero_fraction"] is not None else ""),
             f"- weights: {res['resident_calls']} of "
             f"{res['resident_calls'] + res['streamed_calls']} device calls resident ({res['resident_words']:,} of {res['weight_words']:,} "
             f"words; {res['words_needed']:,} needed); upload "
             f"{_si(res['upload_bytes'], 'B')} in {_si(res['upload_seconds'], 's')}",
             f"- device: {d['basis']} board row, peak {_si(d['peak_macs_per_second'], 'MAC/s')}, "
             f"weight memory {d['memory_cycles_per_word']} cycle(s) a word", ""]
    lines += ["| phase | tokens/s | bound | compute | memory wait | control | link: weights "
              "| link: acts+results | link: control | link: latency | array util. |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, p in r["phases"].items():
        s = p["seconds"]
        lines.append(f"| {name} ({p['tokens']} token{'s' if p['tokens'] > 1 else ''}) | "
                     f"{p['tokens_per_second']:.4g} | {p['bound']} | {_si(s['compute'], 's')} | "
                     f"{_si(s['memory_wait'], 's')} | {_si(s['control'], 's')} | "
                     f"{_si(s['link_weights'], 's')} | {_si(s['link_acts_results'], 's')} | "
                     f"{_si(s['link_control'], 's')} | {_si(s['link_latency'], 's')} | "
                     f"{p['utilization']['array']:.1%} |")
    e = r["phases"]["decode"]["energy"]
    j = e["joules_per_token"]
    lines += ["", f"Energy per decode token ({r['node']} arithmetic and SRAM, ASIC figures): "
              + ", ".join(f"{k} {_si(j[k], 'J')}" for k in ("arithmetic", "memory", "link",
                                                          "static"))
              + f"; total counted {_si(j['total'], 'J')}."]
    act = e["activity"]
    if act["measured"]:
        lines.append(f"The additions' energy is scaled by the switching activity measured on the "
                     f"RTL with this model's data ({act['ratio']:.3f} of random operands, "
                     f"`python -m sim.toggles`; {_si(act['arithmetic_unscaled'], 'J')} of "
                     f"arithmetic unscaled, for the phase).")
    base = e["baselines"]
    zeros = ("zero trits assumed absent (weights unknown)" if e["zeros_assumed"]
             else f"{e['zero_fraction']:.1%} zero trits skipped")
    lines.append(f"Arithmetic against multiply-accumulates of the same work: FP16 "
                 f"{base['ratio_fp16']['dense']:.1f}x, INT8 {base['ratio_int8']['dense']:.1f}x "
                 f"(every weight an addition); FP16 {base['ratio_fp16']['zeros_skipped']:.1f}x, "
                 f"INT8 {base['ratio_int8']['zeros_skipped']:.1f}x with {zeros}.")
    lines += ["", "| call | N x K | resident layers | decode cycles (array / control) | "
              "bytes a token | energy a token (counted) | bound |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in r["phases"]["decode"]["calls"]:
        lines.append(f"| {c['name']} | {c['N']} x {c['K']} | {c['resident_layers']} | "
                     f"{c['cycles']['array']:,} / {c['cycles']['control']:,} | "
                     f"{c['bytes']['sent'] + c['bytes']['received']:,} | "
                     f"{_si(c['joules']['total'], 'J')} | {c['bound']} |")
    lines += ["", "Per projection (a stacked call shared out by each projection's outputs N):", "",
              "| projection | call | N x K | decode cycles (array / control) | bytes a token | "
              "energy a token (counted) |", "| --- | --- | --- | --- | --- | --- |"]
    for c in r["phases"]["decode"]["projections"]:
        lines.append(f"| {c['name']} | {c['call']} | {c['N']} x {c['K']} | "
                     f"{c['cycles']['array']:,} / {c['cycles']['control']:,} | "
                     f"{c['bytes']['sent'] + c['bytes']['received']:,} | "
                     f"{_si(c['joules']['total'], 'J')} |")
    return "\n".join(lines) + "\n"


def sweep_markdown(s: dict) -> str:
    lines = [f"# Design-space sweep: {s['model']}", "",
             "| board | array | MHz | LUT4 (basis) | fits | resident | decode tok/s | "
             "prefill tok/s | bound |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in s["candidates"]:
        lut = (f"{x['lut4']:,} / {x['lut4_available']:,} ({x['lut4_basis']})"
               if x["lut4"] is not None else x["lut4_basis"])
        lines.append(f"| {x['board']} | {x['rows']}x{x['cols']} | {x['clock_mhz']:g} | {lut} | "
                     f"{'yes' if x['fits'] else 'no'} | {'yes' if x['resident'] else 'no'} | "
                     f"{x['decode_tokens_per_second']:.4g} | "
                     f"{x['prefill_tokens_per_second']:.4g} | {x['bound']} |")
    lines += ["", f"Best: {s['why']}" if s["why"] else "No candidate fits a board."]
    return "\n".join(lines) + "\n"


def plot(r: dict, out: str | Path) -> list[Path]:
    """Three PNGs in ``out``: the decode time of each layer by part, a roofline of the decode
    and prefill phases against the compute, weight memory and link ceilings, and the energy of
    a decode token by part next to the FP16 and INT8 baselines' arithmetic."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{r['model']['name']} on {r['device']['board']} ({r['device']['rows']}x" \
            f"{r['device']['cols']}, {r['link']['spec']})"
    paths = []

    def finish(fig, ax, name: str, xlabel: str, ylabel: str, heading: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{heading}: {title}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    # 1. per-layer breakdown of a decode token
    parts = ("compute", "memory_wait", "control", "link_weights", "link_acts_results",
             "link_control", "link_latency")
    layers = r["phases"]["decode"]["layers"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(layers)
    x = [row["layer"] for row in layers]
    for part in parts:
        v = [row["seconds"][part] * 1e3 for row in layers]
        ax.bar(x, v, bottom=bottom, label=part.replace("_", " "))
        bottom = [b + y for b, y in zip(bottom, v)]
    if len(x) <= 40:
        ax.set_xticks(x)
    finish(fig, ax, "layers.png", "layer", "ms per decode token", "Decode time by layer")

    # 2. roofline: MAC/s against MACs per link byte
    d = r["device"]
    peak = d["peak_macs_per_second"]
    mem_roof = peak / d["memory_cycles_per_word"]
    bw = r["link"]["bytes_per_second"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    for name, p in r["phases"].items():
        link_bytes = p["bytes"]["sent"] + p["bytes"]["received"]
        points.append((name, p["macs"] / link_bytes, p["macs"] / p["seconds"]["total"]))
    lo = min(x for _, x, _ in points) / 10
    hi = max(max(x for _, x, _ in points) * 10, 10 * peak / bw)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.loglog(xs, [min(peak, x * bw) for x in xs], label="compute and link roof")
    if mem_roof < peak:
        ax.loglog(xs, [min(mem_roof, x * bw) for x in xs], "--", label="weight memory roof")
    for name, xi, yi in points:
        ax.loglog([xi], [yi], "o", label=f"{name}: {yi:.3g} MAC/s")
    finish(fig, ax, "roofline.png", "multiply-accumulates per link byte",
           "multiply-accumulates per second", "Roofline")

    # 3. energy of a decode token
    e = r["phases"]["decode"]["energy"]
    j = e["joules_per_token"]
    base = e["baselines"]
    labels = ["arithmetic", "memory", "link", "static"]
    values = [j[k] or 0.0 for k in labels]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    a1.bar(labels, [v * 1e6 for v in values])
    for i, k in enumerate(labels):
        if j[k] is None:
            a1.text(i, 0, "not\ncounted", ha="center", va="bottom", fontsize=8)
    a1.set_ylabel("uJ per decode token")
    a1.set_title(f"Decode token energy ({r['node']})", fontsize=9)
    names = ["ternary", "INT8 MAC", "FP16 MAC"]
    vals = [base["ternary_pj"], base["int8_mac_pj"], base["fp16_mac_pj"]]
    a2.bar(names, [v * 1e-6 for v in vals])
    a2.set_yscale("log")
    a2.set_ylabel("arithmetic uJ per decode token")
    a2.set_title(f"FP16 {base['ratio_fp16']['zeros_skipped']:.1f}x, INT8 "
                 f"{base['ratio_int8']['zeros_skipped']:.1f}x the ternary arithmetic", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    paths.append(out / "energy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
