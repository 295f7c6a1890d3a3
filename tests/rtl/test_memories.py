"""Memories marked ``NO_RW_CHECK`` (``rtl.synth``) map to block RAM alone on both families, and
the ECP5 control program to LUT RAM.

Unmarked, yosys keeps Amaranth's "a read of the address being written returns the old data"
with a delayed write and a forwarding multiplexer: two flip-flops and a LUT per bit of the
word (82 FF and 42 LUT4 on ECP5 for this 36-bit memory).
"""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.isa import param_values
from firmware.programs import FIRMWARE
from rtl.controller import Controller
from rtl.synth import NO_RW_CHECK, synthesize
from sim.boards import core_config
from sim.numerics import max_exact_k

WIDTH, DEPTH = 36, 256


class OneMemory(wiring.Component):
    """A memory with one write and one read port, every port on the component's ports."""

    def __init__(self, attrs):
        self.attrs = attrs
        super().__init__({"waddr": In(8), "wdata": In(WIDTH), "we": In(1),
                          "raddr": In(8), "rdata": Out(WIDTH)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=WIDTH, depth=DEPTH, init=[], attrs=self.attrs)
        w, r = mem.write_port(), mem.read_port()
        m.d.comb += [w.addr.eq(self.waddr), w.data.eq(self.wdata), w.en.eq(self.we),
                     r.addr.eq(self.raddr), self.rdata.eq(r.data)]
        return m


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_marked_memories_need_no_forwarding_logic(family):
    plain = synthesize(OneMemory(None), family)
    marked = synthesize(OneMemory(NO_RW_CHECK), family)
    assert plain["ram"] == marked["ram"] >= 1
    # Unmarked: the delayed write (data, address, enable) and the forwarded word.
    assert plain["ff"] >= WIDTH and plain["lut4"] >= WIDTH
    # Marked: the RAMs alone (iCE40 keeps one LUT4 of glue beside its three 16-bit RAMs).
    assert marked["ff"] == 0 and marked["lut4"] <= 1


def test_ecp5_control_program_stays_in_lut_ram():
    """Left to itself yosys puts the controller's 64-word program in a DP16KD, whose 5.8 ns
    clock-to-out started the longest path of a 16x16 core asked for 100 MHz; the ECP5 builds ask
    for LUT RAM (``sim.boards.core_config``)."""
    config = core_config(2, 2, 64, "ecp5")
    style = config["program_ram_style"]
    params = param_values(rows=2, cols=2, weight_words=config["weight_words"],
                          act_bytes=config["act_bytes"], result_rows=config["result_rows"],
                          pass_k_max=max_exact_k(16), k_max=max_exact_k(32))
    cells = {s: synthesize(Controller(program_words=config["program_words"], params=params,
                                      init=FIRMWARE.words, program_ram_style=s), "ecp5")["cells"]
             for s in (None, style)}
    assert cells[None].get("DP16KD", 0) == 1        # what the attribute is there to prevent
    assert cells[style].get("DP16KD", 0) == 0 and cells[style]["TRELLIS_DPR16X4"] >= 1
    assert core_config(2, 2, 64, "ice40")["program_ram_style"] is None   # iCE40 has no LUT RAM
