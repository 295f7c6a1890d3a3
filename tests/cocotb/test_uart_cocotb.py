"""cocotb benches of the UART (``sim/tb_uart.py`` on ``rtl.uart.UARTLoopback``) against the
cocotbext-uart model, one build per divisor.

Verilator by default; ``SIM=icarus`` selects Icarus, ``WAVES=1`` records a waveform per test.
"""

import pytest

from rtl.uart import UARTLoopback, divisor_for
from sim.cocotb_runner import run_bench

CLK_HZ = 100_000_000
# (nominal baud, divisor): exact rates, and 3 Mbaud whose divisor 33 gives 3.03 Mbaud (+1.0%).
# 20 Mbaud is 5 cycles a bit, near the UART's smallest divisor (4: the UP5K boards' 6 Mbaud at
# 24 MHz; the ECPIX-5 runs 12 Mbaud at 120 MHz, 10).
RATES = [
    (1_000_000, 100),
    (3_000_000, 33),
    (12_500_000, 8),
    (20_000_000, 5),
]
TESTCASES = ["random_bytes", "back_to_back", "baud_fast", "baud_slow", "framing_error"]


def test_rates_are_what_they_claim():
    """The table above: divisors from ``divisor_for``; one rate off by 0.5% to 2%."""
    errors = []
    for baud, divisor in RATES:
        assert divisor_for(CLK_HZ, baud) == divisor
        errors.append(abs(CLK_HZ / divisor / baud - 1))
    assert any(0.005 < e < 0.02 for e in errors)
    assert any(e == 0 for e in errors)


@pytest.mark.cocotb
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("baud,divisor", RATES, ids=lambda v: str(v))
def test_uart(simulator, baud, divisor, testcase):
    """One cocotb test per pytest test, so that WAVES=1 gives one waveform each."""
    config = {"baud": baud, "divisor": divisor, "clk_period_ns": 1_000_000_000 // CLK_HZ,
              "seed": baud % 9973 + divisor}
    result = run_bench(lambda: UARTLoopback(divisor), name=f"uart_loopback_d{divisor}",
                       test_module="sim.tb_uart", config=config, testcase=testcase)
    assert result.tests == 1, f"ran {result.tests} tests, see {result.log}"
    assert result.failed == 0, f"{result.failed} cocotb test(s) failed, see {result.log}"
