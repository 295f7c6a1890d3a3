"""Formal checks (rtl/formal.py, yosys' own SAT solver): the PE equals a naive model for all
inputs in every reachable state (induction); a lane of the adder-tree engine equals one for
any inputs over its first cycles (bounded), and so does a lane of the digit-serial trees;
the engine's streams keep the stream rules and lose or invent no result row, and the device
core's byte output keeps the stream rules
(bounded, 20 cycles from reset, any input sequence that keeps the rules). Each check is shown
not to be vacuous: a broken model, or a claim that must fail, fails. ``make formal`` runs
this file (about 3 minutes, the tree lanes most of it)."""

from __future__ import annotations

import pytest
from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Module, Mux, Signal, signed

from firmware.programs import FIRMWARE
from rtl.core import DeviceCore
from rtl.formal import prove, stream_rule
from rtl.adder_tree import TreeLane
from rtl.serial_tree import SerialTreeLane
from rtl.synth import ecp5_carry_model
from rtl.systolic import MatrixEngine
from rtl.ternary_pe import TernaryPE, Trit

pytestmark = pytest.mark.formal


class PEAgainstModel(Elaboratable):
    """The PE next to the obvious model (``psum + t * act`` with a multiply), same inputs;
    their partial sums and results must agree in every cycle. ``sign`` breaks the model."""

    def __init__(self, sign: int = 1, act_width: int = 8, psum_width: int = 16,
                 adder: str = "generic"):
        self.pe = TernaryPE(act_width=act_width, psum_width=psum_width, adder=adder)
        self.act, self.weight = Signal(signed(act_width)), Signal(2)
        self.step, self.capture = Signal(), Signal()
        self.sign, self.psum_width = sign, psum_width

    @property
    def ports(self):
        return [self.act, self.weight, self.step, self.capture]

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        m.d.comb += [pe.act.eq(self.act), pe.weight.eq(self.weight), pe.step.eq(self.step),
                     pe.capture.eq(self.capture)]
        if pe.adder == "ccu2c":
            m.d.comb += pe.act_n.eq(~self.act)
        # The result keeps its value through a reset, as the PE's does (nothing reads it
        # before a capture writes it); the partial sum restarts at 0.
        psum = Signal(signed(self.psum_width))
        result = Signal(signed(self.psum_width), reset_less=True)
        # Code 3 is no weight at all: it must read as 0, like code 1.
        t = Mux(self.weight == Trit.POS.value, self.sign,
                Mux(self.weight == Trit.NEG.value, -self.sign, 0))
        following = (psum + t * self.act)[:self.psum_width].as_signed()
        with m.If(self.capture):
            m.d.sync += [result.eq(following), psum.eq(0)]
        with m.Elif(self.step):
            m.d.sync += psum.eq(following)
        m.d.comb += Assert((pe.psum == psum) & (pe.pass_sum == result))
        return m


def test_pe_equals_the_naive_model_for_all_inputs():
    d = PEAgainstModel()
    r = prove(d, d.ports, mode="induction")
    assert r.proven, r.log
    wrong = PEAgainstModel(sign=-1)
    assert not prove(wrong, wrong.ports, mode="induction").proven


@pytest.mark.parametrize("psum_width", [16, 9])     # an even and an odd number of halves
def test_ecp5_carry_chain_pe_equals_the_naive_model_for_all_inputs(psum_width):
    """The ECP5 PE (``adder="ccu2c"``), with yosys' own model of the CCU2C cell: the LUT
    contents worked out in rtl/ternary_pe.py are checked here, not trusted."""
    d = PEAgainstModel(psum_width=psum_width, adder="ccu2c")
    r = prove(d, d.ports, mode="induction", models=ecp5_carry_model())
    assert r.proven, r.log
    wrong = PEAgainstModel(sign=-1, psum_width=psum_width, adder="ccu2c")
    assert not prove(wrong, wrong.ports, mode="induction", models=ecp5_carry_model()).proven


