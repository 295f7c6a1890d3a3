"""Boards: each one's platform (pins, oscillator, from amaranth-boards), its link and the device
configuration it is built with. ``python -m boards`` / ``tritium build`` build them.

Every default is a measured build (``make sweep BOARD=...``, ``boards/sweeps/``), taken from
the board's row in ``sim.boards.BOARDS`` (shared with ``tritium estimate`` and ``run_model``'s
stats). Issue #4's goals for the ULX3S-85F and the iCEBreaker (2048 PEs at 100 MHz; 128 PEs
at 24 MHz) are met by their defaults; the rows ``ulx3s-85f-goal`` and ``icebreaker-goal``
there are the goals' projections (the latter an 8x16 array), not builds
(docs/architecture.md, "Boards").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sim import boards as targets


#: nextpnr's placers and routers (``--placer``, ``--router``). HeAP packs a large design
#: densely from one edge of the die; the electrostatic placer ("static") spreads it over the
#: whole die, which routes where HeAP's placement runs out of wires but lengthens every net,
#: a PE's own included: the ULX3S-85F's 16x32 core routed at 43.96 MHz that way, and at
#: 86.08 with HeAP (docs/architecture.md, "Spread over the die, the design routes but is
#: slow").
PLACERS = ("heap", "static", "sa")
ROUTERS = ("router1", "router2")


@dataclass(frozen=True)
class BoardDef:
    name: str
    platform: Callable          # the amaranth-boards platform class
    family: str                 # "ecp5" or "ice40"
    rows: int                   # default build
    cols: int
    freq_mhz: float
    baud: int
    weight_words: int
    basis: str                  # "target" (issue #4's goal, sim.boards) or "measured"
    # How ``tritium build --program`` loads a bitstream: commands in order of preference,
    # the first found on PATH runs with the bitstream appended.
    programmers: tuple = ()
    pll_from_pad: bool = True   # the oscillator's pin is the PLL's own pad (iCE40)
    note: str = ""
    # nextpnr's placer and router for the default build (PLACERS, ROUTERS)
    placer: str = "heap"
    router: str = "router1"
    engine: str = "array"       # "array" (the PE array), "tree" or "serial" (adder trees, the
                                # serial ones fed digits: rows are k)
    # nextpnr's seed for the default build (None: nextpnr's own). Place and route is the same
    # for the same netlist and seed; near a clock's limit the seed decides whether it is met.
    seed: int | None = None

    @property
    def control(self) -> str:
        """The default build's control: the processor, or ``linear`` hardwired."""
        return targets.control_for(self.family, self.engine)

    @property
    def word_trits(self) -> int:
        """Trits of a weight-memory word of the default build (``sim.boards.word_trits``)."""
        return targets.word_trits(self.engine, self.rows, self.cols)


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def _ecpix5_platform():
    from amaranth_boards.ecpix5 import ECPIX585Platform
    return ECPIX585Platform()


def _icesugar():
    from amaranth_boards.icesugar import ICESugarPlatform
    return ICESugarPlatform()


def _upduino_v3():
    """amaranth-boards' UPduino v3 with two changes: the clock is the 12 MHz oscillator (on
    pin 20 once the OSC jumper is closed) instead of the internal SB_HFOSC, whose +/-10%
    a UART cannot follow, and the UART is the FT232H's (tinyvision-ai-inc/UPduino-v3.0:
    its ADBUS0 reaches pin 15, the FPGA's rx, and ADBUS1 pin 14, the FPGA's tx). These are
    the flash's SPI clock and data pins, whose chip select the FT232H drives from DTR: the
    host opens the port with DTR off (host.transport.SerialTransport)."""
    from amaranth.build import Attrs
    from amaranth_boards.resources import UARTResource
    from amaranth_boards.upduino_v3 import UpduinoV3Platform

    class Platform(UpduinoV3Platform):
        default_clk = "clk12"
        resources = UpduinoV3Platform.resources + [
            UARTResource(0, rx="15", tx="14", attrs=Attrs(IO_STANDARD="SB_LVCMOS")),
        ]
    return Platform()


