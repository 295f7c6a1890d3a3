"""The host runtime: open a device, load ternary weights, run exact linear layers.

::

    with open_device("emu") as dev:            # or "serial:/dev/ttyUSB1@3000000", "pcie:/dev/xdma0"
        h = dev.load(w)                        # w: trits (N, K)
        y = dev.linear(h, x)                   # x: int8 (M, K) -> int32 (M, N), exact

Everything about numerics, packing and the mapping comes from ``sim``: weights are laid out
with ``sim.schedule`` (``outputs`` mapping, tiles of ``rows*cols`` outputs, the word of tile
``t``, step ``k`` at ``t*K + k``), packed with ``sim.packing`` (base3, one word at a time), and
results are unscrambled with ``sim.schedule.scatter_tile``. A device built with the adder-tree
engine (INFO's ``engine``) takes tiles of ``cols`` outputs and steps of ``rows`` elements of K
instead (``sim.schedule.plan_tree``: the word of tile ``t``, step ``s`` at ``t*S + s``,
activations padded to whole steps); on the digit-serial trees each such word is
``words_per_step`` weight-memory words, one lane group each (``host.plan``: handles and
addresses count steps' words, ``WRITE_WEIGHTS`` memory words). Layers larger than the device's
buffers are split on the host (tokens, tiles of outputs and, if a single token's inputs do not
fit, K), which keeps the result exact: every piece is an exact integer sum.
"""

from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from firmware.commands import (ADDRESS_FORMAT, ADDRESS_SIZE, COUNTER_NAMES, COUNTERS_SIZE,
                               FAULT_FORMAT, FAULT_SIZE, FORMAT_BASE3, FRAME_OVERHEAD,
                               INSTRUCTION_BYTES, MAX_LENGTH, PROTOCOL_VERSION, RESPONSE_SYNC,
                               RESULT_WIDTHS, RUN_SIZE, Command, Counters, DeviceInfo, Engine,
                               ReadResultsArgs, RunArgs, Status, pack_instructions)
from firmware.isa import Fault
from firmware.programs import FIRMWARE, linear_args
from sim import numerics, packing, schedule

from .plan import EXEC_MARGIN, RequestPlanner, Run, WeightMemory, WriteWeights
from .protocol import (BadFrame, DeviceError, DeviceTimeout, FrameDecoder, PayloadTooLarge,
                       ProtocolError, encode_request)
from .transport import (EmulatorTransport, PcieTransport, SerialTransport, SimTransport,
                        Transport, parse_serial_spec)

__all__ = ["open_device", "Device", "WeightHandle", "DEVICE_COUNTERS", "HOST_STATS"]

#: device counters summed into ``Device.stats`` (READ_COUNTERS after every ``linear``)
DEVICE_COUNTERS = ("busy", "stall_input", "stall_drain", "drain_tail", "runs")
#: host-side entries of ``Device.stats``
HOST_STATS = ("bytes_sent", "bytes_received", "frames", "waits", "retries", "timeouts")
_DEVICE_KWARGS = ("timeout", "retries", "name", "max_frame")


def open_device(spec: str = "emu", **config) -> "Device":
    """Open a device by spec.

    * ``"emu"``: the Python emulator in this process; keyword arguments go to
      :class:`host.emu.EmulatedDevice` (and ``fault`` to :class:`EmulatorTransport`);
    * ``"serial:PATH"`` or ``"serial:PATH@BAUD"`` (default 3000000 baud);
    * ``"pcie:/dev/xdma0"`` (keyword arguments ``h2c``, ``c2h``, ``channel`` go to
      :class:`PcieTransport`);
    * ``"sim"``: the RTL device core (``rtl.core.DeviceCore``) in Verilator; keyword arguments
      as for ``"emu"``.

    ``timeout``, ``retries``, ``max_frame`` and ``name`` go to :class:`Device`. ``faults`` (a
    rate per byte, or a :class:`host.faults.FaultSpec`) wraps the transport in reproducible
    link faults.
    """
    dev_kw = {k: config.pop(k) for k in _DEVICE_KWARGS if k in config}
    from .faults import FaultSpec, FaultyTransport
    faults = config.pop("faults", None)
    if faults is not None:
        faults = FaultSpec.of(faults)          # a bad spec fails before anything opens
    if not isinstance(spec, str):
        raise ValueError(f"device spec must be a string, got {spec!r}")
    if spec == "emu":
        transport: Transport = EmulatorTransport(**config)
    elif spec.startswith("serial:"):
        path, baud = parse_serial_spec(spec[len("serial:"):])
        if config:
            raise TypeError(f"{spec}: unexpected arguments {sorted(config)}")
        transport = SerialTransport(path, baud)
    elif spec.startswith("pcie:"):
        transport = PcieTransport(spec[len("pcie:"):] or "/dev/xdma0", **config)
    elif spec == "sim":
        # Simulated cycles are not wall-clock time: give long layers room by default.
        dev_kw.setdefault("timeout", 60.0)
        transport = SimTransport(**config)
    else:
        raise ValueError(f"unknown device spec {spec!r}; expected 'emu', 'sim', "
                         f"'serial:PATH[@BAUD]' or 'pcie:/dev/xdmaN'")
    if faults is not None:
        transport = FaultyTransport(transport, faults)
    try:
        return Device(transport, **dev_kw)
    except DeviceTimeout as e:
        transport.close()
        if spec.startswith("serial:"):
            # Silence at the first request is most often a port at another rate than the
            # board's bitstream (or no bitstream loaded): say so, with where to look it up.
            raise DeviceTimeout(f"{e}. Is a tritium bitstream loaded, and is {baud} baud its "
                                f"UART rate? `tritium boards` lists each board's") from e
        raise
    except BaseException:
        transport.close()
        raise


