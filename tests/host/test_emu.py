"""The emulated device at the byte level: framing errors, argument checks, memories, RUN."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from firmware.commands import (RESPONSE_SYNC, Command, Counters, DeviceInfo, ReadResultsArgs,
                               Status)
from firmware.programs import linear_args
from host.emu import EmulatedDevice
from host.protocol import Frame, FrameDecoder, encode_request
from sim import cycles, numerics, packing, schedule


class Link:
    """Byte-level access to an EmulatedDevice: send frames, collect decoded responses."""

    def __init__(self, **config):
        self.dev = EmulatedDevice(**config)
        self.dec = FrameDecoder(RESPONSE_SYNC)
        self.seq = 0

    def raw(self, data: bytes) -> list[Frame]:
        self.dev.feed(data)
        return self.dec.feed(self.dev.read())

    def send(self, cmd, payload=b"", seq=None) -> Frame:
        if seq is None:
            seq = self.seq = (self.seq + 1) & 0xFF
        frames = self.raw(encode_request(cmd, seq, payload))
        assert len(frames) == 1, frames
        assert frames[0].seq == seq
        return frames[0]

    def ok(self, cmd, payload=b"") -> bytes:
        f = self.send(cmd, payload)
        assert f.code == Status.OK.value, Status(f.code)
        return f.payload

    def status(self, cmd, payload=b"") -> Status:
        return Status(self.send(cmd, payload).code)

    def counters(self) -> Counters:
        return Counters.from_bytes(self.ok(Command.READ_COUNTERS))

    def alive(self):
        """The device answers a valid request normally."""
        assert DeviceInfo.from_bytes(self.ok(Command.INFO)) == self.dev.info


def addr(a: int) -> bytes:
    return struct.pack("<I", a)


def base3_words(trits: np.ndarray, word_bytes: int) -> bytes:
    """(n, rows*cols) trits -> base3 words, each padded to 5*word_bytes trits."""
    padded = np.zeros((trits.shape[0], 5 * word_bytes), dtype=np.int8)
    padded[:, :trits.shape[1]] = trits
    return packing.pack_base3(padded).tobytes()


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------

def test_info():
    link = Link(rows=4, cols=3, weight_words=100, act_bytes=200, result_words=50,
                max_payload=64, frame_timeout=1234, clock_hz=0)
    info = DeviceInfo.from_bytes(link.ok(Command.INFO))
    assert (info.version, info.rows, info.cols, info.act_bits, info.psum_bits, info.acc_bits,
            info.formats, info.weight_words, info.act_bytes, info.result_rows,
            info.max_payload, info.frame_timeout, info.clock_hz, info.program_words,
            info.counter_bits, info.engine) == (6, 4, 3, 8, 16, 32, 1, 100, 200, 50, 64, 1234,
                                                0, 64, 64, 0)
    assert link.status(Command.INFO, b"\x00") is Status.BAD_ARGUMENT


def test_bad_crc_answered_with_received_seq():
    link = Link()
    f = bytearray(encode_request(Command.INFO, 77))
    f[-1] ^= 0xFF
    [resp] = link.raw(bytes(f))
    assert (Status(resp.code), resp.seq, resp.payload) == (Status.BAD_CRC, 77, b"")
    link.alive()


def test_unknown_command():
    link = Link()
    for code in (0x00, 0x03, 0x13, 0xFF):
        f = link.send(code, b"abc")
        assert Status(f.code) is Status.UNKNOWN_COMMAND and f.payload == b""
    link.alive()


def test_over_length_answered_after_header_then_payload_ignored():
    link = Link(max_payload=32)
    frame = encode_request(Command.WRITE_ACTS, 5, addr(0) + bytes(range(1, 40)))
    # The response comes as soon as the header is in, before any payload byte.
    [resp] = link.raw(frame[:5])
    assert (Status(resp.code), resp.seq) == (Status.BAD_LENGTH, 5)
    assert link.raw(frame[5:]) == []          # the payload is hunted through, no sync in it
    assert not link.dev.acts.any()
    link.alive()
    c = link.counters()
    assert (c.frames_bad, c.frames_ok) == (1, 2)


def test_truncated_frame_dropped_on_silence():
    link = Link()
    frame = encode_request(Command.WRITE_ACTS, 3, addr(0) + bytes([1] * 20))
    assert link.raw(frame[:10]) == []
    assert link.dev.receiving
    link.dev.idle()                           # frame_timeout of silence
    assert not link.dev.receiving
    link.alive()
    assert not link.dev.acts.any()
    c = link.counters()
    assert (c.frames_ok, c.frames_bad) == (2, 0)   # dropped frames are not counted


def test_without_silence_a_truncated_frame_swallows_the_next_one():
    # Why transports call idle(): the next request's bytes would complete the partial frame.
    link = Link()
    frame = encode_request(Command.WRITE_ACTS, 3, addr(0) + bytes([1] * 20))
    link.raw(frame[:10])
    got = link.raw(encode_request(Command.INFO, 4) * 4)
    assert [Status(f.code) for f in got][0] is Status.BAD_CRC
    link.dev.idle()
    link.alive()


def test_always_answers_next_valid_request_after_random_noise():
    rng = random.Random(7)
    link = Link(max_payload=64)
    for _ in range(100):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        if rng.random() < 0.5:   # garbage with a likely sync inside
            noise = bytes([0xA5]) + noise
        link.raw(noise)
        link.dev.idle()
        link.alive()


# ---------------------------------------------------------------------------------------------
# Arguments and memories
# ---------------------------------------------------------------------------------------------

def test_write_acts():
    link = Link(act_bytes=16)
    link.ok(Command.WRITE_ACTS, addr(3) + bytes([0xFF, 0x7F, 0x80]))
    assert list(link.dev.acts[2:7]) == [0, -1, 127, -128, 0]
    link.ok(Command.WRITE_ACTS, addr(16))               # nothing, at the end: fine
    for bad in (b"", b"\x00\x00\x00", addr(14) + bytes(3), addr(0xFFFFFFFF) + bytes(1)):
        before = link.dev.acts.copy()
        assert link.status(Command.WRITE_ACTS, bad) is Status.BAD_ARGUMENT
        assert (link.dev.acts == before).all()


def test_write_weights_decodes_base3_words():
    R, C = 2, 3
    link = Link(rows=R, cols=C, weight_words=10)
    wb = link.dev.word_bytes
    assert wb == 2
    rng = np.random.default_rng(0)
    trits = rng.integers(-1, 2, (4, R * C)).astype(np.int8)
    link.ok(Command.WRITE_WEIGHTS, addr(6) + base3_words(trits, wb))
    assert (link.dev.weights[6:10] == trits + 1).all()
    assert not link.dev.weights[:6].any()


@pytest.mark.parametrize("case", ["byte_243", "byte_255", "partial_word", "no_words",
                                  "past_end", "short"])
def test_write_weights_bad_argument_writes_nothing(case):
    R, C = 4, 4
    link = Link(rows=R, cols=C, weight_words=8)
    wb = link.dev.word_bytes          # ceil(16 / 5) = 4
    good = base3_words(np.ones((3, R * C), dtype=np.int8), wb)
    payload = {
        "byte_243": addr(0) + good[:5] + bytes([243]) + good[6:],
        "byte_255": addr(0) + good[:-1] + bytes([255]),
        "partial_word": addr(0) + good[:-1],
        "no_words": addr(0),
        "past_end": addr(6) + good,
        "short": b"\x00\x00",
    }[case]
    assert link.status(Command.WRITE_WEIGHTS, payload) is Status.BAD_ARGUMENT
    assert not link.dev.weights.any()
    link.ok(Command.WRITE_WEIGHTS, addr(5) + good)       # the same words fit at 5
    assert (link.dev.weights[5:8] == 2).all()


def test_read_results_arguments():
    link = Link(rows=2, cols=3, result_words=10)
    link.dev.results[:] = np.arange(30).reshape(10, 3)
    got = np.frombuffer(link.ok(Command.READ_RESULTS, ReadResultsArgs(8, 2).to_bytes()), "<i4")
    assert list(got) == list(range(24, 30))
    for bad in (ReadResultsArgs(9, 2).to_bytes(), ReadResultsArgs(0, 0).to_bytes(),
                b"\x00" * 5, b"\x00" * 7):
        assert link.status(Command.READ_RESULTS, bad) is Status.BAD_ARGUMENT


def test_read_results_response_limit():
    link = Link(rows=16, cols=16, result_words=2000)
    most = 0xFFFF // 64                      # 1023 rows of 64 bytes
    assert len(link.ok(Command.READ_RESULTS, ReadResultsArgs(0, most).to_bytes())) == most * 64
    assert link.status(Command.READ_RESULTS,
                       ReadResultsArgs(0, most + 1).to_bytes()) is Status.BAD_ARGUMENT


def test_counters_and_clear():
    link = Link()
    link.ok(Command.INFO)
    f = bytearray(encode_request(Command.INFO, 1))
    f[2] ^= 1                                            # the seq: a CRC error
    assert [Status(r.code) for r in link.raw(bytes(f))] == [Status.BAD_CRC]
    c = link.counters()
    assert (c.frames_ok, c.frames_bad, c.runs, c.busy) == (2, 1, 0, 0)
    link.ok(Command.CLEAR_COUNTERS)
    assert link.counters() == Counters(frames_ok=1)      # the READ_COUNTERS itself
    link.ok(Command.RESET)
    assert link.counters() == Counters(frames_ok=1)
    assert link.status(Command.RESET, b"x") is Status.BAD_ARGUMENT
    assert link.status(Command.CLEAR_COUNTERS, b"x") is Status.BAD_ARGUMENT
    assert link.status(Command.READ_COUNTERS, b"x") is Status.BAD_ARGUMENT


# ---------------------------------------------------------------------------------------------
# RUN
# ---------------------------------------------------------------------------------------------

def layout_words(cfg: schedule.ArrayConfig, w: np.ndarray) -> np.ndarray:
    """Weight words of w (N, K) per docs/protocol.md: word t*K + k holds W[t*P + j, k] at j."""
    N, K = w.shape
    P = cfg.pes
    T = -(-N // P)
    padded = np.zeros((T * P, K), dtype=np.int8)
    padded[:N] = w
    return padded.reshape(T, P, K).transpose(0, 2, 1).reshape(T * K, P)


def run_layer(link: Link, w, x, weights=0, acts=0, results=0):
    dev = link.dev
    cfg = dev.config
    N, K = w.shape
    M = x.shape[0]
    words = layout_words(cfg, w)
    link.ok(Command.WRITE_WEIGHTS, addr(weights) + base3_words(words, dev.word_bytes))
    link.ok(Command.WRITE_ACTS, addr(acts) + x.astype(np.int8).tobytes())
    link.ok(Command.RUN, linear_args(weights, acts, results, M, N, K).to_bytes())
    return schedule.plan_linear(cfg, M, N, K, mapping="outputs")


@pytest.mark.parametrize("R,C,M,N,K", [(2, 3, 1, 5, 7), (2, 3, 3, 13, 600), (4, 4, 5, 16, 255),
                                       (4, 4, 2, 35, 256), (1, 1, 3, 2, 520)])
def test_run_result_layout_and_counters(R, C, M, N, K):
    rng = np.random.default_rng(R * 1000 + N)
    link = Link(rows=R, cols=C, weight_words=2000, act_bytes=4000, result_words=400,
                max_payload=4096)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    plan = run_layer(link, w, x, weights=3, acts=5, results=7)
    # The buffer layout of docs/protocol.md, unscrambled by hand (not with scatter_tile).
    P = R * C
    T = -(-N // P)
    y = np.zeros((M, T * P), dtype=np.int64)
    for t in range(T):
        for m in range(M):
            row = 7 + (t * M + m) * R
            y[m, t * P:(t + 1) * P] = link.dev.results[row:row + R].reshape(-1)
    ref = numerics.ternary_matmul(w, x)
    assert (y[:, :N] == ref).all()
    assert not y[:, N:].any()                 # padding trits are zero, so are their sums
    assert (schedule.execute(plan, w, x) == ref).all()
    # Counters: the full-rate cycle model of the plan.
    c = link.counters()
    sim_count = cycles.simulate(plan.config, plan.lengths, plan.finals)
    assert (c.busy, c.stall_input, c.stall_drain, c.drain_tail) == \
        (sim_count.busy, sim_count.stall_input, sim_count.stall_drain, sim_count.drain_tail)
    assert c.busy + c.stall_input + c.stall_drain + c.drain_tail == cycles.plan_cycles(plan)
    assert c.runs == 1


def test_run_uses_memory_contents_like_the_sequencer():
    # Padding trits in memory are computed like any other (the RTL reads whole words).
    link = Link(rows=2, cols=2, weight_words=8, act_bytes=8, result_words=8)
    link.ok(Command.WRITE_WEIGHTS, addr(0) + base3_words(np.ones((2, 4), np.int8), 1))
    link.ok(Command.WRITE_ACTS, addr(0) + bytes([3, 4]))
    link.ok(Command.RUN, linear_args(0, 0, 0, 1, 1, 2).to_bytes())
    assert link.dev.results[:2].tolist() == [[7, 7], [7, 7]]


def test_full_rate_count_matches_simulate():
    rng = random.Random(3)
    for _ in range(30):
        cfg = schedule.ArrayConfig(rows=rng.randint(1, 6), cols=rng.randint(1, 4),
                                   psum_bits=rng.choice([9, 10, 16]))
        plan = schedule.plan_linear(cfg, rng.randint(1, 4), rng.randint(1, 30),
                                    rng.randint(1, 700), mapping="outputs")
        assert cycles.full_rate_count(plan) == cycles.simulate(cfg, plan.lengths, plan.finals)


@pytest.mark.parametrize("args", [
    linear_args(0, 0, 0, 0, 4, 4), linear_args(0, 0, 0, 1, 0, 4), linear_args(0, 0, 0, 1, 4, 0),
    linear_args(0, 0, 0, 1, 4, numerics.max_exact_k(32) + 1),
    linear_args(1, 0, 0, 1, 17, 4),     # 2 tiles * 4 words from word 1 > 8 words
    linear_args(0, 30, 0, 1, 4, 4),     # acts 30 + 4 > 32
    linear_args(0, 0, 0, 5, 4, 6),      # acts 5 * 6 = 30 fit, results 5 * 4 rows > 16
])
def test_run_bad_argument(args):
    link = Link(rows=4, cols=4, weight_words=8, act_bytes=32, result_words=16)
    link.dev.results[:] = 5
    assert link.status(Command.RUN, args.to_bytes()) is Status.BAD_ARGUMENT
    assert (link.dev.results == 5).all()
    assert link.counters().runs == 1          # the program ran, and refused
    assert link.counters().busy == 0
    assert link.status(Command.RUN, args.to_bytes()[:-1]) is Status.BAD_ARGUMENT


def test_constructor_rejects_bad_config():
    with pytest.raises(ValueError, match="max_payload"):
        EmulatedDevice(max_payload=21)
    with pytest.raises(ValueError, match="weight_words"):
        EmulatedDevice(weight_words=0)
    assert EmulatedDevice(result_rows=7).info.result_rows == 7
