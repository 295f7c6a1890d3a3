"""The device core: one byte stream in, one byte stream out, the matrix engine inside.

Every link (UART, a PCIe DMA stream, a simulation pipe) attaches to ``rx`` and ``tx``; the
host speaks the framed protocol of docs/protocol.md over it. Inside:

* the **receiver** hunts for a request frame, checks its length and CRC (``amaranth.lib.crc``
  with ``firmware.commands.FRAME_CRC``) and keeps the payload in a buffer, so that nothing is
  written to the device's memories until the whole frame has proved intact;
* the **executor** runs the command: writes weights (decoding base3 at the link, once, through
  a 243-entry ROM, into 2-bit codes), activations and control programs, starts a program
  (``RUN``), reads results and counters;
* the **controller** (:class:`rtl.controller.Controller`) runs the control program
  (``firmware.isa``; the shipped ``linear`` program runs a whole layer: bounds checks, the K
  split of ``sim.schedule.k_chunks``, one sweep per tile) and hands sweeps to
* the **sequencer**, which streams each sweep (one tile of weights, every token, every pass of
  K) through :class:`rtl.systolic.MatrixEngine`, one weight word and one activation per cycle,
  taking the next sweep without a gap, so the counters equal the cycle model (or, built with
  ``engine="tree"``, through :class:`rtl.adder_tree.TreeEngine`, one weight word and one word
  of ``rows`` activations per cycle; with ``engine="serial"``, through :class:`rtl.serial_tree.
  SerialTreeEngine`, a lane group's weights and a digit plane of ``rows`` activations a cycle);
* the **sender** frames the response and appends its CRC.
"""

from amaranth.hdl import (Array, Cat, Const, Module, Mux, ResetInserter, Shape, Signal, Value,
                          unsigned)
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from firmware.commands import (COUNTER_NAMES, FAULT_SIZE, FRAME_CRC, INSTRUCTION_BYTES,
                               ENGINE_NAMES, READ_RESULTS_SIZE, REQUEST_SYNC, RESPONSE_SYNC,
                               RUN_ARGS, RUN_SIZE, SERIAL_DIGIT_BITS, Command, DeviceInfo,
                               Status, device_trees)
from firmware.hardwired import hardwired_supported
from firmware.isa import param_values, sweep_layout, tree_param_values
from firmware.programs import FIRMWARE
from sim import numerics, packing

from .adder_tree import TreeEngine
from .controller import Controller
from .fanout import fanout_levels, replicas
from .linear_sequencer import LinearSequencer
from .serial_tree import SerialTreeEngine
from .sliced_memory import SlicedMemory, block_ram_width
from .spram import SPRAMWeights, spram_words
from .synth import NO_RW_CHECK
from .systolic import MatrixEngine

ARGS_BYTES = RUN_SIZE    # the longest argument block
COUNTER_BITS = 64        # as the READ_COUNTERS payload carries them (the widest counters)


def weight_bank_depths(words: int) -> list[int]:
    """The weight memory's banks with ``registered_ports``: the powers of two that add up to
    ``words``, largest first, so each bank starts at a multiple of its own depth and is picked
    by the address bits above it. A memory of another depth is split by yosys into block RAMs
    of one shape and a multiplexer in front of their outputs: the ULX3S-45F's 2560 words took
    72 DP16KD of 512 x 36 and three LUT4 in front of every bit of the read register, five
    block RAM outputs each (its builds placed at 66-71 MHz and did not finish routing). As
    banks, each maps onto block RAMs whose depth is the bank's (2048 x 9 and 512 x 36: 57 + 15
    DP16KD, the same 72) and is read into a register of its own, and the choice between them
    is made after those registers (``DeviceCore``), one LUT4 a bit between two registers."""
    if words < 1:
        raise ValueError(f"the weight memory needs at least one word, not {words}")
    return [1 << bit for bit in reversed(range(words.bit_length())) if words >> bit & 1]


def base3_rom() -> list[int]:
    """Byte -> five 2-bit codes (trit j at bits 2j..2j+1), from the golden base3 format."""
    table = []
    for byte in range(256):
        if byte > packing.BASE3_MAX_BYTE:
            table.append(0)
            continue
        trits = packing.unpack_base3(bytes([byte]), (5,))
        table.append(sum(packing.trit_code(int(t)) << (2 * j) for j, t in enumerate(trits)))
    return table


