"""``tritium selftest``: check a link the way a user with a new board would.

Round trips (INFO requests), exactness of random layers against the golden model (M = 1 and
M > rows, shapes that do not fit the array evenly), upload throughput, and the link's error
counts. Returns a report dict; ``ok`` is False on any wrong result.
"""

from __future__ import annotations

import time

import numpy as np

from sim import numerics

from .device import Device


def run_selftest(dev: Device, *, frames: int = 100, seed: int = 0, progress=None) -> dict:
    say = progress or (lambda msg: None)
    info = dev.info
    R, C = info["rows"], info["cols"]
    report = {"device": dev.name, "info": info}

    say(f"{frames} round trips")
    start = time.perf_counter()
    for _ in range(frames):
        dev.read_counters()
    seconds = time.perf_counter() - start
    report["round_trips"] = {"frames": frames, "seconds": round(seconds, 4),
                             "per_second": round(frames / seconds, 1) if seconds else None}
    low_latency = getattr(dev.transport, "low_latency", None)   # a serial port's mode
    if low_latency is not None:
        report["round_trips"]["low_latency"] = low_latency

    rng = np.random.default_rng(seed)
    shapes = [(1, R * C + 3, 300), (R + 1, 2 * C + 1, 257), (1, 7, 4097)]
    layers = []
    ok = True
    for M, N, K in shapes:
        say(f"layer M={M} N={N} K={K}")
        w = rng.integers(-1, 2, (N, K)).astype(np.int8)
        x = rng.integers(numerics.ACT_MIN, numerics.ACT_MAX + 1, (M, K)).astype(np.int8)
        before = dev.stats["bytes_sent"]
        start = time.perf_counter()
        h = dev.load(w)
        y = dev.linear(h, x)
        seconds = time.perf_counter() - start
        dev.free(h)
        exact = bool(np.array_equal(y, numerics.ternary_matmul(w, x)))
        ok &= exact
        sent = dev.stats["bytes_sent"] - before
        layers.append({"M": M, "N": N, "K": K, "exact": exact, "seconds": round(seconds, 4),
                       "bytes_sent": sent,
                       "bytes_per_second": round(sent / seconds) if seconds else None})
    report["layers"] = layers
    stats = dev.stats
    report["errors"] = {k: stats[k] for k in ("retries", "timeouts", "device_frames_bad")
                        if k in stats}
    injected = getattr(dev.transport, "injected", None)      # a FaultyTransport
    if injected is not None:
        spec = dev.transport.spec
        report["faults"] = {"rate": spec.rate, "seed": spec.seed, "injected": dict(injected)}
    report["stats"] = stats
    report["ok"] = ok
    return report
