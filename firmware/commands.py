"""The link protocol's vocabulary, defined once (docs/protocol.md, version 6).

Everything both ends of the link must agree on lives here and nowhere else: the command and
status codes (Amaranth enums with an 8-bit shape, so that gateware can switch on them and the
host can still use them as Python enums), the sync bytes, the frame CRC (an
``amaranth.lib.crc`` algorithm: ``FRAME_CRC(data_width=8).create()`` in gateware,
``FRAME_CRC(data_width=8).compute(data)`` in software) and the binary layouts of the payloads
that have a fixed structure (``struct`` format strings, little-endian, with small dataclasses
that pack and unpack them).

The emulator (``host.emu``), the host runtime (``host.device``) and the gateware
(``rtl.core``) all import these definitions.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields

from amaranth.lib import enum
from amaranth.lib.crc import catalog as _crc_catalog

from sim.schedule import TreeConfig     # the golden model: the trees' rules, once

__all__ = [
    "PROTOCOL_VERSION", "REQUEST_SYNC", "RESPONSE_SYNC", "FRAME_CRC", "HEADER_FORMAT", "HEADER_SIZE", "CRC_SIZE",
    "FRAME_OVERHEAD", "MAX_LENGTH", "Command", "Status", "Engine", "ENGINE_NAMES",
    "SERIAL_DIGIT_BITS", "device_trees", "FORMAT_BASE3",
    "INFO_FORMAT", "INFO_SIZE", "DeviceInfo",
    "ADDRESS_FORMAT", "ADDRESS_SIZE",
    "RUN_FORMAT", "RUN_SIZE", "RUN_ARGS", "RunArgs", "FAULT_FORMAT", "FAULT_SIZE",
    "INSTRUCTION_BYTES", "pack_instructions", "unpack_instructions",
    "READ_RESULTS_FORMAT", "READ_RESULTS_SIZE", "ReadResultsArgs", "RESULT_DTYPE",
    "NARROW_RESULT_DTYPE", "RESULT_WIDTHS",
    "MAX_RESPONSE_PAYLOAD",
    "COUNTER_NAMES", "COUNTERS_FORMAT", "COUNTERS_SIZE", "Counters",
]

PROTOCOL_VERSION = 6
REQUEST_SYNC = 0xA5          # first byte of every request (host to device)
RESPONSE_SYNC = 0x5A         # first byte of every response (device to host)

#: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over the frame
#: from the code byte to the last payload byte; sent little-endian after the payload.
FRAME_CRC = _crc_catalog.CRC16_CCITT_FALSE

HEADER_FORMAT = "<BBBH"      # sync, code, seq, len
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)   # 5
CRC_SIZE = 2
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE        # 7 bytes around every payload
MAX_LENGTH = 0xFFFF          # the len field is u16


class Command(enum.Enum, shape=8):
    """Request codes (the ``code`` byte of a request frame)."""
    INFO = 0x01
    RESET = 0x02
    WRITE_WEIGHTS = 0x10
    WRITE_ACTS = 0x11
    WRITE_PROGRAM = 0x12
    RUN = 0x20
    READ_RESULTS = 0x21
    READ_COUNTERS = 0x30
    CLEAR_COUNTERS = 0x31


class Status(enum.Enum, shape=8):
    """Response codes (the ``code`` byte of a response frame).

    docs/protocol.md names the statuses without giving their values; these are the values.
    ``OK`` is 0 so that a status register resets to it.
    """
    OK = 0x00
    BAD_CRC = 0x01
    BAD_LENGTH = 0x02
    UNKNOWN_COMMAND = 0x03
    BAD_ARGUMENT = 0x04
    PROGRAM_FAULT = 0x05


class Engine(enum.Enum, shape=8):
    """The compute engine a device is built with (``DeviceInfo.engine``); it decides how a
    layer's weights are laid out in words and what a step of K is (docs/protocol.md)."""
    ARRAY = 0       # rtl.systolic.MatrixEngine: rows x cols PEs, a step is one element of K
    TREE = 1        # rtl.adder_tree.TreeEngine: rows = k products for each of cols lanes, a
                    # step is k elements of K; activations in words of k bytes
    SERIAL_TREE = 2     # rtl.serial_tree.SerialTreeEngine: the trees' host view, activations
                        # SERIAL_DIGIT_BITS a cycle; a weight-memory word is one lane group of
                        # a step's word, a step's word that many words (version 6)


