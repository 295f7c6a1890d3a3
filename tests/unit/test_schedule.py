"""Tests of sim.schedule: K chunking, tiling of outputs onto the array, and the golden dataflow."""

from __future__ import annotations

import numpy as np
import pytest

from sim import numerics, schedule
from sim.schedule import ArrayConfig

SEED = 7321


# ---------------------------------------------------------------------------------------------
# k_chunks
# ---------------------------------------------------------------------------------------------

def check_chunks(K, kmax, chunks):
    assert chunks[0][0] == 0 and chunks[-1][1] == K
    for (a0, a1), (b0, _) in zip(chunks, chunks[1:]):
        assert a1 == b0                                   # contiguous, no gaps or overlaps
    lengths = [k1 - k0 for k0, k1 in chunks]
    assert all(1 <= L <= kmax for L in lengths)
    assert max(lengths) - min(lengths) <= 1
    assert len(chunks) == -(-K // kmax)                   # fewest possible
    assert sum(lengths) == K


@pytest.mark.parametrize("kmax", [1, 2, 3, 7, 255, 16383])
def test_k_chunks_exhaustive_small_k(kmax):
    for K in list(range(1, 200)) + [kmax, kmax + 1, 2 * kmax, 2 * kmax + 1, 16384]:
        check_chunks(K, kmax, schedule.k_chunks(K, kmax))


def test_k_chunks_examples():
    # 10 over 3: 4 chunks, divmod(10, 4) = (2, 2): the first two get 3 steps, the rest 2.
    assert schedule.k_chunks(10, 3) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert schedule.k_chunks(6, 3) == [(0, 3), (3, 6)]
    assert schedule.k_chunks(3, 3) == [(0, 3)]
    assert schedule.k_chunks(1, 255) == [(0, 1)]
    # 2560 over 255: ceil = 11 chunks of 232 or 233
    ch = schedule.k_chunks(2560, 255)
    assert len(ch) == 11 and {k1 - k0 for k0, k1 in ch} == {232, 233}
    # divmod(2560, 11) = (232, 8): eight long chunks first
    assert [k1 - k0 for k0, k1 in ch] == [233] * 8 + [232] * 3


def test_k_chunks_rejects_nonpositive_k():
    for K in (0, -1):
        with pytest.raises(ValueError, match="K must be positive"):
            schedule.k_chunks(K, 3)


# ---------------------------------------------------------------------------------------------
# plan_linear structure
# ---------------------------------------------------------------------------------------------

def group_tiles(plan):
    """Split the passes into tiles: runs of passes starting at a first_chunk."""
    tiles = []
    for p in plan.passes:
        if p.first_chunk:
            tiles.append([])
        assert tiles, "the first pass must start a tile"
        tiles[-1].append(p)
    return tiles


def check_plan(plan: schedule.Plan, cfg: ArrayConfig, M, N, K, mapping):
    R, C = cfg.rows, cfg.cols
    expected_chunks = schedule.k_chunks(K, cfg.pass_k_max)
    assert plan.mapping == mapping and (plan.M, plan.N, plan.K) == (M, N, K)
    assert plan.chunks == expected_chunks
    tiles = group_tiles(plan)
    assert len(tiles) == schedule.tile_count(cfg, M, N, mapping)
    assert len(plan.passes) == len(tiles) * len(expected_chunks)
    seen = np.zeros((M, N), dtype=int)
    for tile in tiles:
        t0 = tile[0]
        # every chunk exactly once, in order, first_chunk on the first, last_chunk on the last
        assert [(p.k0, p.k1) for p in tile] == expected_chunks
        assert [p.first_chunk for p in tile] == [True] + [False] * (len(tile) - 1)
        assert [p.last_chunk for p in tile] == [False] * (len(tile) - 1) + [True]
        for p in tile:
            assert p.tokens.shape == (R,) and p.outputs.shape == (R, C)
            assert np.array_equal(p.tokens, t0.tokens) and np.array_equal(p.outputs, t0.outputs)
            assert p.length == p.k1 - p.k0
        tokens, outputs = t0.tokens, t0.outputs
        assert ((tokens >= -1) & (tokens < M)).all() and ((outputs >= -1) & (outputs < N)).all()
        # a used PE sits in a used row; an unused row has no used PE
        used = outputs >= 0
        assert (tokens[used.any(axis=1)] >= 0).all()
        assert (~used[tokens < 0]).all()
        if mapping == "outputs":
            assert len(set(tokens[tokens >= 0].tolist())) == 1     # one token per tile
        else:
            live = tokens[tokens >= 0]
            assert len(set(live.tolist())) == len(live)            # one token per row
            for r in range(R):                                     # the same columns per row
                if tokens[r] >= 0:
                    assert np.array_equal(outputs[r], outputs[0])
        pairs = [(int(tokens[r]), int(outputs[r, c]))
                 for r in range(R) for c in range(C) if outputs[r, c] >= 0]
        assert len(set(pairs)) == len(pairs), "a tile computes an output twice"
        for m, n in pairs:
            seen[m, n] += 1
    assert (seen == 1).all(), f"outputs not covered exactly once: {np.argwhere(seen != 1)}"
    assert plan.lengths == [p.length for p in plan.passes]
    assert plan.finals == [p.last_chunk for p in plan.passes]
    assert plan.useful_macs == M * N * K


def random_case(rng):
    R, C = (int(v) for v in rng.integers(1, 6, size=2))
    psum_bits = int(rng.choice([10, 11, 12, 16]))
    cfg = ArrayConfig(R, C, psum_bits=psum_bits)
    M = int(rng.choice([1, int(rng.integers(1, 3 * R + 3))]))
    N = int(rng.integers(1, 3 * R * C + 4))
    K = int(rng.integers(1, 4 * cfg.pass_k_max + 3)) if psum_bits < 16 else int(rng.integers(1, 600))
    return cfg, M, N, K


FIXED_CASES = [
    (ArrayConfig(1, 1, psum_bits=10), 1, 1, 1),
    (ArrayConfig(1, 1, psum_bits=10), 3, 5, 7),
    (ArrayConfig(2, 3, psum_bits=10), 1, 7, 10),
    (ArrayConfig(3, 2, psum_bits=10), 7, 5, 11),
    (ArrayConfig(4, 4), 9, 18, 300),
    (ArrayConfig(16, 16), 1, 2560, 2560),
    (ArrayConfig(16, 8), 40, 100, 17),
]


@pytest.mark.parametrize("mapping", schedule.MAPPINGS)
def test_plan_linear_fixed_shapes(mapping):
    for cfg, M, N, K in FIXED_CASES:
        check_plan(schedule.plan_linear(cfg, M, N, K, mapping), cfg, M, N, K, mapping)


@pytest.mark.parametrize("mapping", schedule.MAPPINGS)
def test_plan_linear_random_shapes(mapping):
    rng = np.random.default_rng([SEED, len(mapping)])
    for i in range(60):
        cfg, M, N, K = random_case(rng)
        plan = schedule.plan_linear(cfg, M, N, K, mapping)
        check_plan(plan, cfg, M, N, K, mapping)


def test_plan_linear_default_mapping_is_choose_mapping():
    rng = np.random.default_rng(SEED)
    for _ in range(30):
        cfg, M, N, K = random_case(rng)
        plan = schedule.plan_linear(cfg, M, N, K)
        assert plan.mapping == schedule.choose_mapping(cfg, M, N)
        check_plan(plan, cfg, M, N, K, plan.mapping)


# ---------------------------------------------------------------------------------------------
# choose_mapping
# ---------------------------------------------------------------------------------------------

def test_choose_mapping():
    cfg = ArrayConfig(4, 4)
    # M = 1: outputs needs ceil(N/16) tiles, tokens ceil(N/4): never more, outputs wins
    for N in (1, 4, 5, 16, 17, 100, 2560):
        assert schedule.choose_mapping(cfg, 1, N) == "outputs"
    # M=16, N=4: outputs 16 * ceil(4/16) = 16 tiles; tokens ceil(16/4) * ceil(4/4) = 4 tiles
    assert schedule.tile_count(cfg, 16, 4, "outputs") == 16
    assert schedule.tile_count(cfg, 16, 4, "tokens") == 4
    assert schedule.choose_mapping(cfg, 16, 4) == "tokens"
    # M=8, N=16: outputs 8 * 1 = 8; tokens 2 * 4 = 8: a tie goes to outputs
    assert schedule.tile_count(cfg, 8, 16, "outputs") == schedule.tile_count(cfg, 8, 16, "tokens")
    assert schedule.choose_mapping(cfg, 8, 16) == "outputs"
    # M=8, N=20: outputs 8 * 2 = 16; tokens 2 * 5 = 10
    assert schedule.choose_mapping(cfg, 8, 20) == "tokens"
    # a single-row array: both mappings tile the same way; tie -> outputs
    assert schedule.choose_mapping(ArrayConfig(1, 8), 5, 20) == "outputs"


def test_choose_mapping_picks_the_fewest_tiles():
    rng = np.random.default_rng(SEED + 1)
    for _ in range(200):
        cfg, M, N, _ = random_case(rng)
        counts = {mp: schedule.tile_count(cfg, M, N, mp) for mp in schedule.MAPPINGS}
        choice = schedule.choose_mapping(cfg, M, N)
        assert counts[choice] == min(counts.values())
        if counts["outputs"] == counts["tokens"]:
            assert choice == "outputs"


# ---------------------------------------------------------------------------------------------
# execute: the dataflow equals the numerics contract
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping", schedule.MAPPINGS)
def test_execute_matches_ternary_matmul(mapping):
    rng = np.random.default_rng([SEED, 99, len(mapping)])
    for i in range(40):
        cfg, M, N, K = random_case(rng)
        w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
        x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
        plan = schedule.plan_linear(cfg, M, N, K, mapping)
        y = schedule.execute(plan, w, x)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, numerics.ternary_matmul(w, x),
                                      err_msg=f"case {i} {cfg} M={M} N={N} K={K}")


