"""The ``linear`` program without a processor: the reference of ``rtl.linear_sequencer``.

A board too small for the control processor (``rtl.controller``, about 1,900 LUT4 on iCE40
against the UP5K's 5,280 cells) only ever runs ``firmware/programs/linear.s``, so it gets a
sequencer that does what ``linear`` does and nothing else. :func:`run_linear` is that sequencer
in Python: for ``RUN``'s six arguments it gives the status and the events (:class:`Split`,
:class:`SetResults`, :class:`Sweep`) that ``firmware.machine.run`` gives for ``linear``, and the
sequencer's own cycles (tests/rtl/test_linear_sequencer.py holds all three against the RTL and
the first two against the interpreter).

It is hardwired for the adder-tree engine's parameters (``isa.tree_param_values``), on which
``linear``'s ``SPLIT`` always makes one pass, so no division is left:
:func:`hardwired_supported` says which.

Why the verdicts match although nothing here saturates. The program sums in saturating
``register_bits`` arithmetic, and its limits (``WEIGHT_WORDS``, ``ACT_BYTES``, ``RESULT_ROWS``)
lie below the saturation value, so a saturated sum passes its limit exactly when the exact sum
does. Its tile count ``(N + PES - 1) // PES`` is exact unless N is within PES of saturation,
and then, like the exact one, it is more tiles than the weight memory holds (the registers have
a bit to spare over ``WEIGHT_WORDS * PES``). The sequencer keeps only the low bits of each
argument that a run passing every check can have (:func:`kept_widths`) and refuses any argument
with a bit above them at once: such an argument fails some check of the program anyway (a
weight word at or past ``WEIGHT_WORDS``, more tiles than the weight or result memory holds,
...). The bounds are then summed exactly, each sum abandoned as soon as it passes its limit, so
that no sum takes more cycles than its limit allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import Status
from .isa import ARG_REGISTERS, Param, register_bits, saturate, split_k_limit
from .machine import Outcome, SetResults, Split, Sweep

__all__ = ["KeptWidths", "hardwired_supported", "kept_widths", "run_linear"]


def hardwired_supported(params: dict) -> None:
    """Raise ValueError unless the hardwired sequencer does what ``linear`` does on a device
    with these ``CFG`` parameters: one result row per token (``ROWS`` 1), a power-of-two tile
    (``PES``: ceil(N / PES) is a shift and an increment), a whole token's K in one pass
    (``PASS_K_MAX`` at least ``min(K_MAX, ACT_BYTES)``, so ``SPLIT``'s n is always 1), memories
    of at least one entry, and registers that keep their spare bit (``register_bits`` below its
    32-bit cap), on which the saturating sums of the program equal the exact ones. The
    adder-tree engine's parameters (``isa.tree_param_values``) are all of this kind."""
    params = {Param(p): int(v) for p, v in params.items()}
    missing = set(Param) - set(params)
    if missing:
        raise ValueError(f"missing parameters: {', '.join(p.name for p in missing)}")
    rows, pes = params[Param.ROWS], params[Param.PES]
    if rows != 1:
        raise ValueError(f"the hardwired linear sequencer needs ROWS = 1 (one result row per "
                         f"token, as the adder-tree engine has), not {rows}")
    if pes < 1 or pes & (pes - 1):
        raise ValueError(f"the hardwired linear sequencer needs PES a power of two (the tile "
                         f"count is a shift), not {pes}")
    for p in (Param.WEIGHT_WORDS, Param.ACT_BYTES, Param.RESULT_ROWS):
        if params[p] < 1:
            raise ValueError(f"the hardwired linear sequencer needs {p.name} of at least 1, "
                             f"not {params[p]}")
    if params[Param.PASS_K_MAX] < split_k_limit(params):
        raise ValueError(
            f"the hardwired linear sequencer makes one pass of K: PASS_K_MAX "
            f"({params[Param.PASS_K_MAX]}) must be at least min(K_MAX, ACT_BYTES) "
            f"({split_k_limit(params)}), as on the adder-tree engine")
    need = max(params[Param.WEIGHT_WORDS] * pes, params[Param.ACT_BYTES],
               params[Param.RESULT_ROWS], params[Param.PASS_K_MAX])
    if need.bit_length() + 1 > register_bits(params):
        raise ValueError(f"memories of {need} entries need registers wider than 32 bits; "
                         f"the hardwired linear sequencer relies on the spare bit")


@dataclass(frozen=True)
class KeptWidths:
    """The low bits of each argument the hardwired sequencer keeps: the fewest that hold every
    value of a run that passes all of ``linear``'s checks. ``outputs`` is N's, ``tiles`` that
    of ceil(N / PES) less its rounding (N's bits above ``pes_shift``)."""
    weights: int
    acts: int
    results: int
    tokens: int
    outputs: int
    k: int
    tiles: int
    pes_shift: int

    def args(self) -> tuple[int, ...]:
        """The widths in ``RUN``'s order (r0 .. r5)."""
        return (self.weights, self.acts, self.results, self.tokens, self.outputs, self.k)


def kept_widths(params: dict) -> KeptWidths:
    """:class:`KeptWidths` for these parameters. A run that passes has at least one tile, one
    token and one step, so weights < WEIGHT_WORDS, acts < ACT_BYTES, results < RESULT_ROWS, M
    at most ACT_BYTES (M*K bytes) and RESULT_ROWS (tiles*M rows), K at most K_MAX, ACT_BYTES
    and WEIGHT_WORDS, and the tile count at most WEIGHT_WORDS and RESULT_ROWS."""
    ww, ab, rr = (params[p] for p in (Param.WEIGHT_WORDS, Param.ACT_BYTES, Param.RESULT_ROWS))
    shift = (params[Param.PES] - 1).bit_length()
    tiles = max(1, min(ww, rr).bit_length())
    return KeptWidths(weights=max(1, (ww - 1).bit_length()), acts=max(1, (ab - 1).bit_length()),
                      results=max(1, (rr - 1).bit_length()), tokens=min(ab, rr).bit_length(),
                      outputs=tiles + shift,
                      k=max(1, min(params[Param.K_MAX], ab, ww).bit_length()),
                      tiles=tiles, pes_shift=shift)


def run_linear(args, params: dict) -> Outcome:
    """What ``linear`` does with ``RUN``'s arguments (r0 weights, r1 acts, r2 results, r3 M,
    r4 N, r5 K; missing ones are 0, each saturated to ``register_bits(params)`` as the processor
    loads them), as the hardwired sequencer does it.

    ``cycles`` counts from the start cycle to the done cycle, both included, with a sequencer
    downstream that never holds it up (always ready, always idle), as ``machine.run`` counts
    the processor's:

    * 1 to start: the arguments are taken in, and refused (BAD_ARGUMENT) when M, N or K is 0,
      K > K_MAX, or any has a bit above :func:`kept_widths`;
    * then one cycle per addition of three sums, each abandoned in the cycle it passes its
      limit: acts + M*K (M cycles), results + tiles*M (tiles cycles), weights + tiles*K
      (tiles cycles), with tiles = ceil(N / PES);
    * 1 for the result pointer (SETR), 1 per sweep (tiles), and 1 to finish (done).

    So a run that passes takes ``M + 3*tiles + 3`` cycles; a refusal at the start 2, and one
    in a sum 2 plus the additions made, the one that passed the limit included.
    """
    hardwired_supported(params)
    params = {Param(p): int(v) for p, v in params.items()}
    if len(args) > ARG_REGISTERS:
        raise ValueError(f"at most {ARG_REGISTERS} arguments, got {len(args)}")
    bits = register_bits(params)
    kept = kept_widths(params)
    values = [saturate(int(a), bits) for a in args] + [0] * (ARG_REGISTERS - len(args))
    weights, acts, results, tokens, outputs, k = values
    out = Outcome(Status.OK, cycles=1)

    def refuse() -> Outcome:
        out.status = Status.BAD_ARGUMENT
        out.cycles += 1
        return out

    if (any(v >> w for v, w in zip(values, kept.args())) or 0 in (tokens, outputs, k)
            or k > params[Param.K_MAX]):
        return refuse()
    tiles = -(-outputs // params[Param.PES])
    for base, step, count, limit in ((acts, k, tokens, params[Param.ACT_BYTES]),
                                     (results, tokens, tiles, params[Param.RESULT_ROWS]),
                                     (weights, k, tiles, params[Param.WEIGHT_WORDS])):
        total = base
        for _ in range(count):
            out.cycles += 1
            total += step
            if total > limit:
                return refuse()
    split = Split(k, 1, k, 0)
    out.events += [split, SetResults(results)]
    out.events += [Sweep(weights + t * k, acts, tokens, split) for t in range(tiles)]
    out.cycles += 1 + tiles + 1
    return out
