"""The device side of the link protocol in Python: the reference the RTL device core matches.

:class:`EmulatedDevice` takes request bytes with :meth:`~EmulatedDevice.feed` and produces
response bytes for :meth:`~EmulatedDevice.read`, with the observable behaviour docs/protocol.md
specifies and ``rtl.core.DeviceCore`` implements:

* the receiver hunts for ``REQUEST_SYNC``, answers ``BAD_LENGTH`` right after a header whose
  length exceeds ``max_payload`` (and hunts again from the next byte), ``BAD_CRC`` after a
  complete frame whose CRC does not match; a partial frame is dropped without a response after
  ``frame_timeout`` cycles of silence. The emulator has no clock: :meth:`idle` stands for that
  silence (transports call it when a read times out), so a partial frame followed by ``idle()``
  and a new ``feed()`` is dropped;
* arguments are checked before anything is written (``BAD_ARGUMENT``: nothing changes);
* weight memory holds 2-bit codes (``t + 1``), decoded from base3 once, at the link;
* ``RUN`` runs the control program in program memory with ``firmware.machine`` (the reference
  of ``rtl.controller``) and carries out the sweeps it issues: each sweep is planned with
  ``sim.schedule.plan_linear(..., mapping="outputs", n_chunks=...)`` over one tile of whole
  weight words (padding trits included) and run pass by pass through
  ``sim.schedule.tile_sums``, writing one row of ``cols`` int32 sums per result beat from the
  result pointer on (docs/protocol.md). With ``engine="tree"`` (``rtl.adder_tree``) a sweep's
  K is in steps of ``rows`` elements and its activations in words of ``rows`` bytes, and every
  pass writes one row of its lanes' sums (one per token and tile under ``linear``). With
  ``engine="serial"`` (``rtl.serial_tree``) the same, except that a weight-memory word is one
  lane group, ``TreeConfig.word_trits``: a step's word is ``words_per_step`` memory words,
  and the programs' weight addresses count steps' words (sweep word ``w`` is memory words
  ``w * words_per_step`` on);
* the cycle counters add the full-rate :class:`sim.cycles.CycleCount` of the passes streamed
  back to back (``sim.cycles.stream_count``; sweeps separated by an instruction that waits
  for the sequencer, such as ``SPLIT`` or ``SETR``, are counted as separate streams). That is
  what the RTL counts when sweeps come from a one-instruction ``LOOP`` body, as in the
  shipped programs;
* with ``program_words=0`` the device has ``linear`` hardwired (``DeviceCore(control=
  "hardwired")``, tree engines only): ``RUN`` from ``linear``'s entry runs
  ``firmware.hardwired.run_linear``, from any other is refused, and so is every program word.
"""

from __future__ import annotations

import struct

import numpy as np

from firmware import hardwired, machine
from firmware.commands import (ADDRESS_FORMAT, ADDRESS_SIZE, COUNTER_NAMES, ENGINE_NAMES,
                               FAULT_FORMAT, FORMAT_BASE3, INSTRUCTION_BYTES, MAX_LENGTH,
                               PROTOCOL_VERSION, READ_RESULTS_SIZE, REQUEST_SYNC, RESULT_DTYPE,
                               RESULT_WIDTHS, RUN_SIZE, Command, Counters, DeviceInfo,
                               ReadResultsArgs, RunArgs, Status, device_trees,
                               unpack_instructions)
from firmware.isa import param_values, tree_param_values
from firmware.programs import FIRMWARE
from sim import cycles, packing, schedule

from .protocol import BadFrame, Frame, FrameDecoder, encode_response

__all__ = ["EmulatedDevice"]