class LaneAgainstModel(Elaboratable):
    """A lane of the adder-tree engine next to the obvious model: the step's ``sum(t * act)``
    with multiplies, delayed by the tree's latency, accumulated and captured as the lane's
    ``add`` and ``capture`` say. Its accumulator and result must agree in every cycle of every
    input sequence (one's complements, carry-ins and all). ``sign`` breaks the model.
    ``captured``: every sum added is captured too, so the result is each step's sum alone
    (the tree's arithmetic without the accumulation, which SAT proves far faster)."""

    def __init__(self, k: int, adder: str = "generic", sign: int = 1, captured: bool = False):
        self.captured = captured
        self.lane = TreeLane(k=k, acc_width=14, adder=adder)
        self.acts = [Signal(signed(8), name=f"act_{i}") for i in range(k)]
        self.codes = [Signal(2, name=f"code_{i}") for i in range(k)]
        self.add, self.capture = Signal(), Signal()
        self.k, self.sign = k, sign

    @property
    def ports(self):
        return [*self.acts, *self.codes, self.add, self.capture]

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane = lane = self.lane
        for i in range(self.k):
            m.d.comb += lane.weights[i].eq(self.codes[i])
            if lane.inverted:       # the ECP5 lane takes the one's complements
                m.d.comb += lane.act_n[i].eq(~self.acts[i])
            else:
                m.d.comb += lane.act[i].eq(self.acts[i])
        capture = self.capture | self.add if self.captured else self.capture
        m.d.comb += [lane.add.eq(self.add | capture), lane.capture.eq(capture)]
        products = [Mux(c == Trit.POS.value, self.sign, Mux(c == Trit.NEG.value, -self.sign, 0))
                    * a for c, a in zip(self.codes, self.acts)]
        step_sum = Signal(signed(14))
        m.d.comb += step_sum.eq(sum(products))
        # The tree's registers, as delays; like them without a reset (the engine's flags
        # that drive ``add`` restart at 0, so nothing adds what a reset leaves in the tree).
        for level in range(lane.config.latency):
            later = Signal(signed(14), name=f"delayed_{level}", reset_less=True)
            m.d.sync += later.eq(step_sum)
            step_sum = later
        # nor has the accumulator a reset: the lane's is cleared by ``capture`` alone (the
        # engine holds it in a reset, tests/rtl/test_adder_tree.py)
        acc = Signal(signed(14), reset_less=True)
        result = Signal(signed(14), reset_less=True)
        with m.If(capture):
            m.d.sync += [result.eq(acc + step_sum), acc.eq(0)]
        with m.Elif(self.add):
            m.d.sync += acc.eq(acc + step_sum)
        m.d.comb += Assert((lane.acc == acc) & (lane.result == result))
        return m


@pytest.mark.parametrize("adder", ["generic", "ccu2c"])
@pytest.mark.parametrize("k,captured", [(2, False), (4, True)])
def test_tree_lane_equals_the_naive_model(k, captured, adder):
    """Bounded (any inputs, from reset, for the tree's latency and 4 cycles more); the ECP5
    lane with yosys' model of CCU2C. One pair (k = 2: its left-out one rides the
    accumulator's carry-in) with several steps accumulated; two levels (k = 4: an upper
    adder's carry-in too) a step at a time. k = 4 with the accumulation took SAT 5 minutes,
    k = 8 a step at a time more than 10; the cocotb benches run both at k up to 32."""
    models = ecp5_carry_model() if adder == "ccu2c" else ""
    d = LaneAgainstModel(k, adder, captured=captured)
    depth = d.lane.config.latency + 4
    r = prove(d, d.ports, mode="bmc", depth=depth, models=models)
    assert r.proven, r.log
    wrong = LaneAgainstModel(k, adder, sign=-1, captured=captured)
    assert not prove(wrong, wrong.ports, mode="bmc", depth=depth, models=models).proven


