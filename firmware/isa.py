"""The control processor's instruction set, defined once (docs/firmware.md).

The device core's ``RUN`` command starts a *control program* held in the core's program memory
(``rtl.controller.Controller``); the program checks its arguments, splits K into passes and
issues *sweeps* to the sequencer, which streams them through the array at one step per cycle.
The host loads programs with ``WRITE_PROGRAM`` (``firmware.programs`` assembles the shipped
ones); ``firmware.asm`` turns assembly text into the words defined here and
``firmware.machine`` is the reference interpreter that the emulator runs and the RTL matches.

Every instruction is one 32-bit word::

    31      26 25  23 22  20 19  17 16                0
    [  op   ] [ rd ] [ ra ] [ rb ] [       imm        ]

Eight 32-bit registers ``r0``..``r7``; ``RUN`` loads ``r0``..``r5`` with its arguments and
clears ``r6``, ``r7``. Arithmetic is unsigned and *saturating* (no wrap-around), so that a
bounds check computed with it can never pass by overflow. ``LI`` takes a 23-bit value from
bits 22..0. Branch and loop targets are absolute program addresses.

Programs always terminate: branches may only go forward (a backward target is a fault) and the
only way back is ``LOOP``, a zero-overhead counted loop that cannot nest.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

__all__ = ["REGISTERS", "ARG_REGISTERS", "WORD_BITS", "IMM_BITS", "LI_BITS", "Op", "Param",
           "Fault", "Instruction", "INSTRUCTION_LAYOUT", "split_layout", "sweep_layout",
           "register_bits", "split_k_limit", "encode", "decode", "signed_imm", "saturate", "param_values", "FORMS"]

REGISTERS = 8
ARG_REGISTERS = 6        # r0..r5 come from RUN
WORD_BITS = 32           # an instruction; also the widest registers (register_bits)
IMM_BITS = 17
LI_BITS = 23             # LI's value: the ra, rb and imm fields together


class Op(enum.Enum, shape=6):
    """Opcodes. 0 is illegal, so that an empty program memory faults instead of running."""
    ILLEGAL = 0x00
    LI = 0x01       # rd = value (23 bits)
    ADD = 0x02      # rd = ra + rb            (saturates at 2**bits - 1)
    SUB = 0x03      # rd = ra - rb            (saturates at 0)
    ADDI = 0x04     # rd = ra + signed imm    (saturates both ways)
    DIVU = 0x05     # rd = ra // rb           (rb = 0 faults)
    REMU = 0x06     # rd = ra % rb            (rb = 0 faults)
    CFG = 0x07      # rd = device parameter imm (Param)
    BEQ = 0x08      # if ra == rb: pc = imm   (imm must be > pc)
    BNE = 0x09
    BLTU = 0x0A
    BGEU = 0x0B
    LOOP = 0x0C     # run pc+1 .. imm (inclusive) ra times; ra = 0 skips to imm + 1
    SPLIT = 0x0D    # K = ra in rb passes (waits for the sequencer to finish what it has)
    SETR = 0x0E     # results go to row ra on (waits for the sequencer)
    SWEEP = 0x0F    # stream M = rb tokens: weights from rd, acts from ra; then rd += K
    HALT = 0x10     # wait for the sequencer, answer OK
    FAIL = 0x11     # wait for the sequencer, answer BAD_ARGUMENT


class Param(enum.Enum, shape=IMM_BITS):
    """Device parameters a program reads with ``CFG`` (so one program fits every build)."""
    ROWS = 0
    COLS = 1
    PES = 2             # rows * cols: outputs per tile
    WEIGHT_WORDS = 3
    ACT_BYTES = 4
    RESULT_ROWS = 5
    PASS_K_MAX = 6      # longest pass the PE partial sums hold exactly
    K_MAX = 7           # largest K the accumulator holds exactly


class Fault(enum.Enum, shape=8):
    """Why a program stopped with ``Status.PROGRAM_FAULT`` (the response carries pc, cause)."""
    NONE = 0
    ILLEGAL_INSTRUCTION = 1     # unknown opcode or CFG parameter
    PC_OUT_OF_RANGE = 2         # ran past the end of program memory
    BACKWARD_BRANCH = 3         # branch or loop end not after the instruction
    NESTED_LOOP = 4             # LOOP inside a LOOP body
    DIVIDE_BY_ZERO = 5
    BAD_SPLIT = 6               # K = 0, K > k_max or act_bytes, n = 0, n > K or a pass longer
                                # than pass_k_max
    NO_SPLIT = 7                # SWEEP before SPLIT
    BAD_SWEEP = 8               # SWEEP of zero tokens or more than act_bytes


#: Field layout of an instruction word (LSB first, as ``amaranth.lib.data`` lays it out).
INSTRUCTION_LAYOUT = data.StructLayout({
    "imm": unsigned(IMM_BITS),
    "rb": unsigned(3),
    "ra": unsigned(3),
    "rd": unsigned(3),
    "op": Op,
})
assert INSTRUCTION_LAYOUT.size == WORD_BITS

def split_layout(bits: int = WORD_BITS) -> data.StructLayout:
    """The K split a SPLIT sets up for the sequencer: n passes, the first r of q + 1 steps."""
    return data.StructLayout({"k": unsigned(bits), "n": unsigned(bits), "q": unsigned(bits),
                              "r": unsigned(bits)})


def sweep_layout(bits: int = WORD_BITS) -> data.StructLayout:
    """One sweep for the sequencer: M tokens, each all K steps, of one tile of weights."""
    return data.StructLayout({
        "weights": unsigned(bits),      # first weight word (word weights + k at step k)
        "acts": unsigned(bits),         # first activation byte (acts + m*K + k)
        "tokens": unsigned(bits),
    })


#: Operand forms of each opcode, for the assembler and disassembler:
#: d = rd, a = ra, b = rb, i = imm (unsigned), s = imm (signed), v = 23-bit value,
#: t = target address (imm), p = parameter name (imm).
FORMS = {
    Op.LI: "dv", Op.ADD: "dab", Op.SUB: "dab", Op.ADDI: "das", Op.DIVU: "dab",
    Op.REMU: "dab", Op.CFG: "dp", Op.BEQ: "abt", Op.BNE: "abt", Op.BLTU: "abt",
    Op.BGEU: "abt", Op.LOOP: "at", Op.SPLIT: "ab", Op.SETR: "a", Op.SWEEP: "dab",
    Op.HALT: "", Op.FAIL: "",
}


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction (fields that an opcode does not use are 0)."""
    op: Op
    rd: int = 0
    ra: int = 0
    rb: int = 0
    imm: int = 0

    @property
    def value(self) -> int:
        """LI's 23-bit value."""
        return (self.ra << (IMM_BITS + 3)) | (self.rb << IMM_BITS) | self.imm


