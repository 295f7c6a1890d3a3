"""Switching activity of the PE's partial sum, measured with Verilator's toggle coverage.

The per-operation energies of ``sim.energy`` (an INT8 addition: 0.03 pJ at 45 nm, 0.007 pJ
at 7 nm) are averages over random operands. A real model's operands are not random: int8
activations quantized per token cluster near zero, and a partial sum that adds small numbers
flips fewer high bits. This module measures how much, on the RTL itself:

* the PE (``rtl.ternary_pe.TernaryPE``, the Verilog that simulation uses: ``rtl.synth.to_verilog``)
  is compiled by Verilator with ``--coverage-toggle`` and a small C++ driver that replays a
  stream of (activation, weight, step, capture) cycles and writes ``coverage.dat``;
* a stream is what one PE sees while it computes outputs: for each output ``n`` of a layer
  and token ``m``, the ``K`` steps ``(x[m, k], w[n, k])``, the last one a capture (the partial
  sum restarts from 0, as the array runs passes);
* the toggles of the ``psum`` register (every bit flip, either way) over the stream, per step
  whose weight is not zero (a zero trit keeps ``psum`` as it is; the estimate already counts
  only those additions).

The same count is computed from the streams in NumPy (:func:`psum_toggles`), and a test holds
the two equal, so the model's whole workload can be counted without simulating it all; the
Verilator run covers a sample. The **activity ratio** is the toggles per nonzero step of the
bundled model's real activations and weights over those of uniform random ones (int8 uniform
in [-128, 127], trits uniform in {-1, 0, +1}): the case random-operand energy figures stand
for. Run ``python -m sim.toggles`` to measure it (docs/estimates.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import packing

ACT_BITS, PSUM_BITS = 8, 16

_DRIVER = r"""
#include <cstdio>
#include <cstdint>
#include <memory>
#include "verilated.h"
#include "verilated_cov.h"
#include "Vpe.h"

// Replays a stimulus file of 3 bytes a cycle (activation as uint8, weight code, flags:
// bit 0 step, bit 1 capture) on the PE, one clock each, and writes the toggle coverage.
int main(int argc, char** argv) {
    if (argc != 3) { std::fprintf(stderr, "usage: pe STIMULUS COVERAGE\n"); return 2; }
    const std::unique_ptr<VerilatedContext> ctx{new VerilatedContext};
    const std::unique_ptr<Vpe> pe{new Vpe{ctx.get()}};
    FILE* f = std::fopen(argv[1], "rb");
    if (!f) { std::perror(argv[1]); return 2; }
    pe->clk = 0; pe->rst = 1; pe->step = 0; pe->capture = 0; pe->act = 0; pe->weight = 1;
    pe->eval(); pe->clk = 1; pe->eval(); pe->clk = 0; pe->rst = 0; pe->eval();
    // coverage counts from here on: the reset cycle is not part of the stream
    VerilatedCov::zero();
    unsigned char c[3];
    long n = 0;
    while (std::fread(c, 1, 3, f) == 3) {
        pe->act = (int8_t)c[0]; pe->weight = c[1];
        pe->step = c[2] & 1; pe->capture = (c[2] >> 1) & 1;
        pe->eval(); pe->clk = 1; pe->eval(); pe->clk = 0; pe->eval();
        ++n;
    }
    std::fclose(f);
    VerilatedCov::write(argv[2]);
    std::printf("%ld\n", n);
    return 0;
}
"""


def streams(w: np.ndarray, x: np.ndarray, outputs: np.ndarray | None = None,
            tokens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (activation, trit) cycles of PEs computing outputs ``outputs`` of ``w`` (N, K) for
    tokens ``tokens`` of ``x`` (M, K): ``(acts, trits)``, each of shape (outputs x tokens, K),
    one row a pass (its last step the capture)."""
    outputs = np.arange(w.shape[0]) if outputs is None else outputs
    tokens = np.arange(x.shape[0]) if tokens is None else tokens
    acts = np.repeat(x[tokens][None, :, :], len(outputs), axis=0).reshape(-1, x.shape[1])
    trits = np.repeat(w[outputs][:, None, :], len(tokens), axis=1).reshape(-1, w.shape[1])
    return acts.astype(np.int8), trits.astype(np.int8)


