"""PLL settings: the board's oscillator to the array's clock.

Worked out here from each family's data sheet limits, so that any target frequency gets the
closest setting the PLL can make (the build reports the frequency it really gets).

* ECP5 ``EHXPLLL`` (FPGA-TN-02200, as ``ecppll`` computes it): PFD ``f_in / CLKI_DIV`` in
  3.125-400 MHz, VCO ``f_pfd * CLKFB_DIV * CLKOP_DIV`` in 400-800 MHz, output
  ``f_pfd * CLKFB_DIV`` with the feedback from CLKOP.
"""

from __future__ import annotations

from dataclasses import dataclass


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
