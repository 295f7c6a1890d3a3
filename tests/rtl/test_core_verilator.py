"""The RTL device core (Verilator) against the emulator, byte for byte.

The same request bytes go to ``rtl.core.DeviceCore`` compiled by ``sim.verilator_device`` and to
``host.emu.EmulatedDevice`` with the same configuration (``sim.fuzz.DevicePair``); every
response must be identical.
Random sequences mix valid commands (weights, activations, runs, reads, counters) with
malformed frames: bad CRC, over-long length, unknown commands, wrong argument sizes,
out-of-range addresses, invalid base3 bytes, truncated frames and garbage between frames.
Runs are checked for exact results, and the device's cycle counters against the cycle model.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from firmware.commands import INFO_SIZE, Command, Counters, ReadResultsArgs, RunArgs, Status
from firmware.programs import linear_args
from sim import cycles, numerics, packing, schedule
from sim.cocotb_runner import tool_missing
from sim.fuzz import DevicePair, fuzz
from sim.verilator_device import core_config

CONFIG = core_config(2, 3, weight_words=2048, act_bytes=1024, result_rows=64, max_payload=64,
                     frame_timeout=200)


# The core with the registers ECP5 builds put on its ports (``registered_ports``, the default)
# with tx always ready, and with tx not ready in 40% of cycles (pseudo-random): the response
# path back-pressured (the frame sender's FIFO, the small payloads' byte register, READ_RESULTS'
# row registers); and without them, as iCE40 builds it, back-pressured too.
VARIANTS = {"registered": ({}, 0), "registered-tx-stalls": ({}, 40),
            "unregistered-tx-stalls": ({"registered_ports": False}, 40)}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    options, stall = VARIANTS[request.param]
    p = DevicePair({**CONFIG, **options}, tx_stall_percent=stall)
    yield p
    p.close()


def upload_layer(pair, w, x, word0=0):
    """Weights as the device lays them out (outputs mapping), activations at 0."""
    R, C = CONFIG["rows"], CONFIG["cols"]
    N, K = w.shape
    cfg = schedule.ArrayConfig(R, C)
    plan = schedule.plan_linear(cfg, 1, N, K, mapping="outputs")
    words = []
    for p in plan.passes:
        if p.first_chunk:
            t = int(p.outputs[0, 0]) // (R * C)
            full = schedule.Pass(tokens=np.zeros(R, dtype=int),
                                 outputs=np.arange(t * R * C, (t + 1) * R * C).reshape(R, C),
                                 k0=0, k1=K, first_chunk=True, last_chunk=True)
            wpad = np.zeros((-(-N // (R * C)) * R * C, K), dtype=np.int8)
            wpad[:N] = w
            blocks, _ = schedule.pass_operands(full, wpad, np.zeros((1, K), dtype=np.int8))
            words += [b.ravel() for b in blocks]
    data = b"".join(packing.pack_base3(wd).tobytes() for wd in words)
    word_bytes = packing.packed_size(R * C, "base3")
    per_frame = (CONFIG["max_payload"] - 4) // word_bytes
    for i in range(0, len(words), per_frame):
        chunk = data[i * word_bytes:(i + per_frame) * word_bytes]
        status, _ = pair.request(Command.WRITE_WEIGHTS, struct.pack("<I", word0 + i) + chunk)
        assert status == Status.OK
    xb = x.astype(np.int8).tobytes()
    for i in range(0, len(xb), CONFIG["max_payload"] - 4):
        status, _ = pair.request(Command.WRITE_ACTS, struct.pack("<I", i) + xb[i:i + 60])
        assert status == Status.OK
    return len(words)


def run_and_read(pair, M, N, K, word0=0):
    R, C = CONFIG["rows"], CONFIG["cols"]
    status, _ = pair.request(Command.RUN, linear_args(weights=word0, acts=0, results=0, M=M, N=N,
                                                  K=K).to_bytes())
    assert status == Status.OK
    rows = -(-N // (R * C)) * M * R
    out = bytearray()
    step = 0xFFFF // (4 * C)
    step = min(step, (CONFIG["result_rows"]))
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        status, payload = pair.request(Command.READ_RESULTS,
                                       ReadResultsArgs(row=r0, rows=n).to_bytes())
        assert status == Status.OK
        out += payload
    vals = np.frombuffer(bytes(out), dtype="<i4").reshape(rows, C)
    plan = schedule.plan_linear(schedule.ArrayConfig(R, C), M, N, K, mapping="outputs")
    y = np.zeros((M, N), dtype=np.int64)
    i = 0
    for p in plan.passes:
        if p.last_chunk:
            schedule.scatter_tile(plan, p, vals[i:i + R], y)
            i += R
    return y, plan


def test_info_and_counters(pair):
    status, info = pair.request(Command.INFO)
    assert status == Status.OK and len(info) == INFO_SIZE
    status, _ = pair.request(Command.CLEAR_COUNTERS)
    assert status == Status.OK
    status, payload = pair.request(Command.READ_COUNTERS)
    assert Counters.from_bytes(payload).frames_ok == 1   # this READ_COUNTERS itself


# (1, 13, 1): sweeps of one step, back to back; the sweep queue must still leave no gap.
@pytest.mark.parametrize("M,N,K", [(1, 7, 300), (3, 6, 1), (1, 13, 1), (2, 13, 256),
                                   (1, 1, 600)])
def test_layer_exact_and_counters(pair, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    pair.request(Command.CLEAR_COUNTERS)
    upload_layer(pair, w, x)
    y, plan = run_and_read(pair, M, N, K)
    assert np.array_equal(y, numerics.ternary_matmul(w, x))
    _, payload = pair.request(Command.READ_COUNTERS)
    c = Counters.from_bytes(payload)
    model = cycles.simulate(plan.config, plan.lengths, plan.finals)
    assert (c.busy, c.stall_input, c.stall_drain, c.drain_tail) == \
        (model.busy, model.stall_input, model.stall_drain, model.drain_tail)


def test_narrow_results_are_the_low_16_bits(pair):
    """READ_RESULTS of width 2 sends bytes 0 and 1 of each int32 sum (RTL and emulator
    alike, compared byte for byte by the pair); a width other than 2 or 4 is refused."""
    rng = np.random.default_rng(5)
    w = rng.integers(-1, 2, (6, 255)).astype(np.int8)
    w[0], w[1] = 1, -1                        # the extremes: -128 * 255 = -32640 and +32640
    x = np.full((1, 255), -128, dtype=np.int8)
    upload_layer(pair, w, x)
    y, _ = run_and_read(pair, 1, 6, 255)
    rows = CONFIG["rows"]
    status, wide = pair.request(Command.READ_RESULTS, ReadResultsArgs(0, rows).to_bytes())
    status2, narrow = pair.request(Command.READ_RESULTS, ReadResultsArgs(0, rows, 2).to_bytes())
    assert status == status2 == Status.OK and len(narrow) * 2 == len(wide)
    assert np.array_equal(np.frombuffer(narrow, "<i2"), np.frombuffer(wide, "<i4"))
    assert y[0, 0] == -32640 and y[0, 1] == 32640
    for width in (0, 1, 3, 8):
        status, _ = pair.request(Command.READ_RESULTS, ReadResultsArgs(0, 1, width).to_bytes())
        assert status == Status.BAD_ARGUMENT


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_invalid_base3_byte_anywhere_writes_nothing(pair, where):
    """WRITE_WEIGHTS with one byte above 242 (the first, one in the middle or the very last,
    whose check lands in the cycle that ends the scan) is refused, and the words it would
    have overwritten still hold what was there: a layer on them gives 0."""
    R, C = CONFIG["rows"], CONFIG["cols"]
    K, word0 = 4, 100
    rng = np.random.default_rng(len(where))
    zeros = b"".join(packing.pack_base3(np.zeros(R * C, np.int8)).tobytes() for _ in range(K))
    status, _ = pair.request(Command.WRITE_WEIGHTS, struct.pack("<I", word0) + zeros)
    assert status == Status.OK
    data = bytearray(b"".join(packing.pack_base3(rng.integers(-1, 2, R * C).astype(np.int8))
                              .tobytes() for _ in range(K)))
    data[{"first": 0, "middle": len(data) // 2, "last": -1}[where]] = int(rng.integers(243, 256))
    status, _ = pair.request(Command.WRITE_WEIGHTS, struct.pack("<I", word0) + bytes(data))
    assert status == Status.BAD_ARGUMENT
    status, _ = pair.request(Command.WRITE_ACTS, struct.pack("<I", 0) + bytes([1, 2, 3, 4]))
    assert status == Status.OK
    y, _ = run_and_read(pair, 1, R * C, K, word0=word0)
    assert not y.any()


def test_extremes_k_16384_rejected_or_exact(pair):
    """K larger than the activation buffer is refused; the largest K that fits is exact at the
    extremes (all -1 weights against -128)."""
    K = CONFIG["act_bytes"]
    w = np.full((6, K), -1, dtype=np.int8)
    x = np.full((1, K), -128, dtype=np.int8)
    upload_layer(pair, w[:, :K], x)
    y, _ = run_and_read(pair, 1, 6, K)
    assert (y == 128 * K).all()
    status, _ = pair.request(Command.RUN, linear_args(weights=0, acts=0, results=0, M=1, N=6,
                                                  K=K + 1).to_bytes())
    assert status == Status.BAD_ARGUMENT


# Programs loaded after the firmware: a K split changed between sweeps (the sequencer drains in
# between, and each stream is counted on its own), results moved with SETR, and a fault after
# sweeps have run (their results stay written; the response carries pc and cause).
CUSTOM = """
two:    SETR    r2
        SPLIT   r5, r4          ; K in r4 passes
        LOOP    r3, first