def _orangecrab_85f():
    """amaranth-boards' OrangeCrab r0.2 (85F) with a UART on the Feather header's pins 0 (rx,
    N17) and 1 (tx, M18), for a 3.3 V USB-serial adapter; its USB port goes straight into
    the FPGA and would need a USB core (docs/architecture.md, "Boards"). The build does not
    run amaranth-boards' dfu-suffix step (not a YoWASP tool): openFPGALoader loads the plain
    bitstream over the board's DFU bootloader."""
    from amaranth.build import Attrs
    from amaranth.vendor import LatticeECP5Platform
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
    from amaranth_boards.resources import UARTResource

    class Platform(OrangeCrabR0_2_85FPlatform):
        resources = OrangeCrabR0_2_85FPlatform.resources + [
            UARTResource(0, rx="N17", tx="M18", attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP")),
        ]
        required_tools = LatticeECP5Platform.required_tools
        command_templates = LatticeECP5Platform.command_templates
    return Platform()


def _ulx3s(size: str):
    def platform():
        from amaranth_boards import ulx3s
        return getattr(ulx3s, f"ULX3S_{size}_Platform")()
    return platform


_ulx3s_85f, _ulx3s_12f, _ulx3s_25f, _ulx3s_45f, _ecpix5, _icebreaker_built, _icesugar_built, \
    _upduino_built, _orangecrab_built = (targets.board(n) for n in (
        "ulx3s-85f", "ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ecpix5-85f", "icebreaker",
        "icesugar", "upduino-v3", "orangecrab-85f"))
_ULX3S_LOADER = (("openFPGALoader", "--board", "ulx3s"),)


def _from_table(b: targets.Board, name: str, platform, family: str, **kw) -> BoardDef:
    """A board whose array, clock, link and weight memory are ``sim.boards``' row ``b``."""
    return BoardDef(name, platform, family, b.rows, b.cols, b.clock_hz / 1e6, b.baud,
                    weight_words=b.weight_trits // b.word_trits, basis=b.basis, engine=b.engine,
                    **kw)


BOARDS: dict[str, BoardDef] = {b.name: b for b in (
    # Measured (boards/sweeps/ulx3s-85f-default.json, `tritium build --board ulx3s-85f`):
    # issue #4's goal, adder trees of k = 32 for 64 lanes (2048 PEs) at 100 MHz with 512 words
    # of 2048 trits, the goal's 1 Mtrit and the bundled model resident: 47,327 of 83,640
    # logic cells (23.1 a PE), 70,505 FF, 181 of 208 DP16KD, 0 DSP, 101.13 MHz achieved
    # against 100 (33 cycles a bit at 3 Mbaud, 1.01% fast), 204.8 G ternary MACs/s, 1,593 s.
    # Its place and route is nextpnr's with seed 2; with seeds 1 and 2 the same netlist
    # made 100.81 and 101.13 MHz (docs/architecture.md, "Boards", stop 39).
    # Before, the 16x32 array at 81.25 MHz (boards/sweeps/ulx3s-85f-array.json).
    _from_table(_ulx3s_85f, "ulx3s-85f", _ulx3s("85F"), "ecp5", programmers=_ULX3S_LOADER,
                note="LFE5U-85F: 84K LUT4, 208 DP16KD", seed=2),
    # `tritium build --board ulx3s-12f --freq 96`, its report kept as
    # boards/sweeps/ulx3s-12f-default.json: 16x16 fits (17,279 of 24,288 cells; 16x32 does
    # not) and meets 95.833 MHz, the PLL's nearest to 96 (97.58 achieved; the same core made
    # 99.69 at 100); 3 Mbaud needs a clock that divides to within 2%: 32 cycles a bit, 0.17%
    # slow. boards/sweeps/ulx3s-12f.json keeps the sweep from 2x2 at
    # 84.375 MHz with an earlier core (every shape to 16x16 met it; 16x32 needs 28,737 cells
    # and 62 DP16KD), whose sizes the design-space estimate fits. 512 weight words
    # (34 DP16KD at 16x16).
    _from_table(_ulx3s_12f, "ulx3s-12f", _ulx3s("12F"), "ecp5", programmers=_ULX3S_LOADER,
                note="LFE5U-12F (a 25F die): 24K LUT4, 56 DP16KD"),
    # `tritium build --board ulx3s-25f` (boards/sweeps/ulx3s-25f-default.json;
    # boards/sweeps/ulx3s-25f.json keeps the run at 90 MHz): the 12F's die, so its 16x16
    # core, with 1024 weight words: 17,473 of 24,288 cells, 48 of 56 DP16KD, 100.78 MHz
    # achieved against 100; 16x32 needs 28,938 cells and 90 DP16KD (an earlier core).
    _from_table(_ulx3s_25f, "ulx3s-25f", _ulx3s("25F"), "ecp5", programmers=_ULX3S_LOADER,
                note="LFE5U-25F: 24K LUT4, 56 DP16KD"),
    # `tritium build --board ulx3s-45f --freq 90` (boards/sweeps/ulx3s-45f-default.json;
    # ulx3s-45f.json keeps the sweep at 30 MHz): 16x16 with 2560 weight words, the bundled
    # model resident, its weight memory in banks of 2048 and 512 words: 18,083 of 43,848
    # cells, 91 of 108 DP16KD, 98.62 MHz achieved against 90 (at 100 MHz 95.76, at 95.833
    # 89.01). 16x32 with the same words needs 177 DP16KD; with fewer words it would fit but
    # stream the model (tritium estimate: 2.1 against 18.3 tokens/s at 3 Mbaud and 90 MHz),
    # so the default keeps the memory.
    _from_table(_ulx3s_45f, "ulx3s-45f", _ulx3s("45F"), "ecp5", programmers=_ULX3S_LOADER,
                note="LFE5U-45F: 44K LUT4, 108 DP16KD"),
    # The ULX3S-85F's 16x32 core with 2048 weight words (the bundled model resident) on the
    # ECPIX-5's faster part, and the FT2232H's UART at 12 Mbaud, 10 cycles a bit at 120 MHz
    # (boards/sweeps/ecpix5-85f.json): 29,243 cells, 147 of 208 DP16KD, 131.8 MHz achieved
    # against 120; docs/architecture.md, "Boards".
    _from_table(_ecpix5, "ecpix5-85f", _ecpix5_platform, "ecp5",
                programmers=(("openFPGALoader", "--board", "ecpix5"),),
                note="LFE5UM5G-85F: 84K LUT4, 208 DP16KD; FT2232H bridge; RGB LEDs (green)"),
    # From `make sweep BOARD=icebreaker` (boards/sweeps/icebreaker.json): issue #4's goal,
    # digit-serial adder trees of k = 32 for 4 lanes (128 PEs, rtl.serial_tree, 2 bits of an
    # activation a cycle) with `linear` hardwired (rtl.linear_sequencer) and the weights in
    # the four SPRAMs (16,384 words of a lane group's 32 trits, 64 bits, all the SPRAMs give
    # a cycle: the bundled model resident) take 4,932 of the UP5K's 5,280 logic cells, 2,543
    # FF, 16 of 30 EBR and 4 of 4 SPRAM, 0 DSP, 32.56 MHz achieved against 24; 64x4's lane
    # groups would be wider than the SPRAMs. 24 MHz, issue #4's clock for this board, divides
    # the FT2232H's 6 Mbaud into 4 cycles a bit. Stop 40 the parallel trees of 4 x 8, 32 PEs
    # (boards/sweeps/icebreaker-tree.json: 4,624 cells), as many MACs a cycle; until then the
    # 2x2 array with the control processor (icebreaker-array.json: 5,186 cells).
    _from_table(_icebreaker_built, "icebreaker", _icebreaker, "ice40",
                programmers=(("openFPGALoader", "--board", "icebreaker"), ("iceprog",)),
                note="iCE40 UP5K: 5,280 logic cells, 30 EBR, 4 SPRAM"),
    # OrangeCrab r0.2 (85F): the ULX3S-85F's die, speed grade 8, and its default core, 16x32
    # with 2048 words at 108 MHz (the 48 MHz oscillator x 9 / 4, 36 cycles a bit at 3 Mbaud):
    # 29,306 of 83,640 cells, 147 of 208 DP16KD, 0 DSP, 111.12 MHz achieved, 1,867 s
    # (boards/sweeps/orangecrab-85f.json, `tritium build --board orangecrab-85f --freq
    # 108`; the same core made 112.21 at 120). The UART runs on two Feather header pins
    # through an adapter, not through the board's USB port (docs/architecture.md, "Boards").
    _from_table(_orangecrab_built, "orangecrab-85f", _orangecrab_85f, "ecp5",
                programmers=(("openFPGALoader", "--board", "orangecrab"),
                             ("dfu-util", "-a", "0", "-D")),
                note="LFE5U-85F: 84K LUT4, 208 DP16KD; UART on Feather pins 0 (rx) and 1 "
                     "(tx) through a 3.3 V USB-serial adapter"),
    # `make sweep BOARD=icesugar` (boards/sweeps/icesugar.json): the iCEBreaker's core, the
    # digit-serial trees of k = 32 for 4 lanes with `linear` hardwired, at 24 MHz: 4,971 of
    # 5,280 cells, 16 EBR, 4 SPRAM, 31.66 MHz achieved (before: the 4 x 8 parallel trees,
    # icesugar-tree.json; the 2x2 array, icesugar-array.json).
    # 115,200 baud (sim.boards' row says why).
    _from_table(_icesugar_built, "icesugar", _icesugar, "ice40",
                # the vendor's loader; copying top.bin onto the iCELink's USB disk also works
                programmers=(("icesprog",),),
                note="iCE40 UP5K; UART through the iCELink's USB CDC port"),
    # `make sweep BOARD=upduino-v3` (boards/sweeps/upduino-v3.json): the same core at 24 MHz
    # and 6 Mbaud, 4,942 of 5,280 cells, 16 EBR, 4 SPRAM, 30.4 MHz achieved (before: the
    # parallel trees, upduino-v3-tree.json; the 2x2 array, upduino-v3-array.json). The
    # oscillator's pin 20 is not a PLL pad:
    # SB_PLL40_CORE.
    _from_table(_upduino_built, "upduino-v3", _upduino_v3, "ice40",
                programmers=(("iceprog",),),
                pll_from_pad=False,
                note="iCE40 UP5K; close the OSC jumper (12 MHz oscillator to pin 20)"),
)}


def board(name: str) -> BoardDef:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; boards that build: "
                         f"{', '.join(BOARDS)}") from None