@pytest.mark.parametrize("mapping", schedule.MAPPINGS)
def test_execute_extremes_k16384(mapping):
    # psum_bits=16: 255 steps per pass, so K=16384 runs as 65 chunks per tile.
    cfg = ArrayConfig(2, 3, psum_bits=16)
    M, N, K = 3, 4, 16384
    plan = schedule.plan_linear(cfg, M, N, K, mapping)
    assert len(plan.chunks) == 65
    ones = np.ones((N, K), np.int8)
    neg = np.full((M, K), -128, np.int8)
    assert (schedule.execute(plan, -ones, neg) == 16384 * 128).all()     # 2097152
    assert (schedule.execute(plan, ones, neg) == -16384 * 128).all()
    rng = np.random.default_rng(SEED)
    w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    x = rng.choice(np.array([-128, 127], np.int8), size=(M, K))
    np.testing.assert_array_equal(schedule.execute(plan, w, x), numerics.ternary_matmul(w, x))


def test_execute_pass_sums_stay_within_psum_at_the_bound():
    # K = pass_k_max exactly, one chunk, extreme operands: the psum assertion must not trip.
    cfg = ArrayConfig(2, 2, psum_bits=10)            # pass_k_max = 3
    plan = schedule.plan_linear(cfg, 2, 2, 3)
    assert plan.chunks == [(0, 3)]
    y = schedule.execute(plan, -np.ones((2, 3), np.int8), np.full((2, 3), -128, np.int8))
    assert (y == 384).all()


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_plan_rejects_k_above_k_max():
    cfg = ArrayConfig(2, 2)
    assert cfg.k_max == 16777215
    schedule.plan_linear(cfg, 1, 1, 1)
    with pytest.raises(ValueError, match="K=16777216 exceeds 16777215"):
        schedule.plan_linear(cfg, 1, 1, 16777216)
    small = ArrayConfig(2, 2, psum_bits=12, acc_bits=16)      # k_max = 32767 // 128 = 255
    assert small.k_max == 255
    schedule.plan_linear(small, 1, 1, 255)
    with pytest.raises(ValueError, match="K=256 exceeds 255"):
        schedule.plan_linear(small, 1, 1, 256)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", None])
