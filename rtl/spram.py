"""Weight memory in the iCE40 UP5K's single-port RAMs (``SB_SPRAM256KA``).

The UP5K has 30 block RAMs of 4 kbit (120 kbit) and four SPRAMs of 16K x 16 bits (1 Mbit).
yosys does not infer SPRAM from an Amaranth memory, so :class:`SPRAMWeights` instantiates them
and offers the same two ports as an ``amaranth.lib.memory`` read and write port: the device
core (``rtl.core``, ``weight_ram="spram"``) cannot tell the difference.

Layout: a weight word of ``word_bits`` bits lies across ``lanes = max(1, word_bits // 16)``
SPRAMs side by side (one bank); the four SPRAMs make ``4 // lanes`` banks, one after another in
the address space. A word narrower than 16 bits (8 bits: the 2x2 array) shares a 16-bit
location with its neighbours, written with the SPRAM's nibble write mask; so every bit of the
1 Mbit holds a trit's code whatever the word width.

The SPRAM has one port: a cycle either reads or writes. A write takes the cycle (a read
requested in the same cycle is not done); the core never streams weights while it writes them
(``WRITE_WEIGHTS`` and ``RUN`` are separate commands). Read data holds until the next read, as
a ``lib.memory`` read port with ``en`` low does, although the SPRAM's own output is undefined
after a write.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In

#: the UP5K's SPRAMs and the shape of each
SPRAMS, SPRAM_DEPTH, SPRAM_WIDTH = 4, 16384, 16
#: bits the nibble write mask covers
NIBBLE = 4


def spram_words(word_bits: int) -> int:
    """How many words of ``word_bits`` bits the four SPRAMs hold (refused if they cannot be
    laid out: a word must be 4, 8 or 16 bits, or 32 or 64 bits across SPRAMs)."""
    if word_bits in (4, 8, 16):
        return SPRAMS * SPRAM_DEPTH * (SPRAM_WIDTH // word_bits)
    if word_bits in (32, 64):
        return (SPRAMS // (word_bits // SPRAM_WIDTH)) * SPRAM_DEPTH
    raise ValueError(f"SPRAM weight words must be 4, 8, 16, 32 or 64 bits (2, 4, 8, 16 or 32 "
                     f"trits: an array of as many PEs, trees of as many products, serial trees' "
                     f"lane groups of as many), not {word_bits}")


class SPRAMWeights(wiring.Component):
    """``depth`` words of ``word_bits`` bits in the UP5K's SPRAMs.

    Members
    -------
    read : In(ReadPort.Signature)
        ``addr``, ``en``; ``data`` one cycle after a cycle with ``en`` high (and no write),
        and held while ``en`` stays low. With ``hold=False`` it is only good in that one cycle
        (no register and multiplexer of ``word_bits`` each: for a reader that reads every
        cycle, as the serial trees' sequencer does).
    write : In(WritePort.Signature)
        ``addr``, ``data``, ``en`` (one bit: whole words).
    """

    def __init__(self, *, word_bits: int, depth: int, hold: bool = True):
        capacity = spram_words(word_bits)
        if not 1 <= depth <= capacity:
            raise ValueError(f"{depth} weight words of {word_bits} bits do not fit the UP5K's "
                             f"SPRAMs (at most {capacity})")
        self.word_bits, self.depth, self.hold = word_bits, depth, hold
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "read": In(ReadPort.Signature(addr_width=addr_width, shape=unsigned(word_bits))),
            "write": In(WritePort.Signature(addr_width=addr_width, shape=unsigned(word_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self.word_bits
        lanes = max(1, wb // SPRAM_WIDTH)
        per_location = max(1, SPRAM_WIDTH // wb)        # words sharing a 16-bit location
        banks = SPRAMS // lanes
        sub_bits = (per_location - 1).bit_length()       # which word of a location
        writing = self.write.en
        addr = Mux(writing, self.write.addr, self.read.addr)
        word_in = addr[:sub_bits] if sub_bits else 0
        location = addr[sub_bits:sub_bits + 14]
        bank = addr[sub_bits + 14:] if banks > 1 else 0

        # Write data and mask: the word repeated into every slot of its location, the mask
        # opening only its own nibbles.
        data_in = Signal(SPRAM_WIDTH * lanes)
        mask = Signal(NIBBLE * lanes)
        if per_location > 1:
            nibbles = wb // NIBBLE
            m.d.comb += [data_in.eq(self.write.data.replicate(per_location)),
                         mask.eq(((1 << nibbles) - 1) << (word_in * nibbles))]
        else:
            m.d.comb += [data_in.eq(self.write.data), mask.eq(-1)]

        outs = []
        for b in range(banks):
            selected = (bank == b) if banks > 1 else 1
            for lane in range(lanes):
                out = Signal(SPRAM_WIDTH, name=f"spram{b * lanes + lane}_out")
                m.submodules[f"spram{b * lanes + lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=location,
                    i_DATAIN=data_in.word_select(lane, SPRAM_WIDTH),
                    i_MASKWREN=mask.word_select(lane, NIBBLE),
                    i_WREN=writing,
                    i_CHIPSELECT=selected & (writing | self.read.en),
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out)
                outs.append(out)

        # Which bank and word the last read addressed, to pick its bits out of the outputs.
        read_done = Signal()
        read_bank = Signal(range(banks)) if banks > 1 else None
        read_word = Signal(sub_bits) if sub_bits else None
        m.d.sync += read_done.eq(self.read.en & ~writing)
        with m.If(self.read.en & ~writing):
            if read_bank is not None:
                m.d.sync += read_bank.eq(bank)
            if read_word is not None:
                m.d.sync += read_word.eq(word_in)
        bank_rows = [Cat(*outs[b * lanes:(b + 1) * lanes]) for b in range(banks)]
        row = bank_rows[0]
        for b in range(1, banks):
            row = Mux(read_bank == b, bank_rows[b], row)
        fresh = row.word_select(read_word, wb) if read_word is not None else row[:wb]
        if not self.hold:
            m.d.comb += self.read.data.eq(fresh)
            return m
        held = Signal(wb)
        m.d.comb += self.read.data.eq(Mux(read_done, fresh, held))
        m.d.sync += held.eq(self.read.data)
        return m
