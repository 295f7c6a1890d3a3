"""Frames of the link protocol: codes, payload layouts, CRC, encoder and incremental decoder."""

from __future__ import annotations

import os
import random

import pytest

from firmware import commands
from firmware.commands import (FRAME_CRC, REQUEST_SYNC, RESPONSE_SYNC, Command, Counters,
                               DeviceInfo, Engine, ReadResultsArgs, RunArgs, Status)
from host.protocol import (BadFrame, Frame, FrameDecoder, FrameError, PayloadTooLarge,
                           encode_request, encode_response, frame_crc)


def ref_crc16_ccitt_false(data: bytes) -> int:
    """Bitwise CRC-16/CCITT-FALSE straight from its definition (independent reference)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


# ---------------------------------------------------------------------------------------------
# firmware.commands
# ---------------------------------------------------------------------------------------------

def test_codes_match_protocol_doc():
    assert {c.name: c.value for c in Command} == {
        "INFO": 0x01, "RESET": 0x02, "WRITE_WEIGHTS": 0x10, "WRITE_ACTS": 0x11,
        "WRITE_PROGRAM": 0x12, "RUN": 0x20, "READ_RESULTS": 0x21, "READ_COUNTERS": 0x30,
        "CLEAR_COUNTERS": 0x31}
    assert {s.name: s.value for s in Status} == {
        "OK": 0, "BAD_CRC": 1, "BAD_LENGTH": 2, "UNKNOWN_COMMAND": 3, "BAD_ARGUMENT": 4,
        "PROGRAM_FAULT": 5}
    assert (REQUEST_SYNC, RESPONSE_SYNC, commands.PROTOCOL_VERSION) == (0xA5, 0x5A, 6)
    assert {e.name: e.value for e in Engine} == {"ARRAY": 0, "TREE": 1, "SERIAL_TREE": 2}
    assert {n: e.value for n, e in commands.ENGINE_NAMES.items()} == {
        "array": 0, "tree": 1, "serial": 2}


def test_codes_are_amaranth_enums_of_one_byte():
    from amaranth.hdl import Shape
    assert Shape.cast(Command) == Shape(8, False)
    assert Shape.cast(Status) == Shape(8, False)


def test_payload_sizes():
    assert commands.INFO_SIZE == 36
    assert commands.RUN_SIZE == 26
    assert commands.FAULT_SIZE == 3
    assert commands.READ_RESULTS_SIZE == 7
    assert commands.COUNTERS_SIZE == 56
    assert commands.FRAME_OVERHEAD == 7


def test_device_info_round_trip_and_layout():
    info = DeviceInfo(rows=16, cols=8, psum_bits=16, acc_bits=32, weight_words=0x01020304,
                      act_bytes=65536, result_rows=300, max_payload=1024, frame_timeout=99,
                      clock_hz=48_000_000, program_words=300, counter_bits=32, engine=1)
    b = info.to_bytes()
    assert len(b) == 36
    assert b[:6] == bytes([6, 0, 16, 0, 8, 0])             # version, rows, cols (LE u16)
    assert b[6:10] == bytes([8, 16, 32, 1])               # act/psum/acc bits, formats
    assert b[10:14] == bytes([4, 3, 2, 1])                # weight_words LE
    assert b[32:34] == bytes([44, 1])                     # program_words LE
    assert b[34] == 32                                    # counter_bits
    assert b[35] == 1 and info.tree                       # engine: the adder trees
    assert DeviceInfo.from_bytes(b) == info
    assert info.word_bytes == 26                          # ceil(128 / 5)
    with pytest.raises(ValueError, match="rows"):
        DeviceInfo(rows=70000).to_bytes()
    with pytest.raises(ValueError, match="expected 36 bytes"):
        DeviceInfo.from_bytes(b[:-1])
    # a device of protocol 3 (35 bytes, no engine field) is named by its version; one of
    # protocol 4 or 5 (the same size; 4's trees took weight words row-major, 5 had no serial
    # trees) parses, and Device refuses it by its version (tests/models/test_bad_input.py)
    with pytest.raises(ValueError, match="speaks protocol version 3, this host speaks 6"):
        DeviceInfo.from_bytes(bytes([3, 0]) + b[2:-1])
    assert DeviceInfo.from_bytes(bytes([5, 0]) + b[2:]).version == 5


def test_device_info_of_each_engine():
    """What the host reads from INFO's engine: whether the device has trees, their digits,
    and the weight-memory word (the unit of weight_words and WRITE_WEIGHTS)."""
    array = DeviceInfo(rows=32, cols=4, engine=Engine.ARRAY.value)
    tree = DeviceInfo(rows=32, cols=4, engine=Engine.TREE.value)
    serial = DeviceInfo(rows=32, cols=4, engine=Engine.SERIAL_TREE.value)
    assert [i.tree for i in (array, tree, serial)] == [False, True, True]
    assert [i.digit_bits for i in (array, tree, serial)] == [None, None, 2]
    assert [i.engine_name for i in (array, tree, serial)] == ["array", "tree", "serial"]
    assert array.tree_config is None
    assert (tree.tree_config.k, tree.tree_config.lanes, tree.tree_config.digit_bits) == (32, 4,
                                                                                      None)
    assert serial.tree_config.digit_bits == 2
    # 128 trits a step; the serial trees take int8 activations 2 bits a cycle, so a step's
    # word is 4 memory words of one lane each: 32 trits, 7 base3 bytes
    assert [i.words_per_step for i in (array, tree, serial)] == [1, 1, 4]
    assert [i.word_trits for i in (array, tree, serial)] == [128, 128, 32]
    assert [i.word_bytes for i in (array, tree, serial)] == [26, 26, 7]
    assert DeviceInfo(engine=9).engine_name == "9"
    # lanes the 4 digits cannot group: no serial engine has them
    with pytest.raises(ValueError, match=r"lanes \(6\) must be a multiple of the 4 digits"):
        DeviceInfo(rows=8, cols=6, engine=Engine.SERIAL_TREE.value).word_trits


def test_run_args_and_counters_round_trip():
    a = RunArgs(entry=0x0102, args=(5, 6, 7, 65536, 0x12345678, 16384))
    b = a.to_bytes()
    assert b == bytes([2, 1]) + b"".join(v.to_bytes(4, "little")
                                         for v in (5, 6, 7, 65536, 0x12345678, 16384))
    assert RunArgs.from_bytes(b) == a
    assert RunArgs(3, (1, 2)).args == (1, 2, 0, 0, 0, 0)       # missing arguments are 0
    with pytest.raises(ValueError, match="r3"):
        RunArgs(0, (0, 0, 0, 1 << 32)).to_bytes()
    with pytest.raises(ValueError, match="entry"):
        RunArgs(1 << 16).to_bytes()
    with pytest.raises(ValueError, match="at most 6"):
        RunArgs(0, tuple(range(7))).to_bytes()
    r = ReadResultsArgs(row=3, rows=9)
    assert r.to_bytes() == bytes([3, 0, 0, 0, 9, 0, 4])          # int32 sums by default
    assert ReadResultsArgs.from_bytes(r.to_bytes()) == r
    assert ReadResultsArgs(3, 9, 2).to_bytes()[-1] == 2
    c = Counters(busy=1, stall_input=2, stall_drain=3, drain_tail=4, runs=5, frames_ok=6,
                 frames_bad=(1 << 64) - 1)
    assert Counters.from_bytes(c.to_bytes()) == c
    assert c.to_bytes()[:8] == (1).to_bytes(8, "little")


# ---------------------------------------------------------------------------------------------
# CRC
# ---------------------------------------------------------------------------------------------

def test_crc_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE.
    assert FRAME_CRC(data_width=8).compute(b"123456789") == 0x29B1
    assert frame_crc(b"123456789") == 0x29B1
    assert ref_crc16_ccitt_false(b"123456789") == 0x29B1


def test_crc_fast_path_equals_amaranth_model():
    rng = random.Random(1)
    model = FRAME_CRC(data_width=8)
    for n in (0, 1, 2, 5, 63, 1000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert frame_crc(data) == model.compute(data) == ref_crc16_ccitt_false(data)


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------

def test_hand_made_frames():
    # INFO request, seq 7: a5 01 07 0000, CRC over 01 07 00 00 sent little-endian.
    crc = ref_crc16_ccitt_false(bytes([0x01, 0x07, 0x00, 0x00]))
    assert encode_request(Command.INFO, 7) == bytes([0xA5, 0x01, 0x07, 0x00, 0x00,
                                                     crc & 0xFF, crc >> 8])
    # OK response, seq 0xFE, payload 3 bytes.
    body = bytes([0x00, 0xFE, 0x03, 0x00, 0x10, 0x20, 0x30])
    crc = ref_crc16_ccitt_false(body)
    assert encode_response(Status.OK, 0xFE, b"\x10\x20\x30") == \
        bytes([0x5A]) + body + bytes([crc & 0xFF, crc >> 8])


def test_encoder_rejects_bad_arguments():
    with pytest.raises(FrameError, match="seq"):
        encode_request(Command.INFO, 256)
    with pytest.raises(PayloadTooLarge):
        encode_request(Command.WRITE_ACTS, 0, bytes(11), max_payload=10)
    with pytest.raises(PayloadTooLarge):
        encode_request(Command.WRITE_ACTS, 0, bytes(65536))
    assert len(encode_request(Command.WRITE_ACTS, 0, bytes(10), max_payload=10)) == 17


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------

def _random_frames(rng, n, sync=REQUEST_SYNC, max_len=300):
    frames = []
    for _ in range(n):
        code, seq = rng.randrange(256), rng.randrange(256)
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(max_len)))
        frames.append(Frame(code, seq, payload))
    enc = b"".join(
        (encode_request if sync == REQUEST_SYNC else encode_response)(f.code, f.seq, f.payload)
        for f in frames)
    return frames, enc


@pytest.mark.parametrize("sync", [REQUEST_SYNC, RESPONSE_SYNC])
def test_round_trip_in_random_chunks(sync):
    rng = random.Random(sync)
    frames, enc = _random_frames(rng, 40, sync)
    dec = FrameDecoder(sync)
    got, i = [], 0
    while i < len(enc):
        n = rng.choice([1, 1, 2, 7, 100, 1000])
        got += dec.feed(enc[i:i + n])
        i += n
    assert got == frames
    assert dec.frames == 40 and dec.bad_crc == dec.over_length == dec.skipped == 0
    assert not dec.partial


def test_round_trip_one_byte_at_a_time():
    frames, enc = _random_frames(random.Random(5), 5, max_len=40)
    dec = FrameDecoder(REQUEST_SYNC)
    got = []
    for b in enc:
        got += dec.feed(bytes([b]))
    assert got == frames


def test_garbage_is_skipped():
    f = encode_request(Command.RUN, 3, bytes(26))
    garbage = bytes(b for b in os.urandom(500) if b != REQUEST_SYNC)
    dec = FrameDecoder(REQUEST_SYNC)
    assert dec.feed(garbage + f + garbage + f) == [Frame(0x20, 3, bytes(26))] * 2
    assert dec.skipped == 2 * len(garbage)


def test_bad_crc_reported_and_resynchronised():
    good = encode_request(Command.INFO, 1)
    bad = bytearray(encode_request(Command.WRITE_ACTS, 2, b"\x01\x02\x03\x04\x05"))
    bad[7] ^= 0x10
    dec = FrameDecoder(REQUEST_SYNC)
    events = dec.feed_events(bytes(bad) + good)
    assert events == [BadFrame("bad_crc", 0x11, 2, 5), Frame(0x01, 1, b"")]
    assert dec.bad_crc == 1 and dec.frames == 1
    assert list(dec.events) == [BadFrame("bad_crc", 0x11, 2, 5)]


def test_over_length_rejected_after_header():
    dec = FrameDecoder(REQUEST_SYNC, max_payload=16)
    long = encode_request(Command.WRITE_ACTS, 9, bytes(range(17)))
    # The header alone is enough to reject it; the payload then counts as garbage.
    assert dec.feed_events(long[:5]) == [BadFrame("over_length", 0x11, 9, 17)]
    assert not dec.partial
    good = encode_request(Command.INFO, 10)
    assert dec.feed(long[5:] + good) == [Frame(0x01, 10, b"")]
    assert dec.over_length == 1 and dec.skipped == 17 + 2


def test_false_sync_in_garbage_costs_one_bad_frame_then_resyncs():
    dec = FrameDecoder(REQUEST_SYNC, max_payload=64)
    good = encode_request(Command.INFO, 4)
    # A stray sync byte whose "header" claims a short payload swallows some bytes, fails the
    # CRC, and the decoder resumes hunting after it.
    stray = bytes([REQUEST_SYNC, 0x01, 0x00, 0x02, 0x00, 0xAA, 0xBB, 0xCC, 0xDD])
    assert dec.feed(stray + good + good) == [Frame(1, 4, b"")] * 2
    assert dec.bad_crc == 1


def test_reset_drops_partial_frame():
    dec = FrameDecoder(REQUEST_SYNC)
    f = encode_request(Command.WRITE_ACTS, 1, bytes(10))
    assert dec.feed(f[:8]) == [] and dec.partial
    dec.reset()
    assert not dec.partial and dec.dropped == 1
    assert dec.feed(f) == [Frame(0x11, 1, bytes(10))]


def test_decoder_max_payload_bounds():
    with pytest.raises(ValueError):
        FrameDecoder(REQUEST_SYNC, max_payload=70000)
