"""The accumulator under the array: sums the chunks of K of every output in ``acc_width`` bits.

The PEs' partial sums are kept narrow (16 bits cost half the LUTs of 32), which bounds a pass to
``sim.numerics.max_exact_k(psum_width)`` steps. A longer K runs as several passes over the same
tile; their rows arrive here one per cycle and are added into a small memory holding one
``cols``-wide row of ``acc_width`` sums per array row. After the tile's last chunk the sums leave
on ``output`` instead of being written back.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def psum_row_layout(rows: int, cols: int, psum_width: int) -> data.StructLayout:
    """One drained row of partial sums, tagged with where it goes in the accumulator."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(psum_width), cols),
        "row": range(max(rows, 2)),
        "first_chunk": 1,   # start from these sums (do not read the memory)
        "last_chunk": 1,    # emit the total instead of storing it
        "last": 1,          # last row of the pass
    })


def result_row_layout(cols: int, acc_width: int) -> data.StructLayout:
    """One row of finished results."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(acc_width), cols),
        "last": 1,          # last row of the tile
    })


class ResultAccumulator(wiring.Component):
    """Adds the partial sums of successive passes of the same tile.

    Members
    -------
    input : In(stream.Signature(psum_row_layout(rows, cols, psum_width)))
        Rows of each pass in order 0 .. rows-1 (as the array drains them).
    output : Out(stream.Signature(result_row_layout(cols, acc_width)))
        Only rows of a tile's last chunk appear here; other rows are absorbed without waiting.

    ``ram_style`` ("block" or None: the tools choose) goes to yosys as the sums memory's
    ``ram_style``. Left to itself yosys keeps a memory only a few rows deep in flip-flops,
    which on iCE40 (no LUT RAM) costs 512 flip-flops and about 380 LUT4 at 4x4; in block
    RAM it takes 8 EBR instead.

    ``counted_reads``: the sums memory's read address is a register of its own, counted on
    with every row taken, rather than computed from the row's index (the same addresses, as
    rows come in order; ECP5 builds, whose clock wants it).
    """

    def __init__(self, *, rows: int, cols: int, psum_width: int = 16, acc_width: int = 32,
                 ram_style: str | None = None, counted_reads: bool = False):
        if acc_width < psum_width:
            raise ValueError(f"acc_width ({acc_width}) must be at least psum_width ({psum_width})")
        self.rows, self.cols = rows, cols
        self.psum_width, self.acc_width = psum_width, acc_width
        self.ram_style = ram_style
        self.counted_reads = counted_reads
        super().__init__({
            "input": In(stream.Signature(psum_row_layout(rows, cols, psum_width))),
            "output": Out(stream.Signature(result_row_layout(cols, acc_width))),
        })

    def elaborate(self, platform):
        m = Module()
        row_shape = data.ArrayLayout(signed(self.acc_width), self.cols)
        # One row of sums per array row. The read port is synchronous (block RAM on both
        # families; iCE40 has no LUT RAM): rows arrive in order 0, 1, ..., rows-1, so when a row
        # is taken the next one is read, ready for the cycle it can arrive in. The read is
        # transparent so that with a single row the write-back is seen by the next read.
        attrs = {"ram_style": self.ram_style} if self.ram_style else None
        m.submodules.sums = sums = Memory(shape=row_shape, depth=max(self.rows, 2), init=[],
                                          attrs=attrs)
        write = sums.write_port()
        read = sums.read_port(transparent_for=(write,))

        beat = self.input.payload
        total = Signal(row_shape)
        for c in range(self.cols):
            m.d.comb += total[c].eq(Mux(beat.first_chunk, 0, read.data[c]) + beat.data[c])

        taken = Signal()
        # The row read as a row is taken is the next one to arrive: the one after it, or row 0
        # after a pass's last. With ``counted_reads`` that address is a register, counted on
        # with every row taken, since it fans out to every cell of the sums memory (LUT RAM on
        # ECP5): the increment and the multiplexer in front of it were the longest path of a
        # 16x16 ULX3S-25F build asked for 100 MHz (10.18 ns, 3.95 of it that net).
        if self.counted_reads:
            next_row = Signal.like(read.addr, init=1 % self.rows)
            with m.If(taken):
                m.d.sync += next_row.eq(Mux(next_row == self.rows - 1, 0, next_row + 1))
        else:
            next_row = Mux(beat.last, 0, beat.row + 1)
        m.d.comb += [
            taken.eq(self.input.valid & self.input.ready),
            read.addr.eq(next_row),
            read.en.eq(taken),
            write.addr.eq(beat.row),
            write.data.eq(total),
            write.en.eq(self.input.valid & ~beat.last_chunk),
            self.output.valid.eq(self.input.valid & beat.last_chunk),
            self.output.payload.data.eq(total),
            self.output.payload.last.eq(beat.last),
            self.input.ready.eq(~beat.last_chunk | self.output.ready),
        ]
        return m
