"""The host runtime on the emulator: exact linear layers, splitting, streaming, counters,
link efficiency, retries, and clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from firmware.commands import REQUEST_SYNC, Command, ReadResultsArgs, Status
from host import (Device, DeviceError, DeviceTimeout, EmulatedDevice, EmulatorTransport,
                  ProtocolError, open_device)
from host.protocol import FrameDecoder
from sim import cycles, numerics, schedule

SMALL = dict(rows=2, cols=3)
ARRAYS = [dict(rows=2, cols=3), dict(rows=4, cols=4), dict(rows=16, cols=16)]


def rand_layer(rng, M, N, K):
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    return w, x


def device_cycles(stats) -> int:
    return stats["busy"] + stats["stall_input"] + stats["stall_drain"] + stats["drain_tail"]


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a['rows']}x{a['cols']}")
def test_linear_exact_random_shapes(array):
    rng = np.random.default_rng(array["rows"] * 100 + array["cols"])
    R = array["rows"]
    shapes = [(1, 1, 1), (1, 7, 5), (1, 37, 300), (R + 3, 11, 256), (2 * R + 1, 50, 511),
              (3, 1, 1000)]
    with open_device("emu", **array) as dev:
        for M, N, K in shapes:
            w, x = rand_layer(rng, M, N, K)
            h = dev.load(w)
            assert h.resident
            y = dev.linear(h, x)
            assert y.dtype == np.int32 and y.shape == (M, N)
            assert (y == numerics.ternary_matmul(w, x)).all(), (M, N, K)
            dev.free(h)


def test_linear_one_token_vector_and_raw_weights():
    rng = np.random.default_rng(1)
    w, x = rand_layer(rng, 1, 20, 30)
    with open_device("emu", **SMALL) as dev:
        words = dev.free_words
        y = dev.linear(w, x[0])                 # raw weights: loaded for the call, then freed
        assert y.shape == (20,)
        assert (y == numerics.ternary_matmul(w, x)[0]).all()
        assert dev.free_words == words
        assert dev.linear(w, x[:0]).shape == (0, 20)


@pytest.mark.parametrize("array", [dict(rows=2, cols=3), dict(rows=16, cols=16)],
                         ids=["2x3", "16x16"])
@pytest.mark.parametrize("wsign,xval", [(1, -128), (-1, -128), (1, 127), (-1, 127)])
def test_extremes_k16384(array, wsign, xval):
    K = 16384
    N = 5
    w = np.full((N, K), wsign, dtype=np.int8)
    w[1] = -wsign
    x = np.full((2, K), xval, dtype=np.int8)
    x[1] = -128 if xval == 127 else 127
    with open_device("emu", **array) as dev:
        y = dev.linear(dev.load(w), x)
    assert (y == numerics.ternary_matmul(w, x)).all()
    assert abs(int(y[0, 0])) == K * abs(xval)


# ---------------------------------------------------------------------------------------------
# Resident, streamed, split
# ---------------------------------------------------------------------------------------------

def test_streamed_when_weight_memory_is_too_small():
    rng = np.random.default_rng(2)
    # 4x4: N=40 -> 3 tiles, K=300 -> 900 words; the memory holds 700: two tiles per upload.
    with open_device("emu", rows=4, cols=4, weight_words=700) as dev:
        w, x = rand_layer(rng, 3, 40, 300)
        h = dev.load(w)
        assert h.streamed and dev.free_words == 700
        y = dev.linear(h, x)
        assert (y == numerics.ternary_matmul(w, x)).all()
        assert dev.stats["runs"] == 2
        assert device_cycles(dev.stats) == dev.stats["model_cycles"]
        # A resident layer takes memory; the streamed one then uses what is left.
        w2, _ = rand_layer(rng, 1, 16, 500)
        h2 = dev.load(w2)
        assert h2.resident and dev.free_words == 200
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
        x2 = np.full((3, 500), 3, dtype=np.int8)
        assert (dev.linear(h2, x2) == numerics.ternary_matmul(w2, x2)).all()
        dev.free(h2)
        assert dev.free_words == 700


def test_load_many_keeps_room_to_stream():
    """Three layers of 300 words in 700: one by one, the first two would leave 100 words; with
    exactly 600 words the third would have nowhere to stream. load_many keeps one tile of the
    widest layer (K words) free while placing them, so the third streams through it."""
    rng = np.random.default_rng(4)
    layers = [rand_layer(rng, 2, 4, 300) for _ in range(3)]      # 4x4: one tile of 300 words
    with open_device("emu", rows=4, cols=4, weight_words=600) as dev:
        one_by_one = [dev.load(w) for w, _ in layers]
        assert [h.resident for h in one_by_one] == [True, True, False]
        assert dev.free_words == 0
        with pytest.raises(ProtocolError, match="no free weight memory to stream"):
            dev.linear(one_by_one[2], layers[2][1])
        for h in one_by_one:
            dev.free(h)
        handles = dev.load_many([w for w, _ in layers])
        assert [h.resident for h in handles] == [True, False, False]
        assert dev.free_words == 300
        for h, (w, x) in zip(handles, layers):
            assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
        # When everything fits nothing is held back.
        for h in handles:
            dev.free(h)
        handles = dev.load_many([w for w, _ in layers[:2]])
        assert all(h.resident for h in handles) and dev.free_words == 0
        # A bad layer in the list loads nothing.
        for h in handles:
            dev.free(h)
        with pytest.raises(ValueError, match="ternary"):
            dev.load_many([layers[0][0], np.full((4, 300), 2, np.int8)])
        assert dev.free_words == 600


def test_streamed_with_k_larger_than_weight_memory():
    rng = np.random.default_rng(3)
    with open_device("emu", **SMALL, weight_words=100) as dev:
        w, x = rand_layer(rng, 4, 10, 1000)     # K = 1000 > 100 words: K is split on the host
        h = dev.load(w)
        assert h.streamed
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
        assert device_cycles(dev.stats) == dev.stats["model_cycles"]


def test_streamed_extremes_k16384_tiny_memory():
    K = 16384
    w = np.ones((7, K), dtype=np.int8)
    w[3] = -1
    x = np.full((1, K), -128, dtype=np.int8)
    with open_device("emu", rows=4, cols=4, weight_words=4000) as dev:
        h = dev.load(w)
        assert h.streamed
        y = dev.linear(h, x)
    assert (y == numerics.ternary_matmul(w, x)).all()
    assert y[0, 0] == -K * 128 and y[0, 3] == K * 128


def test_split_m_and_n_by_small_buffers():
    rng = np.random.default_rng(4)
    # Activations hold 2 tokens of K=300; results hold 8 rows = 2 tiles of one token on 4x4.
    with open_device("emu", rows=4, cols=4, act_bytes=600, result_words=8) as dev:
        w, x = rand_layer(rng, 7, 45, 300)
        h = dev.load(w)
        assert h.resident
        y = dev.linear(h, x)
        assert (y == numerics.ternary_matmul(w, x)).all()
        assert dev.stats["runs"] > 6
        assert device_cycles(dev.stats) == dev.stats["model_cycles"]


def test_split_k_by_small_activation_buffer():
    rng = np.random.default_rng(5)
    with open_device("emu", rows=4, cols=4, act_bytes=100, result_words=64) as dev:
        w, x = rand_layer(rng, 3, 40, 333)     # one token's 333 inputs > 100 bytes
        h = dev.load(w)
        assert h.resident
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()


def test_uploads_fit_max_payload():
    rng = np.random.default_rng(6)
    sizes = []

    requests = FrameDecoder(REQUEST_SYNC)

    def spy(direction, data):
        if direction == "h2c":          # a write holds a window of requests back to back
            sizes.extend(len(f.payload) for f in requests.feed(data))
        return data

    with open_device("emu", rows=4, cols=4, max_payload=40, fault=spy) as dev:
        w, x = rand_layer(rng, 3, 20, 100)
        assert (dev.linear(dev.load(w), x) == numerics.ternary_matmul(w, x)).all()
    assert max(sizes) <= 40


# ---------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("array,M,N,K", [(dict(rows=2, cols=3), 1, 5, 7),
                                         (dict(rows=4, cols=4), 3, 40, 600),
                                         (dict(rows=16, cols=16), 1, 300, 2560),
                                         (dict(rows=16, cols=16), 20, 256, 100)])
def test_device_counters_equal_cycle_model(array, M, N, K):
    rng = np.random.default_rng(M + N + K)
    w, x = rand_layer(rng, M, N, K)
    with open_device("emu", **array) as dev:
        h = dev.load(w)
        dev.linear(h, x)
        s = dev.stats
        cfg = schedule.ArrayConfig(rows=array["rows"], cols=array["cols"])
        plan = schedule.plan_linear(cfg, M, N, K, mapping="outputs")
        assert s["runs"] == 1
        assert device_cycles(s) == cycles.plan_cycles(plan) == s["model_cycles"]
        assert s["busy"] == sum(plan.lengths) and s["stall_input"] == 0
        assert s["drain_tail"] == cfg.rows + cycles.DRAIN_REGISTER
        # Summed over calls.
        dev.linear(h, x)
        assert dev.stats["runs"] == 2
        assert device_cycles(dev.stats) == 2 * cycles.plan_cycles(plan)


# ---------------------------------------------------------------------------------------------
# Link efficiency
# ---------------------------------------------------------------------------------------------

def test_link_bits_per_weight():
    N, K = 1024, 2048           # 4 tiles x 2048 words = 8192 words: the default memory, full
    rng = np.random.default_rng(7)
    w, x = rand_layer(rng, 1, N, K)
    with open_device("emu", max_payload=1024) as dev:
        before = dev.stats["bytes_sent"]
        h = dev.load(w)
        sent = dev.stats["bytes_sent"] - before
        assert h.resident
        bits = 8 * sent / (N * K)
        print(f"\nlink: {N}x{K} layer, max_payload 1024, 16x16 array: {sent} bytes sent, "
              f"{bits:.4f} bits per weight (base3 words alone: {8 * 52 / 256:.4f})")
        assert bits <= 1.65
        assert dev.stats["retries"] == 0
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------

class Faults:
    """Damage chosen frames: ``plan`` maps (direction, frame index) -> action."""

    def __init__(self, plan):
        self.plan = plan
        self.count = {"h2c": 0, "c2h": 0}

    def __call__(self, direction, data):
        i = self.count[direction]
        self.count[direction] += 1
        action = self.plan.get((direction, i))
        if action == "flip":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x08
            return bytes(data)
        if action == "drop":
            return b""
        if action == "truncate":
            return data[:len(data) // 2]
        if action == "garbage":
            return bytes([0x5A, 0x00, 0x33, 0xFF, 0x00]) + data
        return data


@pytest.mark.parametrize("action,direction", [("flip", "h2c"), ("drop", "h2c"),
                                              ("truncate", "h2c"), ("flip", "c2h"),
                                              ("drop", "c2h"), ("truncate", "c2h"),
                                              ("garbage", "c2h")])
def test_retry_recovers(action, direction):
    rng = np.random.default_rng(8)
    w, x = rand_layer(rng, 2, 10, 40)
    faults = Faults({})
    with open_device("emu", **SMALL, fault=faults) as dev:
        h = dev.load(w)
        # Damage every frame of the next linear() once: frame i of each direction.
        start = faults.count[direction]
        faults.plan = {(direction, start + i): action for i in range(0, 200, 3)}
        y = dev.linear(h, x)
        assert (y == numerics.ternary_matmul(w, x)).all()
        assert dev.stats["retries"] > 0


def test_retry_with_random_corruption():
    rng = random.Random(9)

    def noisy(direction, data):
        data = bytearray(data)
        if rng.random() < 0.15:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.05:
            del data[rng.randrange(len(data)):]
        return bytes(data)

    nrng = np.random.default_rng(9)
    w, x = rand_layer(nrng, 3, 30, 200)
    with open_device("emu", rows=4, cols=4, max_payload=128, fault=noisy, retries=8) as dev:
        y = dev.linear(dev.load(w), x)
        assert (y == numerics.ternary_matmul(w, x)).all()
        assert dev.stats["retries"] > 0


def test_timeout_names_device_and_command():
    faults = Faults({})
    with open_device("emu", fault=faults, retries=2, name="emu-test") as dev:
        faults.plan = {("c2h", faults.count["c2h"] + i): "drop" for i in range(10)}
        with pytest.raises(DeviceTimeout, match=r"emu-test.*WRITE_WEIGHTS.*3 attempt"):
            dev.load(np.ones((3, 4), dtype=np.int8))
        assert dev.stats["timeouts"] == 3 and dev.stats["retries"] == 2


def test_device_error_not_retried():
    with open_device("emu", **SMALL) as dev:
        with pytest.raises(DeviceError, match="RUN.*BAD_ARGUMENT") as e:
            dev._request(Command.RUN, bytes(26))            # linear with M = N = K = 0
        assert e.value.status is Status.BAD_ARGUMENT and e.value.command is Command.RUN
        assert dev.stats["retries"] == 0


# ---------------------------------------------------------------------------------------------
# Input errors and specs
# ---------------------------------------------------------------------------------------------

def test_bad_inputs_raise_value_error():
    with open_device("emu", **SMALL) as dev:
        with pytest.raises(ValueError, match="not ternary"):
            dev.load(np.array([[0, 2]]))
        with pytest.raises(ValueError, match="not ternary"):
            dev.load(np.array([[0.5, 1.0]]))
        with pytest.raises(ValueError, match="2-D"):
            dev.load(np.ones(5, dtype=np.int8))
        with pytest.raises(ValueError, match="empty"):
            dev.load(np.ones((3, 0), dtype=np.int8))
        with pytest.raises(ValueError, match="k_max"):
            dev.load(np.ones((1, numerics.max_exact_k(32) + 1), dtype=np.int8))
        h = dev.load(np.ones((3, 4), dtype=np.int8))
        with pytest.raises(ValueError, match="K mismatch"):
            dev.linear(h, np.ones((2, 5), dtype=np.int8))
        with pytest.raises(ValueError, match="K mismatch"):
            dev.linear(np.ones((3, 4)), np.ones((2, 5), dtype=np.int8))
        with pytest.raises(ValueError, match="integer"):
            dev.linear(h, np.ones((2, 4)))
        with pytest.raises(ValueError, match=r"\[-128, 127\]"):
            dev.linear(h, np.full((2, 4), 128))
        with pytest.raises(ValueError, match="shape"):
            dev.linear(h, np.ones((1, 2, 4), dtype=np.int8))
        dev.free(h)
        with pytest.raises(ValueError, match="freed"):
            dev.linear(h, np.ones((2, 4), dtype=np.int8))
        with open_device("emu") as other:
            with pytest.raises(ValueError, match="another device"):
                other.linear(dev.load(np.ones((3, 4), dtype=np.int8)),
                             np.ones((2, 4), dtype=np.int8))


def test_info_and_specs():
    with open_device("emu", rows=4, cols=8, weight_words=123) as dev:
        assert dev.info["rows"] == 4 and dev.info["cols"] == 8
        assert dev.info["weight_words"] == 123 and dev.info["version"] == 6
        assert set(dev.stats) >= {"busy", "stall_input", "stall_drain", "drain_tail", "runs",
                                  "bytes_sent", "bytes_received", "frames", "retries",
                                  "timeouts"}
    with pytest.raises(ValueError, match="unknown device spec"):
        open_device("usb:3")
    with pytest.raises(ValueError, match="baud"):
        open_device("serial:/dev/ttyUSB0@fast")
    # A device object over an explicit transport.
    dev = Device(EmulatorTransport(EmulatedDevice(**SMALL)))
    assert dev.info["rows"] == 2
    dev.close()
    dev.close()


def test_unusable_device_config_is_reported():
    with pytest.raises(Exception, match="cannot hold one tile"):
        open_device("emu", rows=16, cols=16, result_words=8)
    with pytest.raises(Exception, match="cannot carry one weight word"):
        open_device("emu", rows=16, cols=16, max_payload=40)


def test_a_device_with_an_unknown_engine_is_refused():
    """INFO's engine decides the weights' layout: a value this host does not know is refused
    at open, not run as the array (its results would be silently wrong)."""
    import dataclasses

    from host.device import Device
    from host.emu import EmulatedDevice
    from host.protocol import ProtocolError
    from host.transport import EmulatorTransport
    emu = EmulatedDevice(rows=4, cols=4)
    emu._info_bytes = dataclasses.replace(emu.info, engine=7).to_bytes()
    with pytest.raises(ProtocolError, match="engine 7, which this host does not know"):
        Device(EmulatorTransport(emu))


# ---------------------------------------------------------------------------------------------
# control programs
# ---------------------------------------------------------------------------------------------

def test_user_program_runs_after_the_firmware_and_faults_are_named():
    from firmware.asm import assemble
    from firmware.programs import FIRMWARE
    prog = assemble("""
    twice:  SETR    r2              ; a layer's first tile, for two token sets at once
            LI      r6, 1
            SPLIT   r5, r6
            SWEEP   r0, r1, r3
            SUB     r0, r0, r5      ; SWEEP moved r0 on by K: back to the same tile
            SWEEP   r0, r4, r3
            HALT
    bad:    LI      r6, 0
            SWEEP   r0, r1, r6
            HALT
    """, base=len(FIRMWARE))
    rng = np.random.default_rng(4)
    with open_device("emu", **SMALL) as dev:
        w = rng.integers(-1, 2, (6, 5)).astype(np.int8)
        h = dev.load(w)
        x = rng.integers(-128, 128, (4, 5)).astype(np.int8)
        dev._write_acts(0, x.tobytes())
        dev.load_program(prog.words, at=prog.base)
        dev.run_program(prog.labels["twice"], h.base, 0, 0, 2, 10, 5)
        emu = dev.transport.device
        got = emu.results[:4 * 2].reshape(4, 6)          # 4 tokens x (2 rows of 3)
        assert (got == numerics.ternary_matmul(w, x)).all()
        with pytest.raises(DeviceError, match=r"PROGRAM_FAULT \(control program fault at pc "
                                              rf"{prog.labels['bad'] + 1}: NO_SPLIT\)"):
            dev.run_program(prog.labels["bad"])
        with pytest.raises(ValueError, match="do not fit"):
            dev.load_program(prog.words, at=60)
        # linear still works: the firmware at 0 is untouched.
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()


def test_counters_are_differences_of_readings():
    """stats add what the device counted since the last reading (no CLEAR per call): the sum
    stays the cycle model's across calls, a user's CLEAR_COUNTERS and a RESET."""
    rng = np.random.default_rng(7)
    with open_device("emu", rows=4, cols=4) as dev:
        w, x = rand_layer(rng, 3, 16, 50)         # one tile: its results in one READ_RESULTS
        h = dev.load(w)
        frames = dev.stats["frames"]
        dev.linear(h, x)
        # WRITE_ACTS, RUN, READ_RESULTS and READ_COUNTERS: no CLEAR_COUNTERS round trip.
        assert dev.stats["frames"] - frames == 4
        for clear in (None, Command.CLEAR_COUNTERS, Command.RESET, None):
            if clear is not None:
                dev._request(clear)
            assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
        s = dev.stats
        assert device_cycles(s) == s["model_cycles"] and s["runs"] == 5


def test_narrow_counters_wrap_and_stats_stay_exact():
    """A device with 32-bit counters (INFO counter_bits) wraps them; the host's differences
    are taken modulo 2**32, so the stats still equal the cycle model across the wrap."""
    rng = np.random.default_rng(9)
    with open_device("emu", rows=4, cols=4, counter_bits=32) as dev:
        assert dev.info["counter_bits"] == 32
        w, x = rand_layer(rng, 3, 16, 50)
        h = dev.load(w)
        dev.linear(h, x)
        emu = dev.transport.device
        for name in ("busy", "drain_tail", "frames_ok"):      # a few counts short of the wrap
            emu.counters[name] = 2**32 - 3
        dev._counters_seen = dev.read_counters()
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
        after = dev.read_counters()
        assert max(after.busy, after.drain_tail, after.frames_ok) < 1000    # all three wrapped
        s = dev.stats
        assert device_cycles(s) == s["model_cycles"] and s["runs"] == 2
    with pytest.raises(ValueError, match="counter_bits"):
        open_device("emu", counter_bits=16)


@pytest.mark.parametrize("K, width", [(1, 2), (255, 2), (256, 4), (700, 4)])
def test_results_come_back_as_int16_when_k_allows(K, width):
    """A call over at most 255 int8 steps has sums that fit int16: the host asks for 2 bytes a
    sum. The extremes (all -128 against all +1 and all -1) stay exact either way."""
    with open_device("emu", rows=4, cols=4) as dev:
        w = np.ones((5, K), np.int8)
        w[1] = -1
        x = np.full((2, K), -128, np.int8)
        widths = []
        exchange = dev._exchange

        def spy(reqs):
            widths.extend(ReadResultsArgs.from_bytes(r.payload).width for r in reqs
                          if r.cmd is Command.READ_RESULTS)
            return exchange(reqs)
        dev._exchange = spy
        y = dev.linear(w, x)
        assert y[0, 0] == -128 * K and y[0, 1] == 128 * K
        assert np.array_equal(y, numerics.ternary_matmul(w, x))
        assert set(widths) == {width}


def test_reads_only_result_rows_that_hold_outputs():
    """N = 20 on a 4x4 array: the second tile uses 1 of its 4 rows. Two tokens: results are
    tile 0 token 0 (rows 0-3), token 1 (4-7), tile 1 token 0 (row 8 used), token 1 (row 12
    used): read as rows 0-8 and row 12, 10 rows instead of 16."""
    rng = np.random.default_rng(8)
    with open_device("emu", rows=4, cols=4) as dev:
        w, x = rand_layer(rng, 2, 20, 10)
        h = dev.load(w)
        reads = []
        exchange = dev._exchange

        def spy(reqs):
            for r in reqs:
                if r.cmd is Command.READ_RESULTS:
                    a = ReadResultsArgs.from_bytes(r.payload)
                    reads.append((a.row, a.rows))
            return exchange(reqs)

        dev._exchange = spy
        assert (dev.linear(h, x) == numerics.ternary_matmul(w, x)).all()
    assert reads == [(0, 9), (12, 1)]
