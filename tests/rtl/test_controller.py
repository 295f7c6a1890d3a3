"""rtl.controller.Controller against firmware.machine, the reference interpreter (Amaranth sim).

The bench plays the sequencer: it takes sweeps with random back-pressure, reports ``idle``
only some cycles after the last sweep (as a sequencer still streaming would), and records the
sweeps (with the split in force), the result pointer moves and the ending. Programs: the shipped
``linear`` program on random and out-of-range shapes, hand-written programs for each fault, and
random instruction sequences. With a sequencer that never holds it up (always ready, always
idle), the controller's cycles from start to done equal ``machine.Outcome.cycles``.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from firmware import isa, machine
from firmware.asm import assemble
from firmware.commands import Status
from firmware.isa import Fault, Op, Param
from firmware.programs import FIRMWARE, linear_args
from rtl.controller import Controller

DEPTH = 64
PARAMS = {Param.ROWS: 2, Param.COLS: 3, Param.PES: 6, Param.WEIGHT_WORDS: 300,
          Param.ACT_BYTES: 500, Param.RESULT_ROWS: 60, Param.PASS_K_MAX: 3, Param.K_MAX: 1000}


class ControllerBench:
    """One program in the controller: run it once per argument set, record what it does."""

    def __init__(self, words, seed: int, ready_p: float = 0.6, busy_cycles: int = 3,
                 registered_checks: bool = True):
        self.dut = Controller(program_words=DEPTH, params=PARAMS, init=list(words),
                              registered_checks=registered_checks)
        self.rng = random.Random(seed)
        self.ready_p, self.busy_cycles = ready_p, busy_cycles

    def run(self, runs, max_cycles: int = 20000):
        """``runs``: (entry, args) pairs, run one after the other in one simulation."""
        dut, rng = self.dut, self.rng
        results = []

        async def bench(ctx):
            for entry, args in runs:
                events, busy = [], 0
                ctx.set(dut.entry, entry)
                for i, v in enumerate(args):
                    ctx.set(dut.args[i], v)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                cycles = 1                      # the start cycle
                for _ in range(max_cycles):
                    cycles += 1
                    ready = rng.random() < self.ready_p
                    ctx.set(dut.sweep.ready, ready)
                    ctx.set(dut.idle, busy == 0)
                    if ctx.get(dut.sweep.valid) and ready:
                        p = ctx.get(dut.sweep.payload)
                        s = ctx.get(dut.split)
                        events.append(machine.Sweep(p.weights, p.acts, p.tokens,
                                                    machine.Split(s.k, s.n, s.q, s.r)))
                        busy = self.busy_cycles
                    elif busy:
                        busy -= 1
                    if ctx.get(dut.set_results):
                        events.append(machine.SetResults(ctx.get(dut.results)))
                    if ctx.get(dut.done):
                        status = Status(ctx.get(dut.status))
                        fault = (ctx.get(dut.fault_pc), Fault(ctx.get(dut.fault_cause)))
                        await ctx.tick()
                        break
                    await ctx.tick()
                else:
                    raise AssertionError(f"no done within {max_cycles} cycles")
                results.append((status, events, fault, cycles))

        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        return results


def expected(words, entry, args):
    program = list(words) + [0] * (DEPTH - len(words))
    out = machine.run(program, entry, args, PARAMS, max_steps=5000)
    events = [e for e in out.events if not isinstance(e, machine.Split)]
    fault = ((out.fault_pc, out.fault) if out.fault is not None else None)
    return out.status, events, fault


def check(words, runs, seed, registered_checks=True):
    got = ControllerBench(words, seed, registered_checks=registered_checks).run(runs)
    for (entry, args), (status, events, fault, _) in zip(runs, got):
        want_status, want_events, want_fault = expected(words, entry, args)
        where = f"entry {entry} args {args}"
        assert status is want_status, where
        assert events == want_events, where
        if want_fault is not None:
            assert fault == want_fault, where


def check_cycles(words, entry, args, seed, registered_checks=True):
    """With a sequencer that never holds it up (always ready, always idle), the controller
    takes ``machine.Outcome.cycles`` from start to done."""
    bench = ControllerBench(words, seed=seed, ready_p=1.0, busy_cycles=0,
                            registered_checks=registered_checks)
    (status, _, _, cycles), = bench.run([(entry, args)])
    program = list(words) + [0] * (DEPTH - len(words))
    want = machine.run(program, entry, args, PARAMS, max_steps=5000,
                       registered_checks=registered_checks)
    assert status is want.status, (seed, words)
    assert cycles == want.cycles, (seed, want.status, want.fault, words)


def test_linear_program_matches_machine():
    rng = random.Random(5)
    runs = []
    for _ in range(14):
        M, N, K = rng.randint(1, 4), rng.randint(1, 20), rng.randint(1, 40)
        runs.append(linear_args(rng.randint(0, 60), rng.randint(0, 200), rng.randint(0, 10),
                                M, N, K))
    # Empty shapes, K over k_max, and each memory overflowing by one.
    runs += [linear_args(0, 0, 0, 0, 5, 5), linear_args(0, 0, 0, 1, 0, 5),
             linear_args(0, 0, 0, 1, 5, 0), linear_args(0, 0, 0, 1, 5, 1001),
             linear_args(300 - 2 * 7 + 1, 0, 0, 1, 12, 7),     # 2 tiles x 7 words, one too many
             linear_args(0, 500 - 3 * 9 + 1, 0, 3, 6, 9),      # 3 tokens x 9 bytes
             linear_args(0, 0, 60 - 2 * 3 * 2 + 1, 3, 7, 2),   # 2 tiles x 3 tokens x 2 rows
             linear_args(0, 0, 0, 1, 2**32 - 1, 2**32 - 1)]     # saturating bounds
    runs = [(a.entry, a.args) for a in runs]
    for entry, args in runs:   # the bounds cases really are refused, the rest really run
        status = expected(FIRMWARE.words, entry, args)[0]
        assert status in (Status.OK, Status.BAD_ARGUMENT)
    check(FIRMWARE.words, runs, seed=1)


@pytest.mark.parametrize("text, cause", [
    ("LI r0, 1\nBEQ r0, r0, far\nfar: HALT", None),
    ("LI r0, 3\nLI r1, 4\nLOOP r0, body\nbody: BEQ r0, r1, out\nout: HALT", None),
    ("LI r1, 0\nDIVU r0, r0, r1\nHALT", Fault.DIVIDE_BY_ZERO),
    ("LI r1, 2\nLOOP r1, end\nLOOP r1, end\nend: HALT", Fault.NESTED_LOOP),
    ("LI r0, 4\nLI r1, 2\nSWEEP r0, r0, r1\nHALT", Fault.NO_SPLIT),
    ("LI r0, 4\nLI r1, 2\nSPLIT r0, r1\nLI r1, 0\nSWEEP r0, r0, r1\nHALT", Fault.BAD_SWEEP),
    ("LI r0, 10\nLI r1, 3\nSPLIT r0, r1\nHALT", Fault.BAD_SPLIT),      # passes of 4 > 3
    ("LI r0, 3\nLI r1, 4\nSPLIT r0, r1\nHALT", Fault.BAD_SPLIT),       # more passes than K
    ("LI r0, 1001\nLI r1, 400\nSPLIT r0, r1\nHALT", Fault.BAD_SPLIT),  # K > k_max
    ("LI r0, 501\nLI r1, 200\nSPLIT r0, r1\nHALT", Fault.BAD_SPLIT),   # K > act_bytes
    ("LI r0, 4\nLI r1, 2\nSPLIT r0, r1\nLI r1, 501\nSWEEP r0, r0, r1\nHALT",
     Fault.BAD_SWEEP),                                                  # M > act_bytes
    ("LI r0, 4\nLI r1, 2\nSPLIT r0, r1\nLI r1, 500\nSWEEP r0, r0, r1\nHALT", None),
    # SETR right after a SWEEP waits for the sequencer to finish it, then moves the pointer
    ("LI r0, 4\nLI r1, 2\nSPLIT r0, r1\nSWEEP r0, r0, r1\nSETR r1\nSWEEP r0, r0, r1\nHALT",
     None),
    ("LI r0, 1\nADD r0, r0, r0", Fault.PC_OUT_OF_RANGE),              # runs off the end
    ("LI r0, 2\nLOOP r0, 90\nADDI r1, r1, 1", Fault.PC_OUT_OF_RANGE),  # a body past the end
    ("LI r0, 0\nLOOP r0, 70\nHALT", Fault.PC_OUT_OF_RANGE),           # skip past the end
    ("LI r0, 1\nBEQ r0, r0, 64\nHALT", Fault.PC_OUT_OF_RANGE),
    ("FAIL", None),
    # The loop's edges, where the fetch stage runs one instruction ahead: a LOOP that is the
    # last instruction of a loop's last pass (or of an earlier one), leaving a loop by a branch
    # from its end or from inside, and a branch to the end from inside the body.
    ("LI r0, 1\nLOOP r0, e\ne: LOOP r0, x\nx: HALT", Fault.NESTED_LOOP),
    ("LI r0, 2\nLOOP r0, e\ne: LOOP r0, x\nx: HALT", Fault.NESTED_LOOP),
    ("LI r0, 3\nLOOP r0, e\ne: BEQ r0, r0, out\nout: LOOP r0, f\nf: SETR r0\nHALT", None),
    ("LI r0, 3\nLOOP r0, e\nBNE r0, r1, out\ne: SETR r0\nout: LOOP r0, f\nf: SETR r0\nHALT",
     None),
    ("LI r0, 3\nLI r1, 1\nLOOP r0, e\nBEQ r0, r0, e\nADDI r1, r1, 1\ne: SETR r1\n"
     "ADDI r1, r1, 2\nHALT", None),
])
@pytest.mark.parametrize("registered_checks", [True, False])
def test_endings_match_machine(text, cause, registered_checks):
    words = assemble(text).words
    entry = 0
    if "HALT" not in text:      # place it at the very end of memory, to run off it
        entry = DEPTH - len(words)
        words = [0] * entry + words
    want = expected(words, entry, ())
    if cause is not None:
        assert want[0] is Status.PROGRAM_FAULT and want[2][1] is cause
    else:
        assert want[0] is not Status.PROGRAM_FAULT
    check(words, [(entry, ())], seed=2, registered_checks=registered_checks)
    check_cycles(words, entry, (), seed=2, registered_checks=registered_checks)


def test_illegal_instructions_fault():
    words = [isa.encode(Op.CFG, rd=1, imm=len(Param)), 0x3F << 26, 0]
    for entry in range(3):
        want = expected(words, entry, ())
        assert want[0] is Status.PROGRAM_FAULT and want[2] == (entry, Fault.ILLEGAL_INSTRUCTION)
    check(words, [(e, ()) for e in range(3)], seed=3)


def test_backward_branches_fault():
    words = assemble("LI r0, 1\nLI r1, 2\nHALT").words
    words.append(isa.encode(Op.BEQ, ra=0, rb=0, imm=1))       # not taken, still refused
    words.append(isa.encode(Op.LOOP, ra=1, imm=4))             # ends at itself
    for entry in (3, 4):
        assert expected(words, entry, ())[2] == (entry, Fault.BACKWARD_BRANCH)
    check(words, [(3, ()), (4, ())], seed=4)


def random_program(rng: random.Random, length: int, base: int = 0) -> list[int]:
    """Instruction sequences that mostly make sense (small values, forward targets)."""
    ops = [op for op in Op if op is not Op.ILLEGAL]
    weights = {Op.LI: 4, Op.ADD: 3, Op.SUB: 2, Op.ADDI: 3, Op.DIVU: 1, Op.REMU: 1, Op.CFG: 2,
               Op.BEQ: 1, Op.BNE: 1, Op.BLTU: 1, Op.BGEU: 1, Op.LOOP: 2, Op.SPLIT: 3,
               Op.SETR: 1, Op.SWEEP: 4, Op.HALT: 1, Op.FAIL: 1}
    words = []
    end = base + length
    for pc in range(base, end):
        op = rng.choices(ops, [weights[o] for o in ops])[0]
        f = dict(rd=rng.randrange(8), ra=rng.randrange(8), rb=rng.randrange(8), imm=0)
        if op is Op.LI:
            f.update(ra=0, rb=0, imm=rng.randrange(12))
        elif op is Op.ADDI:
            f["imm"] = rng.randrange(-5, 6) & ((1 << isa.IMM_BITS) - 1)
        elif op is Op.CFG:
            f["imm"] = rng.randrange(len(Param) + 1)
        elif op in (Op.BEQ, Op.BNE, Op.BLTU, Op.BGEU, Op.LOOP):
            f["imm"] = rng.choice([rng.randint(pc + 1, end + 1), rng.randint(0, pc)]
                                  if rng.random() < 0.1 else [rng.randint(pc + 1, end)])
        words.append(isa.encode(op, **f))
    return words


def random_cases(rng: random.Random, n: int, longest: int, split_every: int = 1):
    """``n`` random programs with arguments that end within the reference's step limit; every
    ``split_every``-th starts with a valid split, so that its sweeps get issued."""
    cases = []
    while len(cases) < n:
        words = []
        if len(cases) % split_every == split_every - 1:
            words = assemble(f"LI r6, {rng.randint(3, 9)}\nLI r7, 3\nSPLIT r6, r7").words
        words += random_program(rng, rng.randint(4, longest), base=len(words))
        args = tuple(rng.randrange(10) for _ in range(6))
        try:
            expected(words, 0, args)
        except RuntimeError:
            continue                     # a program too long for the reference's step limit
        cases.append((words, args))
    return cases


@pytest.mark.parametrize("registered_checks", [True, False])
def test_random_programs_match_machine(registered_checks):
    for i, (words, args) in enumerate(random_cases(random.Random(9), 60, 20, split_every=2)):
        check(words, [(0, args)], seed=i, registered_checks=registered_checks)


@pytest.mark.parametrize("registered_checks", [True, False])
def test_control_cycles_match_machine(registered_checks):
    """Start to done, with a sequencer that never holds the controller up, takes the cycles
    ``machine.Outcome.cycles`` counts: the shipped program on random shapes and bounds
    failures and random programs, faults included (the hand-written endings check theirs in
    ``test_endings_match_machine``)."""
    rng = random.Random(11)
    cases = []
    for _ in range(8):
        M, N, K = rng.randint(1, 4), rng.randint(1, 20), rng.randint(1, 40)
        a = linear_args(rng.randint(0, 60), rng.randint(0, 200), rng.randint(0, 10), M, N, K)
        cases.append((FIRMWARE.words, a.entry, a.args))
    a = linear_args(0, 0, 0, 1, 5, 1001)                        # K over k_max: FAIL
    cases.append((FIRMWARE.words, a.entry, a.args))
    cases += [(words, 0, args) for words, args in random_cases(rng, 26, 16)]
    for i, (words, entry, args) in enumerate(cases):
        check_cycles(words, entry, args, seed=i, registered_checks=registered_checks)
