"""The control processor: runs the programs of ``firmware.isa`` and feeds sweeps to the sequencer.

One instruction per cycle from a synchronous program memory: the next address is computed from
the instruction on the read port in the same cycle (sequential, branch target or the
zero-overhead ``LOOP``'s jump back), so nothing needs predicting and taken branches cost
nothing. An instruction that waits (a division, a sweep the sequencer cannot take yet, an
instruction that needs the sequencer idle) keeps reading its own address until it retires.

``firmware.machine`` is the reference: for every program the controller must issue the same
splits, result pointers and sweeps in the same order and end with the same status (or fault,
pc and cause).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.commands import Status
from firmware.isa import (ARG_REGISTERS, INSTRUCTION_LAYOUT, REG_MAX, REGISTERS, SPLIT_LAYOUT,
                          SWEEP_LAYOUT, WORD_BITS, Fault, Op, Param)

from .divider import Divider


class Controller(wiring.Component):
    """The control processor of the device core.

    Parameters
    ----------
    program_words : int
        Depth of the program memory.
    params : dict[Param, int]
        What ``CFG`` reads (the build's shape and memory sizes).
    init : sequence of int
        The program memory's contents at power-up (``firmware.programs.FIRMWARE``).

    Members
    -------
    write_addr, write_data, write_en : In
        Program memory write port (``WRITE_PROGRAM``).
    start, entry, args : In
        Run the program from ``entry`` with ``args`` in r0..r5 (ignored while running).
    done : Out(1)
        One cycle when the program has ended and the sequencer is idle; ``status`` then holds
        OK, BAD_ARGUMENT or PROGRAM_FAULT (with ``fault_pc`` and ``fault_cause``).
    split : Out(SPLIT_LAYOUT)
        The current K split, stable while the sequencer works (SPLIT waits for ``idle``).
    set_results, results : Out
        One cycle of ``set_results`` moves the sequencer's result pointer to ``results``.
    sweep : Out(stream.Signature(SWEEP_LAYOUT))
        Sweeps for the sequencer.
    idle : In(1)
        The sequencer has nothing in flight (no sweep pending, no step left, no result due).
    """

    def __init__(self, *, program_words: int, params: dict, init=()):
        if len(init) > program_words:
            raise ValueError(f"the initial program has {len(init)} words, more than the "
                             f"{program_words}-word program memory")
        self.program_words = program_words
        self.params = {Param(k): int(v) for k, v in params.items()}
        missing = set(Param) - set(self.params)
        if missing:
            raise ValueError(f"missing parameters: {', '.join(p.name for p in missing)}")
        self.init = list(init)
        addr_shape = range(program_words)
        super().__init__({
            "write_addr": In(addr_shape),
            "write_data": In(WORD_BITS),
            "write_en": In(1),
            "start": In(1),
            "entry": In(addr_shape),
            "args": In(data.ArrayLayout(WORD_BITS, ARG_REGISTERS)),
            "done": Out(1),
            "status": Out(Status),
            "fault_pc": Out(16),
            "fault_cause": Out(Fault),
            "split": Out(SPLIT_LAYOUT),
            "set_results": Out(1),
            "results": Out(WORD_BITS),
            "sweep": Out(stream.Signature(SWEEP_LAYOUT)),
            "idle": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.program_words

        m.submodules.program = program = Memory(shape=WORD_BITS, depth=depth, init=self.init)
        write = program.write_port()
        read = program.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(self.write_en)]
        m.submodules.divider = divider = Divider(WORD_BITS)

        regs = Array(Signal(WORD_BITS, name=f"r{i}") for i in range(REGISTERS))
        ins = Signal(INSTRUCTION_LAYOUT)
        m.d.comb += ins.as_value().eq(read.data)
        a, b, d = regs[ins.ra], regs[ins.rb], regs[ins.rd]
        imm = ins.imm

        pc = Signal(range(depth + 1))       # address of the instruction on the read port
        fetch = Signal(range(depth + 1))    # address read this cycle (the next instruction)
        m.d.comb += [read.addr.eq(fetch), fetch.eq(pc)]

        loop_active = Signal()
        loop_start, loop_end = Signal(range(depth + 1)), Signal(len(imm))
        loop_count = Signal(WORD_BITS)
        split_valid = Signal()

        # Saturating unsigned arithmetic (firmware.isa): one wide adder for ADD, SUB, ADDI.
        wide = WORD_BITS + 2

        def saturated(value):
            # ``value`` is a (WORD_BITS + 2)-bit two's-complement result.
            negative = value[wide - 1]
            over = ~negative & value[WORD_BITS]
            return Mux(negative, 0, Mux(over, REG_MAX, value[:WORD_BITS]))

        imm_ext = Cat(imm, imm[-1].replicate(wide - len(imm)))
        add_result = Signal(wide)
        sub_result = Signal(wide)
        addi_result = Signal(wide)
        zero2 = Const(0, 2)
        m.d.comb += [add_result.eq(Cat(a, zero2) + Cat(b, zero2)),
                     sub_result.eq(Cat(a, zero2) - Cat(b, zero2)),
                     addi_result.eq(Cat(a, zero2) + imm_ext)]

        status = Signal(Status)
        fault_pc = Signal(16)
        fault_cause = Signal(Fault)

        def fault(cause):
            m.d.sync += [fault_pc.eq(pc), fault_cause.eq(cause),
                         status.eq(Status.PROGRAM_FAULT)]
            m.next = "FINISH"

        def jump(target):
            """Continue at ``target``; leaving program memory is a fault of this instruction."""
            with m.If(target >= depth):
                fault(Fault.PC_OUT_OF_RANGE)
            with m.Else():
                m.d.comb += fetch.eq(target)
                m.d.sync += pc.eq(target)
                m.next = "RUN"

        def retire():
            """Finish the instruction at ``pc``: the next one in sequence, or back to the start
            of the loop body after its last instruction (no cycle lost either way)."""
            at_end = loop_active & (pc == loop_end)
            with m.If(at_end & (loop_count != 1)):
                m.d.sync += loop_count.eq(loop_count - 1)
                jump(loop_start)
            with m.Else():
                with m.If(at_end):
                    m.d.sync += loop_active.eq(0)
                jump(pc + 1)

        m.d.comb += [self.status.eq(status), self.fault_pc.eq(fault_pc),
                     self.fault_cause.eq(fault_cause), self.results.eq(a)]

        params = self.params
        dividend_k = Signal(WORD_BITS)       # SPLIT's K while its division runs
        divisor_n = Signal(WORD_BITS)
        div_dest = Signal(range(REGISTERS))
        div_rem = Signal()

        with m.FSM(name="control"):
            with m.State("STOPPED"):
                with m.If(self.start):
                    m.d.comb += fetch.eq(self.entry)
                    m.d.sync += [pc.eq(self.entry), loop_active.eq(0), split_valid.eq(0),
                                 status.eq(Status.OK), fault_cause.eq(Fault.NONE), fault_pc.eq(0)]
                    for i in range(REGISTERS):
                        value = self.args[i] if i < ARG_REGISTERS else 0
                        m.d.sync += regs[i].eq(value)
                    m.next = "RUN"

            with m.State("RUN"):
                with m.Switch(ins.op):
                    with m.Case(Op.LI):
                        m.d.sync += d.eq(Cat(imm, ins.rb, ins.ra))
                        retire()
                    with m.Case(Op.ADD):
                        m.d.sync += d.eq(saturated(add_result))
                        retire()
                    with m.Case(Op.SUB):
                        m.d.sync += d.eq(saturated(sub_result))
                        retire()
                    with m.Case(Op.ADDI):
                        m.d.sync += d.eq(saturated(addi_result))
                        retire()
                    with m.Case(Op.DIVU, Op.REMU):
                        with m.If(b == 0):
                            fault(Fault.DIVIDE_BY_ZERO)
                        with m.Else():
                            m.d.comb += [divider.start.eq(1), divider.dividend.eq(a),
                                         divider.divisor.eq(b)]
                            m.d.sync += [div_dest.eq(ins.rd),
                                         div_rem.eq(ins.op == Op.REMU)]
                            m.next = "DIVIDE"
                    with m.Case(Op.CFG):
                        with m.Switch(imm):
                            for param, value in params.items():
                                with m.Case(param):
                                    m.d.sync += d.eq(value)
                                    retire()
                            with m.Default():
                                fault(Fault.ILLEGAL_INSTRUCTION)
                    with m.Case(Op.BEQ, Op.BNE, Op.BLTU, Op.BGEU, Op.LOOP):
                        with m.If(imm <= pc):
                            fault(Fault.BACKWARD_BRANCH)
                        with m.Elif(ins.op == Op.LOOP):
                            with m.If(loop_active):
                                fault(Fault.NESTED_LOOP)
                            with m.Elif(a == 0):
                                jump(imm + 1)
                            with m.Else():
                                m.d.sync += [loop_active.eq(1), loop_start.eq(pc + 1),
                                             loop_end.eq(imm), loop_count.eq(a)]
                                jump(pc + 1)
                        with m.Else():
                            taken = Signal()
                            with m.Switch(ins.op):
                                with m.Case(Op.BEQ):
                                    m.d.comb += taken.eq(a == b)
                                with m.Case(Op.BNE):
                                    m.d.comb += taken.eq(a != b)
                                with m.Case(Op.BLTU):
                                    m.d.comb += taken.eq(a < b)
                                with m.Case(Op.BGEU):
                                    m.d.comb += taken.eq(a >= b)
                            with m.If(taken):
                                jump(imm)
                                with m.If(loop_active & (imm > loop_end)):
                                    m.d.sync += loop_active.eq(0)
                            with m.Else():
                                retire()
                    with m.Case(Op.SPLIT):
                        with m.If(self.idle):
                            with m.If((a == 0) | (a > params[Param.K_MAX]) | (b == 0) |
                                      (b > a)):
                                fault(Fault.BAD_SPLIT)
                            with m.Else():
                                m.d.comb += [divider.start.eq(1), divider.dividend.eq(a),
                                             divider.divisor.eq(b)]
                                m.d.sync += [dividend_k.eq(a), divisor_n.eq(b),
                                             split_valid.eq(0)]
                                m.next = "SPLIT"
                    with m.Case(Op.SETR):
                        with m.If(self.idle):
                            m.d.comb += self.set_results.eq(1)
                            retire()
                    with m.Case(Op.SWEEP):
                        with m.If(~split_valid):
                            fault(Fault.NO_SPLIT)
                        with m.Elif(b == 0):
                            fault(Fault.EMPTY_SWEEP)
                        with m.Else():
                            m.d.comb += [self.sweep.valid.eq(1),
                                         self.sweep.payload.weights.eq(d),
                                         self.sweep.payload.acts.eq(a),
                                         self.sweep.payload.tokens.eq(b)]
                            with m.If(self.sweep.ready):
                                sum_k = Cat(d, Const(0, 2)) + self.split.k
                                m.d.sync += d.eq(saturated(sum_k))
                                retire()
                    with m.Case(Op.HALT):
                        m.next = "FINISH"
                    with m.Case(Op.FAIL):
                        m.d.sync += status.eq(Status.BAD_ARGUMENT)
                        m.next = "FINISH"
                    with m.Default():
                        fault(Fault.ILLEGAL_INSTRUCTION)

            with m.State("DIVIDE"):
                with m.If(divider.done):
                    m.d.sync += regs[div_dest].eq(Mux(div_rem, divider.remainder,
                                                      divider.quotient))
                    retire()

            with m.State("SPLIT"):
                with m.If(divider.done):
                    longest = divider.quotient + (divider.remainder != 0)
                    with m.If(longest > params[Param.PASS_K_MAX]):
                        fault(Fault.BAD_SPLIT)
                    with m.Else():
                        m.d.sync += [self.split.k.eq(dividend_k), self.split.n.eq(divisor_n),
                                     self.split.q.eq(divider.quotient),
                                     self.split.r.eq(divider.remainder), split_valid.eq(1)]
                        retire()

            # The response goes out once everything issued has finished.
            with m.State("FINISH"):
                with m.If(self.idle):
                    m.d.comb += self.done.eq(1)
                    m.next = "STOPPED"
        return m