@pytest.mark.parametrize("which", ["M", "N", "K"])
def test_plan_rejects_bad_dimensions(which, bad):
    dims = {"M": 2, "N": 3, "K": 4}
    dims[which] = bad
    with pytest.raises(ValueError, match=f"{which} must be a positive integer"):
        schedule.plan_linear(ArrayConfig(2, 2), dims["M"], dims["N"], dims["K"])


def test_plan_accepts_numpy_integers():
    plan = schedule.plan_linear(ArrayConfig(2, 2), np.int64(3), np.int32(5), np.int16(7))
    assert len(plan.passes) > 0


def test_plan_rejects_unknown_mapping():
    with pytest.raises(ValueError, match="unknown mapping 'rows'"):
        schedule.plan_linear(ArrayConfig(2, 2), 2, 3, 4, "rows")
    with pytest.raises(ValueError, match="unknown mapping"):
        schedule.tile_count(ArrayConfig(2, 2), 2, 3, "Outputs")


def test_execute_rejects_wrong_operand_shapes():
    cfg = ArrayConfig(2, 2)
    plan = schedule.plan_linear(cfg, 2, 3, 4)
    w = np.zeros((3, 4), np.int8)
    x = np.zeros((2, 4), np.int8)
    schedule.execute(plan, w, x)
    for bw, bx in [(np.zeros((4, 3), np.int8), x), (w, np.zeros((3, 4), np.int8)),
                   (np.zeros((3, 5), np.int8), np.zeros((2, 5), np.int8)),
                   (np.zeros((3, 4, 1), np.int8), x)]:
        with pytest.raises(ValueError, match="do not match the plan"):
            schedule.execute(plan, bw, bx)
    with pytest.raises(ValueError, match="not ternary"):
        schedule.execute(plan, np.full((3, 4), 2, np.int8), x)
    with pytest.raises(ValueError, match="integer array"):
        schedule.execute(plan, w, x.astype(np.float32))