class FrameSender(wiring.Component):
    """Frames one response: sync, status, seq, length, ``length`` bytes from ``payload``, CRC.

    With ``buffered`` the payload passes a three-entry FIFO (``lib.fifo.SyncFIFO``, emptied on
    ``start``, so bytes offered past the end of one response never reach the next), and each
    side of it hands off on a ready or valid that is a compare of its level register. Without
    it, ``payload.ready`` comes from the sender's state and ``tx.ready``, and the byte sources
    answer it with the ``payload.valid`` that decides, in the same cycle, whether the CRC
    register takes a byte: there and back between the core's response multiplexer and the
    sender, the longest path of the ULX3S-85F's, ECPIX-5's and OrangeCrab's builds (12.5,
    10.3 and 9.2 ns, 10.5 of the 85F's in routing). The FIFO costs nothing in throughput
    (with one byte in it, it takes one and gives one in the same cycle) and delays only the
    first payload byte, by a cycle, behind the five header bytes.

    The sources see a ready of their own, ``room``: a register set while the FIFO holds at
    most one byte, so that three always fit (a third entry). With the FIFO's own ready (a
    compare of its level) the handshake still crossed the die twice, from the response
    multiplexer to the FIFO's write enable beside the sender and back to the READ_RESULTS
    shift register that the byte taken moves on: the OrangeCrab's longest path at 120 MHz
    (9.11 ns, 6.2 of them those two nets).
    """

    def __init__(self, *, buffered: bool = False):
        self.buffered = buffered
        super().__init__({
            "start": In(1),
            "status": In(8),
            "seq": In(8),
            "length": In(16),
            "payload": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = FRAME_CRC(data_width=8).create()
        if self.buffered:
            m.submodules.buffer = buffer = ResetInserter(self.start)(
                fifo.SyncFIFO(width=8, depth=3))
            # At most one byte now, so at most two next cycle, when a byte offered fits.
            room = Signal()
            m.d.sync += room.eq(buffer.level <= 1)
            m.d.comb += [
                self.payload.ready.eq(room),
                buffer.w_en.eq(self.payload.valid & room),
                buffer.w_data.eq(self.payload.payload),
            ]
            payload = buffer.r_stream
        else:
            payload = wiring.flipped(self.payload)
        status, seq = Signal(8), Signal(8)
        length, left = Signal(16), Signal(16)
        sent = Signal()
        m.d.comb += sent.eq(self.tx.valid & self.tx.ready)

        def emit(byte, next_state, checksum=True):
            m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(byte)]
            if checksum:
                m.d.comb += [crc.data.eq(byte), crc.valid.eq(sent)]
            with m.If(sent):
                m.next = next_state

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [status.eq(self.status), seq.eq(self.seq),
                                 length.eq(self.length), left.eq(self.length)]
                    m.d.comb += crc.start.eq(1)
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += self.busy.eq(1)
                emit(RESPONSE_SYNC, "STATUS", checksum=False)
            with m.State("STATUS"):
                m.d.comb += self.busy.eq(1)
                emit(status, "SEQ")
            with m.State("SEQ"):
                m.d.comb += self.busy.eq(1)
                emit(seq, "LEN0")
            with m.State("LEN0"):
                m.d.comb += self.busy.eq(1)
                emit(length[:8], "LEN1")
            with m.State("LEN1"):
                m.d.comb += self.busy.eq(1)
                emit(length[8:], "PAYLOAD")
                with m.If(sent & (length == 0)):
                    m.next = "CRC0"
            with m.State("PAYLOAD"):
                m.d.comb += self.busy.eq(1)
                wiring.connect(m, payload, wiring.flipped(self.tx))
                m.d.comb += [crc.data.eq(payload.payload), crc.valid.eq(sent)]
                with m.If(sent):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += self.busy.eq(1)
                emit(crc.crc[:8], "CRC1", checksum=False)
            with m.State("CRC1"):
                m.d.comb += self.busy.eq(1)
                emit(crc.crc[8:], "IDLE", checksum=False)
        return m


class DeviceCore(wiring.Component):
    """The byte-stream device core (see the module docstring and docs/protocol.md).

    Parameters
    ----------
    rows, cols, psum_width, acc_width : array parameters (:class:`rtl.systolic.MatrixEngine`).
        With ``engine="tree"``, ``rows`` is the trees' ``k`` and ``cols`` their lanes, and
        ``psum_width`` is unused (the lanes accumulate in ``acc_width``).
    engine : str
        "array" (:class:`rtl.systolic.MatrixEngine`) or "tree" (:class:`rtl.adder_tree.
        TreeEngine`: ``rows`` products for each of ``cols`` outputs a cycle, no per-product
        sums; INFO's ``engine`` tells the host, docs/protocol.md). The tree's activation
        buffer holds words of ``rows`` bytes (``act_bytes`` must be a multiple of ``rows``),
        WRITE_ACTS still addresses bytes, and the programs count K in steps of ``rows``
        elements and activations in words (``firmware.isa.tree_param_values``).
        "serial" (:class:`rtl.serial_tree.SerialTreeEngine`, the iCE40 UP5K's): the same
        host view as "tree" with 2-bit digits, a step in ``D = 4`` cycles. A weight-memory
        word is one lane group's trits, ``rows * cols / D`` (``TreeConfig.word_trits``), and a
        step's word is ``D`` of them at consecutive addresses (the programs address steps:
        their ``WEIGHT_WORDS`` is ``weight_words / D``). The activation buffer holds digit
        planes, ``rows`` digits a word, a step's ``D`` planes at consecutive addresses;
        WRITE_ACTS writes a byte's ``D`` digits in ``D`` cycles. Only without
        ``registered_ports``.
    act_copies : int
        With the tree engine: registers holding the step's activations, each feeding its
        group of ``cols / act_copies`` lanes (``rtl.fanout``; one register drove all 64
        lanes of the ULX3S-85F's build, up to 121 tiles away). 1 to ``cols``.
    port_copies : int
        With ``registered_ports``: the weight and result memories in about this many slices
        of bits, each slice's block RAMs addressed by copies of the addresses and enables of
        its own (:class:`rtl.sliced_memory.SlicedMemory`, slices whole ECP5 block RAMs wide).
        A weight read takes a cycle more before a stream's first step, and so does each row
        READ_RESULTS reads. 1 (one memory each) to ``cols``; more than 1 needs a weight memory
        of one bank (``weight_words`` a power of two) in block RAM.
    weight_words : int
        Depth of the weight memory in words of ``rows*cols`` trits (2-bit codes; with
        ``engine="serial"``, of a lane group's trits).
    act_bytes : int
        Size of the activation buffer.
    result_rows : int
        Depth of the result buffer in rows of ``cols`` sums (one engine result beat each).
    max_payload : int
        Largest request payload (the payload buffer's size).
    frame_timeout : int
        Cycles of silence after which a partial frame is dropped.
    clock_hz : int
        Core clock reported by INFO (0 when unknown).
    program_words : int
        Depth of the control program memory (it starts with ``firmware.programs.FIRMWARE``).
        Unused with ``control="hardwired"``, which has none (INFO reports 0).
    control : str
        "processor" (:class:`rtl.controller.Controller`: runs any program of
        ``firmware.isa``), or "hardwired" (:class:`rtl.linear_sequencer.LinearSequencer`:
        ``linear`` as fixed hardware, for the tree engine only, ``firmware.hardwired.
        hardwired_supported``). A hardwired core has no program memory: INFO's
        ``program_words`` is 0, WRITE_PROGRAM of any word and RUN from another entry than
        ``linear``'s are refused (BAD_ARGUMENT). An iCEBreaker build of 8x4 trees took 1,690
        cells fewer with it (docs/architecture.md, "Boards").
    weight_ram : str or None
        "spram" puts the weight memory in the iCE40 UP5K's SPRAMs (:class:`rtl.spram.
        SPRAMWeights`: 1 Mbit, where its block RAM holds 120 kbit); None, an inferred memory.
    accumulator_ram_style : str or None
        "block" puts the accumulator's sums in block RAM (:class:`rtl.accumulator.
        ResultAccumulator`; what iCE40 builds want), None lets the tools choose.
    counter_bits : int
        Width of the seven counters, 32 to 64 (INFO reports it; the host takes differences
        modulo ``2**counter_bits``). 32 saves a small board about 220 logic cells; at 100 MHz
        a 32-bit cycle counter wraps every 43 s, far longer than any one request.
    program_ram_style : str or None
        The control program memory's ``ram_style`` (:class:`rtl.controller.Controller`):
        "distributed" for ECP5 builds, None lets the tools choose.
    pe_adder : str
        The PEs' adder (:class:`rtl.ternary_pe.TernaryPE`): "generic", or "ccu2c" (ECP5's
        carry cells with the operand logic inside them) for ECP5 builds.
    registered_ports : bool
        Drive the memory ports that large arrays spread over many block RAMs from registers:
        result rows go into the result buffer a cycle after they leave the engine (32
        flip-flops a column; it cuts the path from the drain through the accumulator into a
        block RAM), and the operand memories' read addresses are counters of their own rather
        than base + step (no adder in front of every weight block RAM's address pins), the
        operands read pass one more register on their way to the engine (a cycle more before
        a stream's first step; a weight memory whose depth is not a power of two is read in
        banks, each into a register of its own: ``weight_bank_depths``), so does each row
        READ_RESULTS reads (a cycle more a row), a weight word is written from registers a
        cycle after its last byte, the payload memory's byte is registered before the
        commands read it (a cycle more for each command with a payload), and the engine keeps
        "drained" in a register in front of its step enable and a drain row counter per group
        of columns (``rtl.systolic.SystolicArray``); the response payload reaches the frame sender
        through a three-entry FIFO (:class:`FrameSender`'s ``buffered``); the sequencer
        issues without stalls (it holds a pass's last step back for the drain, so the
        operand stages need no enable); the controller's ``registered_checks`` go with them.
        A UP5K has no cells to spare for them (with them its 2x2 core took 5,281 of 5,280
        cells), and its clock does not need them.
    """

    def __init__(self, *, rows: int, cols: int, psum_width: int = 16, acc_width: int = 32,
                 weight_words: int = 1024, act_bytes: int = 4096, result_rows: int = 256,
                 max_payload: int = 1024, frame_timeout: int = 1 << 16, clock_hz: int = 0,
                 program_words: int = 64, counter_bits: int = COUNTER_BITS,
                 accumulator_ram_style: str | None = None, weight_ram: str | None = None,
                 program_ram_style: str | None = None, pe_adder: str = "generic",
                 registered_ports: bool = True, engine: str = "array", act_copies: int = 1,
                 port_copies: int = 1, control: str = "processor"):
        if engine not in ("array", "tree", "serial"):
            raise ValueError(f"engine must be 'array', 'tree' or 'serial', not {engine!r}")
        if not 1 <= act_copies <= (cols if engine == "tree" else 1):
            raise ValueError(f"act_copies must be 1 to {cols} with the tree engine and 1 with "
                             f"the array, not {act_copies}")
        self.engine, self.act_copies = engine, act_copies
        if not 1 <= port_copies <= cols:
            raise ValueError(f"port_copies must be 1 to cols ({cols}), not {port_copies}")
        if port_copies > 1 and not (registered_ports and weight_ram is None
                                    and len(weight_bank_depths(weight_words)) == 1):
            raise ValueError("port_copies above 1 needs registered_ports and a weight memory "
                             "of one bank in block RAM (weight_words a power of two, "
                             f"not {weight_words})")
        self.port_copies = port_copies
        self.tree_config = None
        if engine != "array":
            # refuses a bad tree, lanes the serial beats cannot group, and a buffer that is
            # not whole words, now
            self.tree_config = device_trees(engine, rows, cols, acc_bits=acc_width)
            self.tree_config.act_words(act_bytes)
        # weight-memory words a step takes (a step's word is split into lane groups, serial)
        self.words_per_step = self.tree_config.words_per_step if self.tree_config else 1
        # (a power of two: its digit and beat counters wrap, and addresses take them as bits)
        assert self.words_per_step & (self.words_per_step - 1) == 0
        if engine == "serial" and (registered_ports or pe_adder != "generic"):
            raise ValueError("the serial trees are the UP5K's: registered_ports=False and "
                             "pe_adder='generic' only")
        if weight_ram not in (None, "spram"):
            raise ValueError(f"weight_ram must be None or 'spram', not {weight_ram!r}")
        word_trits = rows * cols // self.words_per_step
        if weight_ram == "spram":
            spram_words(2 * word_trits)         # refuses a word the SPRAMs cannot hold
        self.weight_ram = weight_ram
        if max_payload < ARGS_BYTES:
            raise ValueError(f"max_payload must be at least {ARGS_BYTES}")
        if control not in ("processor", "hardwired"):
            raise ValueError(f"control must be 'processor' or 'hardwired', not {control!r}")
        self.control = control
        if control == "hardwired":
            if engine == "array":
                raise ValueError("control='hardwired' needs a tree engine (its linear "
                                 "makes one pass of a token's K)")
            program_words = 0
        elif program_words < len(FIRMWARE):
            raise ValueError(f"program_words must hold the {len(FIRMWARE)}-word firmware")
        if not 32 <= counter_bits <= COUNTER_BITS:
            raise ValueError(f"counter_bits must be 32 to {COUNTER_BITS}, not {counter_bits}")
        self.program_words, self.counter_bits = program_words, counter_bits
        self.accumulator_ram_style = accumulator_ram_style
        self.program_ram_style = program_ram_style
        self.pe_adder = pe_adder
        self.registered_ports = registered_ports
        self.rows, self.cols = rows, cols
        self.psum_width, self.acc_width = psum_width, acc_width
        self.weight_words, self.act_bytes, self.result_rows = weight_words, act_bytes, result_rows
        self.max_payload, self.frame_timeout, self.clock_hz = max_payload, frame_timeout, clock_hz
        self.word_bytes = -(-word_trits // packing.FORMATS["base3"].trits_per_byte)
        self.k_max = numerics.max_exact_k(acc_width)
        # the longest pass the sequencer counts: the PEs' limit, or a whole token's K in steps
        self.pass_k_max = (numerics.max_exact_k(psum_width) if engine == "array"
                           else act_bytes // rows)
        if control == "hardwired":
            hardwired_supported(self.params)      # refuses what linear could not do fixed
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "busy": Out(1),     # a frame is arriving or a command is running (for LEDs, and
                                # so that a simulation harness knows when it may sleep)
        })

    @property
    def info(self) -> DeviceInfo:
        return DeviceInfo(rows=self.rows, cols=self.cols, act_bits=numerics.ACT_BITS,
                          psum_bits=self.psum_width if self.engine == "array"
                          else self.acc_width, acc_bits=self.acc_width,
                          weight_words=self.weight_words, act_bytes=self.act_bytes,
                          result_rows=self.result_rows, max_payload=self.max_payload,
                          frame_timeout=self.frame_timeout, clock_hz=self.clock_hz,
                          program_words=self.program_words, counter_bits=self.counter_bits,
                          engine=ENGINE_NAMES[self.engine].value)

    @property
    def params(self) -> dict:
        """What control programs read with ``CFG``."""
        if self.tree_config:        # programs address steps' words (``words_per_step`` each)
            return tree_param_values(k=self.rows, lanes=self.cols,
                                     weight_words=self.weight_words // self.words_per_step,
                                     act_bytes=self.act_bytes,
                                     result_rows=self.result_rows, k_max=self.k_max)
        return param_values(rows=self.rows, cols=self.cols, weight_words=self.weight_words,
                            act_bytes=self.act_bytes, result_rows=self.result_rows,
                            pass_k_max=self.pass_k_max, k_max=self.k_max)

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        D = self.words_per_step     # beats a step: serial trees take a lane group's word each
        word_bits = 2 * R * C // D
        serial = self.engine == "serial"
        tree = self.engine == "tree" or serial      # adder trees: a result row a pass
        banked = self.registered_ports and self.weight_ram is None
        sliced = self.port_copies > 1

        def sliced_memory(width, depth):
            return SlicedMemory(width=width, depth=depth, slices=self.port_copies,
                                granule=block_ram_width(depth), attrs=NO_RW_CHECK)
        bank_depths = weight_bank_depths(self.weight_words) if banked else [self.weight_words]

        # -- memories ------------------------------------------------------------------------
        # NO_RW_CHECK (rtl.synth): no read of these is used in a cycle that writes them. The
        # payload is written only while no frame waits for the executor, which alone reads it;
        # weights and activations are written by commands, read by the sequencer during RUN;
        # results are written during RUN and read by READ_RESULTS.
        m.submodules.payload_mem = payload_mem = Memory(shape=8, depth=self.max_payload, init=[],
                                                        attrs=NO_RW_CHECK)
        payload_w = payload_mem.write_port()
        payload_r = payload_mem.read_port()
        if self.weight_ram == "spram":
            # (the serial trees' sequencer reads every cycle: no register holds a word)
            m.submodules.weight_mem = weight_mem = SPRAMWeights(
                word_bits=word_bits, depth=self.weight_words, hold=not serial)
            weight_w, weight_r = weight_mem.write, weight_mem.read
        elif sliced:
            m.submodules.weight_mem = weight_mem = sliced_memory(word_bits, self.weight_words)
            weight_w, weight_r = weight_mem.write, weight_mem.read
        elif len(bank_depths) == 1:
            m.submodules.weight_mem = weight_mem = Memory(shape=unsigned(word_bits),
                                                          depth=self.weight_words, init=[],
                                                          attrs=NO_RW_CHECK)
            weight_w = weight_mem.write_port()
            weight_r = weight_mem.read_port()
        else:
            # Banks (``weight_bank_depths``): the ports below drive every bank, and each bank's
            # read data goes on to the sequencer's ``read`` stage as it is (``bank_data``).
            addr_width = Shape.cast(range(self.weight_words)).width
            weight_w = WritePort.Signature(addr_width=addr_width, shape=unsigned(word_bits)
                                           ).create(path=("weight_w",))
            weight_r = ReadPort.Signature(addr_width=addr_width, shape=unsigned(word_bits)
                                          ).create(path=("weight_r",))
            bank_data, bank_hits = [], []    # each bank's read data; "addr is in bank i"
            offset = 0
            for i, depth in enumerate(bank_depths):
                bank = Memory(shape=unsigned(word_bits), depth=depth, init=[], attrs=NO_RW_CHECK)
                m.submodules[f"weight_bank_{i}"] = bank
                bank_w, bank_r = bank.write_port(), bank.read_port()
                low = depth.bit_length() - 1

                def hit(addr, low=low, offset=offset):
                    return addr[low:] == offset >> low
                m.d.comb += [bank_w.addr.eq(weight_w.addr[:low]), bank_w.data.eq(weight_w.data),
                             bank_w.en.eq(weight_w.en & hit(weight_w.addr)),
                             bank_r.addr.eq(weight_r.addr[:low]), bank_r.en.eq(weight_r.en)]
                bank_data.append(bank_r.data)
                bank_hits.append(hit)
                offset += depth
        # The tree's activation buffer holds a step's R bytes a word, written a byte at a time;
        # the serial trees' holds digit planes, digit c (from the top) of a step's R bytes a
        # word, the step's D planes at consecutive addresses, written a digit at a time.
        act_word = R if tree else 1
        act_bits = SERIAL_DIGIT_BITS if serial else 8
        m.submodules.act_mem = act_mem = Memory(shape=act_bits * act_word,
                                                depth=self.act_bytes // act_word * D, init=[],
                                                attrs=NO_RW_CHECK)
        act_w = (act_mem.write_port(granularity=act_bits) if tree
                 else act_mem.write_port())
        act_r = act_mem.read_port()
        if sliced:
            m.submodules.result_mem = result_mem = sliced_memory(C * self.acc_width,
                                                                 self.result_rows)
            result_w, result_r = result_mem.write, result_mem.read
        else:
            m.submodules.result_mem = result_mem = Memory(shape=unsigned(C * self.acc_width),
                                                          depth=self.result_rows, init=[],
                                                          attrs=NO_RW_CHECK)
            result_w = result_mem.write_port()
            result_r = result_mem.read_port()
        m.submodules.base3 = base3 = Memory(shape=10, depth=256, init=base3_rom())
        base3_r = base3.read_port()

        if serial:
            # the result buffer takes every row as it comes: no result registers, and the
            # engine never refuses a beat (rtl.serial_tree, "Without back-pressure")
            m.submodules.engine = engine = SerialTreeEngine(
                k=R, lanes=C, digit_bits=SERIAL_DIGIT_BITS, acc_width=self.acc_width,
                backpressure=False)
        elif tree:
            m.submodules.engine = engine = TreeEngine(k=R, lanes=C, acc_width=self.acc_width,
                                                      adder=self.pe_adder,
                                                      act_copies=self.act_copies)
        else:
            m.submodules.engine = engine = MatrixEngine(
                rows=R, cols=C, psum_width=self.psum_width, acc_width=self.acc_width,
                accumulator_ram_style=self.accumulator_ram_style, adder=self.pe_adder,
                drained_register=self.registered_ports)
        # A ccu2c tree takes its activations inverted (rtl.adder_tree), so its activation
        # buffer holds ~x (WRITE_ACTS inverts each byte): every register between the buffer
        # and the lanes' carry cells is then a plain copy, and no inverter sits in a path
        # that crosses the die.
        inverted = tree and not serial and engine.inverted
        m.submodules.sender = sender = FrameSender(buffered=self.registered_ports)
        hardwired = self.control == "hardwired"
        if hardwired:
            m.submodules.controller = controller = LinearSequencer(params=self.params)
        else:
            m.submodules.controller = controller = Controller(
                program_words=self.program_words, params=self.params, init=FIRMWARE.words,
                program_ram_style=self.program_ram_style,
                registered_checks=self.registered_ports)
        wiring.connect(m, sender.tx, wiring.flipped(self.tx))

        counters = {name: Signal(self.counter_bits, name=f"count_{name}")
                    for name in COUNTER_NAMES}
        clear_counters = Signal()
        with m.If(clear_counters):
            m.d.sync += [c.eq(0) for c in counters.values()]

        # -- receiver -----------------------------------------------------------------------
        m.submodules.rx_crc = rx_crc = FRAME_CRC(data_width=8).create()
        code, seq = Signal(8), Signal(8)
        length, index = Signal(16), Signal(16)
        # With ``registered_ports``, ``length - 1`` is taken with the length: the payload's end
        # compared with a subtraction in front (a 16-bit carry chain, then the compare and the
        # state) was the longest path of the ULX3S-25F's 16x16 core at 100 MHz (11.21 ns). The
        # iCE40 builds leave it out: the iCEBreaker's 2x2 core went from 5,245 to 5,509 of
        # its 5,280 cells with it (ABC mapped the whole core 262 LUT4 larger).
        last_index = Signal(16) if self.registered_ports else length - 1
        crc_low = Signal(8)
        frame_ready = Signal()            # a complete frame waits for the executor
        frame_status = Signal(Status)     # OK (well formed) or the error to report
        release = Signal()                # the executor is done with the frame
        silence = Signal(range(self.frame_timeout + 1))
        byte = self.rx.payload
        got = Signal()
        m.d.comb += [
            self.rx.ready.eq(~frame_ready),
            got.eq(self.rx.valid & self.rx.ready),
            payload_w.addr.eq(index),
            payload_w.data.eq(byte),
            rx_crc.data.eq(byte),
        ]
        with m.If(release):
            m.d.sync += frame_ready.eq(0)
        with m.If(got):
            m.d.sync += silence.eq(0)
        with m.Elif(silence != self.frame_timeout):
            m.d.sync += silence.eq(silence + 1)

        def drop_if_silent():
            # A frame that stops arriving is dropped, so that the device never hangs on it.
            with m.If(silence == self.frame_timeout):
                m.next = "HUNT"

        def hand_over(status):
            m.d.sync += [frame_ready.eq(1), frame_status.eq(status)]
            m.next = "HUNT"

        with m.FSM(name="receiver") as receiver:
            with m.State("HUNT"):
                with m.If(got & (byte == REQUEST_SYNC)):
                    m.d.comb += rx_crc.start.eq(1)
                    m.next = "CODE"
            for state, target, nxt in (("CODE", code, "SEQ"), ("SEQ", seq, "LEN0"),
                                       ("LEN0", length[:8], "LEN1")):
                with m.State(state):
                    drop_if_silent()
                    with m.If(got):
                        m.d.comb += rx_crc.valid.eq(1)
                        m.d.sync += target.eq(byte)
                        m.next = nxt
            with m.State("LEN1"):
                drop_if_silent()
                with m.If(got):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += [length[8:].eq(byte), index.eq(0)]
                    if self.registered_ports:
                        m.d.sync += last_index.eq(Cat(length[:8], byte) - 1)
                    with m.If(Cat(length[:8], byte) > self.max_payload):
                        hand_over(Status.BAD_LENGTH)
                    with m.Elif(Cat(length[:8], byte) == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                drop_if_silent()
                with m.If(got):
                    m.d.comb += [rx_crc.valid.eq(1), payload_w.en.eq(1)]
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == last_index):
                        m.next = "CRC0"
            with m.State("CRC0"):
                drop_if_silent()
                with m.If(got):
                    m.d.sync += crc_low.eq(byte)
                    m.next = "CRC1"
            with m.State("CRC1"):
                drop_if_silent()
                with m.If(got):
                    with m.If(Cat(crc_low, byte) == rx_crc.crc):
                        hand_over(Status.OK)
                    with m.Else():
                        hand_over(Status.BAD_CRC)

        # -- executor -----------------------------------------------------------------------
        args = Signal(8 * ARGS_BYTES)
        arg_index = Signal(range(ARGS_BYTES + 3))
        arg_count = Signal(range(ARGS_BYTES + 1))

        def arg(offset, size):
            return args[8 * offset:8 * (offset + size)]

        def beyond(size, depth):
            # ``arg(0, 4) + size > depth`` at the width of ``depth`` rather than 33 bits: an
            # address with any bit set above the memory's is out of range whatever ``size`` is.
            n = max(1, depth.bit_length())
            return (arg(0, 4)[n:] != 0) | (arg(0, 4)[:n] + size > depth)

        resp_status = Signal(Status)
        resp_length = Signal(16)
        resp_source = Signal(range(4))     # 0: INFO, 1: counters, 2: results, 3: fault
        info_bytes = self.info.to_bytes()
        counter_bytes = 8 * len(COUNTER_NAMES)

        # Scratch registers of the commands.
        # Each command checks its 32-bit address argument against its memory before it starts,
        # so ``addr`` only needs to reach the largest memory's end; counts stay within a payload.
        depth_max = max(self.act_bytes, self.weight_words, self.program_words, self.result_rows)
        addr = Signal(range(depth_max + 1))     # memory address being written / read
        count = Signal(16)                      # loop counter
        limit = Signal(16)
        pipe_valid = Signal()       # a payload byte read last cycle is on payload_r.data
        # What the commands read: with ``registered_ports`` the payload byte is registered once
        # more first. The payload memory is a block RAM with a 5.8 ns clock-to-out on the 85F,
        # and from there across the die into SCAN_WEIGHTS' compare was the 85F's longest path
        # at 84 MHz (13.4 ns). The commands that read a payload take a cycle more.
        # ``payload_lag``: cycles from an address to its byte in ``payload_byte``; ARGS reads
        # ``arg_count`` bytes and ends as the last one arrives, at ``args_last``.
        if self.registered_ports:
            payload_byte, byte_valid = Signal(8), Signal()
            m.d.sync += [payload_byte.eq(payload_r.data), byte_valid.eq(pipe_valid)]
            pipe_reset = [pipe_valid.eq(0), byte_valid.eq(0)]
            payload_lag = 2
            args_last = arg_count + payload_lag - 1
        else:
            payload_byte, byte_valid = payload_r.data, pipe_valid
            pipe_reset = [pipe_valid.eq(0)]
            # the plain count: on the UP5K, where cells are short, "+ 0" took 6 LUT4 more
            payload_lag, args_last = 1, arg_count
        pipe_index = Signal(16)
        # A sliced weight memory takes a write's data a cycle after its address and enable
        # (rtl.sliced_memory): ``shift`` is a byte longer, so the word has moved down to its
        # bottom by then.
        shift = Signal(10 * (self.word_bytes + sliced), reset_less=True)
        # bytes of the weight word or instruction word being assembled (WRITE_WEIGHTS and
        # WRITE_PROGRAM): an array of up to 5 PEs has a weight word of one byte
        word_fill = Signal(range(max(self.word_bytes, INSTRUCTION_BYTES) + 1))
        words = Signal(16)
        bad = Signal()
        byte_over, byte_checked = Signal(), Signal()    # SCAN_WEIGHTS: last cycle's byte
        acts_beyond, program_beyond, results_beyond = Signal(), Signal(), Signal()
        run_refused = Signal()      # RUN's length or entry is wrong
        words_refused = Signal()    # WRITE_WEIGHTS: no whole word, or words beyond the memory
        narrow = Signal()           # READ_RESULTS of width 2

        if self.registered_ports:
            weight_write = Signal()     # write shift's word at addr (WRITE_WEIGHTS), then addr += 1
            m.d.sync += weight_write.eq(0)
            m.d.comb += [weight_w.addr.eq(addr), weight_w.data.eq(shift[:word_bits]),
                         weight_w.en.eq(weight_write)]
            with m.If(weight_write):
                m.d.sync += addr.eq(addr + 1)
        program_word = Signal(8 * INSTRUCTION_BYTES)
        program_write = Signal()                # write program_word at program_addr
        program_addr = Signal(range(max(1, self.program_words)))
        m.d.sync += program_write.eq(0)         # one cycle each time WRITE_PROGRAM sets it
        if not hardwired:       # (a hardwired core refuses every word: no program memory)
            m.d.comb += [controller.write_addr.eq(program_addr),
                         controller.write_data.eq(program_word),
                         controller.write_en.eq(program_write)]

        m.d.comb += payload_r.addr.eq(pipe_index)

        def respond(status, length=0, source=0):
            m.d.sync += [resp_status.eq(status), resp_length.eq(length),
                         resp_source.eq(source)]
            m.next = "RESPOND"

        # RUN starts the controller a cycle after DISPATCH accepts it, from a register: the
        # start writes every controller register, and as a decision of DISPATCH its fan-out
        # made the longest path. The entry and arguments stay in ``args`` during RUN.
        run_start = Signal()
        m.d.sync += run_start.eq(0)
        m.d.comb += controller.start.eq(run_start)
        if not hardwired:
            m.d.comb += controller.entry.eq(arg(0, 2))
        m.d.comb += [controller.args[i].eq(arg(2 + 4 * i, 4)) for i in range(RUN_ARGS)]

        with m.FSM(name="executor") as executor:
            with m.State("IDLE"):
                with m.If(frame_ready):
                    with m.If(frame_status == Status.OK):
                        m.d.sync += [counters["frames_ok"].eq(counters["frames_ok"] + 1),
                                     args.eq(0), arg_index.eq(0), pipe_index.eq(0),
                                     arg_count.eq(Mux(length > ARGS_BYTES, ARGS_BYTES, length)),
                                     limit.eq(length - 4)]      # data bytes after the address
                        m.next = "ARGS"
                    with m.Else():
                        m.d.sync += counters["frames_bad"].eq(counters["frames_bad"] + 1)
                        respond(frame_status)

            # Read the first bytes of the payload into ``args`` (sync read: one cycle behind).
            with m.State("ARGS"):
                for i in range(ARGS_BYTES):
                    with m.If(arg_index == i + payload_lag):
                        m.d.sync += args[8 * i:8 * (i + 1)].eq(payload_byte)
                m.d.sync += [arg_index.eq(arg_index + 1), pipe_index.eq(pipe_index + 1)]
                with m.If(arg_index == args_last):
                    m.next = "CHECK"

            # The range checks get a cycle of their own (registered), so that DISPATCH does
            # not chain an addition and a compare in front of its next state; ``limit`` was
            # registered before, so no subtraction comes first either. (With length < 4 it has
            # wrapped, but every command that reads it refuses such a length anyway.)
            with m.State("CHECK"):
                m.d.sync += [
                    acts_beyond.eq(beyond(limit, self.act_bytes)),
                    program_beyond.eq(beyond(limit >> 2, self.program_words)),
                    results_beyond.eq(beyond(arg(4, 2), self.result_rows) |
                                      (arg(4, 2) > 0xFFFF // (4 * C))),
                    # The controller's start follows from this: decided here, it is a register
                    # in front of the controller's first cycle, not a compare.
                    run_refused.eq((length != ARGS_BYTES) |
                                   (arg(0, 2) != FIRMWARE.entries["linear"] if hardwired
                                    else arg(0, 2) >= self.program_words)),
                ]
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(code):
                    with m.Case(Command.INFO):
                        with m.If(length == 0):
                            respond(Status.OK, len(info_bytes), 0)
                        with m.Else():
                            respond(Status.BAD_ARGUMENT)
                    with m.Case(Command.RESET, Command.CLEAR_COUNTERS):
                        with m.If(length == 0):
                            m.d.comb += clear_counters.eq(1)
                            respond(Status.OK)
                        with m.Else():
                            respond(Status.BAD_ARGUMENT)
                    with m.Case(Command.READ_COUNTERS):
                        with m.If(length == 0):
                            respond(Status.OK, counter_bytes, 1)
                        with m.Else():
                            respond(Status.BAD_ARGUMENT)
                    with m.Case(Command.WRITE_ACTS):
                        m.d.sync += [addr.eq(arg(0, 4)), count.eq(0), pipe_index.eq(4),
                                     *pipe_reset]
                        with m.If((length < 4) | acts_beyond):
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.next = "WRITE_ACTS"
                    with m.Case(Command.WRITE_WEIGHTS):
                        m.d.sync += [addr.eq(arg(0, 4)), count.eq(0), pipe_index.eq(4),
                                     *pipe_reset, bad.eq(0), word_fill.eq(0), words.eq(0),
                                     byte_checked.eq(0)]
                        with m.If(length < 4):
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.next = "SCAN_WEIGHTS"
                    with m.Case(Command.WRITE_PROGRAM):
                        m.d.sync += [addr.eq(arg(0, 4)), count.eq(0), pipe_index.eq(4),
                                     *pipe_reset, word_fill.eq(0)]
                        with m.If((length < 4) | (limit[:2] != 0) | program_beyond):
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.next = "WRITE_PROGRAM"
                    with m.Case(Command.RUN):
                        with m.If(run_refused):
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += run_start.eq(1)
                            m.d.sync += counters["runs"].eq(counters["runs"] + 1)
                            m.next = "RUN"
                    with m.Case(Command.READ_RESULTS):
                        m.d.sync += [addr.eq(arg(0, 4)), count.eq(0), resp_length.eq(0),
                                     narrow.eq(arg(6, 1) == 2)]
                        with m.If((length != READ_RESULTS_SIZE) | (arg(4, 2) == 0) |
                                  results_beyond | ((arg(6, 1) != 2) & (arg(6, 1) != 4))):
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.next = "RESULTS_LENGTH"
                    with m.Default():
                        respond(Status.UNKNOWN_COMMAND)

            # WRITE_ACTS: copy payload bytes 4.. into the activation buffer.
            # The payload read port is one cycle behind ``pipe_index``: ``pipe_valid`` says the
            # byte on ``payload_r.data`` belongs to the data part (offset 4 .. 4 + limit), and
            # ``byte_valid`` the same of ``payload_byte``.
            read_ahead = [pipe_index.eq(pipe_index + 1), pipe_valid.eq(pipe_index < length)]
            # The serial trees' buffer takes a byte's D digits one a cycle (``act_digit``),
            # the byte held on the payload's read port meanwhile (its enable low, the read
            # pointer held): no register holds the byte, and a UART byte takes longer anyway.
            act_digit = Signal(range(D))
            with m.State("WRITE_ACTS"):
                if serial:
                    holding_byte = byte_valid & (act_digit != D - 1)
                    m.d.comb += payload_r.en.eq(~holding_byte)
                    with m.If(~holding_byte):
                        m.d.sync += read_ahead
                else:
                    m.d.sync += read_ahead
                with m.If(byte_valid):
                    if serial:  # plane addr: word addr * D + digit, digit lane addr mod R
                        lane_bits = R.bit_length() - 1
                        # digit c from the top: ~c is D - 1 - c, D being a power of two
                        digit = payload_byte.word_select(~act_digit, act_bits)
                        m.d.comb += [act_w.addr.eq(Cat(act_digit, addr[lane_bits:])),
                                     act_w.data.eq(Cat(*[digit] * R)),
                                     act_w.en.eq(Const(1, R) << addr[:lane_bits])]
                        m.d.sync += act_digit.eq(act_digit + 1)     # wraps after D - 1
                    elif tree:  # byte addr: word addr >> log2(R), byte lane addr mod R
                        lane_bits = R.bit_length() - 1
                        byte = ~payload_byte if inverted else payload_byte
                        m.d.comb += [act_w.addr.eq(addr[lane_bits:]),
                                     act_w.data.eq(Cat(*[byte] * R)),
                                     act_w.en.eq(Const(1, R) << addr[:lane_bits])]
                    else:
                        m.d.comb += [act_w.addr.eq(addr), act_w.data.eq(payload_byte),
                                     act_w.en.eq(1)]
                    with m.If(~holding_byte if serial else 1):
                        m.d.sync += [addr.eq(addr + 1), count.eq(count + 1)]
                with m.If(count == limit):
                    respond(Status.OK)

            # WRITE_PROGRAM: little-endian 32-bit words into the controller's program memory,
            # each written a cycle after its last byte, from ``program_word``: straight from
            # the payload memory's block RAM to the program's LUT RAM was the longest path of
            # the ULX3S-85F's 16x32 build at 75 MHz (15.6 ns, 9.5 of them routing). Nothing
            # runs the program before the response is sent.
            with m.State("WRITE_PROGRAM"):
                m.d.sync += read_ahead
                with m.If(byte_valid):
                    m.d.sync += [program_word.eq(Cat(program_word[8:], payload_byte)),
                                 count.eq(count + 1), word_fill.eq(word_fill + 1)]
                    with m.If(word_fill == INSTRUCTION_BYTES - 1):
                        m.d.sync += [program_write.eq(1), program_addr.eq(addr),
                                     addr.eq(addr + 1), word_fill.eq(0)]
                with m.If(count == limit):
                    respond(Status.OK)

            # WRITE_WEIGHTS, first pass: every byte a valid base3 byte, whole words only, and
            # the words inside the memory; nothing is written unless all of that holds.
            with m.State("SCAN_WEIGHTS"):
                m.d.sync += read_ahead
                # A byte's check is registered before it marks the frame bad: the payload
                # memory's output is slow and goes through a compare (the last byte's verdict
                # lands in the cycle that ends the scan, before SCAN_CHECK reads ``bad``).
                m.d.sync += [byte_over.eq(payload_byte > packing.BASE3_MAX_BYTE),
                             byte_checked.eq(byte_valid)]
                with m.If(byte_checked & byte_over):
                    m.d.sync += bad.eq(1)
                with m.If(byte_valid):
                    m.d.sync += count.eq(count + 1)
                    with m.If(word_fill == self.word_bytes - 1):
                        m.d.sync += [word_fill.eq(0), words.eq(words + 1)]
                    with m.Else():
                        m.d.sync += word_fill.eq(word_fill + 1)
                # Registered every cycle; the scan's last cycle counts no word, so SCAN_CHECK
                # sees the verdict on the final count.
                m.d.sync += words_refused.eq((words == 0) | beyond(words, self.weight_words))
                with m.If(~byte_valid & (count == limit)):
                    m.next = "SCAN_CHECK"

            # The scan's verdict gets a cycle of its own, and its range check was registered
            # before, so no compare is chained in front of the next state.
            with m.State("SCAN_CHECK"):
                m.d.sync += [count.eq(0), pipe_index.eq(4), *pipe_reset, word_fill.eq(0)]
                with m.If(bad | (word_fill != 0) | words_refused):
                    respond(Status.BAD_ARGUMENT)
                with m.Else():
                    m.next = "WRITE_WEIGHTS"

            # Second pass: decode each byte into five 2-bit codes and assemble words. With
            # ``registered_ports`` a word is written in the cycle after its last byte, from
            # ``shift``, ``addr`` and a register: the weight memory's address and data reach
            # every one of its block RAMs (147 on the ULX3S-85F), and with the state decode in
            # front of them that was the 85F's longest path at 72 MHz (15.5 ns, 13.5 of them
            # routing). With one byte a word the next word is written in the cycle after, at
            # the address moved on. Otherwise the word is written as its last byte arrives.
            # ``shift`` moves on every cycle, with no enable (its 4,100 flip-flops on the
            # ULX3S-85F's 32x64 device made an enable of 4,101 loads): the data bytes of a
            # frame are read one a cycle, from offset 4 to its end (``read_ahead``), so a
            # word's bytes arrive in consecutive cycles and are all in ``shift`` as its last
            # one does (whatever shifted in before the frame's first byte is shifted out by
            # its first word).
            m.d.comb += base3_r.addr.eq(payload_byte)
            decoded_valid = Signal()
            new_shift = Cat(shift[10:], base3_r.data)
            m.d.sync += shift.eq(new_shift)
            with m.State("WRITE_WEIGHTS"):
                m.d.sync += read_ahead + [decoded_valid.eq(byte_valid)]
                with m.If(decoded_valid):
                    m.d.sync += count.eq(count + 1)
                    with m.If(word_fill == self.word_bytes - 1):
                        m.d.sync += word_fill.eq(0)
                        if self.registered_ports:
                            m.d.sync += weight_write.eq(1)
                        else:
                            m.d.comb += [weight_w.addr.eq(addr),
                                         weight_w.data.eq(new_shift[:word_bits]),
                                         weight_w.en.eq(1)]
                            m.d.sync += addr.eq(addr + 1)
                    with m.Else():
                        m.d.sync += word_fill.eq(word_fill + 1)
                with m.If(count == limit):
                    respond(Status.OK)

            # RUN: the controller runs the program; it reports once the sequencer is idle.
            with m.State("RUN"):
                with m.If(controller.done):
                    with m.If(controller.status == Status.PROGRAM_FAULT):
                        respond(Status.PROGRAM_FAULT, FAULT_SIZE, 3)
                    with m.Else():
                        respond(controller.status)

            # READ_RESULTS: the response length is rows * cols * width, summed up.
            with m.State("RESULTS_LENGTH"):
                with m.If(count < arg(4, 2)):
                    m.d.sync += [count.eq(count + 1),
                                 resp_length.eq(resp_length + Mux(narrow, 2 * C, 4 * C))]
                with m.Else():
                    m.d.sync += resp_status.eq(Status.OK)
                    m.d.sync += resp_source.eq(2)
                    m.next = "RESPOND"

            with m.State("RESPOND"):
                m.d.comb += [sender.start.eq(1), sender.status.eq(resp_status),
                             sender.seq.eq(seq), sender.length.eq(resp_length)]
                m.next = "SENDING"
            with m.State("SENDING"):
                with m.If(~sender.busy):
                    m.d.comb += release.eq(1)
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~receiver.ongoing("HUNT") | ~executor.ongoing("IDLE") |
                                 frame_ready)

        # -- response payloads ------------------------------------------------------------
        info_rom = Array(Const(b, 8) for b in info_bytes)
        pad = COUNTER_BITS - self.counter_bits          # each counter goes out as a u64
        counter_vector = Cat(*(Cat(counters[name], Const(0, pad)) if pad else counters[name]
                               for name in COUNTER_NAMES))
        fault_vector = Cat(controller.fault_pc, controller.fault_cause)   # FAULT_FORMAT
        # INFO, READ_COUNTERS and a fault's payload go out from a register loaded a byte ahead
        # (whenever it is empty or its byte is taken): picking a byte by its index out of
        # dozens is several LUT levels, and in front of the sender's CRC it was the longest
        # path of a 2x2 ULX3S build at 100 MHz.
        small_byte, small_valid = Signal(8), Signal()
        fetch_index = Signal(range(max(len(info_bytes), counter_bytes, FAULT_SIZE) + 1))
        fetched = Signal(8)
        with m.Switch(resp_source):
            with m.Case(0):
                m.d.comb += fetched.eq(info_rom[fetch_index])
            with m.Case(1):
                m.d.comb += fetched.eq(counter_vector.word_select(fetch_index, 8))
            with m.Case(3):
                m.d.comb += fetched.eq(fault_vector.word_select(fetch_index, 8))
        with m.If(sender.start):
            m.d.sync += [small_valid.eq(0), fetch_index.eq(0)]
        with m.Elif(~small_valid | sender.payload.ready):
            m.d.sync += [small_byte.eq(fetched), small_valid.eq(1),
                         fetch_index.eq(fetch_index + 1)]
        # READ_RESULTS: a row is read into ``row_word``, and its sums go out one at a time from
        # ``sum_word``, a 32-bit shift register loaded with the next column's sum as the last
        # byte of a sum is taken (no bubble between the sums of a row). Width 2 sends bytes 0
        # and 1 of each little-endian int32 sum. Nothing as wide as a row has an enable: the
        # result buffer's read address holds while a row is sent, so its data, and
        # ``row_word`` behind it, are loaded every cycle and stay the row. (A row-wide shift
        # register moved by the sender's ready, and the width's multiplexer in front of it,
        # gave nets of 2,048 loads on the ULX3S-85F's 32x64 adder-tree device: 2,058, 2,056
        # and 2,053 in its netlist.)
        # A block RAM's unregistered output is slow (5.8 ns on an ECP5 -6): with
        # ``registered_ports`` the row passes ``row_word`` before the column multiplexer;
        # otherwise the multiplexer takes the read port (a UP5K's cells are short). The
        # trees' rows (2,048 bits from 57 block RAMs on the ULX3S-85F) pass a register more,
        # ``row_read``, as the weights do (``read`` and ``cross`` below): that placement put
        # ``row_word`` up to 59 tiles from the block RAMs, after their 5.8 ns.
        # ``row_wait`` counts the cycles until ``row_word`` holds the row at ``row_addr``.
        row_addr = Signal.like(addr)
        if self.registered_ports:
            row_word = Signal.like(result_r.data, reset_less=True)
            # (a sliced memory's data comes a cycle later: rtl.sliced_memory)
            row_data, row_lag = result_r.data, 2 + sliced
            if tree:
                row_read = Signal.like(result_r.data, reset_less=True)
                m.d.sync += row_read.eq(row_data)
                row_data, row_lag = row_read, row_lag + 1
            m.d.sync += row_word.eq(row_data)
        else:
            row_word, row_lag = result_r.data, 1
        column = Signal(range(C))
        # The trees' row is spread over the die with their lanes (boards.floorplan), and one
        # multiplexer from all of it into ``sum_word`` had its select (``column``) span up to
        # 97 tiles of the ULX3S-85F's placement. So their sums are picked in two registered
        # levels: each run of ``span`` columns (about sqrt(C), a power of two) has a ``pick``
        # register beside it that follows the column's low bits (from a copy of its own,
        # ``pick_at``, moved with ``column``), and ``sum_word`` takes one of the picks. A pick
        # holds a column's sum a cycle after ``column`` moves, and a row's a cycle after
        # ``row_word``: one cycle more of ``row_lag``, and sums are at least two bytes, so
        # ``column`` has moved two cycles before the next load.
        picked = self.registered_ports and tree and C > 1
        if picked:
            span = 1 << ((C - 1).bit_length() + 1) // 2
            low = span.bit_length() - 1
            runs = [range(g, min(g + span, C)) for g in range(0, C, span)]
            picks = [Signal(32, name=f"pick_{g}", reset_less=True) for g in range(len(runs))]
            pick_at = replicas(Signal(low), len(runs), name="pick_at")
            for pick, at, run in zip(picks, pick_at, runs):
                m.d.sync += pick.eq(Array(row_word.word_select(c, 32) for c in run)[at])
            row_lag += 1
            column_sum = Array(picks)[column[low:]] if len(picks) > 1 else picks[0]
        else:
            column_sum = row_word.word_select(column, 32) if C > 1 else row_word[:32]

        def move_column(to):
            """``column`` (and the picks' copies of its low bits) to column ``to``: 0 or the
            next one (``None``)."""
            m.d.sync += column.eq(column + 1 if to is None else to)
            if picked:
                m.d.sync += [at.eq(at + 1 if to is None else to) for at in pick_at]
        row_wait = Signal(range(row_lag + 1))
        sum_word = Signal(32, reset_less=True)
        sum_byte = Signal(2)            # bytes of sum_word taken
        sum_loaded = Signal()
        m.d.comb += result_r.addr.eq(row_addr)
        with m.If(sender.start):
            m.d.sync += [row_addr.eq(addr), row_wait.eq(row_lag), sum_loaded.eq(0)]
            move_column(0)
        with m.Elif(row_wait != 0):
            m.d.sync += row_wait.eq(row_wait - 1)
        with m.Switch(resp_source):
            with m.Case(0, 1, 3):
                m.d.comb += [sender.payload.valid.eq(small_valid),
                             sender.payload.payload.eq(small_byte)]
            with m.Case(2):
                taken_byte = sender.payload.valid & sender.payload.ready
                sum_done = taken_byte & (sum_byte == Mux(narrow, 1, 3))
                m.d.comb += [sender.payload.valid.eq(sum_loaded),
                             sender.payload.payload.eq(sum_word[:8])]
                with m.If(taken_byte):
                    m.d.sync += [sum_word.eq(sum_word[8:]), sum_byte.eq(sum_byte + 1)]
                    with m.If(sum_done):
                        m.d.sync += sum_loaded.eq(0)
                with m.If((~sum_loaded | sum_done) & (row_wait == 0) & sender.busy):
                    m.d.sync += [sum_word.eq(column_sum), sum_loaded.eq(1), sum_byte.eq(0)]
                    move_column(None)
                    with m.If(column == C - 1):     # the row's last sum: read the next row
                        m.d.sync += [row_addr.eq(row_addr + 1), row_wait.eq(row_lag)]
                        move_column(0)

        # -- sequencer: stream sweeps through the engine at one step per cycle ---------------
        # A sweep is one tile of weights (words weights + k) for ``tokens`` tokens (activations
        # acts + m*K + k), every token all passes of the controller's K split. Sweeps wait in a
        # two-entry queue while the current one streams, and the next is taken on the current
        # one's last step, so back-to-back sweeps leave no gap. Two entries, so that the
        # controller sees a ready that is a register compare: a ready that passed through this
        # cycle's step (engine back-pressure, last-step detection) into the controller's retire
        # was the longest path once the controller was pipelined; with one entry and such a
        # ready, sweeps of one step would leave a gap.
        split = controller.split
        active = Signal()          # steps of the current sweep remain to be issued
        # Two stages between the memories and the engine: the read (s1: the operands are on the
        # memories' read ports) and a register (s2: they are offered to the engine). A block
        # RAM's unregistered output is slow (5.8 ns on an ECP5 -6), and the activation goes to
        # every PE: straight from the read port into the PEs' carry chains, that was the
        # longest path of a 2x2 ULX3S build once control was pipelined. All stages move
        # together (``advance``), so the engine sees the same stream a cycle later per stage.
        # With ``registered_ports`` two more stages sit between them (``read`` and ``cross``:
        # the operands in registers after the read ports; a tree's three, ``spread`` between,
        # for its activations' fan-out below). The weights come from every block
        # RAM of the weight memory (147 on the ULX3S-85F) and go to one 1024-bit register
        # beside the array: a block RAM's clock-to-out and the trip across the die, no logic,
        # were that build's longest path (12.9 ns). With one register between the two, it
        # still was at 84 MHz (``read`` placed 86 columns from its block RAM: 5.83 ns
        # clock-to-out and 5.87 of routing, 11.7 ns), so the trip has two. Each costs one
        # cycle of latency before a stream's first step, which no counter sees: they count
        # from the first operands in the engine.
        # Operand registers have no reset, valid bits do: data is only read where its valid
        # bit says so, and a reset on every weight bit made the domain's reset the widest net
        # of the ULX3S-85F's core (docs/architecture.md, "Data registers without a reset").
        # So do ``shift``, ``row_word`` and ``sum_word``, filled before anything reads them.
        s1_valid = Signal()        # the operands read last cycle are on the read ports
        s2_valid = Signal()        # the registered operands are offered to the engine
        s2_weights = Signal.like(weight_r.data, reset_less=True)
        # the array's one activation register; the trees' lanes read theirs from copies, each
        # near its lanes (rtl.fanout)
        s2_acts = (replicas(act_r.data, self.act_copies, name="s2_act") if tree
                   else [Signal.like(act_r.data, name="s2_act")])
        s2_last, s2_first, s2_final = Signal(), Signal(), Signal()
        m.submodules.sweeps = sweeps = fifo.SyncFIFO(width=sweep_layout(controller.bits).size,
                                                     depth=2)
        pending = sweep_layout(controller.bits)(sweeps.r_data)
        pending_valid = sweeps.r_rdy
        # Widths follow the memories: addresses wrap exactly as the memory ports would, and the
        # controller refuses a K or a token count larger than the activation buffer
        # (BAD_SPLIT, BAD_SWEEP), so no counter below can overflow.
        w_base = Signal(range(self.weight_words // D))      # in steps' words
        a_base = Signal(range(self.act_bytes))
        # The read addresses are base + step of the token. With ``registered_ports`` they are
        # registers of their own, moved on with the step: an adder in front of the address
        # pins of every block RAM of the weight memory (147 on the ULX3S-85F) would lengthen
        # a path that is mostly routing already. Otherwise one step counter and two adders,
        # which take fewer of a UP5K's cells.
        w_addr = Signal.like(w_base) if serial else Signal.like(weight_r.addr)
        a_addr = Signal(range(self.act_bytes // act_word))
        if not self.registered_ports:
            k_glob = Signal(max(len(w_base), len(a_base)))
            m.d.comb += [w_addr.eq(w_base + k_glob), a_addr.eq(a_base + k_glob)]

        def next_step():
            if self.registered_ports:
                m.d.sync += [w_addr.eq(w_addr + 1), a_addr.eq(a_addr + 1)]
            else:
                m.d.sync += k_glob.eq(k_glob + 1)

        def first_step(weights, acts):
            """The addresses of a token's first step (its words and activations start at
            ``weights`` and ``acts``, which are what w_base and a_base become)."""
            if self.registered_ports:
                m.d.sync += [w_addr.eq(weights), a_addr.eq(acts)]
            else:
                m.d.sync += k_glob.eq(0)
        tokens_left = Signal(range(self.act_bytes + 1))
        # Where the stream is, as counts of what is left after the current step, so that "last
        # step of a pass" and "last pass of a token" are compares with zero of registers
        # rather than arithmetic on the split: the step's control path stays short.
        k_left = Signal(range(self.pass_k_max))              # steps of this pass after this one
        passes_after = Signal(range(self.act_bytes + 1))     # passes of this token after this one
        longs_after = Signal(range(self.act_bytes + 1))      # of which long ones (q + 1 steps)
        in_first = Signal()                                  # this pass is the token's first
        result_row = Signal(range(self.result_rows))    # where the next result row goes
        rows_due = Signal(16)      # result rows of issued final passes not yet written
        # a step's flags at s1: it ends its pass, its pass is its token's first, its pass is
        # its token's final; on the serial trees a beat's: it carries a step's digits
        # (``first_flag``, the engine's ``step``), and that step ends its pass
        last_flag, first_flag, final_flag = Signal(), Signal(), Signal()

        # The split's fields at the counters' widths (exact after the controller's checks).
        split_q = split.q[:Shape.cast(range(self.pass_k_max + 1)).width]
        split_r, split_n = split.r[:len(passes_after)], split.n[:len(passes_after)]

        # With ``registered_ports`` the compares themselves are registers, set with the count
        # they look at (its new value compared): ``k_left == 0`` and ``passes_after == 0`` (2
        # and 3 LUT4 deep) in front of ``issue``, the sweep queue's read and the counters'
        # enables made the ULX3S-85F trees' longest routed path with nextpnr's seed 1, six
        # LUT4 deep (10.15 ns; docs/architecture.md, "Boards", stop 39).
        counts_at = []      # (counter, the value it is compared with, its register)

        def count_is(counter, target, init):
            if not self.registered_ports:
                return counter == target
            reg = Signal(init=init, name=f"{counter.name}_is_{target}")
            counts_at.append((counter, target, reg))
            return reg

        is_last_step = count_is(k_left, 0, 1)           # the counters reset to 0
        is_last_pass = count_is(passes_after, 0, 1)
        is_last_token = count_is(tokens_left, 1, 0)

        def set_count(counter, value):
            """``counter`` to ``value`` (truncated, as the assignment does), and its compare's
            register to the compare of that value."""
            value = Value.cast(value)
            if len(value) > len(counter):
                value = value[:len(counter)]
            m.d.sync += counter.eq(value)
            m.d.sync += [reg.eq(value == target) for c, target, reg in counts_at if c is counter]

        taken = Signal()
        # ``advance`` moves the stages between the memories and the engine; ``issue`` (the
        # sequencer's own enable) lets the current step go into them.
        advance = Signal()
        issue = advance
        is_last, is_final, sweep_ends, load = Signal(), Signal(), Signal(), Signal()
        # The serial trees take a step as a *slot* of D beats: beat c reads word c of the
        # step's weights and digit plane c of the activations of the step before, which is
        # ``owed`` its digits (rtl.serial_tree). A stream so ends with one slot more, which
        # reads no weights (``flushing``); it waits for a sweep queued already, whose first
        # slot then carries the owed digits, and a sweep is taken only at a slot's start.
        # The counters below see beats, as ``sim.cycles.serial_tree_simulate`` counts them.
        beat = Signal(range(D))
        owed, owed_last = Signal(), Signal()    # the step issued last is owed its digits
        owed_acts = Signal.like(a_addr)         # ... and its activations' word
        slot_ends = beat == D - 1
        flushing = Signal()
        if serial:
            m.d.comb += flushing.eq(~active & owed & ((beat != 0) | ~pending_valid))
        if self.registered_ports:
            # Stall-free issue: the engine never refuses a step, so the stages always move
            # and nothing has to stop them. The only step the engine can refuse is a pass's
            # last, until the previous pass has drained, and the drain's length is known: the
            # result stream is always ready (below), so a capture frees the result registers
            # ``rows + 1`` cycles later. The sequencer holds a last step back until that many
            # cycles have passed since it issued the previous one, and the engine sees it
            # when it would have taken it after a stall. ``advance`` as the engine's ready
            # (every operand register's and weight block RAM's enable, about 3,100
            # flip-flops and 147 DP16KD on the ULX3S-85F) crossed the die from "drained":
            # 4.4 + 4.7 ns of routing at 90 MHz. The bubbles held back carry ``held`` to the
            # engine, where the counters see them as the stall they replace. The tree engine
            # frees its result register ``latency + 1`` cycles after a last step instead
            # (sim.cycles' tree rules), the same way.
            gap = engine.config.latency + 1 if tree else R
            last_gap = Signal(range(gap + 1))   # cycles until a last step may issue
            last_may_issue = Signal(init=1)     # last_gap is 0
            holding = Signal()
            issue = Signal()
            m.d.comb += [holding.eq(active & is_last & ~last_may_issue), issue.eq(~holding)]
            with m.If(active & is_last & issue):
                m.d.sync += [last_gap.eq(gap), last_may_issue.eq(0)]
            with m.Elif(last_gap != 0):
                m.d.sync += [last_gap.eq(last_gap - 1), last_may_issue.eq(last_gap == 1)]
        # A beat (a step, but for the serial trees) goes into the stages; a step is done.
        # (after the stall-free issue's block above: ``issue`` is its own there)
        beats = (active | flushing) if serial else (
            active & issue if self.registered_ports else active)
        step_done = active & slot_ends if serial else beats
        m.d.comb += [
            # (the serial trees never refuse a beat)
            advance.eq(1 if self.registered_ports or serial else ~s2_valid | taken),
            is_last.eq(is_last_step),
            is_final.eq(is_last_pass),
            sweep_ends.eq(active & issue & is_last & is_final & is_last_token &
                          (slot_ends if serial else 1)),
            load.eq(pending_valid & (~active & (beat == 0) | sweep_ends)),
            sweeps.w_data.eq(controller.sweep.payload),
            sweeps.w_en.eq(controller.sweep.valid),
            controller.sweep.ready.eq(sweeps.w_rdy),
            sweeps.r_en.eq(load),
            weight_r.addr.eq(Cat(beat, w_addr) if serial else w_addr),
            weight_r.en.eq(advance),
            act_r.en.eq(advance),
        ]
        if not serial:
            m.d.comb += [
                taken.eq(engine.act.valid & engine.act.ready),
                engine.weights.valid.eq(s2_valid),
                engine.weights.payload.as_value().eq(s2_weights),
                engine.act.valid.eq(s2_valid),
                engine.act.payload.last.eq(s2_last),
            ]
        if tree and not serial:     # a word of R elements of K (one token's), one to each lane
            beat_copies = engine.act.payload.data_n if inverted else engine.act.payload.data
            m.d.comb += [beat_copies[c].as_value().eq(copy) for c, copy in enumerate(s2_acts)]
        elif not tree:              # one element of K, broadcast to every row
            m.d.comb += [engine.act.payload.first_chunk.eq(s2_first),
                         engine.act.payload.last_chunk.eq(s2_final)]
            for r in range(R):
                m.d.comb += engine.act.payload.data[r].eq(s2_acts[0])
        s1_weights = weight_r.data
        if len(bank_depths) > 1:
            # Every bank is read, each into a ``read`` register of its own, with the index of
            # the bank the address is in; the choice is made between ``read`` and ``cross``.
            s1_bank = Signal(range(len(bank_depths)))
            with m.If(advance):
                for i, hit in enumerate(bank_hits):     # one hit: the banks do not overlap
                    with m.If(hit(w_addr)):
                        m.d.sync += s1_bank.eq(i)
            s1_weights = Cat(*bank_data, s1_bank)

            def chosen_bank(read_weights):
                """The word of the bank the address was in, from the ``read`` stage's banks."""
                words = Array(read_weights[i * word_bits:(i + 1) * word_bits]
                              for i in range(len(bank_depths)))
                return words[read_weights[len(bank_depths) * word_bits:]]

        # The stages' activations are a list of copies. A tree's stages hold them in more
        # copies a stage, ``act_copies`` at s2 (``rtl.fanout.fanout_levels``: 3, 6, 14 and 32
        # for 32), each copy feeding its share of the next stage's: a fan-out tree that
        # crosses the die in steps, where one ``cross`` register fed the ULX3S-85F's 8 copies
        # from up to 86 tiles away (docs/architecture.md, "Boards"). A tree's stages are one
        # more, ``spread``: with two levels before s2 the hop into ``cross`` still spanned up
        # to 76 tiles, and the placement's estimate went from 50-55 MHz to 63 with it.
        stage = [s1_valid, s1_weights, [act_r.data], last_flag, first_flag, final_flag]
        between_valid = []      # the valid bits of the stages after s1
        if sliced:
            # The sliced weight memory's read address passes its copies first, so its data
            # comes a cycle later (rtl.sliced_memory): the step's valid and flags wait a cycle
            # with it (``s1_copied``), and so does the activations' read address.
            a_addr_late = Signal.like(a_addr)
            m.d.sync += a_addr_late.eq(a_addr)
            m.d.comb += act_r.addr.eq(a_addr_late)
            late = [Signal(name=f"s1_copied_{name}") for name in ("valid", "last", "first",
                                                                  "final")]
            m.d.sync += [reg.eq(v) for reg, v in zip(late, [s1_valid, *stage[3:]])]
            stage = [late[0], s1_weights, [act_r.data], *late[1:]]
            between_valid.append(late[0])
        else:
            m.d.comb += act_r.addr.eq(Cat(beat, owed_acts) if serial else a_addr)
        between = ((("read", "spread", "cross") if tree else ("read", "cross"))
                   if self.registered_ports else ())   # stages after s1
        for n, prefix in enumerate(between, start=1):
            valid, weights, acts, *flags = stage
            names = ("valid", "weights", "last", "first", "final")
            regs = [Signal.like(v, name=f"{prefix}_{name}", reset_less=name == "weights")
                    for v, name in zip([valid, weights, *flags], names)]
            copies = fanout_levels(self.act_copies, len(between) + 1)[n - 1] if tree else 1
            act_regs = (replicas(acts[0], copies, name=f"{prefix}_act") if copies > 1
                        else [Signal.like(acts[0], name=f"{prefix}_act", reset_less=True)])
            with m.If(advance):
                m.d.sync += [reg.eq(v) for reg, v in zip(regs, [valid, weights, *flags])]
                m.d.sync += [reg.eq(acts[c * len(acts) // len(act_regs)])
                             for c, reg in enumerate(act_regs)]
            stage = [regs[0], regs[1], act_regs, *regs[2:]]
            between_valid.append(regs[0])
            if prefix == "read" and len(bank_depths) > 1:
                stage = [stage[0], chosen_bank(stage[1]), *stage[2:]]
        if serial:
            # The serial trees take the beat from the read ports: it never waits, so no
            # register has to hold it (64 + 64 flip-flops at 32 x 4), and the UP5K's 24 MHz
            # leaves time for a block RAM's output into the first level of the trees.
            valid, weights, acts, last, step, _ = stage
            offered = valid
            m.d.comb += [
                taken.eq(engine.beat.valid),
                engine.beat.valid.eq(valid),
                engine.beat.payload.weights.as_value().eq(weights),
                engine.beat.payload.digits.as_value().eq(acts[0]),
                engine.beat.payload.step.eq(step),
                engine.beat.payload.last.eq(last),
            ]
        else:
            offered = s2_valid      # the engine sees the operands in the s2 registers
            with m.If(advance):
                valid, weights, acts, *flags = stage
                m.d.sync += [s2_valid.eq(valid), s2_weights.eq(weights),
                             *[copy.eq(acts[c * len(acts) // len(s2_acts)])
                               for c, copy in enumerate(s2_acts)],
                             *[reg.eq(v) for reg, v in zip([s2_last, s2_first, s2_final],
                                                           flags)]]
        if self.registered_ports:
            # a bubble held back for the drain is offered to the engine (``s2_held``)
            held = holding
            for prefix in ("s1", *(["s1_copied"] if sliced else []), *between):
                held_next = Signal(name=f"{prefix}_held")
                m.d.sync += held_next.eq(held)
                held = held_next
            s2_held = Signal()
            m.d.sync += s2_held.eq(held)

        def start_token():
            first_long = split_r != 0
            set_count(k_left, Mux(first_long, split_q, split_q - 1))
            set_count(passes_after, split_n - 1)
            m.d.sync += [longs_after.eq(Mux(first_long, split_r - 1, 0)), in_first.eq(1)]

        with m.If(advance):
            m.d.sync += s1_valid.eq(beats)
            if serial:      # the flags a slot's first beat gives the engine: step, last
                with m.If(beats):
                    m.d.sync += [beat.eq(beat + 1), first_flag.eq(owed),
                                 last_flag.eq(owed_last)]
                    with m.If(slot_ends):
                        m.d.sync += [owed.eq(active), owed_last.eq(is_last),
                                     owed_acts.eq(a_addr)]
            else:
                with m.If(beats):
                    m.d.sync += [last_flag.eq(is_last), first_flag.eq(in_first),
                                 final_flag.eq(is_final)]
            with m.If(step_done):
                set_count(k_left, k_left - 1)
                next_step()
                with m.If(is_last):
                    # The first r passes of a token are q + 1 steps long, the rest q.
                    long_next = longs_after != 0
                    set_count(k_left, Mux(long_next, split_q, split_q - 1))
                    set_count(passes_after, passes_after - 1)
                    m.d.sync += [longs_after.eq(longs_after - long_next), in_first.eq(0)]
                    with m.If(is_final):
                        start_token()
                        next_acts = a_base + split.k
                        first_step(w_base, next_acts)
                        set_count(tokens_left, tokens_left - 1)
                        m.d.sync += a_base.eq(next_acts)
                        with m.If(is_last_token):
                            m.d.sync += active.eq(0)
        with m.If(load):           # after the updates above: a loaded sweep starts afresh
            m.d.sync += [active.eq(1), w_base.eq(pending.weights), a_base.eq(pending.acts)]
            set_count(tokens_left, pending.tokens)
            first_step(pending.weights, pending.acts)
            start_token()

        # Results: one row per cycle into the result buffer, always ready (full rate). With
        # ``registered_ports`` the write is registered: from the drain multiplexer through the
        # accumulator's adder to a block RAM placed far away was the longest path of the
        # ULX3S-85F's 16x32 build (17.2 ns). It lands a cycle after the row leaves the engine,
        # and the controller sees the sequencer idle a cycle after that (``controller.idle``
        # below), so no run ends, and no READ_RESULTS reads, before its last row is written.
        # (the trees leave a row at the end of every pass, not only of a token's final one:
        # a program that splits K there gets a row a pass, and the count must say so)
        issued_final = (advance & beats & (beat == 0) & owed & owed_last if serial
                        else active & issue & is_last & (1 if tree else is_final))
        if not serial:      # (the serial trees' result stream is always ready)
            m.d.comb += engine.result.ready.eq(1)
        # The registered row's data has no reset (a row is only written with its ``en``), which
        # keeps C x acc_width flip-flops (1,024 on the 85F) off the die-wide reset net.
        row_data = engine.result.payload.data.as_value()
        if self.registered_ports:
            write_data = Signal.like(result_w.data, reset_less=True)
            m.d.sync += write_data.eq(row_data)
            row_data = write_data
        # (a sliced result memory registers them itself, in a copy a slice)
        m.d["sync" if self.registered_ports and not sliced else "comb"] += [
            result_w.addr.eq(result_row),
            result_w.en.eq(engine.result.valid),
        ]
        m.d.comb += result_w.data.eq(row_data)
        # With ``registered_ports`` a final pass's rows count as due a cycle after it is
        # issued (its operands are then in flight, so nothing reads the count as idle): the
        # engine's "drained" through ``advance`` into this adder was the longest path of the
        # ULX3S-85F's 16x32 build at 90 MHz (13.31 ns, 10.87 of them routing). Since the
        # stall-free issue ``issue`` no longer comes from "drained", so this register may no
        # longer be needed; it stays because the ECP5 tables were built with it.
        if self.registered_ports:
            issued_before = Signal()
            m.d.sync += issued_before.eq(issued_final)
            issued_final = issued_before
        rows_per_pass = 1 if tree else R        # result rows of such a pass
        m.d.sync += rows_due.eq(rows_due + Mux(issued_final, rows_per_pass, 0)
                                - engine.result.valid)
        with m.If(controller.set_results):
            m.d.sync += result_row.eq(controller.results)
        with m.Elif(engine.result.valid):
            m.d.sync += result_row.eq(result_row + 1)
        idle = Signal()
        idle_now = ~active & ~pending_valid & ~s1_valid & ~s2_valid & (rows_due == 0)
        in_flight = active | pending_valid | s1_valid       # operands not yet in the engine
        if serial:      # digits still owed
            idle_now &= ~owed
            in_flight |= owed
        for valid in between_valid:
            idle_now &= ~valid
            in_flight |= valid
        m.d.comb += idle.eq(idle_now)
        # The controller sees idleness a cycle late, from a register (the compares behind it
        # ran into its retire and on into the fetch address). A sweep it hands over in this
        # cycle clears it at once, so it never sees a stale "idle" after a sweep. With
        # ``registered_ports`` any cycle of a SWEEP clears it (``controller.sweeping``, a
        # superset: idle comes back a cycle after a SWEEP that hands nothing over), since
        # the SWEEP's checks in ``sweep.valid`` into this register were the ULX3S-12F's
        # longest path (10.4 ns).
        handing_over = controller.sweep.valid & controller.sweep.ready
        if self.registered_ports and not hardwired:
            handing_over = controller.sweeping
        m.d.sync += controller.idle.eq(idle & ~handing_over)

        # Counters, as sim.cycles.CycleCount counts them for a stream of passes: from its first
        # operands until its last result row. A stream ends when the sequencer goes idle.
        started = Signal()
        with m.If(idle):
            m.d.sync += started.eq(0)
        with m.Elif(offered):
            m.d.sync += started.eq(1)
        with m.If(taken):
            m.d.sync += counters["busy"].eq(counters["busy"] + 1)
        if self.registered_ports:
            with m.Elif(s2_held):
                m.d.sync += counters["stall_drain"].eq(counters["stall_drain"] + 1)
        with m.Elif(in_flight & started & ~offered):
            m.d.sync += counters["stall_input"].eq(counters["stall_input"] + 1)
        with m.Elif(offered):
            m.d.sync += counters["stall_drain"].eq(counters["stall_drain"] + 1)
        with m.Elif(started & (rows_due != 0)):
            m.d.sync += counters["drain_tail"].eq(counters["drain_tail"] + 1)
        return m
