"""The device core built with the adder-tree engines (``DeviceCore(engine="tree")`` and
``engine="serial"``) in Verilator against the emulator, byte for byte (``sim.fuzz.DevicePair``):
layers through the shipped ``linear`` program with exact results and counters equal to the
trees' cycle models, activations written a byte at a time into words of k bytes (digit planes,
serial), and random malformed requests."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from firmware.commands import (INFO_SIZE, Command, Counters, DeviceInfo, ReadResultsArgs, Status,
                               device_trees)
from firmware.programs import linear_args
from sim import cycles, numerics, packing, schedule
from sim.cocotb_runner import tool_missing
from sim.fuzz import DevicePair, fuzz
from sim.verilator_device import core_config

CONFIG = core_config(4, 3, weight_words=512, act_bytes=1024, result_rows=64,
                     max_payload=64, frame_timeout=200, engine="tree")

# registered ports (ECP5 builds) with the pair adders on carry cells, the activations in two
# register copies (lanes 0, 1 and lane 2: rtl.fanout), the weight and result memories in two
# slices (rtl.sliced_memory) and tx back-pressured; without them (the stalling sequencer),
# generic adders, one copy and one memory each; and so with linear hardwired in place of the
# control processor (rtl.linear_sequencer, as the UP5K needs it); and the digit-serial trees
# (rtl.serial_tree), hardwired, 8 lanes in beats of 2 lanes' trits, tx back-pressured, and
# with the control processor (which the UP5K has no room for, but runs any program)
VARIANTS = {"registered-ccu2c": ({"pe_adder": "ccu2c", "act_copies": 2, "port_copies": 2}, 40),
            "unregistered": ({"registered_ports": False}, 0),
            "hardwired": ({"registered_ports": False, "control": "hardwired", "cols": 4}, 20),
            "serial": ({"engine": "serial", "registered_ports": False, "control": "hardwired",
                        "cols": 8}, 20),
            "serial-processor": ({"engine": "serial", "registered_ports": False, "cols": 4}, 0)}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    options, stall = VARIANTS[request.param]
    p = DevicePair({**CONFIG, **options}, tx_stall_percent=stall)
    p.tree = device_trees(p.config["engine"], p.config["rows"], p.config["cols"])
    yield p
    p.close()


def word_bytes(pair):
    """Bytes of a weight-memory word: a step's, or a lane group's (serial)."""
    return packing.packed_size(pair.tree.word_trits, "base3")


def send(pair, command, address, data, per_frame):
    for i in range(0, len(data), per_frame):
        status, _ = pair.request(command, struct.pack("<I", address + i // (
            1 if command == Command.WRITE_ACTS else word_bytes(pair))) + data[i:i + per_frame])
        assert status == Status.OK


def upload_layer(pair, w, x):
    """Weights as tree beats (tile t, step s at step word t*S + s; serial: its lane groups at
    the memory words from D times that), activations padded to whole steps per token, both
    from address 0."""
    N, K = w.shape
    M = x.shape[0]
    plan = schedule.plan_tree(pair.tree, 1, N, K)
    zeros = np.zeros((1, K), dtype=np.int8)
    words = [group for p in plan.passes
             for beat in schedule.tree_pass_operands(plan, p, w, zeros)[0]
             for group in beat.reshape(pair.tree.words_per_step, pair.tree.word_trits)]
    data = b"".join(packing.pack_base3(wd).tobytes() for wd in words)
    send(pair, Command.WRITE_WEIGHTS, 0, data, (CONFIG["max_payload"] - 4) // word_bytes(pair) *
         word_bytes(pair))
    S = pair.tree.steps(K)
    padded = np.zeros((M, S * pair.tree.k), dtype=np.int8)
    padded[:, :K] = x
    send(pair, Command.WRITE_ACTS, 0, padded.tobytes(), CONFIG["max_payload"] - 4)
    return S


def run_and_read(pair, M, N, K):
    S = pair.tree.steps(K)
    status, _ = pair.request(Command.RUN, linear_args(weights=0, acts=0, results=0, M=M, N=N,
                                                      K=S).to_bytes())
    assert status == Status.OK
    plan = schedule.plan_tree(pair.tree, M, N, K)
    rows = len(plan.passes)                 # one per token and tile, tile-major
    status, payload = pair.request(Command.READ_RESULTS, ReadResultsArgs(0, rows).to_bytes())
    assert status == Status.OK
    vals = np.frombuffer(payload, dtype="<i4").reshape(rows, pair.tree.lanes)
    # width 2: bytes 0 and 1 of each sum, two bytes a sum apart (the picks' tightest case)
    status, narrow = pair.request(Command.READ_RESULTS, ReadResultsArgs(0, rows, 2).to_bytes())
    assert status == Status.OK
    assert narrow == np.frombuffer(payload, np.uint8).reshape(-1, 4)[:, :2].tobytes()
    y = np.zeros((M, N), dtype=np.int64)
    for p, row in zip(plan.passes, vals):
        schedule.scatter_tree_result(p, row, y)
    return y, plan


def test_info_says_tree(pair):
    status, data = pair.request(Command.INFO)
    assert status == Status.OK and len(data) == INFO_SIZE
    info = DeviceInfo.from_bytes(data)
    assert info.tree and (info.rows, info.cols, info.psum_bits) == (
        pair.tree.k, pair.tree.lanes, 32)
    assert info.program_words == (0 if pair.config.get("control") == "hardwired" else 64)


# (3, 2, 1): passes of one step, shorter than the tree's latency + 2 (the sequencer holds
# the last step back); (1, 7, 50): three tiles of one token; K not a multiple of k throughout
@pytest.mark.parametrize("M,N,K", [(1, 7, 50), (3, 2, 1), (2, 6, 13), (4, 5, 33)])
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
    model = (cycles.serial_tree_simulate if pair.tree.digit_bits else cycles.tree_simulate)(
        pair.tree, plan.lengths)
    assert (c.busy, c.stall_input, c.stall_drain, c.drain_tail) == \
        (model.busy, model.stall_input, model.stall_drain, model.drain_tail)


def test_extremes(pair):
    """Every weight -1 against -128: the trees' one's complements and carry-ins at their limit."""
    N, K, M = 3, 128, 2
    w = -np.ones((N, K), dtype=np.int8)
    x = np.full((M, K), -128, dtype=np.int8)
    upload_layer(pair, w, x)
    y, _ = run_and_read(pair, M, N, K)
    assert (y == 128 * K).all()


def test_activation_bytes_land_in_their_lanes(pair):
    """WRITE_ACTS at byte offsets that start mid-word, one byte per frame and across words:
    each byte lands in its lane (the word's byte enables), the others stay."""
    N, K = 3, 8
    w = np.eye(N, K, dtype=np.int8) - np.eye(N, K, k=5, dtype=np.int8)   # y[n] = x[n] - x[n+5]
    x = np.arange(1, K + 1, dtype=np.int8)[None, :]
    upload_layer(pair, w, x)
    for offset, value in ((1, -7), (6, 100), (2, 55)):
        status, _ = pair.request(Command.WRITE_ACTS, struct.pack("<I", offset) +
                                 np.int8(value).tobytes())
        assert status == Status.OK
        x[0, offset] = value
    status, _ = pair.request(Command.WRITE_ACTS, struct.pack("<I", 3) + bytes([9, 8, 7]))
    x[0, 3:6] = [9, 8, 7]
    y, _ = run_and_read(pair, 1, N, K)
    assert np.array_equal(y, numerics.ternary_matmul(w, x))


# K in three passes of a token: the trees leave a row at the end of every pass
SPLIT_THREE = """
start:  SETR    r2
        LI      r6, 3
        SPLIT   r5, r6
        SWEEP   r0, r1, r3
        HALT
"""


def test_program_splitting_k_gets_a_row_a_pass(pair):
    from firmware.asm import assemble
    from firmware.commands import RunArgs
    from firmware.programs import FIRMWARE
    prog = assemble(SPLIT_THREE, base=len(FIRMWARE))
    if pair.config.get("control") == "hardwired":
        # no program memory: the program is refused, and so is a RUN from its entry
        status, _ = pair.request(Command.WRITE_PROGRAM, struct.pack("<I", len(FIRMWARE)) +
                                 prog.to_bytes())
        assert status == Status.BAD_ARGUMENT
        status, _ = pair.request(Command.RUN, RunArgs(prog.labels["start"],
                                                      (0, 0, 10, 1, 3, 7)).to_bytes())
        assert status == Status.BAD_ARGUMENT
        return
    status, _ = pair.request(Command.WRITE_PROGRAM, struct.pack("<I", len(FIRMWARE)) +
                             prog.to_bytes())
    assert status == Status.OK
    rng = np.random.default_rng(5)
    N, K, M = 3, 28, 2                       # 7 steps: passes of 3, 2 and 2
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    upload_layer(pair, w, x)
    pair.request(Command.CLEAR_COUNTERS)
    status, _ = pair.request(Command.RUN, RunArgs(prog.labels["start"],
                                                  (0, 0, 10, M, N, 7)).to_bytes())
    assert status == Status.OK
    status, data = pair.request(Command.READ_RESULTS, ReadResultsArgs(10, 3 * M).to_bytes())
    got = np.frombuffer(data, dtype="<i4").reshape(M, 3, pair.tree.lanes)
    for m in range(M):
        for i, (s0, s1) in enumerate(((0, 3), (3, 5), (5, 7))):
            ks = slice(4 * s0, 4 * s1)
            assert np.array_equal(got[m, i, :N],
                                  numerics.ternary_matmul(w[:, ks], x[m:m + 1, ks])[0])
    _, payload = pair.request(Command.READ_COUNTERS)
    c = Counters.from_bytes(payload)
    model = cycles.stream_count(pair.tree, [3, 2, 2] * M)
    assert (c.busy, c.stall_drain, c.drain_tail) == (model.busy, model.stall_drain,
                                                     model.drain_tail)


def test_sweeps_that_come_apart_stay_exact(pair):
    """Sweeps reaching the sequencer 1 to 5 instructions apart: the sequencer drains
    between them or takes the next at once; the serial trees flush the last step's digits
    in a slot of their own, and a sweep that arrives meanwhile waits for the slot's end.
    Every tile's row is exact. (The counters are cleared after: a stream with gaps is not
    what the full-rate model counts, so the emulator's would differ.)"""
    from firmware.asm import assemble
    from firmware.commands import RunArgs
    from firmware.programs import FIRMWARE
    if pair.config.get("control") == "hardwired":
        pytest.skip("hardwired: linear only, whose sweeps follow each other without a gap")
    # gaps of 1 to 5 instructions, a cycle or two each: one of them lands a sweep within
    # the 3 cycles of a flush slot after its first beat (25 words: the program memory's 64
    # less the firmware's 39)
    gaps = (1, 2, 3, 4, 5)
    lines = ["start:  SETR    r2", "        LI      r6, 1", "        SPLIT   r5, r6"]
    for gap in gaps:
        lines += ["        SWEEP   r0, r1, r3"] + ["        ADDI    r7, r7, 1"] * gap
    lines += ["        SWEEP   r0, r1, r3", "        HALT"]
    prog = assemble("\n".join(lines) + "\n", base=len(FIRMWARE))
    code = prog.to_bytes()
    for i in range(0, len(code), 32):        # 8 instructions a frame (max_payload 64)
        status, _ = pair.request(Command.WRITE_PROGRAM,
                                 struct.pack("<I", len(FIRMWARE) + i // 4) + code[i:i + 32])
        assert status == Status.OK
    rng = np.random.default_rng(9)
    T = len(gaps) + 1
    N, K = T * pair.tree.lanes, pair.tree.k           # a tile a sweep, a step a sweep
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (1, K)).astype(np.int8)
    upload_layer(pair, w, x)
    status, _ = pair.request(Command.RUN, RunArgs(prog.labels["start"],
                                                  (0, 0, 5, 1, N, 1)).to_bytes())
    assert status == Status.OK
    status, data = pair.request(Command.READ_RESULTS, ReadResultsArgs(5, T).to_bytes())
    got = np.frombuffer(data, dtype="<i4").reshape(T * pair.tree.lanes)
    assert np.array_equal(got, numerics.ternary_matmul(w, x)[0])
    pair.request(Command.CLEAR_COUNTERS)


def test_malformed_frames_fuzz(pair):
    sent = fuzz(pair, 200, seed=78)
    assert all(n > 0 for n in sent.values()), sent
