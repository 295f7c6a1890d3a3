"""Boards: the array, clock, link and weight memory each is built with.

One table for everything that projects onto a board (``tritium estimate``, ``run_model``'s
stats, the benchmarks). Two kinds of rows: the **goals** of issue #4 (``basis="target"``,
``ulx3s-85f-goal`` and ``icebreaker-goal``: what the design is meant to do on those boards,
not yet built at that size), and boards built and measured at their default
(``basis="measured"``: ``boards/sweeps/``, ``tritium build``), from which ``boards`` takes its
defaults. ``memory_bits_per_cycle`` is how fast the array can read its weights: with the
iCE40's SPRAM (4 x 16 bits) a word of 128 trits (256 bits) takes 4 cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firmware.commands import ENGINE_NAMES, DeviceInfo, device_trees
from rtl.spram import SPRAM_DEPTH, SPRAM_WIDTH, SPRAMS

from . import schedule

#: bits a trit takes in weight memory (2-bit codes: base3 is decoded at the link)
TRIT_BITS = 2
#: UART bits per byte: start, 8 data, stop
UART_BITS_PER_BYTE = 10
#: Seconds a USB-UART bridge may hold a short answer before the host sees it, once per window
#: of requests (the host sends the next window only after the answers, ``host.plan``). FTDI
#: chips send a partly filled buffer when their latency timer runs out, 1 to 255 ms, 16 by
#: default (FTDI AN232B-04, "Data Throughput, Latency and Handshaking");
#: ``host.transport.SerialTransport`` asks Linux's ftdi_sio for low-latency mode, which sets
#: it to 1 ms. The OrangeCrab's adapter is taken to be
#: an FTDI one, as its 3 Mbaud assumes. The iCELink (DAPLink's CDC-ACM on an STM32) has no
#: figure here: its wait is not counted.
BRIDGE_ANSWER_SECONDS = {"FT231X": 1e-3, "FT2232H": 1e-3, "FT232H": 1e-3, "adapter": 1e-3}
#: trits the UP5K's four SPRAMs of 256 kbit hold
SPRAM_TRITS = SPRAMS * SPRAM_DEPTH * SPRAM_WIDTH // TRIT_BITS
#: weight memory depth of the ECPIX-5 build (words of 16x32 trits)
ECPIX5_WORDS = 2048
#: weight memory depth of the ULX3S-45F build: the bundled model's words at 16x16
ULX3S_45F_WORDS = 2560


#: Lanes of the adder trees that one register of the activations feeds in a board's build
#: (``core_config``): the ULX3S-85F's 64 lanes read 32 copies, 8,192 flip-flops. With the
#: lanes' block RAMs in lane order (``boards.floorplan``) a lane spans about 8 columns of the
#: die, and a copy for 8 lanes reached lanes up to 61 tiles away.
LANES_PER_ACT_COPY = 2


def control_for(family: str, engine: str) -> str:
    """The control a build has: ``linear`` hardwired for an iCE40's adder trees (the UP5K
    has no cells for the control processor beside them: ``core_config``), else the
    processor (``rtl.core.DeviceCore``'s ``control``)."""
    return "hardwired" if family == "ice40" and engine != "array" else "processor"


def word_trits(engine: str, rows: int, cols: int) -> int:
    """Trits of one weight-memory word of a build, which is also the products the engine
    does a cycle at full rate: the array's PEs, the trees' ``k x lanes``, or one lane group's
    on the serial trees (a step in ``D`` cycles, ``TreeConfig.word_trits``)."""
    tree = device_trees(engine, rows, cols)
    return tree.word_trits if tree else rows * cols


def core_config(rows: int, cols: int, weight_words: int, family: str = "ecp5",
                engine: str = "array") -> dict:
    """The device core a board is built with (``boards.build``): memories sized for the board,
    not the tests. An iCE40 (the UP5K) has a few thousand logic cells and no LUT RAM: 32-bit
    counters (about 220 cells fewer than 64-bit ones), the accumulator's sums in block RAM,
    half the activation buffer (2 KiB, 4 of the UP5K's 30 EBR; the host splits longer inputs)
    and the weights in its SPRAMs (1 Mbit, ``rtl.spram``), and its memory ports not driven from
    registers nor its controller's checks registered (``registered_ports``: with the result
    register the 2x2 core took 30 cells more than a UP5K's 5,280, with the address,
    weight-write and "drained" registers 1 more, with the registered checks up to 188 more).
    ECP5 PEs use its carry cells with the operand logic inside them (``rtl.ternary_pe``: 19
    LUT4 sites a PE instead of 26), and its control program stays in LUT RAM
    (``rtl.controller.Controller``). ``engine="tree"``: the adder-tree engine, ``rows`` its k
    and ``cols`` its lanes (the array's configuration leaves the key out, as before), its
    activations in a register copy for every 2 lanes (``act_copies``, ``rtl.fanout``) and, on
    an ECP5 with a weight memory of one bank (``weight_words`` a power of two), its weight and
    result memories in as many slices, each addressed by copies of its own (``port_copies``,
    ``rtl.sliced_memory``). An iCE40's trees take one copy of the activations (its 24 MHz
    needs no fan-out tree, and its cells are short) and ``linear`` hardwired in place of the
    control processor (``control_for``; ``rtl.linear_sequencer``): with the processor the 8x4
    trees took 5,930 cells, with it 4,240 (docs/architecture.md, "Boards")."""
    small = family == "ice40"
    if engine == "serial" and not small:
        raise ValueError("the serial trees are built for the iCE40 UP5K only (their weight "
                         "words are what its SPRAMs give a cycle)")
    tree = {}
    if engine != "array":
        copies = 1 if small else -(-cols // LANES_PER_ACT_COPY)
        one_bank = weight_words & (weight_words - 1) == 0
        tree = {"engine": engine, "act_copies": copies,
                "port_copies": copies if one_bank and not small else 1}
    return dict(**tree, control=control_for(family, engine), rows=rows, cols=cols,
                weight_words=weight_words,
                act_bytes=2048 if small else 4096,
                result_rows=max(64, rows * 4), max_payload=1024, program_words=64,
                counter_bits=32 if small else 64,
                accumulator_ram_style="block" if small else None,
                program_ram_style=None if small else "distributed",
                weight_ram="spram" if small else None,
                pe_adder="generic" if small else "ccu2c", registered_ports=not small)


@dataclass(frozen=True)
class Board:
    name: str
    fpga: str
    rows: int
    cols: int
    clock_hz: float
    baud: int                   # UART rate of the board's USB bridge
    weight_trits: int           # resident weight capacity
    memory_bits_per_cycle: int  # weight memory read width
    basis: str                  # "target" (issue #4's goals) or "measured" (a build's report)
    lut4: int                   # logic cells (LUT4s) nextpnr can place on the FPGA
    bridge: str = ""            # the USB-UART bridge chip (sim.energy.BRIDGE_POWER)
    note: str = ""
    engine: str = "array"       # "array", "tree" or "serial": rows are the trees' k, cols
                                # their lanes

    @property
    def array(self) -> schedule.ArrayConfig:
        return schedule.ArrayConfig(rows=self.rows, cols=self.cols)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def family(self) -> str:
        return "ice40" if self.fpga.startswith("iCE40") else "ecp5"

    @property
    def word_trits(self) -> int:
        """Trits of a weight-memory word (:func:`word_trits`)."""
        return word_trits(self.engine, self.rows, self.cols)

    @property
    def control(self) -> str:
        return control_for(self.family, self.engine)

    def device_info(self, rows: int | None = None, cols: int | None = None,
                    clock_hz: float | None = None, engine: str | None = None) -> DeviceInfo:
        """What ``INFO`` would report for this board's build (``core_config``), optionally with
        another array shape (the same weight memory in trits), clock or engine."""
        rows, cols = rows or self.rows, cols or self.cols
        engine = engine or self.engine
        tree = device_trees(engine, rows, cols)     # refuses an unknown engine, a bad tree
        core = core_config(rows, cols, max(1, self.weight_trits // word_trits(engine, rows, cols)),
                           self.family, engine)
        if tree:
            # the trees' rules (whole words of k bytes in the buffer)
            tree.act_words(core["act_bytes"])
        info = DeviceInfo(rows=rows, cols=cols, weight_words=core["weight_words"],
                          act_bytes=core["act_bytes"], result_rows=core["result_rows"],
                          max_payload=core["max_payload"],
                          program_words=(0 if core["control"] == "hardwired"
                                         else core["program_words"]),
                          counter_bits=core["counter_bits"],
                          clock_hz=int(clock_hz or self.clock_hz), frame_timeout=1 << 16)
        if tree:    # no partial sums: a lane accumulates at the result's width
            info = replace(info, engine=ENGINE_NAMES[engine].value, psum_bits=info.acc_bits)
        return info


# Built: boards/sweeps/ulx3s-85f-default.json: issue #4's goal, adder trees of k = 32 for 64
# lanes (2048 PEs) at 100 MHz with the goal's 1 Mtrit in 512 words of 2048 trits, a word read
# whole each cycle (114 DP16KD of 36 bits), nextpnr's seed 2 (docs/architecture.md, "Boards",
# stop 39). 3 Mbaud is 33 cycles a bit, 1.01% fast.
_ULX3S_85F = Board("ulx3s-85f", "ECP5 LFE5U-85F", rows=32, cols=64, clock_hz=100e6,
                   baud=3_000_000, weight_trits=512 * 2048, memory_bits_per_cycle=114 * 36,
                   basis="measured", lut4=83640, bridge="FT231X", note="FT231X bridge at 3 Mbaud",
                   engine="tree")
# Built: boards/sweeps/ulx3s-85f-array.json, the ULX3S-85F's default until stop 39 and the
# OrangeCrab's core (below): the 16x32 array with the goal's 1 Mtrit in 2048 words, 147
# DP16KD, 29,375 cells; 82.11 MHz achieved against 81.25 (27 cycles a bit at 3 Mbaud).
_ARRAY_85F = Board("ulx3s-85f-array", "ECP5 LFE5U-85F", rows=16, cols=32, clock_hz=81.25e6,
                   baud=3_000_000, weight_trits=2048 * 512, memory_bits_per_cycle=1024,
                   basis="measured", lut4=83640, bridge="FT231X", note="FT231X bridge at 3 Mbaud")
# Built: boards/sweeps/icebreaker.json (digit-serial adder trees of k = 32 for 4 lanes, 128
# PEs, issue #4's goal, with ``linear`` hardwired and the weights in the four SPRAMs, 16,384
# words of a lane group's 32 trits, one read each cycle, 64 bits: the most the SPRAMs give,
# so 32 ternary MACs a cycle, a quarter product a PE). Stop 40 the parallel trees of 4 x 8
# (boards/sweeps/icebreaker-tree.json), until then the 2x2 array with the control
# processor (5,186 of 5,280 cells). The FT2232H's UART makes 6 Mbaud
# exactly (12 Mbaud / 2), which 24 MHz divides into 4 cycles a bit, the UART's smallest
# divisor (tests/rtl/test_uart.py: every byte at 2% off either way).
_ICEBREAKER = Board("icebreaker", "iCE40 UP5K", rows=32, cols=4, clock_hz=24e6, baud=6_000_000,
                    weight_trits=SPRAM_TRITS, memory_bits_per_cycle=64, basis="measured",
                    lut4=5280, bridge="FT2232H", note="FT2232H bridge at 6 Mbaud",
                    engine="serial")

BOARDS: dict[str, Board] = {b.name: b for b in (
    _ULX3S_85F,
    _ICEBREAKER,
    # Built: boards/sweeps/ulx3s-12f-default.json (16x16 at 95.833 MHz, the PLL's 25 MHz x 23
    # / 6 for 96 asked: 97.58 MHz achieved; 32 cycles a bit at 3 Mbaud, 0.17% slow); a weight
    # word (512 bits) is read whole every cycle. At 100 MHz the same core made 99.69.
    Board("ulx3s-12f", "ECP5 LFE5U-12F", rows=16, cols=16, clock_hz=25e6 * 23 / 6,
          baud=3_000_000, weight_trits=512 * 256, memory_bits_per_cycle=512, basis="measured",
          lut4=24288, bridge="FT231X", note="FT231X bridge at 3 Mbaud"),
    # Built: boards/sweeps/ulx3s-45f-default.json (16x16 at 90 MHz with 2560 words of 256
    # trits, the bundled model's 2,560: 98.62 MHz achieved, 91 of 108 DP16KD).
    Board("ulx3s-45f", "ECP5 LFE5U-45F", rows=16, cols=16, clock_hz=90e6, baud=3_000_000,
          weight_trits=ULX3S_45F_WORDS * 256, memory_bits_per_cycle=512, basis="measured",
          lut4=43848, bridge="FT231X", note="FT231X bridge at 3 Mbaud"),
    # Built: boards/sweeps/ulx3s-25f-default.json (the 12F's 16x16 core with twice its weight
    # words on the same die, at 100 MHz: 100.78 MHz achieved, 48 of 56 DP16KD).
    Board("ulx3s-25f", "ECP5 LFE5U-25F", rows=16, cols=16, clock_hz=100e6, baud=3_000_000,
          weight_trits=1024 * 256, memory_bits_per_cycle=512, basis="measured", lut4=24288,
          bridge="FT231X", note="FT231X bridge at 3 Mbaud"),
    # Built: 16x32 at 120 MHz with 2048 words of 512 trits (131.8 MHz achieved, 147 DP16KD),
    # which hold the bundled model resident (docs/architecture.md, "Boards"). The FT2232H's
    # UART goes up to 12 Mbaud (its 120 MHz clock over 10), which 120 MHz divides exactly: 10
    # cycles a bit.
    Board("ecpix5-85f", "ECP5 LFE5UM5G-85F", rows=16, cols=32, clock_hz=120e6, baud=12_000_000,
          weight_trits=ECPIX5_WORDS * 512, memory_bits_per_cycle=1024, basis="measured",
          lut4=83640, bridge="FT2232H", note="FT2232H bridge at 12 Mbaud"),
    # Built: boards/sweeps/orangecrab-85f.json. The ULX3S-85F's die (at speed grade 8) and
    # default core at 108 MHz (48 MHz x 9 / 4: 111.12 MHz achieved; 36 cycles a bit at 3 Mbaud);
    # the UART on two Feather header pins, through an adapter the user brings (3 Mbaud: an
    # FTDI one).
    replace(_ARRAY_85F, name="orangecrab-85f", clock_hz=108e6, bridge="adapter",
            note="UART on the Feather header at 3 Mbaud (a USB-serial adapter)"),
    # Built: boards/sweeps/icesugar.json. The iCEBreaker's UP5K and core; the link is the
    # iCELink's USB CDC port at 115,200 baud, the rate of the board maker's own UART example
    # (wuxx/icesugar, src/basic/uart_echo): no source gives the iCELink's limit.
    replace(_ICEBREAKER, name="icesugar", baud=115_200, bridge="iCELink",
            note="iCELink (STM32F1) USB CDC at 115200 baud"),
    # Built: boards/sweeps/upduino-v3.json. The same core behind the FT232H (which, like the
    # FT2232H, goes to 12 Mbaud) at 6 Mbaud, clocked from the 12 MHz oscillator (the board's
    # OSC jumper must be closed).
    replace(_ICEBREAKER, name="upduino-v3", bridge="FT232H", note="FT232H bridge at 6 Mbaud"),
    # Issue #4's goals, not built at this size (yet). The 85F's is the adder-tree engine,
    # k = 32 products for each of 64 lanes a cycle (docs/architecture.md, "The adder-tree
    # engine": a 32x64 array does not fit the die's flip-flops).
    Board("ulx3s-85f-goal", "ECP5 LFE5U-85F", rows=32, cols=64, clock_hz=100e6, baud=3_000_000,
          # 2048 trits x 2 bits per word: 114 of the 208 DP16KD blocks at 36 x 512
          weight_trits=512 * 2048, memory_bits_per_cycle=114 * 36, basis="target", lut4=83640,
          bridge="FT231X", note="FT231X bridge at 3 Mbaud", engine="tree"),
    Board("icebreaker-goal", "iCE40 UP5K", rows=8, cols=16, clock_hz=24e6, baud=12_000_000,
          # the four 256-kbit SPRAMs side by side: 64 bits per cycle
          weight_trits=SPRAM_TRITS, memory_bits_per_cycle=4 * 16, basis="target",
          lut4=5280, bridge="FT2232H", note="FT2232H bridge at 12 Mbaud"),
)}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None