class SerialLaneAgainstModel(Elaboratable):
    """A lane of the digit-serial trees next to the obvious model: each digit's ``sum(t * v)``
    with multiplies (``v`` the digit signed when ``top``, else unsigned), delayed by the
    tree's levels, into a Horner register ``h = h * 2**b + sum`` (restarting on ``first``)
    and an accumulator, as the lane's flags say. Their results must agree in every cycle of
    every input sequence. ``sign`` breaks the model."""

    def __init__(self, k: int, digit_bits: int, sign: int = 1):
        from sim.schedule import TreeConfig
        self.lane = SerialTreeLane(config=TreeConfig(k=k, lanes=1, acc_bits=16,
                                                     digit_bits=digit_bits))
        self.digits = [Signal(digit_bits, name=f"digit_{i}") for i in range(k)]
        self.codes = [Signal(2, name=f"code_{i}") for i in range(k)]
        self.top, self.shift, self.first = Signal(), Signal(), Signal()
        self.add, self.capture = Signal(), Signal()
        self.k, self.b, self.sign = k, digit_bits, sign

    @property
    def ports(self):
        return [*self.digits, *self.codes, self.top, self.shift, self.first, self.add,
                self.capture]

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane = lane = self.lane
        cfg = lane.config
        for i in range(self.k):
            m.d.comb += [lane.digits[i].eq(self.digits[i]), lane.weights[i].eq(self.codes[i])]
        m.d.comb += [lane.top.eq(self.top), lane.shift.eq(self.shift),
                     lane.first.eq(self.first), lane.add.eq(self.add),
                     lane.capture.eq(self.capture)]
        values = [Mux(self.top, d.as_signed(), Cat(d, 0).as_signed()) for d in self.digits]
        products = [Mux(c == Trit.POS.value, self.sign, Mux(c == Trit.NEG.value, -self.sign, 0))
                    * v for c, v in zip(self.codes, values)]
        digit_sum = Signal(signed(16))
        m.d.comb += digit_sum.eq(sum(products))
        for level in range(cfg.levels):
            later = Signal(signed(16), name=f"delayed_{level}", reset_less=True)
            m.d.sync += later.eq(digit_sum)
            digit_sum = later
        h = Signal(signed(cfg.act_bits + cfg.levels + 1), reset_less=True)
        with m.If(self.shift):
            m.d.sync += h.eq(Mux(self.first, 0, h << self.b) + digit_sum)
        acc = Signal(signed(16))
        result = Signal(signed(16), reset_less=True)
        with m.If(self.capture):
            m.d.sync += [result.eq(acc + h), acc.eq(0)]
        with m.Elif(self.add):
            m.d.sync += acc.eq(acc + h)
        m.d.comb += Assert(lane.result == result)
        return m


@pytest.mark.parametrize("k,digit_bits", [(2, 2), (4, 1)])
def test_serial_tree_lane_equals_the_naive_model(k, digit_bits):
    """Bounded (any inputs, from reset, for the tree's levels and 6 cycles more): one pair
    with 2-bit digits (the top digit's sign, a step's Horner and accumulation), and two
    levels with 1-bit digits (an upper adder's carry-in). The cocotb benches run k up to 32."""
    d = SerialLaneAgainstModel(k, digit_bits)
    depth = d.lane.config.levels + 6
    r = prove(d, d.ports, mode="bmc", depth=depth)
    assert r.proven, r.log
    wrong = SerialLaneAgainstModel(k, digit_bits, sign=-1)
    assert not prove(wrong, wrong.ports, mode="bmc", depth=depth).proven


