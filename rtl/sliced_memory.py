"""A wide memory in slices of bits, each slice's block RAMs addressed by copies of its own.

One register that addresses every block RAM of a memory spread over the die is as slow as its
trip to the farthest one: on the ULX3S-85F's adder-tree device, whose weight and result block
RAMs lie along the die in lane order (``boards.floorplan``), the weight memory's read address
spanned up to 92 tiles of the placement, its write address 99 and the result memory's read
address 103 (docs/architecture.md, "Boards"). :class:`SlicedMemory` splits the word into
slices of bits, each a memory of its own whose address and enable come from registers of its
own (``rtl.fanout.replicas``), so the placer can put each slice's copies beside its block RAMs.

The copies cost a cycle between an address and its block RAMs:

- a read's data comes two cycles after its address and enable (a memory port's, one);
- a write's address and enable are taken a cycle before its data: the data the port holds a
  cycle after ``en`` is what is written. (The device core's writes already have their data a
  cycle behind: a registered result row, the weight word further along the shift register.)

Read data holds while ``en`` is low, as a memory port's does; reads are not transparent to
writes, and no read of an address may be in flight while it is written (``NO_RW_CHECK``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In

from .fanout import replicas

#: bits of an ECP5 DP16KD (16 kbit of data and 2 of parity)
DP16KD_BITS = 18 * 1024


def block_ram_width(depth: int) -> int:
    """The widest an ECP5 block RAM (DP16KD) is at ``depth`` words: 36 bits to 512 words, 18 to
    1024, 9 to 2048, then 4, 2 and 1. A slice that is a multiple of it wastes no block RAM."""
    if not 1 <= depth <= 16384:
        raise ValueError(f"a DP16KD holds 1 to 16384 words, not {depth}")
    width = 36
    while width > 1 and depth * width > DP16KD_BITS:
        width = 4 if width == 9 else width // 2
    return width


def slice_bounds(width: int, slices: int, granule: int = 1) -> list[tuple[int, int]]:
    """``(low, high)`` bits of each slice of a ``width``-bit word cut into about ``slices``
    equal slices, each a multiple of ``granule`` bits when that is not wider than the slice
    (so no block RAM holds bits of two slices), the last one what is left."""
    if width < 1 or slices < 1 or granule < 1:
        raise ValueError(f"width, slices and granule must be at least 1, not {width}, "
                         f"{slices} and {granule}")
    bits = -(-width // slices)
    if bits >= granule:
        bits = -(-bits // granule) * granule
    return [(low, min(low + bits, width)) for low in range(0, width, bits)]


class SlicedMemory(wiring.Component):
    """``depth`` words of ``width`` bits in slices of bits, each slice's ports driven by
    registers of its own (the module's docstring: a cycle more on reads; a write's address and
    enable a cycle ahead of its data).

    Parameters
    ----------
    width, depth : int
        The memory's words and their bits.
    slices : int
        Slices asked for (:func:`slice_bounds`: fewer when ``granule`` rounds them up).
    granule : int
        A slice is a multiple of this many bits (:func:`block_ram_width` of ``depth``).
    attrs : dict
        Attributes of every slice's memory (``rtl.synth.NO_RW_CHECK``).

    Members
    -------
    write : In(WritePort.Signature)
        ``addr`` and ``en`` in one cycle, ``data`` in the next.
    read : In(ReadPort.Signature)
        ``addr`` and ``en``; ``data`` two cycles after a cycle with ``en`` high.
    """

    def __init__(self, *, width: int, depth: int, slices: int, granule: int = 1,
                 attrs: dict | None = None):
        self.width, self.depth = width, depth
        self.bounds = slice_bounds(width, slices, granule)
        self._attrs = attrs or {}
        addr_width = Shape.cast(range(depth)).width
        super().__init__({
            "write": In(WritePort.Signature(addr_width=addr_width, shape=unsigned(width))),
            "read": In(ReadPort.Signature(addr_width=addr_width, shape=unsigned(width))),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.bounds)
        write_addr = replicas(self.write.addr, n, name="write_addr")
        write_en = replicas(self.write.en, n, name="write_en", reset_less=False)
        read_addr = replicas(self.read.addr, n, name="read_addr")
        read_en = replicas(self.read.en, n, name="read_en", reset_less=False, init=1)
        outs = []
        for i, (low, high) in enumerate(self.bounds):
            mem = Memory(shape=unsigned(high - low), depth=self.depth, init=[],
                         attrs=self._attrs)
            m.submodules[f"slice_{i}"] = mem
            w, r = mem.write_port(), mem.read_port()
            m.d.sync += [write_addr[i].eq(self.write.addr), write_en[i].eq(self.write.en),
                         read_addr[i].eq(self.read.addr), read_en[i].eq(self.read.en)]
            m.d.comb += [w.addr.eq(write_addr[i]), w.en.eq(write_en[i]),
                         w.data.eq(self.write.data[low:high]),
                         r.addr.eq(read_addr[i]), r.en.eq(read_en[i])]
            outs.append(r.data)
        m.d.comb += self.read.data.eq(Cat(*outs))
        return m