first:  SWEEP   r0, r1, r3      ; r3 tokens from word r0, then r0 += K
        LI      r6, 1
        SPLIT   r5, r6          ; K in one pass
        SWEEP   r0, r1, r6
        HALT
crash:  SETR    r2
        LI      r6, 2
        SPLIT   r5, r6
        SWEEP   r0, r1, r6
        LI      r6, 0
        DIVU    r7, r5, r6
        HALT
"""


def load_program(pair, source):
    """Assemble ``source`` to follow the firmware in program memory and write it there."""
    from firmware.asm import assemble
    from firmware.programs import FIRMWARE
    prog = assemble(source, base=len(FIRMWARE))
    status, _ = pair.request(Command.WRITE_PROGRAM,
                             struct.pack("<I", len(FIRMWARE)) + prog.to_bytes())
    assert status == Status.OK
    return prog


def test_loaded_programs_match_emulator(pair):
    from firmware.commands import FAULT_FORMAT
    from firmware.isa import Fault
    prog = load_program(pair, CUSTOM)
    rng = np.random.default_rng(3)
    K = 9
    w = rng.integers(-1, 2, (4 * 6, K)).astype(np.int8)
    x = rng.integers(-128, 128, (3, K)).astype(np.int8)
    upload_layer(pair, w, x)
    pair.request(Command.CLEAR_COUNTERS)
    run = lambda entry, *a: pair.request(Command.RUN, RunArgs(entry, a).to_bytes())
    assert run(prog.labels["two"], 0, 0, 5, 3, 2, K) == (Status.OK, b"")
    # 3 sweeps of 3 tokens in 2 passes, then 1 sweep of 1 token in 1 pass.
    rows = (3 * 3 + 1) * CONFIG["rows"]
    status, data = pair.request(Command.READ_RESULTS, ReadResultsArgs(5, rows).to_bytes())
    assert status == Status.OK
    got = np.frombuffer(data, dtype="<i4").reshape(-1, CONFIG["rows"] * CONFIG["cols"])
    for t in range(4):
        for m in range(3 if t < 3 else 1):
            want = numerics.ternary_matmul(w[t * 6:(t + 1) * 6], x[m:m + 1])[0]
            assert np.array_equal(got[3 * t + m], want), (t, m)
    status, payload = pair.request(Command.READ_COUNTERS)
    c = Counters.from_bytes(payload)
    cfg = schedule.ArrayConfig(CONFIG["rows"], CONFIG["cols"])
    first = cycles.full_rate_count_of(cfg, [5, 4] * 9)
    second = cycles.full_rate_count_of(cfg, [9])
    assert (c.busy, c.stall_drain, c.drain_tail) == (
        first.busy + second.busy, first.stall_drain + second.stall_drain,
        first.drain_tail + second.drain_tail)
    status, payload = run(prog.labels["crash"], 0, 0, 40, 0, 0, K)
    assert status == Status.PROGRAM_FAULT
    assert struct.unpack(FAULT_FORMAT, payload) == (prog.labels["crash"] + 5,
                                                   Fault.DIVIDE_BY_ZERO.value)
    status, data = pair.request(Command.READ_RESULTS, ReadResultsArgs(40, 2).to_bytes())
    assert np.array_equal(np.frombuffer(data, dtype="<i4"),
                          numerics.ternary_matmul(w[:6], x[:1])[0])
    # The firmware at address 0 still runs layers.
    y, _ = run_and_read(pair, 2, 7, K)
    assert np.array_equal(y, numerics.ternary_matmul(w[:7], x[:2]))


# A SETR in the cycle after a SWEEP that an idle sequencer took: "idle" was true when the
# sweep was handed over, and the SETR must still wait for that sweep's results.
SETR_AFTER_SWEEP = """
start:  SETR    r2
        LI      r6, 1
        SPLIT   r5, r6          ; K in one pass
        SWEEP   r0, r1, r3
        SETR    r4
        SWEEP   r0, r1, r3
        HALT
