"""What a board runs: its oscillator through a PLL to the array's clock, the device core behind
the UART (``rtl.uart_device.UARTDevice``), and LEDs for link activity and busy."""

from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io

from rtl.uart import divisor_for
from rtl.uart_device import UARTDevice

from .pll import Ecp5Pll

#: LED pulse stretch: a byte at 3 Mbaud lasts 3.3 us, far too short to see
ACTIVITY_BITS = 22


class BoardTop(Elaboratable):
    """``core`` are :class:`rtl.core.DeviceCore` parameters; ``pll`` the clock setting."""

    def __init__(self, pll: Ecp5Pll, baud: int, core: dict):
        self.pll = pll
        self.device = UARTDevice(divisor=divisor_for(pll.f_out, baud),
                                 clock_hz=round(pll.f_out), **core)

    def elaborate(self, platform):
        m = Module()
        osc = platform.request(platform.default_clk, dir="-")
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        p = self.pll
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_div // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=osc.io, i_CLKFB=ClockSignal("sync"), o_CLKOP=ClockSignal("sync"),
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        # Held in reset until the PLL locks (and for a few cycles after).
        platform.add_clock_constraint(sync.clk, p.f_out)
        ready = Signal(4)
        m.d.comb += sync.rst.eq(~ready[-1])
        with m.If(~locked):
            m.d.sync += ready.eq(0)
        with m.Elif(~ready[-1]):
            m.d.sync += ready.eq(ready + 1)

        m.submodules.device = dev = self.device
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-", "rts": "-", "dtr": "-"})
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [dev.rx.eq(rx.i), tx.o.eq(dev.tx)]

        # LEDs: 0 receive activity, 1 transmit activity, 2 busy, 3 PLL locked.
        leds = []
        for i in range(4):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            leds.append(led)
        for led, line in zip(leds[:2], (rx.i, dev.tx)):
            stretch = Signal(ACTIVITY_BITS)
            with m.If(~line):
                m.d.sync += stretch.eq(-1)
            with m.Elif(stretch != 0):
                m.d.sync += stretch.eq(stretch - 1)
            m.d.comb += led.o.eq(stretch != 0)
        m.d.comb += [leds[2].o.eq(dev.busy), leds[3].o.eq(locked)]
        return m