@dataclass
class _Req:
    """A request for :meth:`Device._exchange`: what to send, how long its answer's payload is,
    the device's cycles on it beyond the command's own (``RequestPlanner.request``), extra
    time to wait for the answer, and what to do with the answer's payload."""
    cmd: Command
    payload: bytes = b""
    response_size: int = 0
    cycles: int = 0
    extra_time: float = 0.0
    then: Callable[[bytes], None] | None = None


class WeightHandle:
    """A layer's weights on (or for) a device; made by :meth:`Device.load`.

    ``resident``: the words live in weight memory at ``base`` (``tiles * steps`` words, a
    word per tile and step of K; ``steps`` is K, or on the adder trees K in steps of k; on
    the serial trees a word and ``base`` count steps' words, ``RequestPlanner.words_per_step``
    memory words each). ``streamed``: they did not fit; the host keeps the packed words
    (``words``, uint8 ``(tiles, steps, step_bytes)``) and :meth:`Device.linear` uploads them
    piece by piece.
    """

    def __init__(self, device: "Device", N: int, K: int, tiles: int, base: int | None,
                 words: np.ndarray | None, steps: int | None = None):
        self.device, self.N, self.K, self.tiles = device, N, K, tiles
        self.steps = K if steps is None else steps
        self.base, self.words = base, words
        self.freed = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.N, self.K)

    @property
    def resident(self) -> bool:
        return self.base is not None

    @property
    def streamed(self) -> bool:
        return self.base is None

    @property
    def n_words(self) -> int:
        return self.tiles * self.steps

    def free(self) -> None:
        self.device.free(self)

    def __repr__(self):
        where = f"resident at word {self.base}" if self.resident else "streamed"
        state = ", freed" if self.freed else ""
        return f"<WeightHandle {self.N}x{self.K}, {self.tiles} tile(s), {where}{state}>"