"""


def test_setr_right_after_a_sweep_waits_for_it(pair):
    entry = load_program(pair, SETR_AFTER_SWEEP).labels["start"]
    rng = np.random.default_rng(11)
    K, R, tokens = 7, CONFIG["rows"], 2
    w = rng.integers(-1, 2, (2 * 6, K)).astype(np.int8)
    x = rng.integers(-128, 128, (tokens, K)).astype(np.int8)
    upload_layer(pair, w, x)
    status, _ = pair.request(Command.RUN, RunArgs(entry, (0, 0, 50, tokens, 60, K)).to_bytes())
    assert status == Status.OK
    for tile, row in enumerate((50, 60)):
        status, data = pair.request(Command.READ_RESULTS,
                                    ReadResultsArgs(row, tokens * R).to_bytes())
        assert status == Status.OK
        got = np.frombuffer(data, dtype="<i4").reshape(tokens, -1)     # 6 outputs a token
        assert np.array_equal(got, numerics.ternary_matmul(w[6 * tile:6 * tile + 6], x)), tile


def test_malformed_frames_fuzz(pair):
    """Random valid and malformed requests (sim.fuzz): identical answers, and the device
    always answers the next valid request. ``make bench`` (fuzz) sends 10^4."""
    sent = fuzz(pair, 300, seed=77)
    assert all(n > 0 for n in sent.values()), sent
