"""Formal checks with YoWASP yosys' built-in SAT solver (``sat``): no other tool to install.

A check is an Amaranth design with ``Assert`` (what must hold) and ``Assume`` (what the
environment promises) statements, and free inputs as its ports. :func:`prove` runs either

* ``induction``: the assertions hold from reset and, for any state where they held one cycle
  before and any inputs, hold again, so they hold in every reachable state for ever; or
* ``bmc`` (bounded): they hold in every cycle of every input sequence of ``depth`` cycles
  from reset.

:func:`stream_rule` states the ``amaranth.lib.stream`` rule that a transfer, once offered, stays
offered with the same payload until it is taken; as an assumption on the inputs of a design and
as an assertion on its outputs. ``tests/formal`` holds the checks (``make formal``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from amaranth.back import rtlil
from amaranth.hdl import Assert, Signal

from .synth import _run_yosys

__all__ = ["ProofResult", "prove", "stream_rule"]


@dataclass(frozen=True)
class ProofResult:
    proven: bool
    mode: str
    depth: int | None
    seconds: float
    log: str            # the end of yosys' report (the counterexample, when there is one)


def stream_rule(m, stream, kind=Assert, name: str = "stream") -> None:
    """``kind(...)``: if ``stream`` offered a beat last cycle that was not taken, it offers it
    again now, with the same payload."""
    payload = stream.payload
    payload = payload.as_value() if hasattr(payload, "as_value") else payload
    was_valid, was_ready = Signal(name=f"{name}_was_valid"), Signal(name=f"{name}_was_ready")
    was_payload = Signal(len(payload), name=f"{name}_was_payload")
    m.d.sync += [was_valid.eq(stream.valid), was_ready.eq(stream.ready),
                 was_payload.eq(payload)]
    m.d.comb += kind(~(was_valid & ~was_ready) | (stream.valid & (payload == was_payload)))


def prove(design, ports, *, mode: str = "bmc", depth: int = 20,
          models: str = "") -> ProofResult:
    """Prove the assertions of ``design`` (with ``ports`` as its free inputs) under its
    assumptions, by ``induction`` or by ``bmc`` over ``depth`` cycles from reset (flip-flops
    start at their reset values, which Amaranth designs here all have at 0). ``models`` is the
    Verilog of vendor primitives the design instantiates (``rtl.synth.yosys_model``)."""
    if mode == "induction":
        command = "sat -tempinduct -prove-asserts -set-assumes -set-init-zero"
    elif mode == "bmc":
        command = f"sat -seq {int(depth)} -prove-asserts -set-assumes -set-init-zero"
    else:
        raise ValueError(f"mode must be 'induction' or 'bmc', not {mode!r}")
    script = ("hierarchy -top top; proc; flatten; memory_map; opt; chformal -lower; "
              f"async2sync; dffunmap; tee -q -o proof.log {command}")
    start = time.perf_counter()
    log = _run_yosys(rtlil.convert(design, name="top", ports=ports), script, ["proof.log"],
                     "formal check", verilog=models)["proof.log"]
    seconds = time.perf_counter() - start
    # Both modes end in "SUCCESS!" or "FAIL!" (the induction step's success included).
    proven, failed = "SUCCESS!" in log, "FAIL!" in log
    if proven == failed:
        raise RuntimeError(f"yosys sat gave no clear verdict:\n{log[-2000:]}")
    return ProofResult(proven, mode, None if mode == "induction" else depth,
                       round(seconds, 2), log[-3000:])