class Device:
    """A tritium device behind a :class:`Transport`, speaking the link protocol (docs/protocol.md).

    ``timeout`` is the base wait for a response in seconds (stretched for long frames on slow
    links and for long ``RUN`` commands when the clock is known); a request is sent again
    (with the rest of its window of requests sent ahead, :meth:`_exchange`) up to ``retries``
    times on a timeout, a corrupted response or a ``BAD_CRC`` / ``BAD_LENGTH`` answer, then
    :class:`DeviceTimeout` names the device and the command.

    ``max_frame`` caps the payload of every frame the host sends or asks for (default: what
    the device and the protocol allow, up to 64 KiB for results). On a noisy link a frame of
    ``n`` bytes arrives whole with probability ``(1 - p)**n`` at byte error rate ``p``, so
    smaller frames need far fewer retries: at ``p = 1e-3`` a 1 KiB frame is lost two times in
    three, a 256-byte one one time in four.
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 3,
                 name: str | None = None, max_frame: int | None = None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_frame is not None and (isinstance(max_frame, bool) or
                                      not isinstance(max_frame, int) or max_frame < RUN_SIZE):
            raise ValueError(f"max_frame must be an integer of at least {RUN_SIZE} (a RUN "
                             f"request), got {max_frame!r}")
        self.transport = transport
        self.name = name or transport.name
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._decoder = FrameDecoder(RESPONSE_SYNC)
        self._events: collections.deque = collections.deque()   # decoded, not yet taken
        self._seq = 0
        self._max_payload = 0          # until INFO tells
        self._info_clock_hz = self._info_frame_timeout = 0
        self._stats = dict.fromkeys(DEVICE_COUNTERS + HOST_STATS, 0)
        self._stats.update(model_cycles=0, device_frames_ok=0, device_frames_bad=0)
        self._closed = False

        try:
            info = DeviceInfo.from_bytes(self._request(Command.INFO))
        except ValueError as e:
            raise ProtocolError(f"{self.name}: {e}") from None
        if info.version != PROTOCOL_VERSION:
            raise ProtocolError(f"{self.name}: device speaks protocol version {info.version}, "
                                f"this host speaks {PROTOCOL_VERSION}")
        if not info.formats & FORMAT_BASE3:
            raise ProtocolError(f"{self.name}: device does not accept base3 weight words "
                                f"(formats bitmap {info.formats:#04x})")
        self._info = info
        #: how calls are split into requests, and what they cost (``host.plan``)
        try:
            self.planner = planner = RequestPlanner(
                info, max_frame, rx_buffer=getattr(transport, "rx_buffer", None),
                bytes_per_second=transport.bytes_per_second)
        except ValueError as e:     # trees no engine can have (TreeConfig's rules)
            raise ProtocolError(f"{self.name}: unusable device: {e}") from None
        self.config = planner.config
        self.word_bytes = planner.word_bytes          # a weight-memory word on the link
        self._max_payload = planner.max_payload
        self._info_clock_hz, self._info_frame_timeout = info.clock_hz, info.frame_timeout
        self.words_per_frame = planner.words_per_frame
        self.rows_per_read = planner.rows_per_read
        problems = []
        if info.engine not in {e.value for e in Engine}:
            # a device of a later design (or garbage): laid out as the array, its results
            # would be silently wrong
            problems.append(f"engine {info.engine}, which this host does not know (it knows "
                            f"{', '.join(f'{e.value} {e.name.lower()}' for e in Engine)})")
        if self.words_per_frame < 1:
            problems.append(f"frames of {self._max_payload} bytes (max_payload "
                            f"{info.max_payload}, max_frame {max_frame}) cannot carry one "
                            f"weight word ({ADDRESS_SIZE} + {self.word_bytes} bytes)")
        if info.max_payload < RUN_SIZE:
            problems.append(f"max_payload {info.max_payload} < {RUN_SIZE} (a RUN request)")
        if info.result_rows < planner.rows_per_tile:
            problems.append(f"result buffer of {info.result_rows} rows cannot hold one tile "
                            f"({planner.rows_per_tile} rows)")
        if self.rows_per_read < 1:
            problems.append(f"a result row ({4 * info.cols} bytes) does not fit one frame")
        if planner.weight_capacity < 1 or planner.act_steps < 1:
            problems.append("weight memory or activation buffer is empty (or holds no step)")
        if 0 < info.program_words < len(FIRMWARE):
            problems.append(f"program memory of {info.program_words} words cannot hold the "
                            f"{len(FIRMWARE)}-word firmware")
        if info.program_words == 0 and not planner.tree:
            problems.append("no program memory (linear hardwired) on an array device")
        if problems:
            raise ProtocolError(f"{self.name}: unusable device: " + "; ".join(problems))
        #: free weight memory (``host.plan.WeightMemory``), in steps' words
        self.memory = WeightMemory(planner.weight_capacity)
        self._counters_seen = Counters()             # the last READ_COUNTERS (see stats)
        self._request(Command.RESET)
        # The device may hold another build's firmware (or a user's programs): load ours.
        # A device with no program memory has ``linear`` hardwired (rtl.linear_sequencer).
        if info.program_words:
            self.load_program(FIRMWARE.words)

    # -- properties ----------------------------------------------------------------------

    @property
    def info(self) -> dict:
        """The device description from ``INFO``."""
        return self._info.as_dict()

    @property
    def k_max(self) -> int:
        return self.config.k_max

    @property
    def stats(self) -> dict:
        """Device counters summed over ``linear`` calls (``busy``, ``stall_input``,
        ``stall_drain``, ``drain_tail``, ``runs``, ``device_frames_ok/bad``), the cycle model's
        prediction for the same runs (``model_cycles``), and host-side link statistics
        (``bytes_sent``, ``bytes_received``, ``frames`` sent, ``retries``, ``timeouts``)."""
        return dict(self._stats)

    @property
    def free_words(self) -> int:
        """Weight memory words (steps' words, ``host.plan``) not held by resident handles."""
        return self.memory.free_words

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        i = self._info
        return (f"<Device {self.name}: {i.rows}x{i.cols} array, {i.weight_words} weight words, "
                f"{i.act_bytes} act bytes, {i.result_rows} result rows>")

    # -- requests ------------------------------------------------------------------------

    def _request(self, cmd: Command, payload: bytes = b"", *, response_size: int = 0,
                 extra_time: float = 0.0) -> bytes:
        """Send one request and return the payload of its OK response (with retries)."""
        return self._exchange([_Req(cmd, payload, response_size, extra_time=extra_time)])[0]

    def _exchange(self, reqs: list["_Req"]) -> list[bytes]:
        """Send ``reqs`` in order and return the payloads of their OK answers, in order.

        They go out in the planner's windows (``RequestPlanner.windows``), each window back to
        back, and the host waits only once per window for its answers (``stats["waits"]``).
        A request whose answer does not come (timeout), comes corrupted, or says its frame was
        damaged (``BAD_CRC``, ``BAD_LENGTH``) is sent again together with the ones after it in
        its window, under fresh seqs, up to ``retries`` times. Every command is idempotent on
        the device, and a request after a failed one may have run on what that one did not
        do, so an answer counts only when every request before it in its attempt was answered
        OK. Any other status raises :class:`DeviceError`."""
        if self._closed:
            raise ProtocolError(f"{self.name}: device is closed")
        for r in reqs:
            if len(r.payload) > self._max_payload:
                raise PayloadTooLarge(f"{self.name}: {r.cmd.name} payload of "
                                      f"{len(r.payload)} bytes exceeds the device's "
                                      f"max_payload {self._max_payload}")
        planner = getattr(self, "planner", None)      # None: INFO has not come yet
        shapes = [] if planner is None else \
            [planner.request(r.cmd, len(r.payload), r.response_size, r.cycles) for r in reqs]
        windows = planner.windows(shapes) if planner else [(k, k + 1) for k in range(len(reqs))]
        answers: list[bytes | None] = [None] * len(reqs)
        failures = [0] * len(reqs)
        for i0, j in windows:
            i = i0
            while i < j:
                seqs = [(self._seq + k) & 0xFF for k in range(j - i)]
                self._seq = (self._seq + j - i) & 0xFF
                frames = [encode_request(r.cmd, q, r.payload) for r, q in zip(reqs[i:j], seqs)]
                # nothing before this window can be one of its answers
                self._decoder.reset()
                self._events.clear()
                self.transport.write(b"".join(frames))
                self._stats["bytes_sent"] += sum(len(f) for f in frames)
                self._stats["frames"] += len(frames)
                self._stats["waits"] += 1
                for k in range(i, j):
                    r = reqs[k]
                    status, resp, problem = self._await(
                        seqs[k - i], self._wait(r, len(frames[k - i])),
                        later=set(seqs[k - i + 1:]))
                    if status is Status.OK:
                        answers[k] = resp
                        if r.cmd in (Command.CLEAR_COUNTERS, Command.RESET):
                            self._counters_seen = Counters()
                        continue
                    if status is not None and status not in (Status.BAD_CRC, Status.BAD_LENGTH):
                        raise self._refused(r.cmd, status, resp)
                    if status is not None:
                        # The request was damaged on the way (the host never sends a frame
                        # longer than max_payload): send it again.
                        problem = f"device answered {status.name}"
                    failures[k] += 1
                    if failures[k] > self.retries:
                        raise DeviceTimeout(f"{self.name}: no valid response to {r.cmd.name} "
                                            f"(seq {seqs[k - i]}) after {self.retries + 1} "
                                            f"attempt(s); last problem: {problem}")
                    self._stats["retries"] += 1
                    # the device may still be working on the rest of the window
                    busy = sum(q.cycles for q in shapes[k + 1:j]) * EXEC_MARGIN
                    self._quiet(busy / self._info_clock_hz if self._info_clock_hz else 0.0)
                    i = k                  # again from here, with the rest of the window
                    break
                else:
                    i = j
        return answers

    def _quiet(self, busy: float = 0.0) -> None:
        """Before sending part of a window again: wait out the ``busy`` seconds the device
        may still spend on the rest of the window (it would take no byte meanwhile), then let
        the line go silent for its frame timeout, so that it drops a frame the link cut short
        instead of reading the next request into it. What arrives meanwhile are answers to
        the attempt given up on: dropped."""
        silence = (2.0 * self._info_frame_timeout / self._info_clock_hz
                   if self._info_clock_hz else 1e-3)
        end = time.monotonic() + busy
        while True:
            data = self.transport.read(MAX_LENGTH + FRAME_OVERHEAD,
                                       max(silence, end - time.monotonic()))
            if data:
                self._stats["bytes_received"] += len(data)
            elif time.monotonic() >= end:
                return

    def _wait(self, r: "_Req", frame_bytes: int) -> float:
        """How long to wait for the answer to ``r`` once the one before it has come."""
        wait = self.timeout + r.extra_time
        bps = self.transport.bytes_per_second
        if bps:
            wait += 1.5 * (frame_bytes + r.response_size + FRAME_OVERHEAD) / bps
        if self._info_clock_hz:
            # A retry must find the device hunting again: wait out its frame timeout.
            wait = max(wait, 2.0 * self._info_frame_timeout / self._info_clock_hz)
        return wait

    def _refused(self, cmd: Command, status: Status, resp: bytes) -> DeviceError:
        detail = ""
        if status is Status.PROGRAM_FAULT and len(resp) == FAULT_SIZE:
            pc, cause = struct.unpack(FAULT_FORMAT, resp)
            try:
                cause = Fault(cause).name
            except ValueError:
                pass
            detail = f" (control program fault at pc {pc}: {cause})"
        return DeviceError(f"{self.name}: {cmd.name} failed: device answered "
                           f"{status.name}{detail}", status, cmd)

    def _await(self, seq: int, wait: float, later=frozenset()):
        """Wait for the response with ``seq``: ``(status, payload, None)`` or
        ``(None, None, problem)`` on a timeout, a corrupted response, or an answer to one of
        the ``later`` requests of the window coming first (this one's was lost). Answers with
        other seqs are late ones to earlier attempts: skipped."""
        deadline = time.monotonic() + wait
        corrupted = None
        while True:
            while self._events:
                ev = self._events.popleft()
                if isinstance(ev, BadFrame):
                    corrupted = f"corrupted response ({ev.kind})"
                elif ev.seq == seq:
                    try:
                        return Status(ev.code), ev.payload, None
                    except ValueError:
                        corrupted = f"response with unknown status {ev.code:#04x}"
                elif ev.seq in later:
                    self._events.appendleft(ev)
                    return None, None, corrupted or "no response (a later one came first)"
            if corrupted:
                return None, None, corrupted
            left = deadline - time.monotonic()
            data = self.transport.read(MAX_LENGTH + FRAME_OVERHEAD, max(left, 0.0)) \
                if left > 0 else b""
            if not data:
                self._stats["timeouts"] += 1
                return None, None, f"timeout after {wait:.3g} s"
            self._stats["bytes_received"] += len(data)
            self._events.extend(self._decoder.feed_events(data))

    def load_program(self, words, at: int = 0) -> None:
        """Write control program words (``firmware.asm``) into program memory from ``at``.

        :meth:`linear` needs the shipped firmware at address 0 (loaded when the device
        opens); put your own programs after it (``at=len(firmware.programs.FIRMWARE)``)."""
        words = [int(w) for w in words]
        if any(not 0 <= w < (1 << 32) for w in words):
            raise ValueError("program words must be 32-bit unsigned integers")
        if self._info.program_words == 0:
            raise ValueError(f"{self.name} has no program memory: its linear is hardwired "
                             f"(INFO's program_words is 0), it runs no other program")
        if at < 0 or at + len(words) > self._info.program_words:
            raise ValueError(f"{len(words)} words from {at} do not fit the "
                             f"{self._info.program_words}-word program memory")
        step = (self._max_payload - ADDRESS_SIZE) // INSTRUCTION_BYTES
        for i in range(0, len(words), step):
            self._request(Command.WRITE_PROGRAM, struct.pack(ADDRESS_FORMAT, at + i) +
                          pack_instructions(words[i:i + step]))

    def run_program(self, entry: int, *args: int, timeout: float | None = None) -> None:
        """Run the control program at ``entry`` with up to six arguments in r0..r5; returns
        when it halts. A FAIL raises :class:`DeviceError` with ``BAD_ARGUMENT``, a fault with
        ``PROGRAM_FAULT`` (the message names the pc and the cause)."""
        self._request(Command.RUN, RunArgs(entry, tuple(args)).to_bytes(),
                      extra_time=timeout or 0.0)

    def read_counters(self) -> Counters:
        """The device's counters as they stand (``READ_COUNTERS``)."""
        return Counters.from_bytes(self._request(Command.READ_COUNTERS))

    def _absorb_counters(self, c: Counters) -> None:
        """Add what the device counted since the last reading ``c`` (the ``READ_COUNTERS``
        that ends every ``linear`` call) to ``stats``.

        The counters only grow, modulo ``2**counter_bits`` (INFO), until a ``CLEAR_COUNTERS`` or
        ``RESET``, which this object sees go out: keeping the last reading and taking
        differences modulo the counters' range saves a request per call over clearing them
        each time. (A device with 32-bit counters wraps its cycle counters every 2**32 cycles,
        43 s at 100 MHz: far more than one call.)"""
        seen = self._counters_seen
        bits = self._info.counter_bits
        if bits == 64 and any(getattr(c, n) < getattr(seen, n) for n in COUNTER_NAMES):
            seen = Counters()         # cleared behind our back (a failed request that ran)

        def grown(name: str) -> int:
            return (getattr(c, name) - getattr(seen, name)) % (1 << bits)

        for name in DEVICE_COUNTERS:
            self._stats[name] += grown(name)
        self._stats["device_frames_ok"] += grown("frames_ok")
        self._stats["device_frames_bad"] += grown("frames_bad")
        self._counters_seen = c

    # -- weight memory -------------------------------------------------------------------

    def free(self, handle: WeightHandle) -> None:
        """Give a handle's weight memory back (a streamed handle just drops its host copy)."""
        self._check_handle(handle)
        if handle.resident:
            self.memory.release(handle.base, handle.n_words)
        handle.freed = True
        handle.words = None

    def _check_handle(self, h: WeightHandle) -> None:
        if h.device is not self:
            raise ValueError(f"weight handle {h!r} belongs to another device")
        if h.freed:
            raise ValueError(f"weight handle {h!r} has been freed")

    # -- uploads -------------------------------------------------------------------------

    def _layout(self, w: np.ndarray) -> np.ndarray:
        if self.planner.tree:
            return self._tree_layout(w)
        return self._array_layout(w)

    def _tree_layout(self, w: np.ndarray) -> np.ndarray:
        """Weight words of ``w`` (N, K) for the adder trees: uint8 ``(tiles, S, step_bytes)``
        base3, the word of tile t, step s (a ``k x lanes`` beat, lane-major) at ``[t, s]``:
        its ``words_per_step`` memory words in order, memory word ``c`` trits ``[c *
        word_trits, (c + 1) * word_trits)`` of the beat (a lane group on the serial trees),
        each padded to whole base3 bytes."""
        tree, D = self.planner.tree, self.planner.words_per_step
        N, K = w.shape
        plan = schedule.plan_tree(tree, 1, N, K)
        S = plan.passes[0].length
        trits = np.zeros((len(plan.passes), S, D, 5 * self.word_bytes), dtype=np.int8)
        x0 = np.zeros((1, K), dtype=np.int8)
        for t, p in enumerate(plan.passes):              # one pass per tile (M = 1)
            beats, _ = schedule.tree_pass_operands(plan, p, w, x0)    # (S, lanes, k)
            trits[t, :, :, :tree.pes // D] = beats.reshape(S, D, tree.pes // D)
        return packing.pack_base3(trits).reshape(len(plan.passes), S, self.planner.step_bytes)

    def _array_layout(self, w: np.ndarray) -> np.ndarray:
        """Weight words of ``w`` (N, K) for the ``outputs`` mapping: uint8
        ``(tiles, K, word_bytes)`` base3, the word of tile t, step k at ``[t, k]``."""
        cfg = self.config
        N, K = w.shape
        P = cfg.pes
        plan = schedule.plan_linear(cfg, 1, N, K, mapping="outputs")
        tiles = schedule.tile_count(cfg, 1, N, "outputs")
        trits = np.zeros((tiles, K, 5 * self.word_bytes), dtype=np.int8)  # zero padding
        x0 = np.zeros((1, K), dtype=np.int8)
        for p in plan.passes:
            t = int(p.outputs[0, 0]) // P
            beats, _ = schedule.pass_operands(p, w, x0)         # (L, rows, cols)
            trits[t, p.k0:p.k1, :P] = beats.reshape(p.length, P)
        # Each word is padded to a multiple of 5 trits, so base3 bytes never straddle words.
        return packing.pack_base3(trits).reshape(tiles, K, self.word_bytes)

    def _write_weights(self, word: int, words: np.ndarray) -> None:
        """Upload steps' base3 words (uint8 (..., step_bytes)) from step word ``word`` on."""
        self._exchange(self._weight_requests(word, words))

    def _weight_requests(self, word: int, words: np.ndarray) -> list[_Req]:
        """The ``WRITE_WEIGHTS`` of steps' words from step word ``word`` on: their memory
        words (``words_per_step`` a step's word), from memory word ``word * words_per_step``
        on, ``words_per_frame`` a frame."""
        words = np.ascontiguousarray(words).reshape(-1, self.word_bytes)
        first, step = word * self.planner.words_per_step, self.words_per_frame
        return [_Req(Command.WRITE_WEIGHTS,
                     struct.pack(ADDRESS_FORMAT, first + i) + words[i:i + step].tobytes())
                for i in range(0, len(words), step)]

    def _write_acts(self, offset: int, data: bytes) -> None:
        self._exchange(self._act_requests(offset, data))

    def _act_requests(self, offset: int, data: bytes) -> list[_Req]:
        step = self._max_payload - ADDRESS_SIZE
        return [_Req(Command.WRITE_ACTS, struct.pack(ADDRESS_FORMAT, offset + i) +
                     data[i:i + step]) for i in range(0, len(data), step)]

    def load(self, w) -> WeightHandle:
        """Lay out, pack and upload trits ``w`` (N, K); return a handle for :meth:`linear`.

        Resident when the layer's ``ceil(N / (rows*cols)) * K`` words fit in free weight
        memory, streamed otherwise.
        """
        w = numerics.check_ternary(w, "weights")
        if w.ndim != 2:
            raise ValueError(f"weights must be a 2-D array (N, K), got shape {w.shape}")
        N, K = w.shape
        if N == 0 or K == 0:
            raise ValueError(f"weights must not be empty, got shape {w.shape}")
        if K > self.k_max:
            raise ValueError(f"weights have K={K} inputs, more than this device's k_max "
                             f"{self.k_max} ({self.config.acc_bits}-bit accumulator)")
        words = self._layout(w)
        tiles, steps = words.shape[:2]
        base = self.memory.alloc(tiles * steps)
        if base is None:
            return WeightHandle(self, N, K, tiles, None, words, steps)
        try:
            self._write_weights(base, words)
        except BaseException:
            self.memory.release(base, tiles * steps)
            raise
        return WeightHandle(self, N, K, tiles, base, None, steps)

    def load_many(self, ws) -> list[WeightHandle]:
        """Load several layers (a whole model) at once; handles in the same order.

        All resident when they fit together. When they do not, a streamed layer needs free
        weight memory to pass through, so one tile of the widest layer (K words) is kept free
        while the others are placed, in order, for as long as they fit; the rest stream. (Loading
        them one by one with :meth:`load` could fill memory to the last word first.)
        """
        ws = [numerics.check_ternary(w, "weights") for w in ws]
        planner = self.planner
        reserve = self.memory.reserve_for([(planner.resident_words(*w.shape),
                                            planner.step(w.shape[1])) for w in ws if w.ndim == 2])
        handles: list[WeightHandle] = []
        try:
            for w in ws:
                handles.append(self.load(w))
        except BaseException:
            for h in handles:
                self.free(h)
            raise
        finally:
            if reserve is not None:
                self.memory.release(*reserve)
        return handles

    # -- compute -------------------------------------------------------------------------

    def linear(self, h_or_w, x) -> np.ndarray:
        """Exact ``y = x @ w.T``: ``x`` int8 (M, K) -> int32 (M, N).

        ``h_or_w`` is a handle from :meth:`load` or trits (N, K) (loaded for this call and
        freed afterwards). A 1-D ``x`` is one token and gives a 1-D result.
        """
        x = numerics.check_int8(x, "activations")
        one = x.ndim == 1
        if one:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"activations must be (M, K) or (K,), got shape {x.shape}")
        if isinstance(h_or_w, WeightHandle):
            h, temporary = h_or_w, False
            self._check_handle(h)
        else:
            w = numerics.check_ternary(h_or_w, "weights")
            if w.ndim == 2 and w.shape[1] != x.shape[1]:
                raise ValueError(f"K mismatch: weights have K={w.shape[1]}, activations "
                                 f"K={x.shape[1]}")
            h, temporary = self.load(w), True
        try:
            if x.shape[1] != h.K:
                raise ValueError(f"K mismatch: weights have K={h.K}, activations "
                                 f"K={x.shape[1]}")
            y = np.zeros((x.shape[0], h.N), dtype=np.int64)
            if x.shape[0]:
                self._run_layer(h, x, y)
        finally:
            if temporary:
                self.free(h)
        y = numerics.to_int32(y)
        return y[0] if one else y

    def _run_layer(self, h: WeightHandle, x: np.ndarray, y: np.ndarray) -> None:
        """Split the layer so that every RUN fits the device's buffers (``RequestPlanner``),
        send the whole call (it ends with ``READ_COUNTERS``) and add the results into ``y``."""
        scratch = scratch_words = 0
        if h.streamed:
            scratch, scratch_words = self.memory.largest()
            if scratch_words == 0:
                raise ProtocolError(f"{self.name}: no free weight memory to stream a "
                                    f"{h.N}x{h.K} layer through; free some resident handles")
        reqs: list[_Req] = []
        finish = []
        for step in self.planner.steps(x.shape[0], h.N, h.K, resident=h.resident,
                                       scratch_words=scratch_words):
            if isinstance(step, WriteWeights):
                s0, s1 = self.planner.step(step.k0), self.planner.step(step.k1)
                reqs += self._weight_requests(scratch, h.words[step.t0:step.t1, s0:s1])
            else:
                base = (h.base + step.t0 * h.steps + self.planner.step(step.k0)
                        if h.resident else scratch)
                finish.append(self._run_requests(base, step, x, y, h.N, reqs))
        reqs.append(_Req(Command.READ_COUNTERS, response_size=COUNTERS_SIZE,
                         then=lambda data: self._absorb_counters(Counters.from_bytes(data))))
        for r, data in zip(reqs, self._exchange(reqs)):
            if r.then is not None:
                r.then(data)
        for f in finish:
            f()

    def _run_requests(self, weights: int, run: Run, x, y, N: int, reqs: list[_Req]):
        """Append the requests of one RUN with its weights from word ``weights`` to ``reqs``;
        return what adds its results into ``y`` once the answers are in."""
        planner = self.planner
        R, C, P = planner.rows_per_tile, self.config.cols, planner.outputs_per_tile
        m0, m1, k0, k1 = run.m0, run.m1, run.k0, run.k1
        Mc, Kc = m1 - m0, k1 - k0
        Sc = planner.step(k1) - planner.step(k0)        # K in steps (elements on the array)
        n0, n1 = run.t0 * P, min(N, run.t1 * P)
        Nc = n1 - n0
        if run.write_acts:      # each token's K padded to whole steps (the adder trees)
            acts = np.zeros((Mc, Sc * planner.unit), dtype=np.int8)
            acts[:, :Kc] = x[m0:m1, k0:k1]
            reqs += self._act_requests(0, acts.tobytes())
        plan = planner.run_plan(run, N)
        model = planner.plan_cycles(plan)
        extra = 2.0 * model / self._info.clock_hz if self._info.clock_hz else 0.0

        def ran(_):
            self._stats["model_cycles"] += model

        reqs.append(_Req(Command.RUN, linear_args(weights, 0, 0, Mc, Nc, Sc).to_bytes(),
                         cycles=planner.run_cycles(plan), extra_time=extra,
                         then=ran))
        # the passes that leave result rows: tile-major, then token
        finals = plan.passes if planner.tree else [p for p in plan.passes if p.last_chunk]
        buf = np.zeros((len(finals) * R, C), dtype=np.int32)
        width = planner.result_width(Kc)

        def read(r0: int, n: int):
            def into(data: bytes) -> None:
                if len(data) != width * C * n:
                    raise ProtocolError(f"{self.name}: READ_RESULTS returned {len(data)} "
                                        f"bytes, expected {width * C * n}")
                buf[r0:r0 + n] = np.frombuffer(data, dtype=RESULT_WIDTHS[width]).reshape(n, C)
            return into

        for r0, n in planner.reads(plan):
            reqs.append(_Req(Command.READ_RESULTS, ReadResultsArgs(r0, n, width).to_bytes(),
                             response_size=width * C * n, cycles=n, then=read(r0, n)))

        def add() -> None:
            part = np.zeros((Mc, Nc), dtype=np.int64)
            for i, p in enumerate(finals):
                if planner.tree:
                    schedule.scatter_tree_result(p, buf[i], part)
                else:
                    schedule.scatter_tile(plan, p, buf[i * R:(i + 1) * R], part)
            y[m0:m1, n0:n1] += part
        return add