def psum_toggles(acts: np.ndarray, trits: np.ndarray, psum_bits: int = PSUM_BITS) -> int:
    """Bit flips of the ``psum`` register over passes (rows of ``acts``/``trits``), from 0 at
    the start of the first: each step adds ``trit * act``; the last step of a pass captures
    and ``psum`` returns to 0 (its flips back to 0 count too)."""
    mask = (1 << psum_bits) - 1
    sums = np.cumsum(acts.astype(np.int64) * trits.astype(np.int64), axis=1)
    # register values after each cycle: the running sums, and 0 after the capture
    vals = np.concatenate([sums[:, :-1], np.zeros((len(sums), 1), np.int64)], axis=1)
    flat = np.concatenate([[0], vals.ravel()]) & mask
    diff = (flat[1:] ^ flat[:-1]).astype(np.uint64)
    return int(sum(int(np.count_nonzero(diff & np.uint64(1 << b))) for b in range(psum_bits)))


def _stimulus(acts: np.ndarray, trits: np.ndarray) -> bytes:
    rows, K = acts.shape
    flags = np.ones((rows, K), np.uint8)
    flags[:, -1] = 3                                          # the last step captures
    codes = np.vectorize(packing.trit_code, otypes=[np.uint8])(trits)
    out = np.stack([acts.view(np.uint8), codes, flags], axis=-1)
    return out.astype(np.uint8).tobytes()


def build(out: Path) -> Path:
    """Verilator binary of the PE with toggle coverage, in ``out`` (built once)."""
    from rtl.synth import to_verilog
    from rtl.ternary_pe import TernaryPE
    from .cocotb_runner import setup_tool_env

    out = Path(out).resolve()
    exe = out / "obj" / "Vpe"
    if exe.exists():
        return exe
    setup_tool_env()
    out.mkdir(parents=True, exist_ok=True)
    (out / "pe.v").write_text(to_verilog(TernaryPE(act_width=ACT_BITS, psum_width=PSUM_BITS),
                                         name="pe"))
    (out / "main.cpp").write_text(_DRIVER)
    subprocess.run(["verilator", "--cc", "--exe", "--build", "--coverage-toggle", "-O2",
                    "-Wno-fatal", "--top-module", "pe", "-Mdir", str(out / "obj"),
                    "-o", "Vpe", "pe.v", "main.cpp"], cwd=out, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "MAKEFLAGS": "-j1"})
    return exe


def coverage_toggles(path: Path, signal: str) -> int:
    """Sum of Verilator's toggle counts for every bit of ``signal`` in a ``coverage.dat``."""
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("C '"):
            continue
        body, count = line[3:].rsplit("' ", 1)
        fields = dict(f.split("\x02", 1) for f in body.split("\x01") if "\x02" in f)
        if fields.get("page", "").startswith("v_toggle") and \
                re.fullmatch(rf"{re.escape(signal)}(\[\d+\])?(:.*)?", fields.get("o", "")):
            total += int(count)
    return total


def measure_rtl(acts: np.ndarray, trits: np.ndarray, build_dir: Path) -> dict:
    """Run the stream on the Verilated PE: ``{"cycles", "psum_toggles"}`` from coverage."""
    exe = build(build_dir)
    with tempfile.TemporaryDirectory() as tmp:
        stim, cov = Path(tmp) / "stim.bin", Path(tmp) / "coverage.dat"
        stim.write_bytes(_stimulus(acts, trits))
        r = subprocess.run([str(exe), str(stim), str(cov)], check=True, capture_output=True,
                           text=True)
        return {"cycles": int(r.stdout.strip()), "psum_toggles": coverage_toggles(cov, "psum")}


def rate(acts: np.ndarray, trits: np.ndarray, toggles: int) -> dict:
    nonzero = int(np.count_nonzero(trits))
    return {"steps": int(trits.size), "nonzero_steps": nonzero, "psum_toggles": toggles,
            "toggles_per_nonzero_step": toggles / nonzero if nonzero else 0.0}


