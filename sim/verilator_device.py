"""The device core compiled with Verilator into a process that speaks the link protocol on
stdin/stdout: the engine behind ``open_device("sim")``.

Each configuration is built once into ``build/devsim/<name>/`` (about 20 s for 16x16) and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from rtl.synth import ecp5_carry_model, to_verilog, yosys_model

from .cocotb_runner import PROJECT_ROOT, setup_tool_env

HARNESS = Path(__file__).resolve().parent / "harness" / "device_main.cpp"
BUILD_ROOT = PROJECT_ROOT / "build" / "devsim"


def core_config(rows: int = 4, cols: int = 4, *, psum_width: int = 16, acc_width: int = 32,
                weight_words: int = 4096, act_bytes: int = 16384, result_rows: int = 1024,
                max_payload: int = 1024, frame_timeout: int = 1 << 14,
                program_words: int = 64, weight_ram: str | None = None,
                pe_adder: str | None = None, registered_ports: bool | None = None,
                engine: str | None = None, clock_hz: int = 0,
                control: str | None = None) -> dict:
    """The DeviceCore parameters of a simulated device (defaults sized for fast builds);
    ``clock_hz`` is only what INFO reports (0: unknown). ``weight_ram``, ``pe_adder`` and
    ``registered_ports`` build the core as a board family does (``sim.boards.core_config``);
    ``engine="tree"``, with the adder-tree engine; ``control="hardwired"``, with ``linear``
    hardwired in place of the control processor."""
    config = dict(rows=rows, cols=cols, psum_width=psum_width, acc_width=acc_width,
                  weight_words=weight_words, act_bytes=act_bytes, result_rows=result_rows,
                  max_payload=max_payload, frame_timeout=frame_timeout,
                  program_words=program_words)
    if weight_ram is not None:
        config["weight_ram"] = weight_ram
    if pe_adder is not None:
        config["pe_adder"] = pe_adder
    if registered_ports is not None:
        config["registered_ports"] = registered_ports
    if engine is not None:
        config["engine"] = engine
    if control is not None:
        config["control"] = control
    if clock_hz:
        config["clock_hz"] = int(clock_hz)
    return config


def vendor_models(config: dict) -> list[str]:
    """Verilog of the FPGA primitives ``config``'s core instantiates, from yosys' own
    simulation models (the yosys that maps them): the UP5K's ``SB_SPRAM256KA`` for SPRAM
    weights, ECP5's ``CCU2C`` for PEs on its carry cells."""
    models = []
    if config.get("weight_ram") == "spram":
        models.append(yosys_model("ice40/cells_sim.v", "SB_SPRAM256KA"))
    if config.get("pe_adder") == "ccu2c":
        models.append(ecp5_carry_model())
    return models


def _design_sources() -> str:
    """Everything the simulated design is made of: a change to any of it means a new build."""
    files = sorted((PROJECT_ROOT / "rtl").glob("*.py")) + \
        sorted((PROJECT_ROOT / "firmware").rglob("*.py")) + \
        sorted((PROJECT_ROOT / "firmware").rglob("*.s")) + \
        [PROJECT_ROOT / "sim" / "numerics.py", PROJECT_ROOT / "sim" / "packing.py", HARNESS,
         Path(__file__)]         # (this file: the build flags)
    return "".join(f.read_text() for f in files)


def build(config: dict, *, uart_divisor: int | None = None, tx_stall_percent: int = 0,
          progress=print) -> Path:
    """Build (or reuse) the simulator binary of ``config``; return its path.

    With ``uart_divisor`` the top is ``rtl.uart_device.UARTDevice`` and the harness moves the
    bytes over its rx/tx pins bit by bit, ``uart_divisor`` cycles per bit (``sim-serve``).
    Without it, ``tx_stall_percent`` of the cycles (pseudo-random, the same in every run)
    hold the core's ``tx.ready`` low: the tests' back-pressure on the response path."""
    from rtl.core import DeviceCore
    from rtl.uart_device import UARTDevice
    if not 0 <= tx_stall_percent < 100:
        raise ValueError(f"tx_stall_percent must be 0 to 99, not {tx_stall_percent}")
    if uart_divisor and tx_stall_percent:
        raise ValueError("tx_stall_percent applies to the byte-stream core, not to a UART")
    key = json.dumps([config, uart_divisor, tx_stall_percent], sort_keys=True) + \
        _design_sources()
    kind = f"uart{uart_divisor}_" if uart_divisor else \
        f"core_stall{tx_stall_percent}_" if tx_stall_percent else "core_"
    name = f"{kind}{config['rows']}x{config['cols']}_" + \
        hashlib.sha1(key.encode()).hexdigest()[:10]
    build_dir = BUILD_ROOT / name
    binary = build_dir / "Vdevice"
    if binary.exists():
        return binary
    setup_tool_env()
    build_dir.mkdir(parents=True, exist_ok=True)
    progress(f"building the simulated device {config['rows']}x{config['cols']} "
             f"with Verilator in {build_dir} (once per configuration)...")
    top = UARTDevice(divisor=uart_divisor, **config) if uart_divisor else DeviceCore(**config)
    (build_dir / "top.v").write_text(to_verilog(top, name="top") + "".join(vendor_models(config)))
    env = dict(os.environ)
    # OPT_FAST: Verilator compiles the per-cycle code with -Os by default; -O2 runs faster.
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") +
                        " CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2").strip()
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-O3", "--x-assign", "fast",
           "--x-initial", "fast", "-Wno-fatal",
           "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--top-module", "top", "--prefix", "Vtop",
           "-CFLAGS", f"-DUART_DIVISOR={uart_divisor or 0}",
           "-CFLAGS", f"-DTX_STALL_PERCENT={tx_stall_percent}",
           "-Mdir", str(build_dir / "obj"), "-o", str(binary), str(build_dir / "top.v"),
           str(HARNESS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (build_dir / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not binary.exists():
        raise RuntimeError(f"Verilator build failed; see {build_dir / 'build.log'}")
    return binary


def spawn(config: dict, *, uart_divisor: int | None = None, tx_stall_percent: int = 0,
          progress=print) -> subprocess.Popen:
    """Start a simulated device; its stdin/stdout are the link (bytes, or with
    ``uart_divisor`` bytes that cross a simulated UART bit by bit; see :func:`build`)."""
    binary = build(config, uart_divisor=uart_divisor, tx_stall_percent=tx_stall_percent,
                   progress=progress)
    return subprocess.Popen([str(binary)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
