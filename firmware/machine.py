"""The reference interpreter of the control processor: what ``rtl.controller`` does, in Python.

:func:`run` executes a program from an entry point with ``RUN``'s arguments and returns what
the sequencer is asked to do, in order (:class:`Split`, :class:`SetResults`, :class:`Sweep`),
and how the program ended. The emulator (``host.emu``) carries out those events on its
memories; the RTL controller must produce the same events and the same ending for every
program (tests/rtl/test_controller.py).

Order is what the emulator needs; the controller's own time is counted too
(:attr:`Outcome.cycles`, the control term of the estimates in ``host.estimate``), as
``rtl.controller`` spends it when the sequencer never holds it up: two cycles to start (the
second fills the fetch stage), one per instruction, a second one for ADD, SUB, ADDI (the sum is
registered before it is saturated), branches and LOOP (the decision is registered), a third for
a taken branch and for LOOP (the fetch stage refills at the target, or at the body once the
loop's registers are set), ``bits + 1`` more for a division (DIVU, REMU:
the divider takes a quotient bit per cycle) and ``bits + 2`` for SPLIT (its division, then the
pass-length check), and one to finish (HALT, FAIL or a fault). A SPLIT refused for its K or n
takes one cycle, or with ``registered_checks`` (the controller's, as ECP5 builds have it) the
cycles of a SPLIT that runs; a DIVU or REMU by zero one, or with them those of its division;
and with them every fault is recorded in a cycle of its own. Waits are not counted: SPLIT,
SETR, HALT and FAIL wait for the sequencer to go idle and SWEEP for it to take the sweep. A
sweep issued from a one-instruction ``LOOP`` body follows the previous one without a gap, so the
array's cycle counters equal the cycle model of the concatenated passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .commands import Status
from .isa import (ARG_REGISTERS, REGISTERS, Fault, Op, Param, decode, register_bits, saturate,
                  signed_imm, split_k_limit)

__all__ = ["Split", "SetResults", "Sweep", "Outcome", "chunk_split", "run"]


@dataclass(frozen=True)
class Split:
    """K steps in ``n`` passes: the first ``r`` of ``q + 1`` steps, the rest of ``q``."""
    k: int
    n: int
    q: int
    r: int


@dataclass(frozen=True)
class SetResults:
    row: int


@dataclass(frozen=True)
class Sweep:
    """M = ``tokens`` tokens, each all K steps of ``split``, weights from word ``weights``."""
    weights: int
    acts: int
    tokens: int
    split: Split


@dataclass
class Outcome:
    status: Status
    events: list = field(default_factory=list)
    fault_pc: int = 0
    fault: Fault | None = None
    steps: int = 0              # instructions executed
    cycles: int = 0             # controller cycles, start to done, with a sequencer that never
                                # holds it up (module docstring)


def chunk_split(k: int, n: int, k_max: int, pass_k_max: int) -> Split | None:
    """The split SPLIT sets up, or None when it faults (BAD_SPLIT); ``k_max`` is
    ``isa.split_k_limit``."""
    if k == 0 or k > k_max or n == 0 or n > k:
        return None
    q, r = divmod(k, n)
    if q + (r != 0) > pass_k_max:
        return None
    return Split(k, n, q, r)


def run(program, entry: int, args, params: dict[Param, int],
        max_steps: int = 10_000_000, registered_checks: bool = True) -> Outcome:
    """Execute ``program`` (a sequence of 32-bit words; its length is the program memory's
    depth) from ``entry`` with ``args`` in r0.. (at most six), on registers as wide as
    ``isa.register_bits(params)``. ``registered_checks`` is the controller's
    (``rtl.controller.Controller``); it changes only the cycles of a program that faults."""
    bits = register_bits(params)

    def saturate_reg(v: int) -> int:
        return saturate(v, bits)

    depth = len(program)
    if not 0 <= entry < depth:
        raise ValueError(f"entry {entry} outside program memory (0 .. {depth - 1})")
    if len(args) > ARG_REGISTERS:
        raise ValueError(f"at most {ARG_REGISTERS} arguments, got {len(args)}")
    regs = [0] * REGISTERS
    for i, a in enumerate(args):
        regs[i] = saturate_reg(int(a))
    out = Outcome(Status.OK)
    split: Split | None = None
    loop = None                  # [start, end, count left]
    pc = entry

    division = bits + 1          # cycles the divider takes, its result cycle included
    out.cycles = 2               # the start cycle and the fetch stage's first fill

    def fault(cause: Fault, at: int, spent: int = 1) -> Outcome:
        """End with ``cause`` after ``spent`` cycles of the faulting instruction (with
        ``registered_checks`` the fault is recorded in a cycle of its own)."""
        out.status, out.fault, out.fault_pc = Status.PROGRAM_FAULT, cause, at
        out.cycles += spent + 1 + (1 if registered_checks else 0)
        return out

    while True:
        if out.steps >= max_steps:
            raise RuntimeError(f"control program ran {max_steps} instructions without ending "
                               f"(the emulator's limit; the device would go on)")
        ins = decode(int(program[pc]))
        out.steps += 1
        a, b = regs[ins.ra], regs[ins.rb]
        next_pc = pc + 1
        op = ins.op
        cost = 1                     # this instruction's cycles, had it retired
        if op is Op.LI:
            regs[ins.rd] = saturate_reg(ins.value)
        elif op is Op.ADD:
            regs[ins.rd], cost = saturate_reg(a + b), 2
        elif op is Op.SUB:
            regs[ins.rd], cost = saturate_reg(a - b), 2
        elif op is Op.ADDI:
            regs[ins.rd], cost = saturate_reg(a + signed_imm(ins.imm)), 2
        elif op in (Op.DIVU, Op.REMU):
            if b == 0:
                # with registered_checks seen once the division is done
                spent = cost + division if registered_checks else 1
                return fault(Fault.DIVIDE_BY_ZERO, pc, spent)
            regs[ins.rd] = a // b if op is Op.DIVU else a % b
            cost += division
        elif op is Op.CFG:
            try:
                regs[ins.rd] = saturate_reg(params[Param(ins.imm)])
            except ValueError:
                return fault(Fault.ILLEGAL_INSTRUCTION, pc)
        elif op in (Op.BEQ, Op.BNE, Op.BLTU, Op.BGEU, Op.LOOP):
            if ins.imm <= pc:
                return fault(Fault.BACKWARD_BRANCH, pc)
            cost = 2                 # a third when the fetch stage refills, once it is in range
            if op is Op.LOOP:
                if loop is not None:
                    return fault(Fault.NESTED_LOOP, pc)
                if a == 0:
                    next_pc = ins.imm + 1          # checked against the depth below
                else:
                    loop = [pc + 1, ins.imm, a]
            else:
                taken = {Op.BEQ: a == b, Op.BNE: a != b, Op.BLTU: a < b, Op.BGEU: a >= b}[op]
                if taken:
                    if ins.imm >= depth:
                        return fault(Fault.PC_OUT_OF_RANGE, pc, cost)
                    if loop is not None and ins.imm > loop[1]:
                        loop = None          # leaving the loop body ends the loop
                    pc = ins.imm
                    out.cycles += cost + 1
                    continue
        elif op is Op.SPLIT:
            split = chunk_split(a, b, split_k_limit(params), params[Param.PASS_K_MAX])
            cost += division + 1
            if split is None:
                # Passes too long are seen after the division; K or n out of range at once,
                # or with registered_checks after the division too
                early = a == 0 or a > split_k_limit(params) or b == 0 or b > a
                return fault(Fault.BAD_SPLIT, pc, 1 if early and not registered_checks else cost)
            out.events.append(split)
        elif op is Op.SETR:
            out.events.append(SetResults(a))
        elif op is Op.SWEEP:
            if split is None:
                return fault(Fault.NO_SPLIT, pc)
            if b == 0 or b > params[Param.ACT_BYTES]:
                return fault(Fault.BAD_SWEEP, pc)
            out.events.append(Sweep(regs[ins.rd], a, b, split))
            regs[ins.rd] = saturate_reg(regs[ins.rd] + split.k)
        elif op is Op.HALT:
            out.cycles += 2
            return out
        elif op is Op.FAIL:
            out.status = Status.BAD_ARGUMENT
            out.cycles += 2
            return out
        else:
            return fault(Fault.ILLEGAL_INSTRUCTION, pc)
        # Sequential flow: the zero-overhead loop jumps back from its last instruction.
        if loop is not None and pc == loop[1]:
            loop[2] -= 1
            if loop[2]:
                next_pc = loop[0]
            else:
                loop = None
        if next_pc >= depth:
            # Leaving program memory is a fault of the instruction that would leave it.
            return fault(Fault.PC_OUT_OF_RANGE, pc, cost)
        if op is Op.LOOP:
            cost += 1
        out.cycles += cost
        pc = next_pc