class EmulatedDevice:
    """A tritium device in Python, speaking the link protocol (docs/protocol.md) over ``feed()`` / ``read()``.

    Parameters follow ``rtl.core.DeviceCore``: the array (``rows``, ``cols``, ``psum_bits``,
    ``acc_bits``), the memories (``weight_words`` words of ``rows*cols`` trits, on the serial
    trees of a lane group's ``rows*cols / D``; ``act_bytes``; ``result_words`` rows of
    ``cols`` int32 sums — INFO reports it as ``result_rows``, which is accepted as an alias),
    ``max_payload`` (largest request payload), ``frame_timeout`` and ``clock_hz`` (reported by
    INFO), ``program_words`` (the control program memory, which
    starts with ``firmware.programs.FIRMWARE`` like the RTL's; 0: ``linear`` hardwired, with
    the tree engines only), ``counter_bits`` (the counters count modulo ``2**counter_bits``),
    ``engine`` ("array"; "tree": ``rows`` products for each of ``cols`` lanes, as
    ``DeviceCore(engine="tree")``; "serial": the same trees fed ``SERIAL_DIGIT_BITS`` of each
    activation a cycle, as ``DeviceCore(engine="serial")``) and ``control`` ("hardwired":
    ``linear`` without a processor, as ``DeviceCore(control="hardwired")``; the same as
    ``program_words=0``).
    """

    def __init__(self, rows: int = 16, cols: int = 16, psum_bits: int = 16, acc_bits: int = 32,
                 weight_words: int = 8192, act_bytes: int = 65536, result_words: int = 65536,
                 max_payload: int = 1024, frame_timeout: int = 1 << 16, clock_hz: int = 0,
                 *, result_rows: int | None = None, program_words: int = 64,
                 counter_bits: int = 64, engine: str = "array", control: str = "processor"):
        if engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINE_NAMES))}, "
                             f"not {engine!r}")
        if control not in ("processor", "hardwired"):
            raise ValueError(f"control must be 'processor' or 'hardwired', not {control!r}")
        if control == "hardwired":
            program_words = 0           # as DeviceCore(control="hardwired") reports it
        self.tree = None
        if engine != "array":
            self.tree = device_trees(engine, rows, cols, acc_bits=acc_bits)
            psum_bits = acc_bits           # as the RTL's INFO reports it: no partial sums
            self.tree.act_words(act_bytes)
        #: weight-memory words a step's word takes (1 but on the serial trees; validates
        #: that their lanes make whole groups)
        self.words_per_step = self.tree.words_per_step if self.tree else 1
        self.config = schedule.ArrayConfig(rows=rows, cols=cols, psum_bits=psum_bits,
                                           acc_bits=acc_bits)
        if result_rows is not None:
            result_words = result_rows
        for name, v in (("weight_words", weight_words), ("act_bytes", act_bytes),
                        ("result_words", result_words)):
            if not isinstance(v, int) or not 1 <= v < (1 << 32):
                raise ValueError(f"{name} must be an integer in 1 .. 2**32-1, got {v!r}")
        if not isinstance(program_words, int) or not (
                program_words == 0 or len(FIRMWARE) <= program_words < (1 << 16)):
            raise ValueError(f"program_words must be 0 (linear hardwired) or in "
                             f"{len(FIRMWARE)} .. 65535 (the firmware has {len(FIRMWARE)} "
                             f"words), got {program_words!r}")
        if program_words == 0 and not self.tree:
            raise ValueError("a device with linear hardwired (program_words=0) needs a "
                             "tree engine")
        if not isinstance(counter_bits, int) or not 32 <= counter_bits <= 64:
            raise ValueError(f"counter_bits must be in 32 .. 64, got {counter_bits!r}")
        if not isinstance(max_payload, int) or not RUN_SIZE <= max_payload <= MAX_LENGTH:
            raise ValueError(f"max_payload must be in {RUN_SIZE} .. {MAX_LENGTH} (a RUN request "
                             f"carries {RUN_SIZE} bytes), got {max_payload!r}")
        self.info = DeviceInfo(version=PROTOCOL_VERSION, rows=rows, cols=cols,
                               act_bits=self.config.act_bits, psum_bits=psum_bits,
                               acc_bits=acc_bits, formats=FORMAT_BASE3,
                               weight_words=weight_words, act_bytes=act_bytes,
                               result_rows=result_words, max_payload=max_payload,
                               frame_timeout=frame_timeout, clock_hz=clock_hz,
                               program_words=program_words, counter_bits=counter_bits,
                               engine=ENGINE_NAMES[engine].value)
        self._counter_mask = (1 << counter_bits) - 1
        self._info_bytes = self.info.to_bytes()   # validates every field's range
        self.word_trits = self.info.word_trits
        self.word_bytes = packing.packed_size(self.word_trits, "base3")
        # Memories start at zero, like the RTL's block RAM (weight code 0 is the trit -1).
        self.weights = np.zeros((weight_words, self.word_trits), dtype=np.uint8)
        self.acts = np.zeros(act_bytes, dtype=np.int8)
        self.results = np.zeros((result_words, cols), dtype=np.int32)
        self.hardwired = program_words == 0
        self.program = (list(FIRMWARE.words) + [0] * (program_words - len(FIRMWARE))
                        if program_words else [])
        if self.tree:
            # programs address steps' words: a partial step's words at the end are unused
            self.params = tree_param_values(k=rows, lanes=cols,
                                            weight_words=weight_words // self.words_per_step,
                                            act_bytes=act_bytes, result_rows=result_words,
                                            k_max=self.tree.k_max)
        else:
            self.params = param_values(rows=rows, cols=cols, weight_words=weight_words,
                                       act_bytes=act_bytes, result_rows=result_words,
                                       pass_k_max=self.config.pass_k_max,
                                       k_max=self.config.k_max)
        if self.hardwired:
            hardwired.hardwired_supported(self.params)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._decoder = FrameDecoder(REQUEST_SYNC, max_payload)
        self._out = bytearray()
        self.last_outcome: machine.Outcome | None = None   # how the latest RUN went
        self.result_row = 0        # the sequencer's result pointer (SETR moves it)

    # -- byte stream ---------------------------------------------------------------------

    def feed(self, data) -> None:
        """Receive request bytes; every complete request is answered into the output queue."""
        for ev in self._decoder.feed_events(data):
            if isinstance(ev, BadFrame):
                self._count("frames_bad")
                status = Status.BAD_CRC if ev.kind == "bad_crc" else Status.BAD_LENGTH
                self._respond(status, ev.seq)
            else:
                self._count("frames_ok")
                status, payload = self._execute(ev)
                self._respond(status, ev.seq, payload)

    def read(self, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (default: all) pending response bytes."""
        n = len(self._out) if max_bytes is None else min(max_bytes, len(self._out))
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    @property
    def pending(self) -> int:
        """Response bytes waiting to be read."""
        return len(self._out)

    def idle(self) -> None:
        """The line stays silent for ``frame_timeout`` cycles: a partial frame is dropped."""
        self._decoder.reset()

    @property
    def receiving(self) -> bool:
        """A request frame has started and is not complete."""
        return self._decoder.partial

    # -- internals -----------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = (self.counters[name] + n) & self._counter_mask

    def _respond(self, status: Status, seq: int, payload: bytes = b"") -> None:
        self._out += encode_response(status, seq, payload)

    def _execute(self, frame: Frame) -> tuple[Status, bytes]:
        try:
            cmd = Command(frame.code)
        except ValueError:
            return Status.UNKNOWN_COMMAND, b""
        p = frame.payload
        handler = getattr(self, "_cmd_" + cmd.name.lower())
        result = handler(p)
        if result is None:
            return Status.BAD_ARGUMENT, b""
        if isinstance(result, tuple):          # a status of its own (RUN)
            return result
        return Status.OK, result

    def _cmd_info(self, p: bytes):
        return self._info_bytes if not p else None

    def _cmd_reset(self, p: bytes):
        # Clears counters and the sequencer (which is idle between requests); memories stay.
        return self._cmd_clear_counters(p)

    def _cmd_clear_counters(self, p: bytes):
        if p:
            return None
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        return b""

    def _cmd_read_counters(self, p: bytes):
        if p:
            return None
        return Counters(**self.counters).to_bytes()

    def _address(self, p: bytes) -> tuple[int, bytes] | None:
        if len(p) < ADDRESS_SIZE:
            return None
        (addr,) = struct.unpack_from(ADDRESS_FORMAT, p)
        return addr, p[ADDRESS_SIZE:]

    def _cmd_write_acts(self, p: bytes):
        a = self._address(p)
        if a is None:
            return None
        offset, data = a
        if offset + len(data) > self.info.act_bytes:
            return None
        self.acts[offset:offset + len(data)] = np.frombuffer(data, dtype=np.int8)
        return b""

    def _cmd_write_weights(self, p: bytes):
        a = self._address(p)
        if a is None:
            return None
        word, data = a
        b = np.frombuffer(data, dtype=np.uint8)
        words, rest = divmod(b.size, self.word_bytes)
        if (rest or words == 0 or word + words > self.info.weight_words
                or (b > packing.BASE3_MAX_BYTE).any()):
            return None
        trits = packing.unpack_base3(b, (words, 5 * self.word_bytes))
        self.weights[word:word + words] = trits[:, :self.word_trits] + 1
        return b""

    def _cmd_read_results(self, p: bytes):
        if len(p) != READ_RESULTS_SIZE:
            return None
        a = ReadResultsArgs.from_bytes(p)
        if (a.rows == 0 or a.row + a.rows > self.info.result_rows
                or a.rows * self.config.cols * 4 > MAX_LENGTH or a.width not in RESULT_WIDTHS):
            return None
        # Width 2: the low 16 bits of each int32 sum, as the device sends them.
        rows = self.results[a.row:a.row + a.rows].astype(RESULT_DTYPE)
        return rows.view(np.uint8).reshape(-1, 4)[:, :a.width].tobytes()

    def _cmd_write_program(self, p: bytes):
        a = self._address(p)
        if a is None:
            return None
        addr, data = a
        n, rest = divmod(len(data), INSTRUCTION_BYTES)
        if rest or addr + n > self.info.program_words:
            return None
        self.program[addr:addr + n] = unpack_instructions(data)
        return b""

    def _cmd_run(self, p: bytes):
        if len(p) != RUN_SIZE:
            return None
        a = RunArgs.from_bytes(p)
        if self.hardwired:
            if a.entry != FIRMWARE.entries["linear"]:
                return None
        elif a.entry >= self.info.program_words:
            return None
        self._count("runs")
        out = (hardwired.run_linear(a.args, self.params) if self.hardwired
               else machine.run(self.program, a.entry, a.args, self.params))
        self.last_outcome = out
        stream: list[int] = []             # pass lengths streamed back to back
        for ev in out.events:
            if isinstance(ev, machine.Sweep):
                stream += self._sweep(ev)
            else:                          # SPLIT and SETR wait until the stream has drained
                self._count_stream(stream)
                stream = []
                if isinstance(ev, machine.SetResults):
                    self.result_row = ev.row
        self._count_stream(stream)
        if out.status is Status.PROGRAM_FAULT:
            return out.status, struct.pack(FAULT_FORMAT, out.fault_pc, out.fault.value)
        return out.status, b""

    def _count_stream(self, lengths: list[int]) -> None:
        count = cycles.stream_count(self.tree or self.config, lengths)
        for name in ("busy", "stall_input", "stall_drain", "drain_tail"):
            self._count(name, getattr(count, name))

    def _sweep(self, sw: machine.Sweep) -> list[int]:
        """Carry out one sweep as the sequencer streams it; return its pass lengths.

        Words and bytes outside the memories read as zero and result rows outside the buffer
        are dropped (the shipped programs check their bounds; other programs get what they
        ask for)."""
        if self.tree:
            return self._tree_sweep(sw)
        cfg = self.config
        R, P, K, M = cfg.rows, cfg.pes, sw.split.k, sw.tokens
        plan = schedule.plan_linear(cfg, M, P, K, mapping="outputs", n_chunks=sw.split.n)
        words = _window(self.weights, sw.weights, K)                 # (K, P) codes
        w = words.T.astype(np.int8) - 1                              # (P, K) trits
        x = _window(self.acts, sw.acts, M * K).reshape(M, K)
        for p, sums in schedule.tile_sums(plan, w, x):
            row = self.result_row
            for j in range(R):
                if row + j < self.info.result_rows:
                    self.results[row + j] = sums[j]
            self.result_row = (row + R) & 0xFFFFFFFF
        return plan.lengths

    def _tree_sweep(self, sw: machine.Sweep) -> list[int]:
        """:meth:`_sweep` on the adder trees: K is ``sw.split.k`` steps of ``k`` elements and
        the activations start at word ``sw.acts`` (byte ``k`` times that). Every pass ends
        with a result row, its lanes' sums over the pass's steps: one row per token under
        ``linear``'s split (``tree_param_values`` makes it one pass), and as the sequencer
        streams them when a program splits K further. Step word ``sw.weights + s`` is the
        ``words_per_step`` memory words from ``(sw.weights + s) * words_per_step`` on, its
        lane groups in order."""
        k, lanes, S, M = self.tree.k, self.tree.lanes, sw.split.k, sw.tokens
        D = self.words_per_step
        words = _window(self.weights, sw.weights * D, S * D)         # (S*D, word_trits) codes
        w = words.reshape(S, lanes, k).astype(np.int64) - 1          # [step, lane, i] trits
        x = _window(self.acts, sw.acts * k, M * S * k).reshape(M, S, k).astype(np.int64)
        per_step = np.einsum("sli,msi->msl", w, x)                   # (M, S, lanes)
        passes = schedule.split_k(S, sw.split.n)
        for m in range(M):
            for s0, s1 in passes:
                if self.result_row < self.info.result_rows:
                    self.results[self.result_row] = per_step[m, s0:s1].sum(axis=0)
                self.result_row = (self.result_row + 1) & 0xFFFFFFFF
        return [s1 - s0 for s0, s1 in passes] * M


def _window(mem: np.ndarray, start: int, n: int) -> np.ndarray:
    """``mem[start:start + n]``, reading zeros past the end."""
    out = np.zeros((n,) + mem.shape[1:], dtype=mem.dtype)
    if start < len(mem):
        part = mem[start:start + n]
        out[:len(part)] = part
    return out
