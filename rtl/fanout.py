"""Copies of a register, each driving a part of a wide fan-out.

A register whose loads are spread over the die is as slow as the trip to its farthest load. On
the ULX3S-85F's adder-tree device one register of 256 activation bits fed all 64 lanes, and its
nets spanned up to 121 tiles of the placement (docs/architecture.md, "Boards"). Several copies,
each feeding a group of the loads, let the placer put each copy beside its group.

yosys merges flip-flops that have the same inputs (``opt_merge``), even with ``keep`` on their
wires: two copies of a register synthesize to one. The copies made here carry the
:data:`REPLICA` attribute on their wires, and every synthesis script of this project
(``rtl.synth.KEEP_REPLICAS_SCRIPT``, run right after reading the design) marks the flip-flops
that drive such wires ``keep``, which ``opt_merge`` leaves apart. Simulation sees plain
registers.
"""

from amaranth.hdl import Signal

#: The wire attribute that marks a copy (``rtl.synth.KEEP_REPLICAS_SCRIPT`` looks for it).
REPLICA = "tritium_replica"


def replicas(like, copies: int, *, name: str, reset_less: bool = True,
             init: int = 0) -> list[Signal]:
    """``copies`` registers shaped as ``like`` that synthesis keeps apart. Without a reset by
    default (data registers: a valid bit says when they hold something); a flag's copies
    take ``reset_less=False`` and their ``init``. The caller assigns each the same value in
    the same domain."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, not {copies}")
    return [Signal.like(like, name=f"{name}_copy_{i}", reset_less=reset_less, init=init,
                        attrs={REPLICA: 1})
            for i in range(copies)]


def fanout_levels(copies: int, levels: int) -> list[int]:
    """Copies at each level of a fan-out tree of ``levels`` register levels that ends in
    ``copies``: level ``n`` (1-based) has the fewest ``c`` with ``c ** levels >= copies **
    n``, so every level multiplies the copies by about the same factor (4, 11, 32 for 32
    copies in 3 levels), and the last has ``copies``."""
    if copies < 1 or levels < 1:
        raise ValueError(f"copies and levels must be at least 1, not {copies} and {levels}")
    counts = []
    for n in range(1, levels + 1):
        c = 1
        while c ** levels < copies ** n:
            c += 1
        counts.append(c)
    return counts
