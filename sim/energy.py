"""The energy model: every constant in one table with its source, and the arithmetic on it.

Energy of a workload is split four ways:

* **arithmetic**: one INT8 addition per multiply-accumulate whose weight is not zero (a zero
  trit adds nothing: its PE keeps its partial sum), plus one 32-bit addition per output and
  pass in the accumulator below the array;
* **on-chip memory**: every bit the array reads from weight memory (2-bit codes) and the
  activation buffer, and every result bit written to and read from the result buffer, at the
  cost per bit of a small SRAM;
* **link**: every bit moved between host and device, at the link's cost per bit where a source
  gives one (a DRAM or HBM channel next to the array; a UART's USB bridge, its supply power
  over the link's bit rate); PCIe has none here;
* **static**: the FPGA's static power for the time the work takes, where a source gives it.

The per-operation energies are ASIC figures for a process node (``45nm`` or ``7nm``); an FPGA
spends far more per operation. They are what the BitNet papers compare (BitNet b1.58 reports
71.4x less arithmetic energy than FP16 at 7 nm: an FP16 multiply-accumulate, 0.34 + 0.16 pJ,
against one INT8 addition, 0.007 pJ), so the same table gives the FP16 and INT8
multiply-accumulate baselines of the same workload. A constant no source gives is ``None``, and
its part of the estimate is reported as not counted rather than guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

NODES = ("45nm", "7nm")

HOROWITZ = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
            "ISSCC 2014, energy table (45 nm, 0.9 V)")
BITNET = ("H. Wang et al., \"BitNet: Scaling 1-bit Transformers for Large Language Models\", "
          "arXiv:2310.11453, Table 2 (45 nm from Horowitz 2014, 7 nm from Zhang et al. 2022)")
BITNET_B158 = ("S. Ma et al., \"The Era of 1-bit LLMs: All Large Language Models are in 1.58 "
               "Bits\", arXiv:2402.17764, Section 3 (arithmetic energy, 7 nm)")
HBM = ("M. O'Connor et al., \"Fine-Grained DRAM: Energy-Efficient DRAM for Extreme Bandwidth "
       "Systems\", MICRO 2017 (HBM2 access energy)")
ICE40_POWER = ("tinyvision-ai-inc/ice40_power (GitHub): UP5K core rail measured with a "
               "Joulescope, blank design: 85.6 uA at 1.219 V")
ECP5_DS = ("Lattice FPGA-DS-02012 (DS1044), ECP5 and ECP5-5G Family Data Sheet, the supply "
           "current (standby, static: 0 Hz) table, typical; Table 3.8 in revision 3.4. Not read "
           "here directly: the figures are as two independent public hardware design notes "
           "quote that table (found with the search tool)")
TOGGLES = ("measured here: python -m sim.toggles (the bundled model, prompt 'The with statement', "
           "8 new tokens, seed 0): Verilator --coverage-toggle on rtl.ternary_pe's psum "
           "register checked against a NumPy count, which covers every device call")
ECP5_SERDES = ("Lattice TN1261, ECP5 and ECP5-5G SERDES/PCS Usage Guide (November 2015), "
               "Features: \"3.2 Gbps operation with low 85 mW power per channel\"")
FT231X_DS = ("FTDI FT231X data sheet, FT_000565 version 1.6, Table 5.3 (Operating Voltage and "
             "Current): Icc1, operating supply current, normal operation, typical 8 mA; VCC "
             "typical 5 V")

#: ECP5 supply voltages the standby currents are drawn at: VCC (core) 1.1 V and VCCAUX 2.5 V,
#: the data sheet's nominal recommended operating conditions (FPGA-DS-02012 Table 3.2)
ECP5_VCC, ECP5_VCCAUX = 1.1, 2.5


def _ecp5_standby_mw(icc_ma: float, iccaux_ma: float) -> float:
    # core and auxiliary rails only: the VCCIO banks (0.5 mA a bank typical) depend on how
    # many banks a board powers and at which voltage, so they are left out (a few mW)
    return icc_ma * ECP5_VCC + iccaux_ma * ECP5_VCCAUX


@dataclass(frozen=True)
class Constant:
    key: str
    value: float | None     # None: no source gives it; the estimate says so
    unit: str
    node: str               # process node ("any": not tied to one)
    source: str
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _table(*constants: Constant) -> dict[tuple[str, str], Constant]:
    return {(c.key, c.node): c for c in constants}


#: Every constant of the energy model, keyed by (name, node).
CONSTANTS: dict[tuple[str, str], Constant] = _table(
    Constant("add_int8", 0.03, "pJ/op", "45nm", BITNET),
    Constant("add_int8", 0.007, "pJ/op", "7nm", BITNET),
    Constant("mul_int8", 0.2, "pJ/op", "45nm", BITNET),
    Constant("mul_int8", 0.07, "pJ/op", "7nm", BITNET),
    Constant("add_fp16", 0.4, "pJ/op", "45nm", BITNET),
    Constant("add_fp16", 0.16, "pJ/op", "7nm", BITNET),
    Constant("mul_fp16", 1.1, "pJ/op", "45nm", BITNET),
    Constant("mul_fp16", 0.34, "pJ/op", "7nm", BITNET),
    Constant("add_int32", 0.1, "pJ/op", "45nm", HOROWITZ),
    Constant("add_int32", 0.1 * 0.007 / 0.03, "pJ/op", "7nm", HOROWITZ,
             note="derived: the 45 nm figure scaled as the INT8 addition scales (0.007/0.03); "
                  "no source gives a 7 nm 32-bit addition"),
    Constant("sram_bit", 10.0 / 64, "pJ/bit", "45nm", HOROWITZ,
             note="8 KB SRAM, 64-bit read: 10 pJ (the smallest memory in the table; an FPGA "
                  "block RAM is 2.25 KB)"),
    Constant("sram_bit", 10.0 / 64, "pJ/bit", "7nm", HOROWITZ,
             note="the 45 nm figure: no source here gives a 7 nm SRAM read, so memory is not "
                  "scaled (an upper bound at 7 nm)"),
    Constant("ddr_bit", 1300.0 / 64, "pJ/bit", "any", HOROWITZ,
             note="DRAM, 64-bit access: 1.3-2.6 nJ; the lower end"),
    Constant("hbm_bit", 3.9, "pJ/bit", "any", HBM),
    # A UART link's energy is its USB bridge's supply power for the time the bytes take
    # (host.estimate.parse_link divides it by the data bit rate): an upper bound, since it
    # charges the whole chip to the link, idle USB polling included.
    Constant("bridge_ft231x", 8.0 * 5.0, "mW", "any", FT231X_DS,
             note="8 mA x 5 V (ULX3S: the bridge runs from USB 5 V); the whole chip's power "
                  "charged to the link: an upper bound"),
    Constant("bridge_ft2232h", None, "mW", "any", "none",
             note="the FT2232H data sheet's operating current (DS FT2232H, DC characteristics) "
                  "was not found in a source here: searched the pages, docs and code corpora "
                  "for its operating supply current and its document number; not counted"),
    Constant("bridge_ft232h", None, "mW", "any", "none",
             note="the UPduino v3's FT232H: its data sheet's operating current was not found "
                  "in a source here (searched the pages corpus for its supply current); not "
                  "counted"),
    Constant("bridge_icelink", None, "mW", "any", "none",
             note="the iCESugar's iCELink (an STM32F1 running DAPLink's USB CDC): no source "
                  "here gives its power at a UART rate; not counted"),
    Constant("bridge_adapter", None, "mW", "any", "none",
             note="a USB-serial adapter of the user's choice (the OrangeCrab's header UART): "
                  "not counted"),
    # PCIe gen1 (2.5 GT/s) runs on the ECP5's SERDES, whose channel draws 85 mW at up to
    # 3.2 Gbps: charged over a lane's data rate after 8b/10b (2 Gbit/s) that is 42.5 pJ a data
    # bit, the card's end only (the host's PHY is not counted), and an upper bound at 2.5 GT/s.
    Constant("serdes_ecp5", 85.0, "mW", "any", ECP5_SERDES,
             note="one SERDES channel (a PCIe lane) at up to 3.2 Gbps; applied to PCIe gen1 over "
                  "the lane's data bit rate; the host's PHY not counted"),
    Constant("pcie_bit", None, "pJ/bit", "any", "none",
             note="PCIe gen2 and later: the ECP5 SERDES figure is for up to 3.2 Gbps, and no "
                  "PCIe SerDes/PHY energy per bit with its generation is in a source here: "
                  "searched for PCIe SerDes pJ/bit figures; the one found, a system-level "
                  "A100 host-to-GPU measurement (167.9 pJ/bit, Zhao et al., 'Quantifying "
                  "Interconnect Energy Efficiency on Perlmutter', quoted second-hand, "
                  "generation not confirmed) is not a PHY figure; not counted"),
    # Switching activity: the psum register's bit flips per nonzero-weight step with the
    # bundled model's own activations and trits, over those with uniform random operands
    # (what a per-operation energy stands for): 3.900 / 4.881 flips.
    Constant("activity_tiny", 3.900439118316702 / 4.881312910771171, "ratio", "any", TOGGLES,
             note="applies to the bundled model only (models/tiny); scales its INT8 additions' "
                  "energy, taking an adder's switching energy as proportional to the flips of "
                  "the register it feeds"),
    Constant("static_ice40_up5k", 85.6e-6 * 1.219 * 1e3, "mW", "any", ICE40_POWER,
             note="iCE40 UP5K core rail only, configured blank design, bench measurement"),
    Constant("static_lfe5u_25", _ecp5_standby_mw(77.0, 16.0), "mW", "any", ECP5_DS,
             note="LFE5U-12F/LFE5U-25F/LFE5UM-25F (one row of the table: the 12F is the 25F "
                  "die): ICC 77 mA at 1.1 V + ICCAUX 16 mA at 2.5 V; VCCIO banks not counted"),
    Constant("static_lfe5u_45", None, "mW", "any", "none",
             note="the LFE5U-45F row of the data sheet's standby table was not found in a "
                  "source here (searched the pages, docs and code corpora); not counted"),
    Constant("static_lfe5u_85", _ecp5_standby_mw(212.0, 26.0), "mW", "any", ECP5_DS,
             note="LFE5U-85F: ICC 212 mA at 1.1 V + ICCAUX 26 mA at 2.5 V; VCCIO banks not "
                  "counted"),
    Constant("static_lfe5um5g_85", None, "mW", "any", "none",
             note="the ECP5-5G (LFE5UM5G-85F, core at 1.2 V) standby row was not found in a "
                  "source here; the LFE5U-85F figure does not apply; not counted"),
)


#: The static-power constant of each FPGA a board names (``sim.boards.Board.fpga``).
STATIC_BY_FPGA = {
    "iCE40 UP5K": "static_ice40_up5k",
    "ECP5 LFE5U-12F": "static_lfe5u_25",
    "ECP5 LFE5U-25F": "static_lfe5u_25",
    "ECP5 LFE5U-45F": "static_lfe5u_45",
    "ECP5 LFE5U-85F": "static_lfe5u_85",
    "ECP5 LFE5UM5G-85F": "static_lfe5um5g_85",
}

#: The power constant of each USB-UART bridge a board names (``sim.boards.Board.bridge``).
BRIDGE_POWER = {"FT231X": "bridge_ft231x", "FT2232H": "bridge_ft2232h",
                "FT232H": "bridge_ft232h", "iCELink": "bridge_icelink",
                "adapter": "bridge_adapter"}


def static_constant(fpga: str) -> Constant:
    if fpga not in STATIC_BY_FPGA:
        raise KeyError(f"no static-power entry for FPGA {fpga!r}; known: "
                       f"{', '.join(STATIC_BY_FPGA)}")
    return constant(STATIC_BY_FPGA[fpga])


def bridge_constant(bridge: str) -> Constant:
    if bridge not in BRIDGE_POWER:
        raise KeyError(f"no power entry for USB bridge {bridge!r}; known: "
                       f"{', '.join(BRIDGE_POWER)}")
    return constant(BRIDGE_POWER[bridge])


def constant(key: str, node: str = "any") -> Constant:
    for n in (node, "any"):
        if (key, n) in CONSTANTS:
            return CONSTANTS[key, n]
    raise KeyError(f"no energy constant {key!r} for node {node!r}")


def value(key: str, node: str = "any") -> float | None:
    return constant(key, node).value


def check_node(node: str) -> str:
    if node not in NODES:
        raise ValueError(f"unknown process node {node!r}; known: {', '.join(NODES)}")
    return node


@dataclass(frozen=True)
class Work:
    """What a workload does, counted (``host.plan.CallCost`` over every call)."""
    macs: int               # multiply-accumulates of the layer shapes (M * N * K, summed)
    nonzero_macs: float     # those whose weight is not zero
    accumulations: int      # 32-bit additions in the accumulator (outputs x passes)
    weight_bits: int        # bits read from weight memory
    act_bits: int           # bits read from the activation buffer
    result_bits: int        # bits written to and read from the result buffer
    link_bits: int          # bits moved over the link, both directions
    seconds: float          # time the work takes (for static power)
    # switching activity of the array's additions relative to random operands (1: the
    # per-operation figures as they are; sim.toggles measures it for the bundled model)
    activity: float = 1.0


def energy(work: Work, *, node: str, link_pj_per_bit: float | None,
           static_mw: float | None) -> dict:
    """Joules by part; ``None`` for a part with no source (not counted in ``total``)."""
    check_node(node)
    pj = 1e-12
    arithmetic = (work.nonzero_macs * value("add_int8", node) * work.activity
                  + work.accumulations * value("add_int32", node)) * pj
    memory = (work.weight_bits + work.act_bits + work.result_bits) * value("sram_bit", node) * pj
    link = None if link_pj_per_bit is None else work.link_bits * link_pj_per_bit * pj
    static = None if static_mw is None else static_mw * 1e-3 * work.seconds
    parts = {"arithmetic": arithmetic, "memory": memory, "link": link, "static": static}
    return {**parts, "total": sum(v for v in parts.values() if v is not None),
            "not_counted": [k for k, v in parts.items() if v is None]}


def baselines(work: Work, *, node: str, weight_bits_per_weight: float = 2.0) -> dict:
    """The same multiply-accumulates as FP16 and INT8 multiply-accumulates (a multiplication
    and an addition each, as the BitNet papers count them), against the ternary array's
    arithmetic: with every weight an addition (``dense``, the papers' accounting) and with zero
    weights skipped. ``weight_memory`` compares the weight bits read: 16 and 8 bits per weight
    against the ternary layout's ``weight_bits_per_weight``."""
    check_node(node)
    fp16 = work.macs * (value("mul_fp16", node) + value("add_fp16", node))
    int8 = work.macs * (value("mul_int8", node) + value("add_int8", node))
    dense = work.macs * value("add_int8", node)
    sparse = work.nonzero_macs * value("add_int8", node)
    out = {"fp16_mac_pj": fp16, "int8_mac_pj": int8, "ternary_dense_pj": dense,
           "ternary_pj": sparse}
    out["ratio_fp16"] = {"dense": fp16 / dense, "zeros_skipped": fp16 / sparse if sparse else None}
    out["ratio_int8"] = {"dense": int8 / dense, "zeros_skipped": int8 / sparse if sparse else None}
    out["weight_memory_ratio"] = {"fp16": 16 / weight_bits_per_weight,
                                  "int8": 8 / weight_bits_per_weight}
    return out


def table_rows() -> list[dict]:
    """The table as plain rows (for reports and docs)."""
    return [c.as_dict() for c in CONSTANTS.values()]
