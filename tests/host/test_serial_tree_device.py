"""``Device`` on a device built with the digit-serial trees (INFO's engine 2, the UP5K's): the
trees' host view, with a step's weight word stored as ``D = 4`` weight-memory words of one
lane group each. Layers resident, streamed and split are exact, the weight memory holds the
lane groups where docs/protocol.md puts them, the counters equal the serial engine's
cycle-by-cycle model, and weights beyond the memory are refused; on the emulator, with the
control processor and with ``linear`` hardwired, and on the RTL core in Verilator."""

import struct

import numpy as np
import pytest

from firmware.commands import RESPONSE_SYNC, Command, Status
from firmware.isa import Param
from firmware.programs import linear_args
from host import open_device
from host.emu import EmulatedDevice
from host.protocol import FrameDecoder, encode_request
from sim import cycles, packing
from sim.cocotb_runner import tool_missing

COUNTERS = ("busy", "stall_input", "stall_drain", "drain_tail")


def rand_layer(rng, M, N, K):
    return (rng.integers(-1, 2, (N, K)).astype(np.int8),
            rng.integers(-128, 128, (M, K)).astype(np.int8))


def exact(w, x):
    """``x @ w.T`` in int64 NumPy: what the device must return."""
    return x.astype(np.int64) @ w.astype(np.int64).T


def counted(before, after) -> dict:
    return {k: after[k] - before[k] for k in COUNTERS + ("runs", "model_cycles")}


def check(dev, w, x, handle=None) -> dict:
    """Run one layer (its ``handle`` if loaded, else ``w``): exact results, the device's
    cycles what the host's model predicted; return what the device counted for it."""
    before = dict(dev.stats)
    assert np.array_equal(dev.linear(w if handle is None else handle, x), exact(w, x))
    got = counted(before, dev.stats)
    assert sum(got[k] for k in COUNTERS) == got["model_cycles"]
    return got


