"""The requests of a ``Device.linear`` call, and what they cost, without a device.

One definition for the :class:`~host.device.Device` that sends the requests and for the
estimates (``host.estimate``) that count them: how a layer is split so that every ``RUN`` fits
the device's buffers (tokens, tiles of outputs and, when one token's inputs do not fit, K), in
which order weights, activations, runs and result reads go, and how many bytes each frame
carries. A :class:`RequestPlanner` needs only what ``INFO`` says (and the host's frame cap), so
the estimates can plan for a board that is not attached, or not built.

It also decides which requests go out back to back (:meth:`RequestPlanner.windows`). The host
waits for an answer only at the end of a window, which matters on a USB-UART bridge that holds
every short answer for up to its latency timer (``sim.boards.BRIDGE_ANSWER_SECONDS``). Over a
link without flow control the device must not be sent more than its receiver can hold while
it works on earlier requests (``rx_buffer`` bytes: the UART's FIFO); the device's cycles per
request come from the same models as the rest of the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from firmware import hardwired, machine
from firmware.commands import (ADDRESS_SIZE, COUNTERS_SIZE, FRAME_OVERHEAD, MAX_LENGTH,
                               READ_RESULTS_SIZE, RUN_SIZE, Command, DeviceInfo)
from firmware.isa import param_values, tree_param_values
from firmware.programs import FIRMWARE, linear_args
from sim import cycles, numerics, packing, schedule

__all__ = ["WriteWeights", "Run", "CallCost", "Request", "RequestPlanner", "WeightMemory",
           "WRITES", "READS"]

#: Bytes of a receive buffer left unused by the pacing: the byte the UART is shifting in and
#: one for rounding.
RX_SLACK = 2
#: Margin on the device's cycles per request in the pacing (the cycle models are exact; this
#: covers the few cycles between commands they leave out).
EXEC_MARGIN = 1.25
EXEC_SLACK_CYCLES = 16
#: Most request bytes a window holds beyond its first request: a failed request is sent
#: again with the rest of its window, and this keeps what a damaged link repeats small.
WINDOW_BYTES = 2048


class WeightMemory:
    """The host's map of the device's weight memory: free ranges of words, first fit."""

    def __init__(self, words: int):
        self.free = [(0, words)]              # (start, size), sorted, never adjacent

    @property
    def free_words(self) -> int:
        return sum(size for _, size in self.free)

    def alloc(self, n: int) -> int | None:
        for i, (start, size) in enumerate(self.free):
            if size >= n:
                self.free[i] = (start + n, size - n)
                if size == n:
                    del self.free[i]
                return start
        return None

    def release(self, start: int, n: int) -> None:
        merged: list[tuple[int, int]] = []
        for s, z in sorted(self.free + [(start, n)]):
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + z)
            else:
                merged.append((s, z))
        self.free = merged

    def largest(self) -> tuple[int, int]:
        """The largest free range ``(start, size)``: where a streamed layer passes through."""
        return max(self.free, key=lambda f: f[1], default=(0, 0))

    def reserve_for(self, layers: list[tuple[int, int]]) -> tuple[int, int] | None:
        """Before placing ``layers`` ((words, K) each, in order): when they do not all fit,
        hold one tile of the widest (K words) free, so that the ones that end up streamed
        have memory to pass through; the caller releases it after placing them. (Placing
        them one by one without it could fill memory to the last word.)"""
        if not layers or sum(n for n, _ in layers) <= self.free_words:
            return None
        K = min(max(K for _, K in layers), self.free_words)
        return (self.alloc(K), K) if K else None

    def place(self, layers: list[tuple[int, int]]) -> list[int | None]:
        """Where ``Device.load_many`` puts ``layers`` ((words, K) each): a base word for each
        resident one, None for each streamed one."""
        reserve = self.reserve_for(layers)
        bases = [self.alloc(n) for n, _ in layers]
        if reserve is not None:
            self.release(*reserve)
        return bases


@dataclass(frozen=True)
class WriteWeights:
    """Upload the words of tiles ``[t0, t1)`` for inputs ``[k0, k1)`` of a streamed layer into
    the scratch area (each tile's ``k1 - k0`` words one after the other)."""
    t0: int
    t1: int
    k0: int
    k1: int


@dataclass(frozen=True)
class Run:
    """One ``RUN``: tokens ``[m0, m1)``, tiles ``[t0, t1)``, inputs ``[k0, k1)``. The
    activations of that block are written first when ``write_acts`` (the previous run used
    another block)."""
    m0: int
    m1: int
    t0: int
    t1: int
    k0: int
    k1: int
    write_acts: bool


@dataclass
class CallCost:
    """What one ``linear`` call of ``M`` tokens through an ``N x K`` layer costs: frames and
    bytes each way by purpose (both directions count every frame's 7 bytes of framing), and
    cycles on the device (``array``: the cycle model of every run's passes; ``control``: the
    controller's cycles, ``machine.Outcome.cycles``)."""
    frames: int = 0
    runs: int = 0
    weight_bytes: int = 0           # WRITE_WEIGHTS requests and their responses
    act_bytes: int = 0              # WRITE_ACTS requests and their responses
    result_bytes: int = 0           # READ_RESULTS requests and their responses
    control_bytes: int = 0          # RUN and READ_COUNTERS requests and their responses
    bytes_sent: int = 0
    bytes_received: int = 0
    array_cycles: int = 0
    control_cycles: int = 0
    busy_cycles: int = 0            # cycles the engine took operands: each reads a memory word
    steps: int = 0                  # steps of K taken: busy_cycles on the array and the
                                    # parallel trees; the serial trees are busy D cycles a
                                    # step and D more a run (its first slot has no digits)
    passes: int = 0
    result_rows: int = 0            # rows of cols results the accumulator emitted
    waits: int = 0                  # windows of requests: times the host waits for answers

    def add(self, other: "CallCost") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def frames_of(self, purpose: str, n: int, sent: int, received: int) -> None:
        """Count ``n`` request/response pairs of ``purpose`` (``weight``, ``act``, ``result``
        or ``control``): ``sent`` bytes out, ``received`` back."""
        self.frames += n
        setattr(self, f"{purpose}_bytes", getattr(self, f"{purpose}_bytes") + sent + received)
        self.bytes_sent += sent
        self.bytes_received += received


@dataclass(frozen=True)
class Request:
    """A request as the pacing sees it: its command, frame bytes each way and the device's
    cycles from the end of its frame to the start of its answer."""
    cmd: Command
    sent: int
    received: int
    cycles: int


#: Commands that change what a later request reads (activations, weights, programs, results,
#: counters); ``READS`` read what a ``RUN`` left or run on what was written before them.
WRITES = {Command.WRITE_ACTS, Command.WRITE_WEIGHTS, Command.WRITE_PROGRAM, Command.RUN,
          Command.RESET, Command.CLEAR_COUNTERS}
READS = {Command.RUN, Command.READ_RESULTS}
#: what a call's frames carry, as ``CallCost`` counts their bytes
PURPOSE = {Command.WRITE_WEIGHTS: "weight", Command.WRITE_ACTS: "act",
           Command.READ_RESULTS: "result", Command.RUN: "control",
           Command.READ_COUNTERS: "control"}


class RequestPlanner:
    """How a device described by ``info`` is driven: frame sizes and the split of a layer.

    ``max_frame`` caps every frame's payload as ``Device(max_frame=)`` does. ``rx_buffer``
    is what the device's receiver holds while it is busy over a link without flow control (a
    UART: ``rtl.uart.DEFAULT_FIFO_DEPTH``), with the link's ``bytes_per_second``; None means
    the link holds the host back itself (a pipe, PCIe DMA) and a call's requests all go out
    at once.
    """

    def __init__(self, info: DeviceInfo, max_frame: int | None = None, *,
                 rx_buffer: int | None = None, bytes_per_second: float | None = None):
        frame_cap = max_frame or MAX_LENGTH
        self.info = info
        self.rx_buffer, self.bytes_per_second = rx_buffer, bytes_per_second
        self.config = schedule.ArrayConfig(rows=info.rows, cols=info.cols,
                                           act_bits=info.act_bits, psum_bits=info.psum_bits,
                                           acc_bits=info.acc_bits)
        # The adder-tree engines (INFO's engine): a step is ``k`` = rows elements of K, a tile
        # is ``cols`` outputs with one result row per token, and the activation buffer holds
        # words of k bytes (``firmware.isa.tree_param_values``). ``unit`` elements make a step.
        self.tree = info.tree_config
        self.unit = info.rows if self.tree else 1
        self.rows_per_tile = 1 if self.tree else info.rows     # result rows per token and tile
        self.outputs_per_tile = info.cols if self.tree else self.config.pes
        self.act_steps = info.act_bytes // self.unit            # steps the buffer holds
        # A step's weight word (rows x cols trits) is ``words_per_step`` weight-memory words:
        # one but on the serial trees, where a memory word is a lane group. Everything here
        # counts steps' words (the handles, the free memory, the programs' addresses), except
        # WRITE_WEIGHTS, which addresses and carries memory words of ``word_bytes`` each.
        self.words_per_step = info.words_per_step
        self.weight_capacity = info.weight_words // self.words_per_step   # steps' words
        self.word_bytes = packing.packed_size(info.word_trits, "base3")
        self.step_bytes = self.words_per_step * self.word_bytes
        #: ternary products the engine does a cycle (a memory word's trits): its peak
        self.products_per_cycle = cycles.products_per_cycle(self.tree or self.config)
        self.max_payload = min(info.max_payload, frame_cap)
        self.words_per_frame = (self.max_payload - ADDRESS_SIZE) // self.word_bytes
        self.rows_per_read = min(MAX_LENGTH, frame_cap) // (4 * info.cols)
        if self.tree:
            self.params = tree_param_values(k=info.rows, lanes=info.cols,
                                            weight_words=self.weight_capacity,
                                            act_bytes=info.act_bytes,
                                            result_rows=info.result_rows, k_max=self.tree.k_max)
        else:
            self.params = param_values(rows=info.rows, cols=info.cols,
                                       weight_words=self.weight_capacity,
                                       act_bytes=info.act_bytes, result_rows=info.result_rows,
                                       pass_k_max=self.config.pass_k_max,
                                       k_max=self.config.k_max)
        #: ``linear`` hardwired (INFO's ``program_words`` 0, ``rtl.linear_sequencer``)
        self.hardwired = info.program_words == 0
        self._program = (list(FIRMWARE.words) + [0] * (info.program_words - len(FIRMWARE))
                         if info.program_words else [])
        self._control: dict[tuple, int] = {}

    # -- the split -------------------------------------------------------------------------

    def tiles(self, N: int) -> int:
        return -(-N // self.outputs_per_tile)

    def step(self, k: int) -> int:
        """The step of K that element ``k`` starts (or, for ``k = K``, the steps of K): a
        weight word and an activation word hold one step."""
        return -(-k // self.unit)

    def resident_words(self, N: int, K: int) -> int:
        """Weight words a layer (N, K) takes resident: a word per tile and step."""
        return self.tiles(N) * self.step(K)

    def steps(self, M: int, N: int, K: int, *, resident: bool, scratch_words: int = 0):
        """The uploads and runs of one call, in order (:class:`WriteWeights`, :class:`Run`).

        A resident layer's words sit at ``base + t*S + s`` (``S`` steps of K, :meth:`step`); a
        streamed one passes through ``scratch_words`` free words, as many tiles at a time as
        fit. K is split in whole steps; ``k0``, ``k1`` count elements.
        """
        info, R, T = self.info, self.rows_per_tile, self.tiles(N)
        S = self.step(K)
        k_cap = self.act_steps if resident else min(self.act_steps, scratch_words)
        if k_cap < 1:
            raise ValueError("no free weight memory to stream the layer through")
        pieces = [(0, S)] if S <= k_cap else schedule.k_chunks(S, k_cap)
        pieces = [(s0 * self.unit, min(K, s1 * self.unit)) for s0, s1 in pieces]
        last = None
        for k0, k1 in pieces:
            Kp = self.step(k1) - self.step(k0)
            m_step = min(M, self.act_steps // Kp, info.result_rows // R, 0xFFFF)
            if resident and len(pieces) > 1:
                t_step = 1         # tile t's words for [k0, k1) are contiguous only per tile
            else:
                t_step = min(T, info.result_rows // (m_step * R))
                if not resident:
                    t_step = min(t_step, scratch_words // Kp)
            groups = [(t0, min(T, t0 + t_step)) for t0 in range(0, T, t_step)]
            # Resident: every block of tokens through every tile group. Streamed: each tile
            # group uploaded once, then every block of tokens through it.
            for uploaded in ([None] if resident else groups):
                if uploaded is not None:
                    yield WriteWeights(*uploaded, k0, k1)
                for m0 in range(0, M, m_step):
                    m1 = min(M, m0 + m_step)
                    for t0, t1 in (groups if resident else [uploaded]):
                        key = (m0, m1, k0, k1)
                        yield Run(m0, m1, t0, t1, k0, k1, write_acts=key != last)
                        last = key

    def run_plan(self, run: Run, N: int) -> schedule.Plan | schedule.TreePlan:
        """The passes of ``run`` (its outputs ``[t0*P, min(N, t1*P))``, ``P`` outputs a tile):
        a ``sim.schedule.Plan``, or on the adder trees a ``TreePlan``."""
        P = self.outputs_per_tile
        Nc = min(N, run.t1 * P) - run.t0 * P
        if self.tree:
            return schedule.plan_tree(self.tree, run.m1 - run.m0, Nc, run.k1 - run.k0)
        return schedule.plan_linear(self.config, run.m1 - run.m0, Nc, run.k1 - run.k0,
                                    mapping="outputs")

    def plan_count(self, plan) -> cycles.CycleCount:
        """What the device's cycle counters add for ``plan`` (one stream of passes, as a
        ``linear`` RUN streams them), at full rate (``sim.cycles.stream_count``)."""
        return cycles.stream_count(plan.config, plan.lengths)

    def plan_cycles(self, plan) -> int:
        """The engine's cycles on ``plan`` at full rate."""
        return self.plan_count(plan).total

    def result_width(self, Kc: int) -> int:
        """Bytes per result read back: sums over at most 255 int8 steps fit int16
        (``numerics.max_exact_k``), so those come back as 2 bytes, half the traffic."""
        return 2 if Kc <= numerics.max_exact_k(16, self.config.act_bits) else 4

    def reads(self, plan: schedule.Plan) -> list[tuple[int, int]]:
        """``READ_RESULTS`` of a run: ``(first row, rows)`` for every frame. Only rows that hold
        outputs are read (a tile wider than N leaves the last rows of its passes unused: they
        are a suffix), in runs of consecutive rows. On the adder trees every row is one
        token's results for one tile, all read."""
        if self.tree:
            n = len(plan.passes)
            return [(r0, min(self.rows_per_read, n - r0))
                    for r0 in range(0, n, self.rows_per_read)]
        R = self.config.rows
        spans: list[list[int]] = []
        for i, p in enumerate(q for q in plan.passes if q.last_chunk):
            used = int((p.tokens >= 0).sum())
            if spans and spans[-1][0] + spans[-1][1] == i * R:
                spans[-1][1] += used
            else:
                spans.append([i * R, used])
        return [(r0, min(self.rows_per_read, start + count - r0))
                for start, count in spans
                for r0 in range(start, start + count, self.rows_per_read)]

    def control_cycles(self, Mc: int, Nc: int, Kc: int) -> int:
        """Controller cycles of one ``RUN`` of the shipped ``linear`` program that the array's
        stream does not hide: ``machine.Outcome.cycles`` (or, hardwired,
        ``firmware.hardwired.run_linear``'s) less one cycle for every sweep after
        the first (issued while the array works on the one before). The few cycles from a
        sweep to the array's first step, and from the last result to the response, are not
        counted."""
        key = (Mc, Nc, Kc)
        if key not in self._control:
            a = linear_args(0, 0, 0, Mc, Nc, self.step(Kc))
            out = (hardwired.run_linear(a.args, self.params) if self.hardwired
                   else machine.run(self._program, a.entry, a.args, self.params))
            sweeps = sum(isinstance(e, machine.Sweep) for e in out.events)
            self._control[key] = out.cycles - max(0, sweeps - 1)
        return self._control[key]

    # -- pacing ----------------------------------------------------------------------------

    def request(self, cmd: Command, payload: int, response: int, cycles: int = 0) -> Request:
        """A request of ``payload`` bytes answered with ``response`` bytes of payload, the
        device working ``cycles`` on it beyond what the command itself takes (a ``RUN``'s
        program, a ``READ_RESULTS``'s rows): the write commands copy a byte a cycle,
        ``WRITE_WEIGHTS`` in two passes (check, then decode)."""
        copy = {Command.WRITE_ACTS: 1, Command.WRITE_PROGRAM: 1, Command.WRITE_WEIGHTS: 2}
        return Request(cmd, payload + FRAME_OVERHEAD, response + FRAME_OVERHEAD,
                       copy.get(cmd, 0) * payload + cycles)

    def windows(self, reqs: list[Request]) -> list[tuple[int, int]]:
        """``reqs`` in windows ``[i, j)``, each sent back to back before the host waits for
        its answers.

        A window never holds a request that changes state (``WRITES``) after one that reads
        it (``READS``): the host sends a failed request again with the rest of its window, and
        that is only right if nothing the device already ran after it changed what it reads
        (a later RUN's results over the ones a failed READ_RESULTS was to read). Over a link
        without flow control a window also holds only what :meth:`fits`; without a clock
        (INFO) or a link rate to time the device by, each request goes alone. After its first
        request a window holds at most ``WINDOW_BYTES``."""
        n = len(reqs)
        timed = bool(self.info.clock_hz and self.bytes_per_second)
        if self.rx_buffer is not None and not timed:
            return [(k, k + 1) for k in range(n)]
        out, i = [], 0
        while i < n:
            j, read, more = i + 1, reqs[i].cmd in READS, 0
            while j < n and not (read and reqs[j].cmd in WRITES) and \
                    more + reqs[j].sent <= WINDOW_BYTES and (
                    self.rx_buffer is None or self.fits(reqs[i:j + 1])):
                read |= reqs[j].cmd in READS
                more += reqs[j].sent
                j += 1
            out.append((i, j))
            i = j
        return out

    def fits(self, reqs: list[Request]) -> bool:
        """Whether ``reqs`` sent back to back never leave more than ``rx_buffer - RX_SLACK``
        bytes waiting in the device's receiver. The bytes arrive at the link's rate one after
        the other; the core takes them as they come, except from the end of a frame until it
        has worked on it and sent the answer (at the same rate). The queue is longest at the
        end of such a wait: what has arrived by then less what the core has taken."""
        clock, bps = self.info.clock_hz, self.bytes_per_second
        total = sum(r.sent for r in reqs)
        taken = free_at = 0.0
        for r in reqs:
            taken += r.sent
            start = max(taken / bps, free_at)        # the frame's last byte reaches the core
            free_at = start + ((EXEC_MARGIN * r.cycles + EXEC_SLACK_CYCLES) / clock +
                               r.received / bps)
            if min(total, free_at * bps) - taken > self.rx_buffer - RX_SLACK:
                return False
        return True

    def run_cycles(self, plan: schedule.Plan) -> int:
        """The device's cycles on a ``RUN`` of ``plan``: the engine's and the controller's."""
        return self.plan_cycles(plan) + self.control_cycles(plan.M, plan.N, plan.K)

    def run_requests(self, run: Run, plan: schedule.Plan) -> list[Request]:
        """The requests of one :class:`Run` (``plan`` is its :meth:`run_plan`): its
        activations (when it writes them), the ``RUN`` and its result reads, as ``Device``
        sends them."""
        out = []
        if run.write_acts:
            # (the adder trees take each token's K padded to whole steps)
            step, data = self.max_payload - ADDRESS_SIZE, plan.M * self.step(plan.K) * self.unit
            out += [self.request(Command.WRITE_ACTS, ADDRESS_SIZE + min(step, data - i), 0)
                    for i in range(0, data, step)]
        out.append(self.request(Command.RUN, RUN_SIZE, 0, self.run_cycles(plan)))
        width = self.result_width(plan.K)
        out += [self.request(Command.READ_RESULTS, READ_RESULTS_SIZE,
                             width * self.config.cols * n, n) for _, n in self.reads(plan)]
        return out

    def upload_requests(self, words: int) -> list[Request]:
        """The ``WRITE_WEIGHTS`` of ``words`` steps' weight words: their memory words,
        ``words_per_frame`` a frame."""
        words *= self.words_per_step
        return [self.request(Command.WRITE_WEIGHTS,
                             ADDRESS_SIZE + min(self.words_per_frame, words - i) *
                             self.word_bytes, 0)
                for i in range(0, words, self.words_per_frame)]

    # -- the cost --------------------------------------------------------------------------

    def upload_bytes(self, words: int) -> int:
        """Bytes both ways to upload ``words`` steps' weight words (``Device.load``)."""
        return sum(r.sent + r.received for r in self.upload_requests(words))

    def cost(self, M: int, N: int, K: int, *, resident: bool, scratch_words: int = 0
             ) -> CallCost:
        """Everything one ``Device.linear`` call of ``M`` tokens sends, receives and runs (with
        no retries): the uploads of a streamed layer, activations, runs, result reads and the
        ``READ_COUNTERS`` that ends the call, and the windows it goes out in."""
        c = CallCost()
        reqs: list[Request] = []
        for step in self.steps(M, N, K, resident=resident, scratch_words=scratch_words):
            if isinstance(step, WriteWeights):
                reqs += self.upload_requests((step.t1 - step.t0) *
                                             (self.step(step.k1) - self.step(step.k0)))
                continue
            plan = self.run_plan(step, N)
            reqs += self.run_requests(step, plan)
            count = self.plan_count(plan)
            c.runs += 1
            c.array_cycles += count.total
            c.busy_cycles += count.busy
            c.steps += sum(plan.lengths)
            c.passes += len(plan.lengths)
            c.control_cycles += self.control_cycles(plan.M, plan.N, plan.K)
            c.result_rows += sum(rows for _, rows in self.reads(plan))
        # Device.linear reads the counters once at the end of every call.
        reqs.append(self.request(Command.READ_COUNTERS, 0, COUNTERS_SIZE))
        for r in reqs:
            c.frames_of(PURPOSE[r.cmd], 1, r.sent, r.received)
        c.waits = len(self.windows(reqs))
        return c