def test_array_config_validation():
    for bad in (0, -1, 1.0):
        with pytest.raises(ValueError, match="rows"):
            ArrayConfig(bad, 2)
        with pytest.raises(ValueError, match="cols"):
            ArrayConfig(2, bad)
    with pytest.raises(ValueError, match="psum_bits"):
        ArrayConfig(2, 2, psum_bits=8)
    with pytest.raises(ValueError, match="acc_bits"):
        ArrayConfig(2, 2, psum_bits=16, acc_bits=12)
    cfg = ArrayConfig(3, 5, psum_bits=10)
    assert cfg.pes == 15 and cfg.pass_k_max == 3 and cfg.k_max == 16777215


# ---------------------------------------------------------------------------------------------
# The adder-tree engine's mapping (plan_tree)
# ---------------------------------------------------------------------------------------------

def test_tree_plan_covers_every_output_once_in_tile_then_token_order():
    rng = np.random.default_rng([SEED, 7])
    for _ in range(60):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 6)), lanes=int(rng.integers(1, 9)))
        M, N, K = (int(v) for v in rng.integers(1, [5, 30, 200]))
        plan = schedule.plan_tree(cfg, M, N, K)
        seen = np.zeros((M, N), int)
        for p in plan.passes:
            assert p.length == -(-K // cfg.k) and len(p.outputs) == cfg.lanes
            seen[p.token, p.outputs[p.outputs >= 0]] += 1
        assert (seen == 1).all()
        assert len(plan.passes) == M * -(-N // cfg.lanes)
        # a tile's tokens run back to back, so its weights are read once per token in a row
        tiles = [int(p.outputs[0]) for p in plan.passes]
        assert tiles == sorted(tiles) and [p.token for p in plan.passes[:M]] == list(range(M))


def test_tree_pass_operands_pad_k_and_lanes_with_zeros():
    cfg = schedule.TreeConfig(k=4, lanes=3)
    M, N, K = 2, 4, 6                       # K pads to 8; the second tile uses one lane of 3
    w = np.arange(1, N * K + 1).reshape(N, K) % 3 - 1
    x = np.arange(1, M * K + 1, dtype=np.int8).reshape(M, K)
    plan = schedule.plan_tree(cfg, M, N, K)
    p = plan.passes[M + 1]                  # tile of output 3, token 1
    weights, acts = schedule.tree_pass_operands(plan, p, w.astype(np.int8), x)
    assert weights.shape == (2, 3, 4) and acts.shape == (2, 4)     # (steps, lanes, k)
    assert acts.ravel().tolist() == x[1].tolist() + [0, 0]
    assert weights[:, 0, :].ravel().tolist() == w[3].tolist() + [0, 0]
    assert not weights[:, 1:, :].any()
    # lane-major: a beat's trit lane*k + i is W[outputs[lane], s*k + i]
    first = plan.passes[0]                  # outputs 0, 1, 2 of token 0
    beats, _ = schedule.tree_pass_operands(plan, first, w.astype(np.int8), x)
    assert beats[1].ravel().tolist() == [w[n, 4 + i] if 4 + i < K else 0
                                         for n in range(3) for i in range(4)]


def test_execute_tree_matches_ternary_matmul():
    rng = np.random.default_rng([SEED, 8])
    for i in range(40):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 7)), lanes=int(rng.integers(1, 9)))
        M, N, K = (int(v) for v in rng.integers(1, [5, 30, 300]))
        w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
        x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
        y = schedule.execute_tree(schedule.plan_tree(cfg, M, N, K), w, x)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, numerics.ternary_matmul(w, x), err_msg=f"case {i}")


