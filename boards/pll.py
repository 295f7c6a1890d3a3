"""PLL settings: the board's oscillator to the array's clock.

Worked out here from each family's data sheet limits, so that any target frequency gets the
closest setting the PLL can make (the build reports the frequency it really gets).

* ECP5 ``EHXPLLL`` (FPGA-TN-02200, as ``ecppll`` computes it): PFD ``f_in / CLKI_DIV`` in
  3.125-400 MHz, VCO ``f_pfd * CLKFB_DIV * CLKOP_DIV`` in 400-800 MHz, output
  ``f_pfd * CLKFB_DIV`` with the feedback from CLKOP.
* iCE40 ``SB_PLL40_PAD`` in simple feedback (iCE40 sysCLOCK PLL technical note, as ``icepll``
  computes it): PFD ``f_in / (DIVR + 1)`` in 10-133 MHz, VCO ``f_pfd * (DIVF + 1)`` in
  533-1066 MHz, output ``f_vco / 2**DIVQ`` (DIVQ 1..6) in 16-275 MHz; the loop filter range
  follows the PFD frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Instance


@dataclass(frozen=True)
class Ecp5Pll:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: float

    @property
    def f_out(self) -> float:
        return self.f_in / self.clki_div * self.clkfb_div

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div

    def instance(self, clk_in, clk_out, locked) -> Instance:
        """The EHXPLLL: ``clk_in`` the oscillator's pad, ``clk_out`` the clock it drives."""
        return Instance(
            "EHXPLLL",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=self.clki_div, p_CLKFB_DIV=self.clkfb_div, p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=self.clkop_div // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in, i_CLKFB=clk_out, o_CLKOP=clk_out,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


def ecp5_pll(f_in: float, f_out: float) -> Ecp5Pll:
    """The EHXPLLL setting whose output is closest to ``f_out`` (ties: higher VCO); an error
    when even that is more than 1% away."""
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            for clkop in range(1, 129):
                vco = out * clkop
                if not 400e6 <= vco <= 800e6:
                    continue
                key = (abs(out - f_out), -vco)
                if best is None or key < best[0]:
                    best = (key, Ecp5Pll(clki, clkfb, clkop, f_in))
    if best is None or abs(best[1].f_out - f_out) > 0.01 * f_out:
        closest = "" if best is None else f" (closest: {best[1].f_out / 1e6:g} MHz)"
        raise ValueError(f"the ECP5 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz within 1%{closest}")
    return best[1]


@dataclass(frozen=True)
class Ice40Pll:
    divr: int
    divf: int
    divq: int
    f_in: float

    @property
    def f_pfd(self) -> float:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> float:
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self) -> float:
        return self.f_vco / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        """The loop filter setting for this PFD frequency (as icepll chooses it)."""
        for i, upper in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), start=1):
            if self.f_pfd < upper:
                return i
        return 6

    def instance(self, clk_in, clk_out, locked, *, from_pad: bool = True) -> Instance:
        """The PLL: ``SB_PLL40_PAD`` when ``clk_in`` is the PLL's own input pad (most boards'
        oscillator pins are), else ``SB_PLL40_CORE`` with ``clk_in`` a fabric signal (an
        input buffer's output: the UPduino's oscillator reaches pin 20, not a PLL pad)."""
        primitive, clk_port = ("SB_PLL40_PAD", "i_PACKAGEPIN") if from_pad else \
            ("SB_PLL40_CORE", "i_REFERENCECLK")
        return Instance(
            primitive, p_FEEDBACK_PATH="SIMPLE", p_DIVR=self.divr, p_DIVF=self.divf,
            p_DIVQ=self.divq, p_FILTER_RANGE=self.filter_range,
            i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk_out, o_LOCK=locked, **{clk_port: clk_in})


def ice40_pll(f_in: float, f_out: float) -> Ice40Pll:
    """The SB_PLL40 setting whose output is closest to ``f_out`` (ties: lower PFD divider);
    an error when even that is more than 1% away."""
    best = None
    for divr in range(16):
        pll = Ice40Pll(divr, 0, 1, f_in)
        if not 10e6 <= pll.f_pfd <= 133e6:
            continue
        for divf in range(128):
            for divq in range(1, 7):
                pll = Ice40Pll(divr, divf, divq, f_in)
                if not (533e6 <= pll.f_vco <= 1066e6 and 16e6 <= pll.f_out <= 275e6):
                    continue
                key = abs(pll.f_out - f_out)
                if best is None or key < best[0]:
                    best = (key, pll)
    if best is None or abs(best[1].f_out - f_out) > 0.01 * f_out:
        closest = "" if best is None else f" (closest: {best[1].f_out / 1e6:g} MHz)"
        raise ValueError(f"the iCE40 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz within 1%{closest}")
    return best[1]


#: the PLL setting function of each family
PLLS = {"ecp5": ecp5_pll, "ice40": ice40_pll}
