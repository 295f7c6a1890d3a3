"""Board projections (sim.boards): every figure worked out by hand from the board's table."""

import pytest

from sim import boards


def test_icebreaker_one_projection_by_hand():
    b = boards.board("icebreaker")                    # 8x16 array, 24 MHz, 12 Mbaud, SPRAM
    p = boards.project_decode(b, [(128, 128)], link_bytes_per_token=600)
    # One tile of 128 outputs, one pass of K = 128: 128 steps plus the 8-row drain.
    assert p["compute_cycles"] == 128 + 8
    # 128 words of 128 trits x 2 bits = 256 bits, read 64 bits per cycle: 4 cycles a word.
    assert p["memory_cycles"] == 128 * 4
    assert p["array_seconds"] == pytest.approx(512 / 24e6)
    assert p["link_seconds"] == pytest.approx(600 * 10 / 12e6)
    assert p["tokens_per_second"] == pytest.approx(1 / (512 / 24e6 + 6000 / 12e6))
    assert p["bound"] == "link" and p["resident"]
    # Without the link, the SPRAM's width is the limit.
    assert boards.project_decode(b, [(128, 128)], 0)["bound"] == "memory"


def test_padding_decides_what_is_resident():
    b = boards.board("icebreaker")                    # 524288 trits = 4096 words of 128
    assert boards.project_decode(b, [(128, 128)] * 32, 0)["resident"]      # 4096 words
    # N = 64 still takes a whole tile of 128 outputs: 32 x 64 x 128 trits pad to 4096 words,
    # one more projection does not fit.
    assert boards.project_decode(b, [(64, 128)] * 32, 0)["resident"]
    over = boards.project_decode(b, [(64, 128)] * 33, 0)
    assert not over["resident"]
    # Streamed weights cross the link every token: 33 x 128 words of 26 base3 bytes.
    assert over["link_seconds"] == pytest.approx(33 * 128 * 26 * 10 / 12e6)


def test_ulx3s_is_compute_bound_without_a_link():
    b = boards.board("ulx3s-85f")                     # 32x64, 100 MHz, 114 x 36-bit EBR
    p = boards.project_decode(b, [(2048, 100)], 0)
    assert p["memory_cycles"] == 100 and p["compute_cycles"] == 100 + 32
    assert p["bound"] == "compute" and p["tokens_per_second"] == pytest.approx(100e6 / 132)


def test_measured_16x16_boards_and_the_bundled_model():
    # The bundled model's device calls per layer (q|k|v, o, gate|up, down; K = 128 each) on a
    # 16x16 array: 2 + 1 + 1 + 1 tiles of 256 outputs, 128 words each, 640 words a layer.
    layer = [(384, 128), (128, 128), (256, 128), (128, 128)]
    ecpix5, ulx3s = boards.board("ecpix5-85f"), boards.board("ulx3s-12f")
    assert ecpix5.basis == ulx3s.basis == "measured"
    p = boards.project_decode(ecpix5, layer * 4, 0)
    assert p["resident"] and 4 * 640 * 256 <= ecpix5.weight_trits        # 2,560 of 4,096 words
    # 5 passes of 128 steps a layer, each tile's drain of 16 hidden but the last.
    assert p["memory_cycles"] == 4 * 640 and p["bound"] == "compute"
    assert p["compute_cycles"] == 4 * (boards.cycles.full_rate_cycles(ecpix5.array, [128] * 2)
                                       + 3 * (128 + 16))
    assert not boards.project_decode(ulx3s, layer * 4, 0)["resident"]    # 512 words only


def test_unknown_board():
    with pytest.raises(ValueError, match="unknown board 'nope'; known: ulx3s-85f, icebreaker, "
                                         "ulx3s-12f, ecpix5-85f"):
        boards.board("nope")