#: The names ``open_device``, the CLI and the device core give the engines.
ENGINE_NAMES = {"array": Engine.ARRAY, "tree": Engine.TREE, "serial": Engine.SERIAL_TREE}

#: Bits of an activation the serial trees take a cycle: fixed by ``Engine.SERIAL_TREE``, so
#: INFO needs no field for it.
SERIAL_DIGIT_BITS = 2


def device_trees(engine: str, rows: int, cols: int, *, act_bits: int = 8,
                 acc_bits: int = 32) -> TreeConfig | None:
    """The trees of a device built with ``engine`` (a name of ``ENGINE_NAMES``): ``rows``
    products for each of ``cols`` lanes, the serial ones fed ``SERIAL_DIGIT_BITS`` a cycle
    and without back-pressure, as ``rtl.core.DeviceCore`` builds them (its result buffer
    takes each row as it comes: ``TreeConfig.backpressure``, which the cycle model reads);
    None for the array. The one place a device's trees are defined, for the core, the
    emulator, the host (``DeviceInfo.tree_config``) and the board tables. Raises ValueError
    for trees the engine cannot have (k not a power of two, lanes the digits cannot
    group)."""
    if engine not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINE_NAMES)}")
    if engine == "array":
        return None
    serial = engine == "serial"
    config = TreeConfig(k=rows, lanes=cols, act_bits=act_bits, acc_bits=acc_bits,
                        digit_bits=SERIAL_DIGIT_BITS if serial else None,
                        backpressure=not serial)
    config.words_per_step                   # refuses lanes the serial beats cannot group
    return config


#: Bit of ``DeviceInfo.formats``: ``WRITE_WEIGHTS`` accepts base3 words.
FORMAT_BASE3 = 1 << 0


def _check_fields(obj, fmt: str) -> None:
    """Raise ValueError naming the field if a value does not fit its struct code."""
    limits = {"B": 8, "H": 16, "I": 32, "Q": 64}
    codes = [c for c in fmt if c in limits]
    for f, code in zip(fields(obj), codes):
        v = getattr(obj, f.name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << limits[code]):
            raise ValueError(f"{type(obj).__name__}.{f.name} = {v!r} does not fit "
                             f"u{limits[code]}")


def _unpack(cls, fmt: str, size: int, data) -> tuple:
    data = bytes(data)
    if len(data) != size:
        raise ValueError(f"{cls.__name__}: expected {size} bytes, got {len(data)}")
    return struct.unpack(fmt, data)


# ---------------------------------------------------------------------------------------------
# INFO response
# ---------------------------------------------------------------------------------------------

#: version, rows, cols, act_bits, psum_bits, acc_bits, formats, weight_words, act_bytes,
#: result_rows, max_payload, frame_timeout, clock_hz, program_words, counter_bits, engine
INFO_FORMAT = "<HHHBBBBIIIHIIHBB"
INFO_SIZE = struct.calcsize(INFO_FORMAT)       # 36


