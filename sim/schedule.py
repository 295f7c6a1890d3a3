"""How a ternary linear layer maps onto the array: the golden definition of the dataflow.

The array is output-stationary: each PE owns one output ``y[m, n]`` for the length of a *pass*,
receives a new weight every cycle (streamed from weight memory) and the activation of its row
(broadcast along the row). A pass covers one chunk of K; its length is bounded by the PE's
partial-sum width so that no partial sum can overflow (``ArrayConfig.pass_k_max``). The
accumulator below the array adds the chunks of K in ``acc_bits`` (int32) and emits each tile of
results once, after its last chunk.

Two mappings of PEs to outputs, chosen per layer by the number of tiles they need:

* ``outputs`` (decode, M = 1): every PE a different output of the same token; all rows see the
  same activation. A tile is ``rows * cols`` outputs of one token.
* ``tokens`` (prefill, M >= rows): row r holds token ``m0 + r``, column c output ``n0 + c``.
  A tile is ``rows`` tokens by ``cols`` outputs.

Either way every PE does useful work on every cycle of a pass, so utilization on a long stream
only loses the partially filled edge tiles and the drain of the final pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import numerics

MAPPINGS = ("outputs", "tokens")


def _is_count(v) -> bool:
    """A positive integer (bools are not counts)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def _check_counts(**values) -> None:
    """Refuse any of ``values`` that is not a count, naming it."""
    for name, v in values.items():
        if not _is_count(v):
            raise ValueError(f"{name} must be a positive integer, not {v!r}")


@dataclass(frozen=True)
class ArrayConfig:
    """Parameters of the array as built: shape and widths."""
    rows: int
    cols: int
    act_bits: int = numerics.ACT_BITS
    psum_bits: int = 16
    acc_bits: int = numerics.RESULT_BITS

    def __post_init__(self):
        _check_counts(rows=self.rows, cols=self.cols)
        if self.psum_bits <= self.act_bits:
            raise ValueError(f"psum_bits ({self.psum_bits}) must exceed act_bits ({self.act_bits})")
        if self.acc_bits < self.psum_bits:
            raise ValueError(f"acc_bits ({self.acc_bits}) must be at least psum_bits "
                             f"({self.psum_bits})")

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def pass_k_max(self) -> int:
        """Longest pass (steps of K) whose partial sums cannot overflow ``psum_bits``."""
        return numerics.max_exact_k(self.psum_bits, self.act_bits)

    @property
    def k_max(self) -> int:
        """Largest K whose results cannot overflow the ``acc_bits`` accumulator."""
        return numerics.max_exact_k(self.acc_bits, self.act_bits)


@dataclass(frozen=True, eq=False)
class Pass:
    """One pass through the array: a chunk ``[k0, k1)`` of K for one tile of outputs."""
    tokens: np.ndarray       # (rows,) token of each row, -1 where the row is unused
    outputs: np.ndarray      # (rows, cols) output index n of each PE, -1 where unused
    k0: int
    k1: int
    first_chunk: bool        # the accumulator starts from this pass's sums
    last_chunk: bool         # the accumulator emits the tile after this pass

    @property
    def length(self) -> int:
        return self.k1 - self.k0


@dataclass(eq=False)
class Plan:
    """Every pass of one ``(M, K) x (N, K)^T`` product, in the order the array runs them."""
    config: ArrayConfig
    M: int
    N: int
    K: int
    mapping: str
    chunks: list[tuple[int, int]]
    passes: list[Pass] = field(repr=False)

    @property
    def useful_macs(self) -> int:
        return self.M * self.N * self.K

    @property
    def lengths(self) -> list[int]:
        return [p.length for p in self.passes]

    @property
    def finals(self) -> list[bool]:
        return [p.last_chunk for p in self.passes]


