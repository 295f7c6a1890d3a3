"""firmware: the instruction set's encoding, the assembler, the reference interpreter and the
shipped ``linear`` program against the dataflow's golden plan (sim.schedule)."""

from __future__ import annotations

import random

import pytest

from firmware import isa, machine
from firmware.asm import AsmError, assemble, disassemble
from firmware.commands import Status
from firmware.isa import Fault, Op, Param
from firmware.programs import FIRMWARE, linear_args
from sim import schedule


def params(cfg: schedule.ArrayConfig, weight_words=10**6, act_bytes=10**6, result_rows=10**6):
    return {Param.ROWS: cfg.rows, Param.COLS: cfg.cols, Param.PES: cfg.pes,
            Param.WEIGHT_WORDS: weight_words, Param.ACT_BYTES: act_bytes,
            Param.RESULT_ROWS: result_rows, Param.PASS_K_MAX: cfg.pass_k_max,
            Param.K_MAX: cfg.k_max}


def run_linear(cfg, weights, acts, results, M, N, K, **sizes):
    a = linear_args(weights, acts, results, M, N, K)
    program = list(FIRMWARE.words) + [0] * 8
    return machine.run(program, a.entry, a.args, params(cfg, **sizes))


# -- encoding --------------------------------------------------------------------------------

def test_encode_decode_round_trip_and_field_positions():
    word = isa.encode(Op.ADDI, rd=5, ra=3, rb=1, imm=0x1ABCD)
    assert word == (0x04 << 26) | (5 << 23) | (3 << 20) | (1 << 17) | 0x1ABCD
    assert isa.decode(word) == isa.Instruction(Op.ADDI, 5, 3, 1, 0x1ABCD)
    assert isa.signed_imm(0x1FFFF) == -1 and isa.signed_imm(5) == 5
    assert isa.decode(0x3F << 26).op is Op.ILLEGAL
    with pytest.raises(ValueError, match="rd"):
        isa.encode(Op.ADD, rd=8)
    with pytest.raises(ValueError, match="imm"):
        isa.encode(Op.CFG, imm=1 << 17)


def test_every_opcode_has_an_operand_form():
    assert set(isa.FORMS) == set(Op) - {Op.ILLEGAL}


# -- assembler ------------------------------------------------------------------------------

def test_assembler_labels_aliases_constants_and_listing():
    prog = assemble("""
        .alias  n, r3
        .equ    STEP, -2          ; a constant
    top:    LI    n, 5000000      # 23-bit value
            ADDI  r1, n, STEP
            CFG   r2, pass_k_max  ; parameter names are case-insensitive
            BLTU  r1, n, done
            LOOP  n, body
    body:   SWEEP r0, r1, n
    done:   halt
    """, base=10)
    assert prog.labels == {"top": 10, "body": 15, "done": 16}
    assert prog.base == 10 and len(prog) == 7
    ins = [isa.decode(w) for w in prog.words]
    assert ins[0].op is Op.LI and ins[0].rd == 3 and ins[0].value == 5_000_000
    assert ins[1].op is Op.ADDI and isa.signed_imm(ins[1].imm) == -2
    assert ins[2].imm == Param.PASS_K_MAX.value
    assert ins[3].imm == 16 and ins[4].imm == 15
    # The disassembly assembles back to the same words.
    text = "\n".join(disassemble(prog.words, base=10))
    assert assemble(text, base=10).words == prog.words
    assert "body:" in prog.listing() and "SWEEP r0, r1, r3" in prog.listing()
    assert prog.to_bytes()[:4] == prog.words[0].to_bytes(4, "little")


@pytest.mark.parametrize("text, message", [
    ("FOO r1", "unknown instruction 'FOO'"),
    ("ADD r1, r2", "ADD takes 3 operand"),
    ("ADD r1, r2, r9", "'r9' is not a register"),
    ("CFG r1, SPEED", "unknown parameter 'SPEED'"),
    ("a: HALT\na: HALT", "defined twice"),
    ("x: BEQ r0, r0, x", "branches only go forward"),
    ("ADDI r0, r0, 70000", "does not fit 17 signed bits"),
    ("LI r0, -1", "LI value -1"),
    ("BEQ r0, r0, nowhere", "'nowhere' is not a number"),
    (".equ N", ".equ takes a name and a value"),
    ("ILLEGAL", "not an instruction"),
])
def test_assembler_errors_name_the_line(text, message):
    with pytest.raises(AsmError, match=message) as e:
        assemble("HALT\n" + text, source="t.s")
    assert str(e.value).startswith("t.s:")
    assert e.value.line >= 2