@dataclass(frozen=True)
class DeviceInfo:
    """The payload of the ``INFO`` response (field order here is the wire order)."""
    version: int = PROTOCOL_VERSION
    rows: int = 16
    cols: int = 16
    act_bits: int = 8
    psum_bits: int = 16
    acc_bits: int = 32
    formats: int = FORMAT_BASE3
    weight_words: int = 0       # weight memory depth in words (word_trits each)
    act_bytes: int = 0          # activation buffer size in bytes
    result_rows: int = 0        # result buffer depth in rows of cols int32 sums
    max_payload: int = 0        # largest request payload the device accepts
    frame_timeout: int = 0      # cycles of silence that drop a partial frame
    clock_hz: int = 0           # core clock, 0 when unknown
    program_words: int = 0      # program memory depth in 32-bit instructions
    counter_bits: int = 64      # width of the counters (READ_COUNTERS zero-extends them to u64)
    engine: int = Engine.ARRAY.value    # Engine: the array, or (serial) adder trees

    def to_bytes(self) -> bytes:
        _check_fields(self, INFO_FORMAT)
        return struct.pack(INFO_FORMAT, *(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def from_bytes(cls, data) -> "DeviceInfo":
        data = bytes(data)
        if len(data) >= 2 and len(data) != INFO_SIZE:
            # Say which protocol the device speaks rather than only that the size is wrong:
            # the version is the first field of every protocol's INFO.
            (version,) = struct.unpack_from("<H", data)
            if version != PROTOCOL_VERSION:
                raise ValueError(f"{cls.__name__}: the device speaks protocol version "
                                 f"{version}, this host speaks {PROTOCOL_VERSION}")
        return cls(*_unpack(cls, INFO_FORMAT, INFO_SIZE, data))

    @property
    def tree(self) -> bool:
        """The device runs adder trees, parallel or digit-serial (``Engine.TREE``,
        ``Engine.SERIAL_TREE``): the host lays layers out the same way for both."""
        return self.engine in (Engine.TREE.value, Engine.SERIAL_TREE.value)

    @property
    def digit_bits(self) -> int | None:
        """Bits of an activation the trees take a cycle: ``SERIAL_DIGIT_BITS`` on the serial
        trees, None (all of them) on the other engines."""
        return SERIAL_DIGIT_BITS if self.engine == Engine.SERIAL_TREE.value else None

    @property
    def engine_name(self) -> str:
        """The engine's name in ``ENGINE_NAMES`` (``str(engine)`` for a value this host does
        not know)."""
        return next((n for n, e in ENGINE_NAMES.items() if e.value == self.engine),
                    str(self.engine))

    @property
    def tree_config(self) -> TreeConfig | None:
        """The trees as built (:func:`device_trees`), or None on the array."""
        if not self.tree:
            return None
        return device_trees(self.engine_name, self.rows, self.cols, act_bits=self.act_bits,
                            acc_bits=self.acc_bits)

    @property
    def words_per_step(self) -> int:
        """Weight-memory words a step's ``rows * cols`` trits take: 1, or on the serial trees
        one a digit (``TreeConfig.words_per_step``)."""
        return self.tree_config.words_per_step if self.digit_bits else 1

    @property
    def word_trits(self) -> int:
        """Trits of one weight-memory word, the unit of ``weight_words`` and ``WRITE_WEIGHTS``:
        ``rows * cols``, or a lane group's on the serial trees."""
        return self.rows * self.cols // self.words_per_step

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def word_bytes(self) -> int:
        """Bytes of one base3 weight-memory word on the link: ``ceil(word_trits / 5)``."""
        return -(-self.word_trits // 5)


# ---------------------------------------------------------------------------------------------
# Request arguments
# ---------------------------------------------------------------------------------------------

#: The address in front of WRITE_WEIGHTS (first word) and WRITE_ACTS (first byte) data.
ADDRESS_FORMAT = "<I"
ADDRESS_SIZE = struct.calcsize(ADDRESS_FORMAT)  # 4

#: entry (program address), then r0 .. r5 for the program (firmware.isa)
RUN_FORMAT = "<H6I"
RUN_SIZE = struct.calcsize(RUN_FORMAT)          # 26
RUN_ARGS = 6


@dataclass(frozen=True)
class RunArgs:
    """The payload of a ``RUN`` request: where the program starts and its six arguments
    (``firmware.programs.linear_args`` builds them for a layer)."""
    entry: int
    args: tuple = (0, 0, 0, 0, 0, 0)

    def __post_init__(self):
        args = tuple(self.args) + (0,) * (RUN_ARGS - len(tuple(self.args)))
        object.__setattr__(self, "args", args)

    def to_bytes(self) -> bytes:
        if len(self.args) != RUN_ARGS:
            raise ValueError(f"RunArgs: at most {RUN_ARGS} arguments, got {len(self.args)}")
        for i, v in enumerate((self.entry,) + self.args):
            bits = 16 if i == 0 else 32
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << bits):
                name = "entry" if i == 0 else f"r{i - 1}"
                raise ValueError(f"RunArgs.{name} = {v!r} does not fit u{bits}")
        return struct.pack(RUN_FORMAT, self.entry, *self.args)

    @classmethod
    def from_bytes(cls, data) -> "RunArgs":
        entry, *args = _unpack(cls, RUN_FORMAT, RUN_SIZE, data)
        return cls(entry, tuple(args))


#: A PROGRAM_FAULT response's payload: the program address and the cause (firmware.isa.Fault).
FAULT_FORMAT = "<HB"
FAULT_SIZE = struct.calcsize(FAULT_FORMAT)      # 3

#: WRITE_PROGRAM data: little-endian 32-bit instruction words after the address.
INSTRUCTION_BYTES = 4


def pack_instructions(words) -> bytes:
    """Instruction words as ``WRITE_PROGRAM`` carries them."""
    return b"".join(int(w).to_bytes(INSTRUCTION_BYTES, "little") for w in words)


def unpack_instructions(data) -> list[int]:
    """The words of ``WRITE_PROGRAM`` data (a whole number of instructions)."""
    data = bytes(data)
    if len(data) % INSTRUCTION_BYTES:
        raise ValueError(f"{len(data)} bytes are not whole {INSTRUCTION_BYTES}-byte instructions")
    return [int.from_bytes(data[i:i + INSTRUCTION_BYTES], "little")
            for i in range(0, len(data), INSTRUCTION_BYTES)]


#: row, rows, width (bytes per sum: 4, or 2 for sums the host knows fit int16)
READ_RESULTS_FORMAT = "<IHB"
READ_RESULTS_SIZE = struct.calcsize(READ_RESULTS_FORMAT)   # 7
#: each result sum in a READ_RESULTS response: int32, little-endian (a NumPy dtype) ...
RESULT_DTYPE = "<i4"
#: ... or, with width 2, its low 16 bits (exact when |sum| < 2**15: K <= 255 at int8)
NARROW_RESULT_DTYPE = "<i2"
RESULT_WIDTHS = {4: RESULT_DTYPE, 2: NARROW_RESULT_DTYPE}
#: a response payload is at most this long (the len field); READ_RESULTS must stay below it
MAX_RESPONSE_PAYLOAD = MAX_LENGTH


@dataclass(frozen=True)
class ReadResultsArgs:
    """The payload of a ``READ_RESULTS`` request."""
    row: int
    rows: int
    width: int = 4

    def to_bytes(self) -> bytes:
        _check_fields(self, READ_RESULTS_FORMAT)
        return struct.pack(READ_RESULTS_FORMAT, self.row, self.rows, self.width)

    @classmethod
    def from_bytes(cls, data) -> "ReadResultsArgs":
        return cls(*_unpack(cls, READ_RESULTS_FORMAT, READ_RESULTS_SIZE, data))


# ---------------------------------------------------------------------------------------------
# READ_COUNTERS response
# ---------------------------------------------------------------------------------------------

COUNTER_NAMES = ("busy", "stall_input", "stall_drain", "drain_tail", "runs", "frames_ok",
                 "frames_bad")
COUNTERS_FORMAT = "<" + "Q" * len(COUNTER_NAMES)
COUNTERS_SIZE = struct.calcsize(COUNTERS_FORMAT)   # 56


@dataclass(frozen=True)
class Counters:
    """The payload of the ``READ_COUNTERS`` response (each counter u64 on the wire; the device
    counts modulo ``2**DeviceInfo.counter_bits``)."""
    busy: int = 0
    stall_input: int = 0
    stall_drain: int = 0
    drain_tail: int = 0
    runs: int = 0
    frames_ok: int = 0
    frames_bad: int = 0

    def to_bytes(self) -> bytes:
        _check_fields(self, COUNTERS_FORMAT)
        return struct.pack(COUNTERS_FORMAT, *(getattr(self, n) for n in COUNTER_NAMES))

    @classmethod
    def from_bytes(cls, data) -> "Counters":
        return cls(*_unpack(cls, COUNTERS_FORMAT, COUNTERS_SIZE, data))

    def as_dict(self) -> dict:
        return asdict(self)


assert tuple(f.name for f in fields(Counters)) == COUNTER_NAMES
