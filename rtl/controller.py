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

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.commands import Status
from firmware.isa import (ARG_REGISTERS, INSTRUCTION_LAYOUT, REGISTERS, WORD_BITS, Fault, Op,
                          Param, register_bits, split_k_limit, split_layout, sweep_layout)

from .divider import Divider
from .synth import NO_RW_CHECK


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
    split : Out(split_layout(bits))
        The current K split, stable while the sequencer works (SPLIT waits for ``idle``).
    set_results, results : Out
        One cycle of ``set_results`` moves the sequencer's result pointer to ``results``.
    sweep : Out(stream.Signature(sweep_layout(bits)))
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
        #: Register width (``isa.register_bits``): what the build's memories need, so a small
        #: board gets narrower registers, adders and divider. Every value entering a register
        #: saturates to it, as ``firmware.machine`` does.
        self.bits = bits = register_bits(self.params)
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
            "split": Out(split_layout(bits)),
            "set_results": Out(1),
            "results": Out(bits),
            "sweep": Out(stream.Signature(sweep_layout(bits))),
            "idle": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.program_words

        m.submodules.program = program = Memory(shape=WORD_BITS, depth=depth, init=self.init,
                                                attrs=NO_RW_CHECK)    # written only when stopped
        write = program.write_port()
        read = program.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(self.write_en)]
        bits = self.bits
        m.submodules.divider = divider = Divider(bits)

        regs = Array(Signal(bits, name=f"r{i}") for i in range(REGISTERS))
        ins = Signal(INSTRUCTION_LAYOUT)
        m.d.comb += ins.as_value().eq(read.data)
        a, b, d = regs[ins.ra], regs[ins.rb], regs[ins.rd]
        imm = ins.imm

        pc = Signal(range(depth + 1))       # address of the instruction on the read port
        fetch = Signal(range(depth + 1))    # address read this cycle (the next instruction)
        m.d.comb += [read.addr.eq(fetch), fetch.eq(pc)]

        loop_active = Signal()
        loop_start, loop_end = Signal(range(depth + 1)), Signal(len(imm))
        loop_count = Signal(bits)
        split_valid = Signal()

        # Saturating unsigned arithmetic (firmware.isa): computed two bits wider, then clamped.
        # Wide enough for a register plus a register, or plus ADDI's 17-bit signed immediate.
        wide = max(bits, len(ins.imm)) + 2
        reg_max = (1 << bits) - 1

        def saturated(value):
            # ``value`` is a ``wide``-bit two's-complement result.
            negative = value[wide - 1]
            over = ~negative & (value[bits:wide - 1] != 0)
            return Mux(negative, 0, Mux(over, reg_max, value[:bits]))

        def clamped(value):
            # An unsigned value wider than the registers (RUN arguments, LI values).
            if len(value) <= bits:
                return value
            return Mux(value[bits:] != 0, reg_max, value[:bits])

        imm_ext = Cat(imm, imm[-1].replicate(wide - len(imm)))
        add_result = Signal(wide)
        sub_result = Signal(wide)
        addi_result = Signal(wide)
        sweep_next = Signal(wide)       # SWEEP's rd + K
        alu = Signal(wide)              # ADD, SUB, ADDI: the sum, saturated in WRITE
        m.d.comb += [add_result.eq(a + b), sub_result.eq(a - b), addi_result.eq(a + imm_ext),
                     sweep_next.eq(d + self.split.k)]

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
        dividend_k = Signal(bits)            # SPLIT's K while its division runs
        divisor_n = Signal(bits)
        div_dest = Signal(range(REGISTERS))
        div_rem = Signal()
        split_too_long = Signal()
        taken = Signal()            # BRANCH: the branch is taken / the LOOP skips its body
        taking_loop = Signal()      # BRANCH: the instruction is a LOOP

        with m.FSM(name="control"):
            with m.State("STOPPED"):
                with m.If(self.start):
                    m.d.comb += fetch.eq(self.entry)
                    m.d.sync += [pc.eq(self.entry), loop_active.eq(0), split_valid.eq(0),
                                 status.eq(Status.OK), fault_cause.eq(Fault.NONE), fault_pc.eq(0)]
                    for i in range(REGISTERS):
                        value = clamped(self.args[i]) if i < ARG_REGISTERS else 0
                        m.d.sync += regs[i].eq(value)
                    m.next = "RUN"

            with m.State("RUN"):
                with m.Switch(ins.op):
                    with m.Case(Op.LI):
                        m.d.sync += d.eq(clamped(Cat(imm, ins.rb, ins.ra)))
                        retire()
                    # Arithmetic takes two cycles: the sum is registered, then saturated and
                    # written, so the adder and the saturation are not one long path.
                    with m.Case(Op.ADD):
                        m.d.sync += alu.eq(add_result)
                        m.next = "WRITE"
                    with m.Case(Op.SUB):
                        m.d.sync += alu.eq(sub_result)
                        m.next = "WRITE"
                    with m.Case(Op.ADDI):
                        m.d.sync += alu.eq(addi_result)
                        m.next = "WRITE"
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
                                    m.d.sync += d.eq(min(value, reg_max))
                                    retire()
                            with m.Default():
                                fault(Fault.ILLEGAL_INSTRUCTION)
                    with m.Case(Op.BEQ, Op.BNE, Op.BLTU, Op.BGEU, Op.LOOP):
                        with m.If(imm <= pc):
                            fault(Fault.BACKWARD_BRANCH)
                        with m.Elif(ins.op == Op.LOOP):
                            with m.If(loop_active):
                                fault(Fault.NESTED_LOOP)
                            with m.Else():
                                m.d.sync += [taken.eq(a == 0), taking_loop.eq(1)]
                                m.next = "BRANCH"
                        with m.Else():
                            with m.Switch(ins.op):
                                with m.Case(Op.BEQ):
                                    m.d.sync += taken.eq(a == b)
                                with m.Case(Op.BNE):
                                    m.d.sync += taken.eq(a != b)
                                with m.Case(Op.BLTU):
                                    m.d.sync += taken.eq(a < b)
                                with m.Case(Op.BGEU):
                                    m.d.sync += taken.eq(a >= b)
                            m.d.sync += taking_loop.eq(0)
                            m.next = "BRANCH"
                    with m.Case(Op.SPLIT):
                        with m.If(self.idle):
                            with m.If((a == 0) | (a > split_k_limit(params)) | (b == 0) |
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
                        with m.Elif((b == 0) | (b > params[Param.ACT_BYTES])):
                            fault(Fault.BAD_SWEEP)
                        with m.Else():
                            m.d.comb += [self.sweep.valid.eq(1),
                                         self.sweep.payload.weights.eq(d),
                                         self.sweep.payload.acts.eq(a),
                                         self.sweep.payload.tokens.eq(b)]
                            with m.If(self.sweep.ready):
                                m.d.sync += d.eq(saturated(sweep_next))
                                retire()
                    with m.Case(Op.HALT):
                        m.next = "FINISH"
                    with m.Case(Op.FAIL):
                        m.d.sync += status.eq(Status.BAD_ARGUMENT)
                        m.next = "FINISH"
                    with m.Default():
                        fault(Fault.ILLEGAL_INSTRUCTION)

            # The second cycle of a branch or LOOP (the instruction is still on the read port):
            # the decision was registered in the first, so a compare never sits in front of
            # the next fetch address. Taken or not, a branch costs two cycles; the loop's
            # jump back (from registers only) stays free.
            with m.State("BRANCH"):
                with m.If(taking_loop):
                    with m.If(taken):                   # LOOP of 0 iterations: skip the body
                        jump(imm + 1)
                    with m.Else():
                        m.d.sync += [loop_active.eq(1), loop_start.eq(pc + 1),
                                     loop_end.eq(imm), loop_count.eq(a)]
                        jump(pc + 1)
                with m.Elif(taken):
                    jump(imm)
                    with m.If(loop_active & (imm > loop_end)):
                        m.d.sync += loop_active.eq(0)
                with m.Else():
                    retire()

            with m.State("WRITE"):
                m.d.sync += d.eq(saturated(alu))
                retire()

            with m.State("DIVIDE"):
                with m.If(divider.done):
                    m.d.sync += regs[div_dest].eq(Mux(div_rem, divider.remainder,
                                                      divider.quotient))
                    retire()

            # The pass-length check gets a cycle of its own: an add and a compare in front of
            # the next fetch address would be the processor's longest path.
            with m.State("SPLIT"):
                with m.If(divider.done):
                    longest = divider.quotient + (divider.remainder != 0)
                    m.d.sync += split_too_long.eq(longest > params[Param.PASS_K_MAX])
                    m.next = "SPLIT_CHECK"
            with m.State("SPLIT_CHECK"):
                with m.If(split_too_long):
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
