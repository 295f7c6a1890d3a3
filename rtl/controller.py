"""The control processor: runs the programs of ``firmware.isa`` and feeds sweeps to the sequencer.

One instruction per cycle, in two stages. The fetch stage reads the synchronous program memory
at an address chosen from registers only (the next word, or the start of the ``LOOP`` body
after its last instruction, which the fetch stage tracks itself), and the word read is
registered before it is decoded. So neither the memory's output nor the decode sits in front of
the next fetch address: that loop was the processor's longest path, and it held even a 2x2
build at 66-68 MHz on a ULX3S. The zero-overhead ``LOOP``'s jump back stays free; a taken
branch, a ``LOOP``'s start or skip and a program's start cost one cycle more, to refill the
stage. An instruction that waits (a division, a sweep the sequencer cannot take yet, an
instruction that needs the sequencer idle) holds both stages, the memory's read port included.

``firmware.machine`` is the reference: for every program the controller must issue the same
splits, result pointers and sweeps in the same order and end with the same status (or fault,
pc and cause), in the cycles it counts.
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
    program_ram_style : str or None
        The program memory's ``ram_style`` for yosys (synthesis only): "distributed" keeps it
        in LUT RAM on ECP5, where yosys otherwise may pick a block RAM, whose 5.8 ns
        clock-to-out starts the operand read; None lets the tools choose.
    registered_checks : bool
        Keep the operand checks and the instruction decode off the control's longest paths
        (ECP5 builds, and simulation): SPLIT's checks of K and n wait for its division, a
        SWEEP's checks gate only its sweep and the next state, a zero divisor is a fault once
        DIVU's or REMU's division is done, every fault is recorded a cycle after it is
        decided (state FAULT), and whether LI, CFG, SETR and SWEEP retire at once is decoded
        as they are fetched. A fault then takes a cycle more, and a SPLIT refused for K or n
        and a division by zero the cycles of their division too (``firmware.machine.run``'s
        ``registered_checks``); nothing else changes. The 16x16 ULX3S-12F build went from
        87.2 to 94.3 MHz. Off on iCE40: the UP5K's 2x2 core, at 5,209 to 5,255 of its 5,280
        cells, overflowed it by up to 188.

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
    sweeping : Out(1)
        With ``registered_checks`` only: ``ins`` is a SWEEP and the controller is running it,
        decoded at fetch. It holds in every cycle a sweep is handed over (and in some where
        none is: a SWEEP waiting for ``ready``, or failing its checks), without the checks'
        compares that ``sweep.valid`` waits for.
    """

    def __init__(self, *, program_words: int, params: dict, init=(),
                 program_ram_style: str | None = None, registered_checks: bool = True):
        if len(init) > program_words:
            raise ValueError(f"the initial program has {len(init)} words, more than the "
                             f"{program_words}-word program memory")
        self.program_words = program_words
        self.program_ram_style = program_ram_style
        self.registered_checks = registered_checks
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
        signature = {
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
        }
        if registered_checks:
            signature["sweeping"] = Out(1)
        super().__init__(signature)

    def elaborate(self, platform):
        m = Module()
        depth = self.program_words

        # NO_RW_CHECK: written only while stopped, when what the port reads is used only in the
        # cycle of a start, and the core writes no word in that cycle.
        attrs = dict(NO_RW_CHECK)
        if self.program_ram_style:
            attrs["ram_style"] = self.program_ram_style
        m.submodules.program = program = Memory(shape=WORD_BITS, depth=depth, init=self.init,
                                                attrs=attrs)
        write = program.write_port()
        read = program.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(self.write_en)]
        bits = self.bits
        m.submodules.divider = divider = Divider(bits)

        regs = Array(Signal(bits, name=f"r{i}") for i in range(REGISTERS))
        ins = Signal(INSTRUCTION_LAYOUT)    # the instruction executing, registered from the port
        imm = ins.imm

        # The operands are read as the instruction moves into ``ins``, so no register-file
        # multiplexer sits in front of an execute-stage compare (that was the longest path once
        # the fetch stage was in). Every register write happens in the cycle its instruction
        # retires, which is the cycle the next one is read: that value is forwarded.
        a, b, d = (Signal(bits, name=f"operand_{n}") for n in "abd")
        write_en, write_sel, write_value = Signal(), Signal(range(REGISTERS)), Signal(bits)
        with m.If(write_en):
            m.d.sync += regs[write_sel].eq(write_value)

        def write(sel, value):
            if self.registered_checks:      # which register, and whether: after the FSM
                m.d.comb += write_value.eq(value)
            else:
                m.d.comb += [write_en.eq(1), write_sel.eq(sel), write_value.eq(value)]

        def operand(sel):
            return Mux(write_en & (write_sel == sel), write_value, regs[sel])

        pc = Signal(range(depth + 1))       # address of ``ins``
        next_pc = Signal(range(depth + 1))  # address of the word on the read port (depth: none)

        # The loop, as the fetch stage runs it: it decides what follows the word on the read
        # port as that word moves into ``ins``, so these registers are one instruction ahead
        # of ``ins``; ``ins_ended_loop`` says that ``ins`` was the last instruction of the loop.
        loop_active = Signal()
        loop_start, loop_end = Signal(range(depth + 1)), Signal(len(imm))
        loop_count = Signal(bits)           # passes through the body left, this one included
        last_pass = Signal()                # loop_count == 1, registered with it: the compare
                                            # stays out of the fetch address's path
        ins_ended_loop = Signal()
        split_valid = Signal()
        # ``loop_active & (next_pc == loop_end)``, kept up to date with ``next_pc`` (so set
        # from the value each update gives it), since in front of the fetch address the
        # compare was the longest path; ``loop_one_body``: the body is one instruction long.
        at_loop_end = Signal()
        loop_one_body = Signal()
        redirect_at_end = Signal()          # at_loop_end after the redirect of this cycle
        # Whether the word after the one on the read port is the loop's start. With
        # ``registered_checks`` a register of its own, set with at_loop_end from the values
        # each update gives it and last_pass: the AND of the two in front of the program
        # memory's address was the ULX3S-12F's longest path at 100 MHz once the branch's
        # redirect was a register (10.26 ns).
        if self.registered_checks:
            loop_back = Signal()
            redirect_last_pass = Signal()   # last_pass after the redirect of this cycle
            m.d.comb += redirect_last_pass.eq(last_pass)    # unless a LOOP starts (BRANCH)
        else:
            loop_back = at_loop_end & ~last_pass
            redirect_last_pass = last_pass  # (unused)

        def loop_end_is(at_end, last=last_pass):
            """Set at_loop_end, with last_pass holding ``last`` after this cycle."""
            m.d.sync += at_loop_end.eq(at_end)
            if self.registered_checks:
                m.d.sync += loop_back.eq(at_end & ~last)
        shift = Signal()        # ``ins`` retires: the word on the read port replaces it
        # With ``registered_checks``, whether ``ins`` retires in its first cycle, decoded as it
        # is fetched: the decoder in front of ``shift`` (the program port's enable, and every
        # fetch register's) was the longest path once the operand checks were off it. LI and a
        # known CFG retire at once, SETR once the sequencer is idle, SWEEP once it takes it.
        ins_retires, ins_is_setr, ins_is_sweep = Signal(), Signal(), Signal()
        redirect = Signal()     # continue at ``jump_to``: the word on the read port is dropped
        jump_to = Signal(len(imm) + 1)      # a branch's or LOOP's target, registered with
        jump_ok = Signal()                  # whether it lies in program memory
        # While stopped the port reads the entry word every cycle, whether or not a start comes:
        # the start is decided from the command being dispatched (its length and entry checked),
        # and in front of the program memory's address that decision was the longest path.
        # With ``registered_checks`` "stopped" and "redirect" are registers of their own, set
        # with the state they stand for, rather than decoded from it: in front of the program
        # memory's address (LUT RAM, read as the address settles) the decode of the BRANCH
        # state was the ULX3S-12F's longest path at 100 MHz (10.29 ns). "redirect" is then
        # decided with the branch, before ``jump_ok`` is checked: a jump out of program memory
        # redirects the fetch as well as faulting, and the fault ends the program, so the word
        # fetched is never used.
        stopped = Signal(init=1) if self.registered_checks else Signal()
        will_redirect = Signal()            # ``redirect`` in the next cycle
        start_now = stopped & self.start
        if self.registered_checks:
            # ``next_pc + 1`` as a register, set with ``next_pc`` from the value each update
            # gives it: the adder in front of the program memory's address (LUT RAM, read
            # as the address settles) was the ULX3S-25F's longest path at 90 MHz (11.2 ns).
            successor = Signal(len(next_pc) + 1)

            def goes_to(value):
                m.d.sync += successor.eq(value[:len(next_pc)] + 1)
        else:
            successor = next_pc + 1

            def goes_to(value):
                pass
        following = Mux(loop_back, loop_start, successor)
        m.d.comb += [read.addr.eq(Mux(stopped, self.entry, Mux(redirect, jump_to, following))),
                     read.en.eq(stopped | redirect | shift)]
        with m.If(start_now):
            m.d.sync += next_pc.eq(self.entry)
            loop_end_is(0)
            goes_to(self.entry)
        with m.Elif(redirect):
            m.d.sync += next_pc.eq(jump_to)
            loop_end_is(redirect_at_end, redirect_last_pass)
            goes_to(jump_to)
        with m.Elif(shift):
            goes_to(following)
            word = INSTRUCTION_LAYOUT(read.data)
            if self.registered_checks:
                known_cfg = Cat(word.imm == param for param in self.params).any()
                m.d.sync += [ins_retires.eq((word.op == Op.LI) | ((word.op == Op.CFG) & known_cfg)),
                             ins_is_setr.eq(word.op == Op.SETR),
                             ins_is_sweep.eq(word.op == Op.SWEEP)]
            m.d.sync += [ins.as_value().eq(read.data), pc.eq(next_pc), next_pc.eq(following),
                         ins_ended_loop.eq(at_loop_end & ~loop_back),
                         a.eq(operand(word.ra)), b.eq(operand(word.rb)), d.eq(operand(word.rd))]
            with m.If(loop_back):
                m.d.sync += [loop_count.eq(loop_count - 1), last_pass.eq(loop_count == 2)]
                loop_end_is(loop_one_body, loop_count == 2)
            with m.Elif(at_loop_end):
                m.d.sync += loop_active.eq(0)
                loop_end_is(0)
            with m.Else():
                loop_end_is(loop_active & (successor == loop_end))

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

        # With ``registered_checks`` a fault is recorded a cycle later, in FAULT, from
        # ``pending_fault`` and ``fault_at`` (``pc`` a cycle ago: a SWEEP that faults may have
        # moved on): the decision, several levels of decode of ``ins``, then feeds two local
        # registers and the state, not the status registers the rest of the core reads.
        pending_fault = Signal(Fault)
        fault_at = Signal.like(pc)
        if self.registered_checks:
            m.d.sync += fault_at.eq(pc)

        def fault(cause):
            if self.registered_checks:
                m.d.sync += pending_fault.eq(cause)
                m.next = "FAULT"
            else:
                m.d.sync += [fault_pc.eq(pc), fault_cause.eq(cause),
                             status.eq(Status.PROGRAM_FAULT)]
                m.next = "FINISH"

        def jump():
            """Continue at ``jump_to`` after a cycle that refills the fetch stage; leaving
            program memory is a fault of this instruction."""
            with m.If(~jump_ok):
                fault(Fault.PC_OUT_OF_RANGE)
            with m.Else():
                if not self.registered_checks:      # otherwise will_redirect says so
                    m.d.comb += redirect.eq(1)
                m.next = "FILL"

        def retire(decoded=False):
            """Finish the instruction at ``pc``: the fetch stage has the next one (in sequence,
            or the start of the loop body after its last instruction) unless that would leave
            program memory, which is a fault of this instruction. ``decoded``: ``shift`` comes
            from the flags decoded at fetch (after the FSM below), not from this case's own
            conditions (LI, CFG, SETR and SWEEP with ``registered_checks``)."""
            with m.If(next_pc >= depth):
                fault(Fault.PC_OUT_OF_RANGE)
            with m.Else():
                if not decoded:
                    m.d.comb += shift.eq(1)
                m.next = "RUN"

        def retire_at_once():
            """:func:`retire` for LI, CFG, SETR and SWEEP, which may retire in their first
            cycle."""
            retire(decoded=self.registered_checks)

        m.d.comb += [self.status.eq(status), self.fault_pc.eq(fault_pc),
                     self.fault_cause.eq(fault_cause), self.results.eq(a)]

        params = self.params
        dividend_k = Signal(bits)            # SPLIT's K while its division runs
        divisor_n = Signal(bits)
        div_dest = Signal(range(REGISTERS))
        div_rem = Signal()
        div_by_zero = Signal()      # DIVU, REMU with registered_checks: the divisor was 0
        split_too_long = Signal()
        split_args_bad = Signal()   # SPLIT: K or n out of range, registered as the division starts
        taken = Signal()            # BRANCH: the branch is taken / the LOOP skips its body
        taking_loop = Signal()      # BRANCH: the instruction is a LOOP

        if self.registered_checks:
            m.d.sync += will_redirect.eq(0)     # set below as the jump is decided
            m.d.comb += redirect.eq(will_redirect)

        with m.FSM(name="control") as control:
            with m.State("STOPPED"):
                if not self.registered_checks:
                    m.d.comb += stopped.eq(1)
                with m.If(self.start):
                    if self.registered_checks:
                        m.d.sync += stopped.eq(0)
                    m.d.sync += [loop_active.eq(0), split_valid.eq(0),
                                 status.eq(Status.OK), fault_cause.eq(Fault.NONE), fault_pc.eq(0)]
                    for i in range(REGISTERS):
                        value = clamped(self.args[i]) if i < ARG_REGISTERS else 0
                        m.d.sync += regs[i].eq(value)
                    m.next = "FILL"

            # The first word of the program, or a jump's target, is on the read port.
            with m.State("FILL"):
                m.d.comb += shift.eq(1)
                m.next = "RUN"

            with m.State("RUN"):
                with m.Switch(ins.op):
                    with m.Case(Op.LI):
                        write(ins.rd, clamped(Cat(imm, ins.rb, ins.ra)))
                        retire_at_once()
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
                        divide = [divider.start.eq(1), divider.dividend.eq(a),
                                  divider.divisor.eq(b)]
                        destination = [div_dest.eq(ins.rd), div_rem.eq(ins.op == Op.REMU)]
                        if self.registered_checks:
                            # As SPLIT's: the division starts whatever the divisor, and a
                            # zero one is a fault once it is done, so the compare feeds a
                            # register rather than the fault decision (the 85F's longest
                            # path once SWEEP's and SPLIT's checks were off it).
                            m.d.comb += divide
                            m.d.sync += [*destination, div_by_zero.eq(b == 0)]
                            m.next = "DIVIDE"
                        else:
                            with m.If(b == 0):
                                fault(Fault.DIVIDE_BY_ZERO)
                            with m.Else():
                                m.d.comb += divide
                                m.d.sync += destination
                                m.next = "DIVIDE"
                    with m.Case(Op.CFG):
                        with m.Switch(imm):
                            for param, value in params.items():
                                with m.Case(param):
                                    write(ins.rd, min(value, reg_max))
                                    retire_at_once()
                            with m.Default():
                                fault(Fault.ILLEGAL_INSTRUCTION)
                    with m.Case(Op.BEQ, Op.BNE, Op.BLTU, Op.BGEU, Op.LOOP):
                        # Where a jump would go: a LOOP skips its body or (refetching it)
                        # starts it, a branch goes to its target.
                        skip = a == 0
                        with m.If(ins.op == Op.LOOP):
                            m.d.sync += [jump_to.eq(Mux(skip, imm + 1, pc + 1)),
                                         jump_ok.eq(Mux(skip, imm < depth - 1, pc < depth - 1))]
                        with m.Else():
                            m.d.sync += [jump_to.eq(imm), jump_ok.eq(imm < depth)]
                        with m.If(imm <= pc):
                            fault(Fault.BACKWARD_BRANCH)
                        with m.Elif(ins.op == Op.LOOP):
                            with m.If(loop_active | ins_ended_loop):
                                fault(Fault.NESTED_LOOP)
                            with m.Else():
                                m.d.sync += [taken.eq(skip), taking_loop.eq(1)]
                                if self.registered_checks:     # a LOOP always jumps
                                    m.d.sync += will_redirect.eq(1)
                                m.next = "BRANCH"
                        with m.Else():
                            with m.Switch(ins.op):
                                for op, holds in ((Op.BEQ, a == b), (Op.BNE, a != b),
                                                  (Op.BLTU, a < b), (Op.BGEU, a >= b)):
                                    with m.Case(op):
                                        m.d.sync += taken.eq(holds)
                                        if self.registered_checks:
                                            m.d.sync += will_redirect.eq(holds)
                            m.d.sync += taking_loop.eq(0)
                            m.next = "BRANCH"
                    with m.Case(Op.SPLIT):
                        args_bad = (a == 0) | (a > split_k_limit(params)) | (b == 0) | (b > a)
                        with m.If(self.idle):
                            if self.registered_checks:
                                # The division starts whatever K and n are and their checks
                                # wait for SPLIT_CHECK: compares of two registers in front of
                                # the fault registers and the divider's start were the longest
                                # path.
                                m.d.comb += [divider.start.eq(1), divider.dividend.eq(a),
                                             divider.divisor.eq(b)]
                                m.d.sync += [dividend_k.eq(a), divisor_n.eq(b),
                                             split_valid.eq(0), split_args_bad.eq(args_bad)]
                                m.next = "SPLIT"
                            else:
                                with m.If(args_bad):
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
                            retire_at_once()
                    with m.Case(Op.SWEEP):
                        too_many = b > params[Param.ACT_BYTES]      # tokens for the buffer
                        sweep = [self.sweep.payload.weights.eq(d),
                                 self.sweep.payload.acts.eq(a),
                                 self.sweep.payload.tokens.eq(b)]
                        if self.registered_checks:
                            # Only the sweep's valid and the next state wait for the checks:
                            # the register write and the fetch go ahead with the sweep's
                            # ready, and a faulting SWEEP goes on to FAULT, so no compare
                            # sits in front of the register file. What a faulting SWEEP writes
                            # into a register is never read: the program has ended.
                            bad = ~split_valid | (b == 0) | too_many
                            m.d.comb += [self.sweep.valid.eq(~bad), *sweep]
                            with m.If(self.sweep.ready):
                                write(ins.rd, saturated(sweep_next))
                                retire_at_once()
                            with m.If(bad):
                                fault(Mux(split_valid, Fault.BAD_SWEEP, Fault.NO_SPLIT))
                        else:
                            with m.If(~split_valid):
                                fault(Fault.NO_SPLIT)
                            with m.Elif((b == 0) | too_many):
                                fault(Fault.BAD_SWEEP)
                            with m.Else():
                                m.d.comb += [self.sweep.valid.eq(1), *sweep]
                                with m.If(self.sweep.ready):
                                    write(ins.rd, saturated(sweep_next))
                                    retire_at_once()
                    with m.Case(Op.HALT):
                        m.next = "FINISH"
                    with m.Case(Op.FAIL):
                        m.d.sync += status.eq(Status.BAD_ARGUMENT)
                        m.next = "FINISH"
                    with m.Default():
                        fault(Fault.ILLEGAL_INSTRUCTION)

            # The second cycle of a branch or LOOP: the decision was registered in the first,
            # so a compare never sits in front of the next fetch address. A branch not taken
            # costs two cycles, a taken one, a LOOP's skip and a LOOP's start three (the third
            # refills the fetch stage: a LOOP refetches its body once its registers are set);
            # the loop's jump back stays free.
            with m.State("BRANCH"):
                with m.If(taking_loop):
                    with m.If(~taken):                  # not a LOOP of 0 iterations
                        m.d.sync += [loop_active.eq(1), loop_start.eq(pc + 1),
                                     loop_end.eq(imm), loop_count.eq(a),
                                     last_pass.eq(a == 1), loop_one_body.eq(pc + 1 == imm)]
                        m.d.comb += redirect_at_end.eq(pc + 1 == imm)
                        if self.registered_checks:
                            m.d.comb += redirect_last_pass.eq(a == 1)
                    jump()
                with m.Elif(taken):
                    jump()
                    m.d.comb += redirect_at_end.eq(loop_active & (imm == loop_end))
                    with m.If(loop_active & (imm > loop_end)):
                        m.d.sync += loop_active.eq(0)
                with m.Else():
                    retire()

            with m.State("WRITE"):
                write(ins.rd, saturated(alu))
                retire()

            with m.State("DIVIDE"):
                with m.If(divider.done):
                    with m.If(div_by_zero):     # never set without registered_checks
                        fault(Fault.DIVIDE_BY_ZERO)
                    with m.Else():
                        write(div_dest, Mux(div_rem, divider.remainder, divider.quotient))
                        retire()

            # The pass-length check gets a cycle of its own: an add and a compare in front of
            # the next fetch address would be the processor's longest path.
            with m.State("SPLIT"):
                with m.If(divider.done):
                    # The longest pass, quotient + (remainder != 0), exceeds the limit; written
                    # as compares side by side rather than an add in front of a compare.
                    q, limit = divider.quotient, params[Param.PASS_K_MAX]
                    m.d.sync += split_too_long.eq(
                        (q > limit) | ((q == limit) & (divider.remainder != 0)))
                    m.next = "SPLIT_CHECK"
            with m.State("SPLIT_CHECK"):
                too_long = split_too_long
                if self.registered_checks:
                    too_long = split_args_bad | split_too_long
                with m.If(too_long):
                    fault(Fault.BAD_SPLIT)
                with m.Else():
                    m.d.sync += [self.split.k.eq(dividend_k), self.split.n.eq(divisor_n),
                                 self.split.q.eq(divider.quotient),
                                 self.split.r.eq(divider.remainder), split_valid.eq(1)]
                    retire()

            if self.registered_checks:
                with m.State("FAULT"):
                    m.d.sync += [fault_pc.eq(fault_at), fault_cause.eq(pending_fault),
                                 status.eq(Status.PROGRAM_FAULT)]
                    m.next = "FINISH"

            # The response goes out once everything issued has finished.
            with m.State("FINISH"):
                with m.If(self.idle):
                    m.d.comb += self.done.eq(1)
                    if self.registered_checks:
                        m.d.sync += stopped.eq(1)
                    m.next = "STOPPED"

        if self.registered_checks:
            # The register file's write enable from the flags decoded at fetch, not from the
            # FSM's decode of ``ins`` (a CFG's parameter compare among it): that decode into
            # the enables of the registers was the ULX3S-85F's longest path at 75 MHz (12.4
            # ns). Every write goes to ``ins.rd``: a division's too, as ``ins`` stays the
            # DIVU or REMU until it retires.
            m.d.comb += [
                write_sel.eq(ins.rd),
                write_en.eq((control.ongoing("RUN") &
                             (ins_retires | (ins_is_sweep & self.sweep.ready))) |
                            control.ongoing("WRITE") |
                            (control.ongoing("DIVIDE") & divider.done & ~div_by_zero)),
            ]
            m.d.comb += self.sweeping.eq(control.ongoing("RUN") & ins_is_sweep)
            # RUN's retirements (retire_at_once), from the flags decoded at fetch.
            with m.If(control.ongoing("RUN") & (next_pc < depth) &
                      (ins_retires | (ins_is_setr & self.idle) |
                       (ins_is_sweep & self.sweep.ready))):
                m.d.comb += shift.eq(1)
        return m