def test_shipped_firmware_assembles_and_fits_the_default_program_memory():
    assert FIRMWARE.entries["linear"] == 0
    assert 0 < len(FIRMWARE) <= 64
    assert all(isa.decode(w).op is not Op.ILLEGAL for w in FIRMWARE.words)


# -- the linear program against the golden plan ----------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_linear_program_issues_the_plans_passes(seed):
    """The sweeps of `linear`, expanded into passes, are exactly plan_linear's passes (same
    tiles, tokens and chunks, in the same order), with weights and activations at the
    addresses of docs/protocol.md."""
    rng = random.Random(seed)
    cfg = schedule.ArrayConfig(rng.randint(1, 4), rng.randint(1, 5), psum_bits=rng.choice([10, 16]))
    M, N, K = rng.randint(1, 5), rng.randint(1, 60), rng.randint(1, 1200)
    W, A, R0 = rng.randint(0, 50), rng.randint(0, 50), rng.randint(0, 50)
    out = run_linear(cfg, W, A, R0, M, N, K)
    assert out.status is Status.OK
    plan = schedule.plan_linear(cfg, M, N, K, mapping="outputs")
    sweeps = [e for e in out.events if isinstance(e, machine.Sweep)]
    assert [e for e in out.events if isinstance(e, machine.SetResults)] == \
        [machine.SetResults(R0)]
    tiles = -(-N // cfg.pes)
    assert len(sweeps) == tiles
    passes = []
    for t, sw in enumerate(sweeps):
        assert (sw.weights, sw.acts, sw.tokens) == (W + t * K, A, M)
        chunks = schedule.split_k(K, sw.split.n)
        passes += [(t, m, k0, k1) for m in range(M) for k0, k1 in chunks]
    want = [(int(p.outputs[0, 0]) // cfg.pes, int(p.tokens[0]), p.k0, p.k1) for p in plan.passes]
    assert passes == want


@pytest.mark.parametrize("shape, sizes", [
    ((0, 4, 4), {}), ((1, 0, 4), {}), ((1, 4, 0), {}),
    ((1, 4, None), {}),                                   # K = k_max + 1
    ((1, 7, 10), dict(weight_words=2 * 10 + 5 - 1)),      # 2 tiles of 10 words from word 5
    ((3, 4, 10), dict(act_bytes=3 * 10 + 6 - 1)),         # 3 tokens of 10 bytes from byte 6
    ((3, 7, 10), dict(result_rows=2 * 3 * 2 + 7 - 1)),    # 2 tiles x 3 tokens x 2 rows from 7
])
def test_linear_program_refuses_what_does_not_fit(shape, sizes):
    cfg = schedule.ArrayConfig(2, 2)
    M, N, K = shape
    K = cfg.k_max + 1 if K is None else K
    out = run_linear(cfg, 5, 6, 7, M, N, K, **sizes)
    assert out.status is Status.BAD_ARGUMENT and out.events == []
    # One more word, byte or row and it runs.
    if sizes:
        bigger = {k: v + 1 for k, v in sizes.items()}
        assert run_linear(cfg, 5, 6, 7, M, N, K, **bigger).status is Status.OK


def test_linear_bounds_cannot_pass_by_wrapping_around():
    cfg = schedule.ArrayConfig(2, 2)
    out = run_linear(cfg, 2**32 - 8, 0, 0, 1, 4, 16)      # words 2**32-8 .. 2**32+8
    assert out.status is Status.BAD_ARGUMENT


# -- the interpreter's rules ------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [{}, dict(weight_words=256, act_bytes=1024, result_rows=64),
                                   dict(weight_words=2**31, act_bytes=2**31, result_rows=2**31)])
def test_arithmetic_saturates_at_the_register_width(sizes):
    cfg = schedule.ArrayConfig(2, 2)
    p = params(cfg, **sizes)
    bits = isa.register_bits(p)
    top = 2**bits - 1
    prog = assemble("""
        ADD  r2, r0, r0        ; top + top
        SUB  r3, r1, r0        ; 5 - top
        ADDI r4, r1, -6
        ADDI r5, r0, 1
        SPLIT r1, r1           ; K = 5 in 5 passes, to let the sweeps show the registers
        SWEEP r2, r3, r1
        SWEEP r4, r5, r1
        LI   r6, 8388607       ; the largest LI value
        CFG  r7, K_MAX
        SWEEP r6, r7, r1
        HALT
    """)
    # RUN's 32-bit arguments saturate on the way in, as every value entering a register does.
    out = machine.run(prog.words, 0, (2**32 - 1, 5), p)
    sweeps = [e for e in out.events if isinstance(e, machine.Sweep)]
    assert [(s.weights, s.acts) for s in sweeps] == [
        (top, 0), (0, top), (min(2**23 - 1, top), min(cfg.k_max, top))]


def test_register_width_follows_the_memories():
    cfg = schedule.ArrayConfig(4, 4)
    # N up to a whole weight memory of tiles (K = 1) must not saturate: 256 words x 16 PEs.
    # 4096 needs 13 bits; one to spare, so a sum of two such values cannot saturate either.
    assert isa.register_bits(params(cfg, 256, 1024, 64)) == 14
    assert isa.register_bits(params(cfg, 2**30, 1, 1)) == 32          # never wider than 32
    assert isa.register_bits(params(cfg, 1, 70000, 1)) == 18          # act_bytes rules here
    # Tiny memories: PASS_K_MAX (255) rules, so that linear's K + PASS_K_MAX - 1 cannot saturate.
    assert isa.register_bits(params(schedule.ArrayConfig(2, 2), 8, 8, 8)) == 9


def test_loop_runs_its_body_count_times_and_zero_skips_it():
    cfg = schedule.ArrayConfig(2, 2)
    prog = assemble("""
        SPLIT r2, r2
        LOOP  r0, body
        ADDI  r3, r3, 1
    body: SWEEP r4, r3, r2
        LOOP  r1, skip
    skip: SWEEP r4, r4, r2
        HALT
    """)
    out = machine.run(prog.words, 0, (3, 0, 1), params(cfg))
    sweeps = [e for e in out.events if isinstance(e, machine.Sweep)]
    assert [s.acts for s in sweeps] == [1, 2, 3]
    assert [s.weights for s in sweeps] == [0, 1, 2]        # each SWEEP adds K = 1
    assert out.steps == 2 + 3 * 2 + 1 + 1


def test_endless_programs_are_impossible_and_the_step_limit_is_clear():
    # The longest program of 3 words: a loop of 2**23 iterations runs, and ends.
    prog = assemble("LI r0, 8388607\nLOOP r0, end\nend: ADDI r1, r1, 1\nHALT")
    with pytest.raises(RuntimeError, match="emulator's limit"):
        machine.run(prog.words, 0, (), params(schedule.ArrayConfig(1, 1)), max_steps=1000)


def test_faults_report_pc_and_cause():
    cfg = schedule.ArrayConfig(2, 2)
    cases = {
        "HALT\nSWEEP r0, r0, r0": None,
        "LI r1, 1\nSWEEP r0, r0, r1\nHALT": (1, Fault.NO_SPLIT),
        "LI r0, 0\nLI r1, 0\nREMU r0, r0, r1\nHALT": (2, Fault.DIVIDE_BY_ZERO),
        "CFG r0, 99\nHALT": (0, Fault.ILLEGAL_INSTRUCTION),
    }
    for text, want in cases.items():
        out = machine.run(assemble(text).words, 0, (), params(cfg))
        if want is None:
            assert out.status is Status.OK
        else:
            assert out.status is Status.PROGRAM_FAULT and (out.fault_pc, out.fault) == want
    with pytest.raises(ValueError, match="entry"):
        machine.run([0], 1, (), params(cfg))
