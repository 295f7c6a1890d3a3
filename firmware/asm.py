"""Assembler and disassembler for the control processor (``firmware.isa``).

Syntax, one instruction per line::

    ; comments start with ';' or '#'
    .alias  tiles, r4          ; a name for a register
    .equ    ONE, 1             ; a name for a number
    start:  CFG   r6, K_MAX    ; CFG takes a Param name
            BLTU  r6, r5, bad  ; targets are labels (or absolute addresses)
            ADDI  r7, r7, -1
    bad:    FAIL

Mnemonics, register names and parameter names are case-insensitive; labels and aliases are
case-sensitive. ``assemble(text, base)`` places the first instruction at program address
``base`` (labels are absolute) and raises :class:`AsmError` with the line for any mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import isa
from .commands import pack_instructions
from .isa import FORMS, IMM_BITS, LI_BITS, Op, Param

__all__ = ["AsmError", "Program", "assemble", "disassemble"]

_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*:\s*(.*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class AsmError(ValueError):
    """A mistake in assembly text, with the source name and line."""

    def __init__(self, source: str, line: int, message: str):
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message


@dataclass
class Program:
    """Assembled words, placed at ``base``, with the labels (absolute addresses)."""
    words: list[int]
    base: int = 0
    labels: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    def to_bytes(self) -> bytes:
        """The words as ``WRITE_PROGRAM`` carries them (little-endian u32)."""
        return pack_instructions(self.words)

    def listing(self) -> str:
        names = {a: n for n, a in self.labels.items()}
        lines = []
        for i, (word, text) in enumerate(zip(self.words,
                                             disassemble(self.words, self.base, names))):
            addr = self.base + i
            label = f"{names[addr]}:" if addr in names else ""
            lines.append(f"{addr:4d}  {word:08x}  {label:<12} {text}")
        return "\n".join(lines)


def _strip(line: str) -> str:
    for mark in (";", "#"):
        line = line.split(mark, 1)[0]
    return line.strip()


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def assemble(text: str, base: int = 0, source: str = "<program>") -> Program:
    """Assemble ``text`` into words placed from program address ``base``."""
    # Pass 1: labels, aliases and constants; collect the instruction lines.
    labels: dict[str, int] = {}
    aliases: dict[str, int] = {}
    constants: dict[str, int] = {}
    lines: list[tuple[int, str, list[str]]] = []
    addr = base

    def define(name: str, lineno: int) -> None:
        if not _NAME.match(name):
            raise AsmError(source, lineno, f"bad name {name!r}")
        if name in labels or name in aliases or name in constants:
            raise AsmError(source, lineno, f"{name!r} is defined twice")

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        while (match := _LABEL.match(line)):
            define(match.group(1), lineno)
            labels[match.group(1)] = addr
            line = match.group(2).strip()
        if not line:
            continue
        mnemonic, _, rest = line.partition(" ")
        operands = [o.strip() for o in rest.split(",")] if rest.strip() else []
        if mnemonic.lower() in (".alias", ".equ"):
            if len(operands) != 2:
                raise AsmError(source, lineno, f"{mnemonic} takes a name and a value")
            define(operands[0], lineno)
            if mnemonic.lower() == ".alias":
                reg = _register(operands[1], {}, source, lineno)
                aliases[operands[0]] = reg
            else:
                v = _number(operands[1])
                if v is None:
                    raise AsmError(source, lineno, f"{operands[1]!r} is not a number")
                constants[operands[0]] = v
            continue
        lines.append((lineno, mnemonic, operands))
        addr += 1

    # Pass 2: encode.
    words = []
    for i, (lineno, mnemonic, operands) in enumerate(lines):
        pc = base + i
        try:
            op = Op[mnemonic.upper()]
        except KeyError:
            raise AsmError(source, lineno, f"unknown instruction {mnemonic!r}") from None
        if op is Op.ILLEGAL:
            raise AsmError(source, lineno, "ILLEGAL is not an instruction")
        form = FORMS[op]
        if len(operands) != len(form):
            raise AsmError(source, lineno, f"{op.name} takes {len(form)} operand(s) "
                                           f"({_describe(form)}), got {len(operands)}")
        fields = dict(rd=0, ra=0, rb=0, imm=0)
        for kind, text_op in zip(form, operands):
            if kind in "dab":
                fields["r" + kind] = _register(text_op, aliases, source, lineno)
            elif kind == "p":
                number = _number(text_op)
                if text_op.upper() in Param.__members__:
                    fields["imm"] = Param[text_op.upper()].value
                elif number is not None and 0 <= number < (1 << IMM_BITS):
                    fields["imm"] = number      # (a parameter of a newer device)
                else:
                    raise AsmError(source, lineno, f"unknown parameter {text_op!r}; known: "
                                   f"{', '.join(p.name for p in Param)}")
            else:
                v = _value(text_op, labels, constants, source, lineno)
                if kind == "t":
                    if v <= pc:
                        raise AsmError(source, lineno, f"target {text_op} ({v}) is not after "
                                       f"this instruction ({pc}): branches only go forward; "
                                       f"use LOOP to repeat")
                    if v >= 1 << IMM_BITS:
                        raise AsmError(source, lineno, f"target {v} out of range")
                    fields["imm"] = v
                elif kind == "s":
                    if not -(1 << (IMM_BITS - 1)) <= v < (1 << (IMM_BITS - 1)):
                        raise AsmError(source, lineno, f"immediate {v} does not fit "
                                                       f"{IMM_BITS} signed bits")
                    fields["imm"] = v & ((1 << IMM_BITS) - 1)
                elif kind == "v":
                    if not 0 <= v < (1 << LI_BITS):
                        raise AsmError(source, lineno, f"LI value {v} is outside 0 .. "
                                                       f"{(1 << LI_BITS) - 1}")
                    fields["ra"] = v >> (IMM_BITS + 3)
                    fields["rb"] = (v >> IMM_BITS) & 7
                    fields["imm"] = v & ((1 << IMM_BITS) - 1)
        words.append(isa.encode(op, **fields))
    return Program(words=words, base=base, labels=labels)


def _describe(form: str) -> str:
    names = {"d": "rd", "a": "ra", "b": "rb", "s": "imm", "v": "value", "t": "target",
             "p": "param", "i": "imm"}
    return ", ".join(names[k] for k in form) or "none"


def _register(text: str, aliases: dict[str, int], source: str, lineno: int) -> int:
    if text in aliases:
        return aliases[text]
    if re.fullmatch(r"[rR][0-7]", text):
        return int(text[1])
    raise AsmError(source, lineno, f"{text!r} is not a register (r0 .. r7 or an .alias)")


def _value(text: str, labels: dict, constants: dict, source: str, lineno: int) -> int:
    if text in labels:
        return labels[text]
    if text in constants:
        return constants[text]
    v = _number(text)
    if v is None:
        raise AsmError(source, lineno, f"{text!r} is not a number, label or .equ name")
    return v


def disassemble(words, base: int = 0, names: dict[int, str] | None = None) -> list[str]:
    """One line of assembly per word (``names`` maps addresses to labels for targets)."""
    names = names or {}
    out = []
    for word in words:
        ins = isa.decode(word)
        if ins.op is Op.ILLEGAL:
            out.append(f".word 0x{word:08x}")
            continue
        parts = []
        for kind in FORMS[ins.op]:
            if kind in "dab":
                parts.append(f"r{getattr(ins, 'r' + kind)}")
            elif kind == "p":
                try:
                    parts.append(Param(ins.imm).name)
                except ValueError:
                    parts.append(str(ins.imm))
            elif kind == "t":
                parts.append(names.get(ins.imm, str(ins.imm)))
            elif kind == "s":
                parts.append(str(isa.signed_imm(ins.imm)))
            elif kind == "v":
                parts.append(str(ins.value))
        out.append(f"{ins.op.name:<6}{', '.join(parts)}".rstrip())
    return out
