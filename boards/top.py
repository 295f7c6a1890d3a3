"""What a board runs: its oscillator through a PLL to the array's clock, the device core behind
the UART (``rtl.uart_device.UARTDevice``), and LEDs for link activity and busy."""

from __future__ import annotations

from amaranth import (ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal,
                      Value)
from amaranth.lib import io

from rtl.uart_device import UARTDevice

from .pll import Ecp5Pll, Ice40Pll

#: LED pulse stretch: a byte at 3 Mbaud lasts 3.3 us, far too short to see
ACTIVITY_BITS = 22


def device_for(pll: Ecp5Pll | Ice40Pll, divisor: int, core: dict) -> UARTDevice:
    """The device (core and UART) a board runs at ``pll``'s clock: what :class:`BoardTop`
    puts behind the board's pins."""
    return UARTDevice(divisor=divisor, clock_hz=round(pll.f_out), **core)


#: cycles of the PLL's clock the device stays in reset after the PLL locks
RESET_CYCLES = 8


def hold_reset_until_locked(m: Module, locked: Value, domain: str = "sync") -> None:
    """Drive ``domain``'s reset: held while the PLL is not locked, released
    :data:`RESET_CYCLES` cycles after it locks. The counter has no reset of its own: in the
    domain it resets, it would clear itself for as long as it holds the reset, and the
    device would never leave it (as every board build did until stop 39). It starts at 0
    when the FPGA is configured, as every flip-flop starts at its initial value."""
    count = Signal(range(RESET_CYCLES + 1), reset_less=True)
    released = Signal()
    m.d.comb += [released.eq(count == RESET_CYCLES),
                 ResetSignal(domain).eq(~released)]
    with m.If(~locked):
        m.d[domain] += count.eq(0)
    with m.Elif(~released):
        m.d[domain] += count.eq(count + 1)


class BoardTop(Elaboratable):
    """``core`` are :class:`rtl.core.DeviceCore` parameters; ``pll`` the clock setting;
    ``divisor`` the UART's clock cycles per bit (``rtl.uart.divisor_for``, which refuses a
    rate the clock cannot make); ``pll_from_pad`` whether the oscillator's pin is the
    PLL's own input pad (iCE40: ``SB_PLL40_PAD``, else ``SB_PLL40_CORE``)."""

    def __init__(self, pll: Ecp5Pll | Ice40Pll, divisor: int, core: dict, *,
                 pll_from_pad: bool = True):
        self.pll = pll
        self.pll_from_pad = pll_from_pad
        self.device = device_for(pll, divisor, core)

    def elaborate(self, platform):
        m = Module()
        osc = platform.request(platform.default_clk, dir="-")
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        p = self.pll
        if self.pll_from_pad:
            m.submodules.pll = p.instance(osc.io, ClockSignal("sync"), locked)
        else:       # the oscillator's pin is not the PLL's pad: through an input buffer
            m.submodules.osc = osc_in = io.Buffer("i", osc)
            m.submodules.pll = p.instance(osc_in.i, ClockSignal("sync"), locked,
                                          from_pad=False)
        platform.add_clock_constraint(sync.clk, p.f_out)
        hold_reset_until_locked(m, locked)

        m.submodules.device = dev = self.device
        uart_pins = platform.resources["uart", 0]
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in uart_pins.ios})
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [dev.rx.eq(rx.i), tx.o.eq(dev.tx)]

        # LEDs, as many as the board has: with four or more, receive activity, transmit
        # activity, busy and PLL locked; with fewer, link activity (either way), busy and
        # locked. Boards with only RGB LEDs (ECPIX-5) show each on an LED's green channel, a
        # board with one RGB LED (UPduino v3) on its three channels.
        pins = self._led_pins(m, platform, most=4)
        activity = {"rx": ~rx.i, "tx": ~dev.tx}
        if len(pins) < 4:
            activity = {"link": ~rx.i | ~dev.tx}
        lines = [self._stretched(m, line) for line in activity.values()]
        lines += [dev.busy, locked]
        for i, (pin, line) in enumerate(zip(pins, lines)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", pin)
            m.d.comb += led.o.eq(line)
        return m

    @staticmethod
    def _led_pins(m: Module, platform, most: int) -> list:
        """Up to ``most`` of the board's single-colour LEDs; or else the green channels of
        its RGB LEDs (the red and blue channels held off); or, with a single RGB LED
        (UPduino v3), its green, red and blue channels as three LEDs."""
        names = [name for name, _ in platform.resources]
        if "led" in names:
            return [platform.request("led", i, dir="-")
                    for i in range(min(most, names.count("led")))]
        if names.count("rgb_led") == 1:
            rgb = platform.request("rgb_led", 0, dir="-")
            return [rgb.g, rgb.r, rgb.b]
        pins = []
        for i in range(min(most, names.count("rgb_led"))):
            rgb = platform.request("rgb_led", i, dir="-")
            for colour in ("r", "b"):
                m.submodules[f"rgb{i}_{colour}"] = off = io.Buffer("o", getattr(rgb, colour))
                m.d.comb += off.o.eq(0)
            pins.append(rgb.g)
        return pins

    @staticmethod
    def _stretched(m: Module, active) -> Signal:
        """``active`` held for 2**ACTIVITY_BITS cycles, so that a single byte shows."""
        stretch = Signal(ACTIVITY_BITS)
        with m.If(active):
            m.d.sync += stretch.eq(-1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        return stretch != 0