def param_values(*, rows: int, cols: int, weight_words: int, act_bytes: int, result_rows: int,
                 pass_k_max: int, k_max: int) -> dict:
    """What ``CFG`` reads on a device built with these parameters (RTL and emulator alike)."""
    return {Param.ROWS: rows, Param.COLS: cols, Param.PES: rows * cols,
            Param.WEIGHT_WORDS: weight_words, Param.ACT_BYTES: act_bytes,
            Param.RESULT_ROWS: result_rows, Param.PASS_K_MAX: pass_k_max, Param.K_MAX: k_max}


def tree_param_values(*, k: int, lanes: int, weight_words: int, act_bytes: int,
                      result_rows: int, k_max: int) -> dict:
    """What ``CFG`` reads on a device with the adder-tree engine (``Engine.TREE``): the same
    programs run on it when a *step* of K is ``k`` elements and the activation buffer is
    counted in words of ``k`` bytes. A tile is ``lanes`` outputs with one result row per token
    (``ROWS`` 1), and a token's whole K is one pass (``PASS_K_MAX`` is the buffer's words, the
    most a ``SPLIT`` accepts anyway), so ``linear`` needs no change: given K in steps and the
    activations' first word, it sweeps every tile once for all tokens. ``K_MAX`` is in steps."""
    words = act_bytes // k
    return param_values(rows=1, cols=lanes, weight_words=weight_words, act_bytes=words,
                        result_rows=result_rows, pass_k_max=words, k_max=k_max // k)


def signed_imm(imm: int) -> int:
    """The imm field as a two's-complement number (ADDI)."""
    return imm - (1 << IMM_BITS) if imm >> (IMM_BITS - 1) else imm


def register_bits(params: dict) -> int:
    """Width of the control registers on a build with these ``CFG`` parameters: enough for every
    memory size, ``PASS_K_MAX`` and N up to a whole weight memory of tiles (``WEIGHT_WORDS *
    PES``, a layer with K = 1), with a bit to spare so that the sum of any two of them does not
    saturate either (``linear`` adds ``K + PASS_K_MAX`` and ``N + PES``); at most 32.
    ``K_MAX`` may saturate: programs only compare K with it. The RTL and the emulator both
    derive the width from the parameters, so they saturate at the same value; a small board's
    control gets narrower registers, adders and divider for free."""
    need = max(params[Param.WEIGHT_WORDS] * params[Param.PES], params[Param.ACT_BYTES],
               params[Param.RESULT_ROWS], params[Param.PASS_K_MAX])
    return min(WORD_BITS, need.bit_length() + 1)


def split_k_limit(params: dict) -> int:
    """The largest K a ``SPLIT`` accepts: what the accumulator holds exactly (``K_MAX``) and
    what the activation buffer holds (``ACT_BYTES``: one token's K must fit, and the
    sequencer's counters are only as wide as its addresses)."""
    return min(params[Param.K_MAX], params[Param.ACT_BYTES])


def saturate(v: int, bits: int = WORD_BITS) -> int:
    """Clamp to the unsigned range of ``bits``-bit registers, as the ALU does (and as every
    value entering a register is: RUN arguments, LI values and CFG parameters too)."""
    return min(max(v, 0), (1 << bits) - 1)


def encode(op: Op, rd: int = 0, ra: int = 0, rb: int = 0, imm: int = 0) -> int:
    for name, v, bits in (("rd", rd, 3), ("ra", ra, 3), ("rb", rb, 3), ("imm", imm, IMM_BITS)):
        if not 0 <= v < (1 << bits):
            raise ValueError(f"{Op(op).name}: {name} = {v} does not fit {bits} bits")
    return (Op(op).value << 26) | (rd << 23) | (ra << 20) | (rb << 17) | imm


def decode(word: int) -> Instruction:
    """Decode a word; an unknown opcode decodes as ``Op.ILLEGAL``."""
    if not 0 <= word < (1 << WORD_BITS):
        raise ValueError(f"instruction word {word!r} is not a 32-bit value")
    try:
        op = Op(word >> 26)
    except ValueError:
        op = Op.ILLEGAL
    return Instruction(op, (word >> 23) & 7, (word >> 20) & 7, (word >> 17) & 7,
                       word & ((1 << IMM_BITS) - 1))