def memory_words(w, k, lanes, D):
    """The weight-memory words of ``w`` (N, K) as docs/protocol.md lays them out, from NumPy
    reshapes: tile t, step s is the step word of trits ``W[t*lanes + l, s*k + i]`` at ``l*k +
    i`` (zeros pad N and K), cut into D memory words of ``lanes / D`` lanes each, step words
    in order ``t*S + s``. Returns trits ``(tiles * S * D, lanes / D * k)``."""
    N, K = w.shape
    T, S = -(-N // lanes), -(-K // k)
    padded = np.zeros((T * lanes, S * k), dtype=np.int8)
    padded[:N, :K] = w
    steps = padded.reshape(T, lanes, S, k).transpose(0, 2, 1, 3)     # [t, s, lane, i]
    return steps.reshape(T * S * D, lanes // D * k)


def emulator(dev) -> EmulatedDevice:
    return dev.transport.device


def test_info_and_what_the_host_reads_from_it():
    with open_device("emu", rows=32, cols=4, engine="serial", weight_words=1001) as dev:
        assert dev.info["engine"] == 2 and dev.info["weight_words"] == 1001
        planner = dev.planner
        assert planner.tree.digit_bits == 2 and planner.words_per_step == 4
        # a memory word is a lane's 32 trits: 7 base3 bytes, a step's word 4 of them
        assert (planner.word_bytes, planner.step_bytes) == (7, 28)
        # 250 steps' words, for the host and the programs alike; the last memory word makes
        # no step's word and stays unused
        assert dev.free_words == 250
        assert planner.params[Param.WEIGHT_WORDS] == 250
        assert emulator(dev).params[Param.WEIGHT_WORDS] == 250


@pytest.mark.parametrize("control", ["processor", "hardwired"])
def test_resident_layers_exact_with_the_serial_counters(control):
    """Each layer resident is one RUN: its counters are exactly the serial engine's
    cycle-by-cycle model (``serial_tree_simulate``) of its passes in a row, and the weight
    memory holds its lane groups from its base on."""
    rng = np.random.default_rng(41)
    k, lanes, D = 8, 8, 4
    with open_device("emu", rows=k, cols=lanes, engine="serial", control=control,
                     weight_words=4000, act_bytes=1024, result_rows=64) as dev:
        assert dev.info["program_words"] == (0 if control == "hardwired" else 64)
        first = dev.load(rng.integers(-1, 2, (3, 5)).astype(np.int8))   # another's words first
        for M, N, K in ((1, 13, 700), (6, 8, 8), (3, 1, 1), (2, 20, 257), (5, 9, 3)):
            w, x = rand_layer(rng, M, N, K)
            h = dev.load(w)
            T, S = -(-N // lanes), -(-K // k)
            assert h.resident and h.base > 0 and h.n_words == T * S
            mem = emulator(dev).weights[h.base * D:(h.base + T * S) * D].astype(np.int8) - 1
            assert np.array_equal(mem, memory_words(w, k, lanes, D))
            got = check(dev, w, x, h)
            # one RUN streams every tile for every token: M * T passes of S steps in a row
            model = cycles.serial_tree_simulate(dev.planner.tree, [S] * (M * T))
            assert got["runs"] == 1
            assert {n: got[n] for n in COUNTERS} == {n: getattr(model, n) for n in COUNTERS}
            dev.free(h)
        dev.free(first)


@pytest.mark.parametrize("control", ["processor", "hardwired"])
def test_layers_split_to_fit(control):
    """Weight memory for part of the layer (streamed through the rest), an activation buffer
    shorter than one token's K (K split, results added on the host) and a result buffer of 4
    rows (tokens and tiles in several runs): exact, the counters what the host predicted."""
    rng = np.random.default_rng(42)
    w, x = rand_layer(rng, 7, 11, 300)          # 3 tiles of 4 lanes, 38 steps of 8
    with open_device("emu", rows=8, cols=4, engine="serial", control=control,
                     weight_words=4 * 60) as dev:
        h = dev.load(w)
        assert h.streamed
        assert check(dev, w, x, h)["runs"] > 1
    with open_device("emu", rows=8, cols=4, engine="serial", control=control, act_bytes=96,
                     result_rows=4) as dev:
        assert dev.planner.act_steps == 12
        assert check(dev, w, x)["runs"] > 1


class Link:
    """Frames straight to an emulator, for what the host never sends."""

    def __init__(self, **config):
        self.dev = EmulatedDevice(**config)
        self.dec = FrameDecoder(RESPONSE_SYNC)

    def status(self, cmd: Command, payload: bytes = b"") -> Status:
        self.dev.feed(encode_request(cmd, 1, payload))
        (frame,) = self.dec.feed(self.dev.read())
        return Status(frame.code)


def test_write_weights_counts_memory_words():
    """WRITE_WEIGHTS addresses and carries memory words (a lane group, 7 bytes at 32 x 4):
    one word alone is written, a step's 28 bytes are four words, and neither a part of a
    word nor a word past the memory is accepted."""
    link = Link(rows=32, cols=4, engine="serial", weight_words=10)
    rng = np.random.default_rng(43)
    trits = rng.integers(-1, 2, (5, 32)).astype(np.int8)
    padded = np.zeros((5, 35), dtype=np.int8)
    padded[:, :32] = trits
    data = packing.pack_base3(padded).tobytes()
    assert len(data) == 5 * 7
    assert link.status(Command.WRITE_WEIGHTS, struct.pack("<I", 9) + data[:7]) is Status.OK
    assert np.array_equal(link.dev.weights[9].astype(np.int8) - 1, trits[0])
    assert link.status(Command.WRITE_WEIGHTS, struct.pack("<I", 2) + data[7:35]) is Status.OK
    assert np.array_equal(link.dev.weights[2:6].astype(np.int8) - 1, trits[1:])
    for address, payload in ((0, data[:6]), (0, data[:8]), (10, data[:7]), (7, data[:28])):
        assert link.status(Command.WRITE_WEIGHTS, struct.pack("<I", address) + payload) \
            is Status.BAD_ARGUMENT, (address, len(payload))


@pytest.mark.parametrize("control", ["processor", "hardwired"])
def test_weights_beyond_the_memory_are_refused(control):
    """The programs count steps' words: 10 memory words hold 2 of them (the last 2 words make
    no step's word). ``linear`` of a layer of 2 steps' words from word 0 runs; of 3, or of 2
    from word 1, is refused (BAD_ARGUMENT) though memory words 8 and 9 exist. The host
    streams a layer that does not fit."""
    link = Link(rows=8, cols=4, engine="serial", control=control, weight_words=10,
                act_bytes=64)
    # N = 4: one tile; K in steps of 8
    assert link.status(Command.RUN, linear_args(0, 0, 0, 1, 4, 2).to_bytes()) is Status.OK
    for weights, steps in ((0, 3), (1, 2)):
        assert link.status(Command.RUN, linear_args(weights, 0, 0, 1, 4, steps).to_bytes()) \
            is Status.BAD_ARGUMENT, (weights, steps)
    rng = np.random.default_rng(44)
    with open_device("emu", rows=8, cols=4, engine="serial", control=control,
                     weight_words=10) as dev:
        assert dev.free_words == 2
        w, x = rand_layer(rng, 2, 4, 24)        # 3 steps' words: streamed, 2 at a time
        h = dev.load(w)
        assert h.streamed
        check(dev, w, x, h)


def test_lanes_the_digits_cannot_group_are_refused():
    with pytest.raises(ValueError, match=r"lanes \(6\) must be a multiple of the 4 digits"):
        open_device("emu", rows=8, cols=6, engine="serial")
    with pytest.raises(ValueError, match="engine must be one of 'array', 'tree', 'serial'"):
        open_device("emu", engine="serials")


@pytest.mark.parametrize("control", ["processor", "hardwired"])
def test_serial_core_in_verilator(control):
    """The RTL core with the serial trees (as the UP5K builds it: no registered ports) behind
    the same host: exact, resident, streamed and split, its counters equal to the model."""
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    rng = np.random.default_rng(45)
    with open_device("sim", progress=lambda msg: None, rows=4, cols=4, engine="serial",
                     control=control, registered_ports=False, weight_words=4 * 24,
                     act_bytes=256, result_rows=16, max_payload=256) as dev:
        assert dev.info["engine"] == 2 and dev.planner.words_per_step == 4
        for M, N, K in ((1, 7, 50), (5, 5, 13), (2, 2, 1), (3, 9, 300)):
            w, x = rand_layer(rng, M, N, K)
            check(dev, w, x)
        # fits (2 tiles of 10 steps in the 24 steps' words): one RUN, its two sweeps one
        # stream of slots, its counters the cycle-by-cycle model's
        w, x = rand_layer(rng, 1, 7, 40)
        got = check(dev, w, x)
        model = cycles.serial_tree_simulate(dev.planner.tree, [10, 10])
        assert got["runs"] == 1
        assert {n: got[n] for n in COUNTERS} == {n: getattr(model, n) for n in COUNTERS}