def k_chunks(K: int, pass_k_max: int) -> list[tuple[int, int]]:
    """Split K into the fewest chunks of at most ``pass_k_max``, with lengths differing by at most 1
    (balanced chunks keep every pass long enough to hide the drain of the one before).

    With ``n`` chunks, ``q, r = divmod(K, n)``: the first ``r`` chunks have ``q + 1`` steps, the
    rest ``q`` (:func:`split_k`). The device's ``linear`` program computes the same ``n``."""
    if K < 1:
        raise ValueError(f"K must be positive, not {K}")
    if pass_k_max < 1:
        raise ValueError(f"pass_k_max must be positive, not {pass_k_max}")
    return split_k(K, -(-K // pass_k_max))


def split_k(K: int, n: int) -> list[tuple[int, int]]:
    """K steps in ``n`` balanced chunks: the first ``K mod n`` one step longer (the split the
    device's ``SPLIT`` instruction sets up)."""
    if not 1 <= n <= K:
        raise ValueError(f"cannot split K={K} into {n} chunks")
    q, r = divmod(K, n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + q + (1 if i < r else 0))
    return list(zip(bounds[:-1], bounds[1:]))


def tile_count(config: ArrayConfig, M: int, N: int, mapping: str) -> int:
    """Number of output tiles a mapping needs (each tile costs one pass per chunk of K)."""
    R, C = config.rows, config.cols
    if mapping == "outputs":
        return M * -(-N // (R * C))
    if mapping == "tokens":
        return -(-M // R) * -(-N // C)
    raise ValueError(f"unknown mapping {mapping!r}; known: {', '.join(MAPPINGS)}")


def choose_mapping(config: ArrayConfig, M: int, N: int) -> str:
    """The mapping with fewer tiles; ``outputs`` on a tie (it streams activations per token)."""
    return min(MAPPINGS, key=lambda mp: (tile_count(config, M, N, mp), MAPPINGS.index(mp)))


def _tiles(config: ArrayConfig, M: int, N: int, mapping: str):
    """Yield ``(tokens, outputs)`` index arrays for every tile, in run order."""
    R, C = config.rows, config.cols
    if mapping == "outputs":
        per_tile = R * C
        for n0 in range(0, N, per_tile):
            n = np.arange(n0, n0 + per_tile).reshape(R, C)
            n[n >= N] = -1
            for m in range(M):
                tokens = np.where((n >= 0).any(axis=1), m, -1)
                yield tokens, n
    else:
        for n0 in range(0, N, C):
            n_row = np.arange(n0, n0 + C)
            n_row[n_row >= N] = -1
            for m0 in range(0, M, R):
                tokens = np.arange(m0, m0 + R)
                tokens[tokens >= M] = -1
                outputs = np.where(tokens[:, None] >= 0, n_row[None, :], -1)
                yield tokens, outputs


def plan_linear(config: ArrayConfig, M: int, N: int, K: int, mapping: str | None = None,
                n_chunks: int | None = None) -> Plan:
    """Plan the passes of ``y (M, N) = x (M, K) @ W (N, K)^T`` on an array ``config``.

    K is split as :func:`k_chunks` does unless ``n_chunks`` asks for another (balanced) split;
    no chunk may be longer than ``config.pass_k_max``."""
    _check_counts(M=M, N=N, K=K)
    if K > config.k_max:
        raise ValueError(f"K={K} exceeds {config.k_max}, the largest K whose sums fit the "
                         f"{config.acc_bits}-bit accumulator")
    if mapping is None:
        mapping = choose_mapping(config, M, N)
    tile_count(config, M, N, mapping)   # validates the name
    if n_chunks is None:
        chunks = k_chunks(K, config.pass_k_max)
    else:
        chunks = split_k(K, n_chunks)
        if chunks[0][1] - chunks[0][0] > config.pass_k_max:
            raise ValueError(f"{n_chunks} chunks of K={K} are longer than pass_k_max "
                             f"{config.pass_k_max}")
    passes = []
    for tokens, outputs in _tiles(config, M, N, mapping):
        for i, (k0, k1) in enumerate(chunks):
            passes.append(Pass(tokens=tokens, outputs=outputs, k0=k0, k1=k1,
                               first_chunk=(i == 0), last_chunk=(i == len(chunks) - 1)))
    return Plan(config=config, M=int(M), N=int(N), K=int(K), mapping=mapping, chunks=chunks, passes=passes)


def pass_operands(p: Pass, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The operand beats of a pass: weights ``(L, rows, cols)`` trits and activations
    ``(L, rows)`` int8, one beat per step. Unused PEs and rows get zeros."""
    L = p.length
    R, C = p.outputs.shape
    weights = np.zeros((L, R, C), dtype=np.int8)
    used = p.outputs >= 0
    weights[:, used] = w[p.outputs[used], p.k0:p.k1].T
    acts = np.zeros((L, R), dtype=np.int8)
    rows = p.tokens >= 0
    acts[:, rows] = x[p.tokens[rows], p.k0:p.k1].T
    return weights, acts


def scatter_tile(plan: Plan, p: Pass, tile: np.ndarray, y: np.ndarray) -> None:
    """Write one finished tile ``(rows, cols)`` of results into ``y (M, N)``."""
    used = p.outputs >= 0
    rows = np.broadcast_to(p.tokens[:, None], p.outputs.shape)
    y[rows[used], p.outputs[used]] = tile[used]


def tile_sums(plan: Plan, w: np.ndarray, x: np.ndarray, operands=None):
    """Run a plan the way the array does, pass by pass, checking every width on the way, and
    yield ``(pass, sums)`` with the ``(rows, cols)`` totals of each finished tile.

    ``operands(pass, w, x)`` gives a pass's beats (default :func:`pass_operands`); the emulator
    passes one that reads whole weight words, padding included, as the device's sequencer does.
    """
    cfg = plan.config
    operands = operands or pass_operands
    psum_lim = 1 << (cfg.psum_bits - 1)
    acc_lim = 1 << (cfg.acc_bits - 1)
    acc = None
    for p in plan.passes:
        weights, acts = operands(p, w, x)
        psum = np.einsum("krc,kr->rc", weights.astype(np.int64), acts.astype(np.int64))
        assert -psum_lim <= psum.min() and psum.max() < psum_lim, "partial sum overflow"
        acc = psum if p.first_chunk else acc + psum
        assert -acc_lim <= acc.min() and acc.max() < acc_lim, "accumulator overflow"
        if p.last_chunk:
            yield p, acc


def execute(plan: Plan, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The product a plan computes, through :func:`tile_sums`: the dataflow's golden model;
    it must agree with ``numerics.ternary_matmul`` and the RTL alike."""
    w = numerics.check_ternary(w)
    x = numerics.check_int8(x)
    if w.shape != (plan.N, plan.K) or x.shape != (plan.M, plan.K):
        raise ValueError(f"operands {w.shape}, {x.shape} do not match the plan "
                         f"(N, K)=({plan.N}, {plan.K}), (M, K)=({plan.M}, {plan.K})")
    y = np.zeros((plan.M, plan.N), dtype=np.int64)
    for p, sums in tile_sums(plan, w, x):
        scatter_tile(plan, p, sums, y)
    return numerics.to_int32(y)


# ---------------------------------------------------------------------------------------------
# The adder-tree engine (rtl.adder_tree.TreeEngine)
# ---------------------------------------------------------------------------------------------
#
# Each of ``lanes`` output lanes adds ``k`` ternary products a cycle in a pipelined adder tree
# and accumulates the tree's sums in ``acc_bits``. A *pass* is one token's dot products for one
# tile of ``lanes`` outputs over the whole of K, ``ceil(K / k)`` steps: step s brings the
# activations ``x[m, s*k : s*k + k]`` (one int8 per tree input) and the trits
# ``W[n0 + lane, s*k + i]`` (a ``k x lanes`` block, the array's weight beat with rows = k). No
# sum stays in a PE, so nothing is drained and K is not split: the accumulator is as wide as
# the result. K beyond a multiple of k is padded with zero weights and zero activations.


@dataclass(frozen=True)
class TreeConfig:
    """Parameters of the adder-tree engine as built: ``k`` products per lane and cycle (a power
    of two, at least 2), ``lanes`` outputs, widths."""
    k: int
    lanes: int
    act_bits: int = numerics.ACT_BITS
    acc_bits: int = numerics.RESULT_BITS
    #: None: a step's activations enter whole, a step a cycle (``rtl.adder_tree``); else
    #: ``digit_bits`` of each a cycle, most significant first (``rtl.serial_tree``).
    digit_bits: int | None = None
    #: With ``digit_bits``: False is the engine without back-pressure, the device core's
    #: (``rtl.serial_tree``: the result sink takes each row as it comes, a cycle sooner, and
    #: no beat waits); ``sim.cycles.serial_tree_*`` time either.
    backpressure: bool = True

    def __post_init__(self):
        _check_counts(k=self.k, lanes=self.lanes)
        if self.k < 2 or self.k & (self.k - 1):
            raise ValueError(f"k must be a power of two of at least 2, not {self.k}")
        if self.digit_bits is not None and not (
                1 <= self.digit_bits < self.act_bits and self.act_bits % self.digit_bits == 0):
            raise ValueError(f"digit_bits ({self.digit_bits}) must divide act_bits "
                             f"({self.act_bits}) and be smaller")
        if self.acc_bits <= self.act_bits + self.levels:
            raise ValueError(f"acc_bits ({self.acc_bits}) must exceed the tree's sum "
                             f"({self.act_bits + self.levels} bits)")

    @property
    def pes(self) -> int:
        """Ternary products per cycle, the adder-tree counterpart of the array's PEs."""
        return self.k * self.lanes

    @property
    def cycles_per_step(self) -> int:
        """Cycles a step's activations take to enter: 1, or their digits with ``digit_bits``."""
        return 1 if self.digit_bits is None else self.act_bits // self.digit_bits

    @property
    def words_per_step(self) -> int:
        """Weight-memory words a step's ``k x lanes`` trits take on a device: 1, or with
        ``digit_bits`` one a beat, ``cycles_per_step``, each a group of ``lanes / D`` lanes'
        trits (lane-major, as in the step's word): what the UP5K's SPRAMs give a cycle."""
        D = self.cycles_per_step
        if self.lanes % D:
            raise ValueError(f"lanes ({self.lanes}) must be a multiple of the {D} digits of an "
                             f"activation: a beat carries a group of lanes' trits")
        return D

    @property
    def word_trits(self) -> int:
        """Trits of one weight-memory word (``words_per_step``)."""
        return self.pes // self.words_per_step

    @property
    def levels(self) -> int:
        """Register levels of the tree, ``log2(k)`` (the pair level first); the top sum is
        ``act_bits + levels`` bits wide."""
        return self.k.bit_length() - 1

    @property
    def latency(self) -> int:
        """Cycles from a step to its sum reaching the accumulator: one per level of the tree
        and one for the register between the tree's top and the accumulator, ``log2(k) + 1``.
        That register lets the placer put a lane's accumulator away from its tree: without
        it, the hop from the top sum to the accumulator's adder was the ULX3S-85F device's
        longest net group (docs/architecture.md, "Boards")."""
        return self.levels + 1

    @property
    def k_max(self) -> int:
        """Largest K whose results cannot overflow the ``acc_bits`` accumulator."""
        return numerics.max_exact_k(self.acc_bits, self.act_bits)

    def steps(self, K: int) -> int:
        """Steps of one pass over K (the last one padded with zeros)."""
        return -(-K // self.k)

    def act_words(self, act_bytes: int) -> int:
        """Words of ``k`` activations an activation buffer of ``act_bytes`` holds; a buffer
        that is not a whole number of words is refused (the device's and the emulator's)."""
        if act_bytes % self.k:
            raise ValueError(f"act_bytes ({act_bytes}) must be a multiple of the trees' k "
                             f"({self.k}): the buffer holds words of k activations")
        return act_bytes // self.k


@dataclass(frozen=True, eq=False)
class TreePass:
    """One pass through the tree engine: token ``token``'s sums over all of K for the outputs
    ``outputs`` (one per lane, -1 where the lane is unused)."""
    token: int
    outputs: np.ndarray
    length: int              # steps


@dataclass(eq=False)
class TreePlan:
    """Every pass of one ``(M, K) x (N, K)^T`` product on the tree engine, in run order: tiles
    of ``lanes`` outputs, and within a tile every token (so a tile's weights are read once per
    token, as the array's ``outputs`` mapping reads them)."""
    config: TreeConfig
    M: int
    N: int
    K: int
    passes: list[TreePass] = field(repr=False)

    @property
    def useful_macs(self) -> int:
        return self.M * self.N * self.K

    @property
    def lengths(self) -> list[int]:
        return [p.length for p in self.passes]


def plan_tree(config: TreeConfig, M: int, N: int, K: int) -> TreePlan:
    """Plan ``y (M, N) = x (M, K) @ W (N, K)^T`` on the tree engine ``config``."""
    _check_counts(M=M, N=N, K=K)
    if K > config.k_max:
        raise ValueError(f"K={K} exceeds {config.k_max}, the largest K whose sums fit the "
                         f"{config.acc_bits}-bit accumulator")
    passes = []
    for n0 in range(0, N, config.lanes):
        outputs = np.arange(n0, n0 + config.lanes)
        outputs[outputs >= N] = -1
        for m in range(M):
            passes.append(TreePass(token=m, outputs=outputs, length=config.steps(K)))
    return TreePlan(config=config, M=int(M), N=int(N), K=int(K), passes=passes)


def tree_pass_operands(plan: TreePlan, p: TreePass, w: np.ndarray,
                       x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The operand beats of a tree pass: weights ``(steps, lanes, k)`` trits (``[s, lane, i]``
    is ``W[outputs[lane], s*k + i]``) and activations ``(steps, k)`` int8; zeros pad K and the
    unused lanes. A weight beat is lane-major, as a weight word holds it: a lane's ``k`` trits
    are adjacent (trit ``lane*k + i``), so each lane reads its own few block RAMs of the word
    (``rtl.adder_tree.tree_weight_layout``)."""
    k, steps = plan.config.k, p.length
    padded = steps * k
    weights = np.zeros((padded, len(p.outputs)), dtype=np.int8)
    used = p.outputs >= 0
    weights[:plan.K, used] = w[p.outputs[used]].T
    acts = np.zeros(padded, dtype=np.int8)
    acts[:plan.K] = x[p.token]
    return weights.reshape(steps, k, -1).transpose(0, 2, 1), acts.reshape(steps, k)


def scatter_tree_result(p: TreePass, sums: np.ndarray, y: np.ndarray) -> None:
    """Write one pass's ``(lanes,)`` results into ``y (M, N)``."""
    used = p.outputs >= 0
    y[p.token, p.outputs[used]] = sums[used]


def execute_tree(plan: TreePlan, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The product a tree plan computes, pass by pass as the engine does, checking the
    accumulator's width after every step: it must agree with ``numerics.ternary_matmul``."""
    w = numerics.check_ternary(w)
    x = numerics.check_int8(x)
    if w.shape != (plan.N, plan.K) or x.shape != (plan.M, plan.K):
        raise ValueError(f"operands {w.shape}, {x.shape} do not match the plan "
                         f"(N, K)=({plan.N}, {plan.K}), (M, K)=({plan.M}, {plan.K})")
    acc_lim = 1 << (plan.config.acc_bits - 1)
    y = np.zeros((plan.M, plan.N), dtype=np.int64)
    for p in plan.passes:
        weights, acts = tree_pass_operands(plan, p, w, x)
        per_step = np.einsum("sli,si->sl", weights.astype(np.int64), acts.astype(np.int64))
        running = np.cumsum(per_step, axis=0)
        assert -acc_lim <= running.min() and running.max() < acc_lim, "accumulator overflow"
        scatter_tree_result(p, running[-1], y)
    return numerics.to_int32(y)


# ---------------------------------------------------------------------------------------------
# The digit-serial tree engine (rtl.serial_tree.SerialTreeEngine)
# ---------------------------------------------------------------------------------------------

def activation_digits(x: np.ndarray, digit_bits: int,
                      act_bits: int = numerics.ACT_BITS) -> np.ndarray:
    """The digits of ``act_bits``-bit activations, most significant first: ``(..., D)`` values
    of ``digit_bits`` bits each, the two's-complement bits of ``x`` cut into ``D = act_bits /
    digit_bits`` pieces. The top digit reads as signed (its top bit is the sign), the others
    as unsigned, so ``x == sum(digit_value(c) * 2**(digit_bits * (D - 1 - c)))``."""
    if act_bits % digit_bits:
        raise ValueError(f"digit_bits ({digit_bits}) must divide act_bits ({act_bits})")
    D = act_bits // digit_bits
    bits = np.asarray(x, dtype=np.int64) & ((1 << act_bits) - 1)
    shifts = digit_bits * np.arange(D - 1, -1, -1)
    return (bits[..., None] >> shifts) & ((1 << digit_bits) - 1)


@dataclass(frozen=True, eq=False)
class SerialBeat:
    """One beat of the serial tree engine (``rtl.serial_tree.serial_beat_layout``)."""
    digits: np.ndarray       # (k,): digit c of the activations of the step being computed
    weights: np.ndarray      # (lanes / D, k) trits of lane group c of the step being loaded
    step: bool               # the slot computes a step
    last: bool               # ... which ends its pass


def serial_tree_beats(config: TreeConfig, weights: np.ndarray, acts: np.ndarray,
                      lasts) -> list[SerialBeat]:
    """The beats that feed ``S`` steps in a row (``weights (S, lanes, k)`` trits, ``acts (S,
    k)`` int8, ``lasts`` which steps end a pass) to the serial engine: ``S + 1`` slots of ``D``
    beats, beat ``c`` of slot ``j`` carrying lane group ``c``'s trits of step ``j`` and digit
    ``c`` of step ``j - 1``'s activations (zeros where there is no such step)."""
    if config.digit_bits is None:
        raise ValueError("serial_tree_beats needs a TreeConfig with digit_bits")
    D, k = config.cycles_per_step, config.k
    group = config.lanes // D
    S = len(weights)
    if weights.shape != (S, config.lanes, k) or acts.shape != (S, k) or len(lasts) != S:
        raise ValueError(f"operands {weights.shape}, {acts.shape} and {len(lasts)} flags do "
                         f"not make {S} steps of {config.lanes} lanes of k = {k}")
    digits = activation_digits(acts, config.digit_bits, config.act_bits)     # (S, k, D)
    beats = []
    for j in range(S + 1):
        for c in range(D):
            beats.append(SerialBeat(
                digits=digits[j - 1, :, c] if j else np.zeros(k, dtype=np.int64),
                weights=(weights[j, c * group:(c + 1) * group] if j < S
                         else np.zeros((group, k), dtype=np.int8)),
                step=j > 0, last=bool(j and lasts[j - 1])))
    return beats