def model_streams(model: str | Path, prompt: str, new_tokens: int):
    """Every device call of the bundled model generating ``new_tokens`` from ``prompt`` on the
    emulator: ``[(w, x), ...]`` with the stacked trits and the int8 activations sent."""
    from host import open_device, run_model

    calls = []
    with open_device("emu", rows=16, cols=16, weight_words=4096) as dev:
        weights = {}
        load_many, linear = dev.load_many, dev.linear

        def keep_load_many(ws, *a, **kw):
            hs = load_many(ws, *a, **kw)
            for h, w in zip(hs, ws):
                weights[id(h)] = np.asarray(w)
            return hs

        def keep_linear(h, x, *a, **kw):
            calls.append((weights[id(h)], np.asarray(x)))
            return linear(h, x, *a, **kw)

        dev.load_many, dev.linear = keep_load_many, keep_linear
        run_model(model, prompt=prompt, device=dev, max_new_tokens=new_tokens, temperature=0.0)
    if not calls:
        raise RuntimeError("the model made no device call (was the device's load_many used?)")
    return calls


def measure(model: str | Path, *, prompt: str, new_tokens: int, sample: int, seed: int,
            build_dir: Path) -> dict:
    """The activity ratio of ``model`` (real streams, counted in NumPy over every call) against
    uniform random operands of the same shapes, each also run on the RTL for ``sample``
    passes (outputs x tokens) to check the count."""
    rng = np.random.default_rng(seed)
    calls = model_streams(model, prompt, new_tokens)
    real_t = real_nz = real_steps = 0
    rand_t = rand_nz = rand_steps = 0
    for w, x in calls:
        a, t = streams(w, x)
        real_t += psum_toggles(a, t)
        real_nz += int(np.count_nonzero(t))
        real_steps += t.size
        ra = rng.integers(-128, 128, a.shape).astype(np.int8)
        rt = rng.integers(-1, 2, t.shape).astype(np.int8)
        rand_t += psum_toggles(ra, rt)
        rand_nz += int(np.count_nonzero(rt))
        rand_steps += rt.size
    # the RTL on a sample of passes: real ones from the calls, and random ones
    pool = [streams(w, x) for w, x in calls[:8]]
    a = np.concatenate([p[0] for p in pool])
    t = np.concatenate([p[1] for p in pool])
    pick = rng.choice(len(a), size=min(sample, len(a)), replace=False)
    a, t = a[pick], t[pick]
    ra = rng.integers(-128, 128, a.shape).astype(np.int8)
    rt = rng.integers(-1, 2, t.shape).astype(np.int8)
    rtl_real, rtl_rand = measure_rtl(a, t, build_dir), measure_rtl(ra, rt, build_dir)
    real = {"steps": real_steps, "nonzero_steps": real_nz, "psum_toggles": real_t,
            "toggles_per_nonzero_step": real_t / real_nz}
    rand = {"steps": rand_steps, "nonzero_steps": rand_nz, "psum_toggles": rand_t,
            "toggles_per_nonzero_step": rand_t / rand_nz}
    return {
        "model": Path(model).name, "prompt": prompt, "new_tokens": new_tokens, "calls": len(calls),
        "psum_bits": PSUM_BITS, "seed": seed,
        "real": real, "random": rand,
        "activity_ratio": real["toggles_per_nonzero_step"] / rand["toggles_per_nonzero_step"],
        "rtl_sample": {
            "passes": int(len(a)),
            "real": {**rate(a, t, rtl_real["psum_toggles"]),
                     "numpy_psum_toggles": psum_toggles(a, t), "cycles": rtl_real["cycles"]},
            "random": {**rate(ra, rt, rtl_rand["psum_toggles"]),
                       "numpy_psum_toggles": psum_toggles(ra, rt),
                       "cycles": rtl_rand["cycles"]}},
    }


def main(argv=None) -> int:
    from host.estimate import BUNDLED

    ap = argparse.ArgumentParser(prog="python -m sim.toggles", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(BUNDLED))
    ap.add_argument("--prompt", default="The with statement")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--sample", type=int, default=2000, help="passes run on the RTL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build", default=str(Path(__file__).resolve().parents[1] / "build"
                                            / "toggles"))
    args = ap.parse_args(argv)
    r = measure(args.model, prompt=args.prompt, new_tokens=args.new_tokens, sample=args.sample,
                seed=args.seed, build_dir=Path(args.build))
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