class EngineStreams(Elaboratable):
    """A 2x2 engine with free operand streams that keep the stream rules (assumed) and a
    free sink. Asserted: the result stream keeps the rules; ``claim`` adds one more."""

    def __init__(self, claim: str = "rules"):
        self.dut = MatrixEngine(rows=2, cols=2, psum_width=10, acc_width=16)
        self.act_valid, self.weights_valid, self.ready = Signal(), Signal(), Signal()
        self.act = Signal(len(self.dut.act.payload.as_value()))
        self.weights = Signal(len(self.dut.weights.payload.as_value()))
        self.claim = claim

    @property
    def ports(self):
        return [self.act_valid, self.act, self.weights_valid, self.weights, self.ready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [dut.act.valid.eq(self.act_valid), dut.act.payload.as_value().eq(self.act),
                     dut.weights.valid.eq(self.weights_valid),
                     dut.weights.payload.as_value().eq(self.weights),
                     dut.result.ready.eq(self.ready)]
        stream_rule(m, dut.act, Assume, "act")
        stream_rule(m, dut.weights, Assume, "weights")
        stream_rule(m, dut.result, Assert, "result")
        # Result rows owed: rows per final pass taken, minus rows delivered.
        a, res = dut.act, dut.result
        finals, delivered = Signal(8), Signal(8)
        with m.If(a.valid & a.ready & a.payload.last & a.payload.last_chunk):
            m.d.sync += finals.eq(finals + 1)
        with m.If(res.valid & res.ready):
            m.d.sync += delivered.eq(delivered + 1)
        owed = Signal(range(-512, 512))
        m.d.comb += owed.eq(dut.rows * finals - delivered)
        # Cycles in which rows were owed and the sink was ready, but none was offered. After
        # a capture there is one: the first row is in the drain register a cycle later.
        waited = Signal(4)
        with m.If((owed != 0) & self.ready & ~res.valid):
            m.d.sync += waited.eq(waited + 1)
        with m.Else():
            m.d.sync += waited.eq(0)
        if self.claim == "no_loss":
            m.d.comb += Assert((owed >= 0) & (waited <= 1))
        elif self.claim == "impossible":           # two tiles finish within the bound
            m.d.comb += Assert(finals < 2)
        return m


@pytest.mark.parametrize("claim", ["rules", "no_loss"])
def test_engine_streams_keep_the_rules_and_lose_nothing(claim):
    d = EngineStreams(claim)
    r = prove(d, d.ports, mode="bmc", depth=20)
    assert r.proven, r.log


def test_engine_checks_are_not_vacuous():
    # Under the same assumptions two tiles do finish within 20 cycles: the inputs are free
    # enough for the checks above to mean something.
    d = EngineStreams("impossible")
    assert not prove(d, d.ports, mode="bmc", depth=20).proven


class CoreStreams(Elaboratable):
    """The whole device core, as small as it builds, with a free byte input that keeps the
    stream rules: its byte output must keep them too. ``silent`` claims it never answers."""

    def __init__(self, silent: bool = False):
        self.dut = DeviceCore(rows=1, cols=1, weight_words=2, act_bytes=4, result_rows=2,
                              max_payload=26, frame_timeout=8, program_words=len(FIRMWARE),
                              counter_bits=32)
        self.rx_valid, self.rx, self.tx_ready = Signal(), Signal(8), Signal()
        self.silent = silent

    @property
    def ports(self):
        return [self.rx_valid, self.rx, self.tx_ready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [dut.rx.valid.eq(self.rx_valid), dut.rx.payload.eq(self.rx),
                     dut.tx.ready.eq(self.tx_ready)]
        stream_rule(m, dut.rx, Assume, "rx")
        stream_rule(m, dut.tx, Assert, "tx")
        if self.silent:
            m.d.comb += Assert(~dut.tx.valid)
        return m


def test_core_byte_output_keeps_the_stream_rules():
    d = CoreStreams()
    r = prove(d, d.ports, mode="bmc", depth=20)
    assert r.proven, r.log
    # Within those 20 cycles the solver can send a whole valid request and get an answer
    # going: the check covers real responses, not only silence.
    d = CoreStreams(silent=True)
    assert not prove(d, d.ports, mode="bmc", depth=20).proven