def test_execute_tree_extremes_and_k_max():
    cfg = schedule.TreeConfig(k=32, lanes=2)
    plan = schedule.plan_tree(cfg, 1, 2, 16384)
    neg = np.full((1, 16384), -128, np.int8)
    assert (schedule.execute_tree(plan, -np.ones((2, 16384), np.int8), neg) == 2097152).all()
    assert cfg.k_max == 16777215
    with pytest.raises(ValueError, match="K=16777216 exceeds 16777215"):
        schedule.plan_tree(cfg, 1, 1, 16777216)
    with pytest.raises(ValueError, match="do not match the plan"):
        schedule.execute_tree(plan, np.zeros((2, 5), np.int8), neg)


def test_tree_config_validation():
    for k in (0, 1, 3, 6, 2.0):
        with pytest.raises(ValueError, match="k must be"):
            schedule.TreeConfig(k=k, lanes=2)
    with pytest.raises(ValueError, match="lanes"):
        schedule.TreeConfig(k=2, lanes=0)
    with pytest.raises(ValueError, match="acc_bits"):
        schedule.TreeConfig(k=64, lanes=1, acc_bits=14)     # the tree's sum needs 15 bits
    cfg = schedule.TreeConfig(k=32, lanes=64)
    assert (cfg.pes, cfg.levels, cfg.latency, cfg.steps(2560), cfg.steps(2561)) == (
        2048, 5, 6, 80, 81)
    assert cfg.act_words(4096) == 128
    with pytest.raises(ValueError, match="multiple of the trees' k"):
        cfg.act_words(4001)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="M must be"):
            schedule.plan_tree(cfg, bad, 1, 1)


# ---------------------------------------------------------------------------------------------
# The digit-serial tree engine: digits and beats
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("digit_bits", [1, 2, 4])
def test_activation_digits_rebuild_every_int8(digit_bits):
    x = np.arange(-128, 128, dtype=np.int8)
    d = schedule.activation_digits(x, digit_bits)
    D = 8 // digit_bits
    assert d.shape == (256, D) and d.min() >= 0 and d.max() < 1 << digit_bits
    top = np.where(d[:, 0] >> (digit_bits - 1), d[:, 0] - (1 << digit_bits), d[:, 0])
    value = top * (1 << (digit_bits * (D - 1)))
    for c in range(1, D):
        value = value + d[:, c] * (1 << (digit_bits * (D - 1 - c)))
    assert (value == x).all()
    with pytest.raises(ValueError, match="must divide"):
        schedule.activation_digits(x, 3)


def test_serial_tree_beats_carry_step_j_trits_and_step_j_minus_1_digits():
    rng = np.random.default_rng(SEED + 40)
    cfg = schedule.TreeConfig(k=4, lanes=8, digit_bits=2)    # 4 beats a slot, 2 lanes a beat
    S = 3
    w = rng.integers(-1, 2, (S, 8, 4)).astype(np.int8)
    x = rng.integers(-128, 128, (S, 4)).astype(np.int8)
    beats = schedule.serial_tree_beats(cfg, w, x, [False, True, True])
    assert len(beats) == 4 * (S + 1)
    digits = schedule.activation_digits(x, 2)
    for j in range(S + 1):
        for c in range(4):
            b = beats[4 * j + c]
            assert b.step == (j > 0) and b.last == (j > 0 and j - 1 >= 1)
            if j < S:
                assert (b.weights == w[j, 2 * c:2 * c + 2]).all()
            if j:
                assert (b.digits == digits[j - 1, :, c]).all()
            else:
                assert not b.digits.any()
    with pytest.raises(ValueError, match="do not make"):
        schedule.serial_tree_beats(cfg, w, x[:2], [False] * 3)
    with pytest.raises(ValueError, match="digit_bits"):
        schedule.serial_tree_beats(schedule.TreeConfig(k=4, lanes=8), w, x, [True] * 3)


def test_tree_config_digit_bits():
    cfg = schedule.TreeConfig(k=32, lanes=4, digit_bits=2)
    assert (cfg.cycles_per_step, cfg.pes) == (4, 128)
    assert schedule.TreeConfig(k=32, lanes=4).cycles_per_step == 1
    for bad in (0, 3, 8, 16):
        with pytest.raises(ValueError, match="digit_bits"):
            schedule.TreeConfig(k=4, lanes=4, digit_bits=bad)
