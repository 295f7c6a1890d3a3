"""The ``tritium`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys

from firmware.commands import ENGINE_NAMES, device_trees
from sim import cycles, schedule

from .estimate import TREES


def _cmd_plan(args) -> int:
    """Show how a linear layer maps onto an engine and what the cycle model predicts."""
    if args.engine in TREES:
        tree = device_trees(args.engine, args.rows, args.cols)
        plan = schedule.plan_tree(tree, args.m, args.n, args.k)
        total = cycles.tree_plan_cycles(plan)
        used = cycles.tree_utilization(plan, total)
        steps = tree.steps(plan.K)
        engine = {"trees": {"k": tree.k, "lanes": tree.lanes, "acc_bits": tree.acc_bits,
                            "latency": tree.latency, "k_max": tree.k_max,
                            "digit_bits": tree.digit_bits,
                            "cycles_per_step": tree.cycles_per_step},
                  "steps_per_pass": steps}
        mapped = (f"{TREES[args.engine]} of k = {tree.k} for {tree.lanes} lanes: "
                  f"{len(plan.passes)} passes of {steps} steps")
        unit = "product"
    else:
        cfg = schedule.ArrayConfig(rows=args.rows, cols=args.cols, psum_bits=args.psum_bits)
        plan = schedule.plan_linear(cfg, args.m, args.n, args.k)
        total = cycles.plan_cycles(plan)
        used = cycles.utilization(plan, total)
        engine = {"array": {"rows": cfg.rows, "cols": cfg.cols, "psum_bits": cfg.psum_bits,
                            "pass_k_max": cfg.pass_k_max},
                  "mapping": plan.mapping, "k_chunks": len(plan.chunks)}
        mapped = (f"a {cfg.rows}x{cfg.cols} array: mapping '{plan.mapping}', "
                  f"{len(plan.passes)} passes ({len(plan.chunks)} chunk(s) of K)")
        unit = "PE"
    report = {"engine": args.engine, **engine,
              "layer": {"M": plan.M, "N": plan.N, "K": plan.K},
              "passes": len(plan.passes), "cycles": total, "utilization": round(used, 4)}
    print(json.dumps(report) if args.json else
          f"{plan.M}x{plan.K} @ ({plan.N}x{plan.K})^T on {mapped}, {total} cycles, "
          f"{100 * used:.1f}% {unit} utilization")
    return 0


def _cmd_selftest(args) -> int:
    """Round trips, exact random layers, throughput and error counts on one device."""
    from . import open_device
    from .selftest import run_selftest
    say = (lambda msg: None) if args.json else (lambda msg: print(f"selftest: {msg}",
                                                                    file=sys.stderr))
    kw = {}
    if args.faults:
        kw["faults"] = {"rate": args.faults, "seed": args.fault_seed}
    retries = args.retries if args.retries is not None else (16 if args.faults else 3)
    max_frame = args.max_frame if args.max_frame is not None else (256 if args.faults else None)
    with open_device(args.device, retries=retries, max_frame=max_frame, **kw) as dev:
        report = run_selftest(dev, frames=args.frames, progress=say)
    if args.json:
        print(json.dumps(report))
    else:
        rt = report["round_trips"]
        print(f"device {report['device']}: {report['info']['rows']}x{report['info']['cols']} "
              f"array, protocol v{report['info']['version']}")
        print(f"round trips: {rt['frames']} in {rt['seconds']} s ({rt['per_second']}/s)" +
              {True: ", port in low-latency mode", False: ", port without a low-latency mode "
               "(an FTDI bridge then holds each answer up to its latency timer, 16 ms by "
               "default)"}.get(rt.get("low_latency"), ""))
        for layer in report["layers"]:
            print(f"layer M={layer['M']} N={layer['N']} K={layer['K']}: "
                  f"{'exact' if layer['exact'] else 'WRONG'}, {layer['bytes_sent']} bytes sent "
                  f"in {layer['seconds']} s")
        print("errors: " + ", ".join(f"{k} {v}" for k, v in report["errors"].items()))
        if "faults" in report:
            f = report["faults"]
            print(f"faults injected at {f['rate']:g} per byte (seed {f['seed']}): " +
                  ", ".join(f"{k} {v}" for k, v in f["injected"].items()))
        print("PASS" if report["ok"] else "FAIL")
    return 0 if report["ok"] else 1


def _cmd_sim_serve(args) -> int:
    """Run the simulated board (UART included) behind a pseudo-terminal."""
    from .sim_serve import SimServer
    server = SimServer(rows=args.rows, cols=args.cols, divisor=args.divisor)
    print(server.path, flush=True)
    print(f"sim-serve: {args.rows}x{args.cols} device on {server.path}; "
          f"open_device('serial:{server.path}'); Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _cmd_asm(args) -> int:
    """Assemble a control program: listing, or the words as hex / JSON."""
    from firmware.asm import assemble
    from firmware.programs import FIRMWARE
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file) as f:
                text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {args.file}: {e.strerror}") from None
    base = len(FIRMWARE) if args.base is None else args.base
    prog = assemble(text, base=base, source=args.file)
    if args.json:
        print(json.dumps({"base": prog.base, "words": prog.words, "labels": prog.labels}))
    else:
        print(prog.listing())
        print(f"{len(prog)} words at {prog.base} .. {prog.base + len(prog) - 1}; entry points: "
              + ", ".join(f"{n}={a}" for n, a in prog.labels.items()), file=sys.stderr)
    return 0


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"--ids must be token ids separated by commas, got {text!r}") from None
    if not ids:
        raise ValueError("--ids is empty: give at least one token id")
    return ids


class _TextStream:
    """Prints generated tokens as they come: text through the tokenizer when there is one
    (holding back a token that ends inside a multi-byte character), ids otherwise."""

    def __init__(self, tokenizer, out, prompt):
        self.tokenizer, self.out = tokenizer, out
        if tokenizer is None:
            self.prompt = " ".join(map(str, prompt)) + " |"
        else:
            self.prompt = prompt if isinstance(prompt, str) else tokenizer.decode(prompt)
        self.tokens: list[int] = []
        self.shown = 0

    def start(self) -> None:
        """Echo the prompt (once, when the run has got past checking its arguments)."""
        if self.prompt is not None:
            self.out.write(self.prompt)
            self.prompt = None

    def __call__(self, token: int) -> None:
        self.start()
        self.tokens.append(token)
        if self.tokenizer is None:
            self.out.write(f" {token}")
        else:
            text = self.tokenizer.decode(self.tokens)
            if text.endswith("\ufffd"):
                return
            self.out.write(text[self.shown:])
            self.shown = len(text)
        self.out.flush()


def _summary(stats: dict) -> str:
    """The short table after a run: where the time, cycles and bytes went."""
    up = stats["upload"]
    rows = [("phase", "tokens", "device cycles", "bytes sent", "bytes recv", "host s")]
    rows.append((f"upload ({up['resident']} calls resident, {up['streamed']} streamed)", "",
                 "", f"{up['bytes_sent']:,}", f"{up['bytes_received']:,}",
                 f"{up['seconds']:.2f}"))
    for phase, n in (("prefill", stats["prompt_tokens"]),
                     ("decode", max(0, stats["generated_tokens"] - 1))):
        p = stats[phase]
        rows.append((phase, str(n), f"{p['device_cycles']:,}", f"{p['bytes_sent']:,}",
                     f"{p['bytes_received']:,}", f"{p['host_seconds']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    rate = stats["decode_tokens_per_second"]
    lines.append(f"{stats['generated_tokens']} tokens ({stats['stop_reason']}) on "
                 f"{stats['device']} {stats['array']['rows']}x{stats['array']['cols']}: "
                 f"{stats['tokens_per_second']:.1f} tokens/s here"
                 + (f", {rate:.1f} while decoding" if rate else ""))
    for name, p in (stats.get("projected") or {}).items():
        shape = (f"{TREES[p['engine']]} {p['array']}" if p.get("engine") in TREES
                 else p["array"])
        lines.append(f"projected on {name} ({shape} at {p['clock_mhz']:g} MHz, "
                     f"{p['baud'] / 1e6:g} Mbaud, {p['basis']} figures): "
                     f"{p['tokens_per_second']:.1f} tokens/s, {p['bound']}-bound"
                     + ("" if p["resident"] else ", weights streamed (do not fit)"))
    return "\n".join(lines)


def _cmd_run(args) -> int:
    """Generate text from a BitNet checkpoint with every projection on a device."""
    from .checkpoint import load_checkpoint
    from .device import open_device
    from .model import load_tokenizer, run_model

    quiet = args.json
    say = (lambda msg: None) if quiet else (lambda msg: print(f"tritium: {msg}",
                                                              file=sys.stderr, flush=True))
    ckpt = load_checkpoint(args.model)
    cfg = ckpt.config
    trits = sum(lin.trits.size for _, _, lin in ckpt.projections())
    say(f"{args.model}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{trits:,} ternary weights, vocabulary {cfg.vocab_size}")
    prompt = _parse_ids(args.ids) if args.ids is not None else args.prompt
    tokenizer = load_tokenizer(ckpt, needed=isinstance(prompt, str))
    options = {k: v for k, v in (("rows", args.rows), ("cols", args.cols),
                                 ("engine", args.engine)) if v is not None}
    if args.device == "sim":
        say("opening the simulated device (the first run compiles it with Verilator: "
            "about a minute)")
    stream = None if quiet else _TextStream(tokenizer, sys.stdout, prompt)
    with open_device(args.device, **options) as dev:
        engine = dev.planner.info.engine_name
        shape = (f"{TREES[engine]} of {dev.info['rows']} for {dev.info['cols']} outputs"
                 if engine in TREES else f"{dev.info['rows']}x{dev.info['cols']} array")
        say(f"device {dev.name}: {shape}; uploading weights, then generating up to "
            f"{args.max_new_tokens} tokens")
        r = run_model(ckpt, prompt, device=dev, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                      on_token=stream)
    if args.json:
        print(json.dumps({"tokens": r.tokens, "text": r.text, "stats": r.stats}))
    else:
        stream.start()
        print("\n")
        print(_summary(r.stats))
    return 0


def _cmd_boards(args) -> int:
    """The boards that build, with their default configuration and limits."""
    import boards
    rows = []
    for b in boards.BOARDS.values():
        rows.append({"board": b.name, "family": b.family, "rows": b.rows, "cols": b.cols,
                     "pes": b.rows * b.cols, "target_mhz": b.freq_mhz, "baud": b.baud,
                     "weight_words": b.weight_words, "basis": b.basis,
                     "programmers": [tool for tool, *_ in b.programmers],
                     "placer": b.placer, "router": b.router, "seed": b.seed,
                     "engine": b.engine, "control": b.control, "note": b.note})
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        shape = (f"{TREES[r['engine']]} {r['rows']}x{r['cols']}" if r["engine"] in TREES
                 else f"{r['rows']}x{r['cols']}")
        if r["control"] == "hardwired":
            shape += ", linear hardwired"
        print(f"{r['board']:<14} {r['family']:<5}  {shape} ({r['pes']} PEs) at "
              f"{r['target_mhz']:g} MHz, UART {r['baud']} baud, {r['weight_words']} weight "
              f"words ({r['basis']}), loaded with {' or '.join(r['programmers'])}"
              f"{'; ' + r['note'] if r['note'] else ''}")
    return 0


def _cmd_build(args) -> int:
    """Build a board's bitstream and report.json; non-zero when timing is not met."""
    import shutil
    import subprocess

    from boards.build import BuildFailed, build
    out = args.out or f"build/boards/{args.board}"
    say = (lambda msg: None) if args.json else (
        lambda msg: print(f"tritium: {msg}", file=sys.stderr, flush=True))
    try:
        r = build(args.board, rows=args.rows, cols=args.cols, freq_mhz=args.freq, out=out,
                  baud=args.baud, weight_words=args.weight_words, placer=args.placer,
                  router=args.router, engine=args.engine, seed=args.seed, progress=say)
    except BuildFailed as e:
        raise ValueError(str(e)) from None
    if args.json:
        print(json.dumps(r))
    else:
        cells = "logic cells (LUT4 + FF)" if r["fpga"] == "ice40" else "LUT4"
        shape = (f"{TREES[r['engine']]} of {r['rows']} for {r['cols']} outputs"
                 if r.get("engine") in TREES else f"{r['rows']}x{r['cols']}")
        print(f"{r['board']}: {shape} ({r['pes']} PEs), {r['lut4']} {cells} of "
              f"{r['lut4_available']} ({r['lut4_per_pe']} per PE), {r['ff']} FF, "
              f"{r['ebr']} EBR, {r['dsp']} DSP")
        print(f"clock: {r['achieved_mhz']} MHz achieved, {r['target_mhz']} MHz target: "
              f"{'met' if r['timing_met'] else 'NOT MET'}; {r['seconds']} s")
        print(f"bitstream: {r['bitstream']}; report: {out}/report.json")
    if not r["timing_met"]:
        print(f"tritium: error: {args.board} misses timing: {r['achieved_mhz']} MHz < "
              f"{r['target_mhz']} MHz (lower --freq or the array size)", file=sys.stderr)
        return 1
    if args.program:
        from boards import board
        b = board(args.board)
        for tool, *tool_args in b.programmers:
            if shutil.which(tool):
                subprocess.run([tool, *tool_args, r["bitstream"]], check=True)
                break
        else:
            tools = " or ".join(tool for tool, *_ in b.programmers)
            raise ValueError(f"--program needs {tools} on PATH (e.g. apt-get install "
                             f"openfpgaloader); the bitstream is built: {r['bitstream']}")
    return 0


def _cmd_estimate(args) -> int:
    """Cycles, time and energy of a model on a board, without running it (host/estimate.py)."""
    from . import estimate as est
    if (args.model is None) == (args.preset is None):
        raise ValueError("give a model folder or --preset NAME (known: "
                         f"{', '.join(est.PRESETS)})")
    work = est.load_workload(args.model, args.preset)
    if args.sweep:
        boards_ = [args.board] if args.board else None
        s = est.sweep(work, board_names=boards_, link=args.link, batch=args.batch,
                      node=args.node)
        print(json.dumps(s) if args.json else est.sweep_markdown(s).rstrip("\n"))
        return 0
    r = est.estimate(work, board=args.board or est.DEFAULT_BOARD, rows=args.rows,
                     cols=args.cols, freq_mhz=args.freq, link=args.link, batch=args.batch,
                     node=args.node, static_mw=args.static_mw, engine=args.engine)
    if args.plot:
        for path in est.plot(r, args.plot):
            print(f"tritium: wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(r))
    else:
        print(est.markdown(r), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from boards import PLACERS, ROUTERS
    parser = argparse.ArgumentParser(prog="tritium", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="map a linear layer onto the array; print passes, cycles, "
                                    "utilization (golden cycle model)")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--cols", type=int, default=16)
    p.add_argument("--psum-bits", type=int, default=16)
    p.add_argument("--engine", choices=tuple(ENGINE_NAMES), default="array",
                   help="the PE array, or adder trees of --rows products (a power of two) "
                        "for --cols outputs (serial: fed 2-bit digits of the activations, "
                        "a step in 4 cycles; --cols a multiple of 4)")
    p.add_argument("-m", type=int, default=1, help="tokens (M)")
    p.add_argument("-n", type=int, required=True, help="outputs (N)")
    p.add_argument("-k", type=int, required=True, help="inputs (K)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("selftest", help="check a device link: round trips, exact random "
                                        "layers, throughput, error counts")
    p.add_argument("--device", default="emu", help="emu, sim, serial:PATH[@BAUD] or pcie:DEV")
    p.add_argument("--frames", type=int, default=100, help="round trips to time")
    p.add_argument("--faults", type=float, default=0.0, metavar="RATE",
                   help="inject link faults at RATE per byte (bit flips, dropped, duplicated, "
                        "truncated and late bytes; host/faults.py)")
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the injected faults")
    p.add_argument("--retries", type=int, default=None,
                   help="attempts after the first per request (default 3; 16 with --faults)")
    p.add_argument("--max-frame", type=int, default=None, metavar="BYTES",
                   help="largest payload per frame (default: the device's; 256 with --faults)")
    p.add_argument("--json", action="store_true", help="print one JSON report and nothing else")
    p.set_defaults(func=_cmd_selftest)

    p = sub.add_parser("sim-serve", help="run the simulated board (device core + UART, bit "
                                         "level) behind a pseudo-terminal and print its path")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--divisor", type=int, default=8, help="simulated clock cycles per UART bit")
    p.set_defaults(func=_cmd_sim_serve)

    p = sub.add_parser("run", help="generate text from a BitNet b1.58 checkpoint with every "
                                   "ternary projection on a device")
    p.add_argument("model", help="checkpoint folder (config.json, model.safetensors, "
                                 "tokenizer.json), e.g. models/tiny")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="prompt text (needs the folder's tokenizer.json)")
    g.add_argument("--ids", help="prompt as token ids, e.g. 1,17,42")
    p.add_argument("--device", default="emu", help="emu, sim, serial:PATH[@BAUD] or pcie:DEV")
    p.add_argument("--rows", type=int, help="array rows of an emu or sim device")
    p.add_argument("--cols", type=int, help="array columns of an emu or sim device")
    p.add_argument("--engine", choices=tuple(ENGINE_NAMES),
                   help="an emu or sim device's engine (default array; tree: adder trees of "
                        "--rows products, a power of two, for --cols outputs; serial: the "
                        "same trees fed 2-bit digits, --cols a multiple of 4)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true",
                   help='print {"tokens", "text", "stats"} as JSON and nothing else')
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("boards", help="list the boards that build, with their defaults")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_boards)

    p = sub.add_parser("build", help="synthesize, place and route a board (YoWASP tools); "
                                     "writes the bitstream and report.json")
    p.add_argument("--board", required=True, help="a name from 'tritium boards'")
    p.add_argument("--rows", type=int, help="array rows (default: the board's)")
    p.add_argument("--cols", type=int, help="array columns (default: the board's)")
    p.add_argument("--freq", type=float, help="array clock in MHz (default: the board's)")
    p.add_argument("--baud", type=int, help="UART rate (default: the board's; the host then "
                                            "opens serial:PATH@BAUD)")
    p.add_argument("--weight-words", type=int,
                   help="depth of the weight memory in words of rows x cols trits (default: "
                        "the board's; on an iCE40 another shape takes what its SPRAMs hold)")
    p.add_argument("--placer", choices=PLACERS,
                   help="nextpnr's placer (default: the board's, 'tritium boards --json'; "
                        "static spreads a large design over the die: it routes, at a lower "
                        "clock)")
    p.add_argument("--router", choices=ROUTERS, help="nextpnr's router (default: the board's)")
    p.add_argument("--seed", type=int,
                   help="nextpnr's seed (default: the board's, else nextpnr's own): place and "
                        "route is the same for a netlist and seed, and near the clock's limit "
                        "the seed decides whether timing is met")
    p.add_argument("--engine", choices=tuple(ENGINE_NAMES),
                   help="the compute engine: the PE array, or adder trees of --rows products "
                        "(a power of two) for --cols outputs (rtl/adder_tree.py; serial: "
                        "fed 2-bit digits, rtl/serial_tree.py); default: the board's "
                        "('tritium boards')")
    p.add_argument("--out", help="output folder (default build/boards/BOARD)")
    p.add_argument("--program", action="store_true",
                   help="load it with the board's loader (openFPGALoader, iceprog or "
                        "icesprog; 'tritium boards' names each board's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("estimate", help="cycles, time and energy of a model on a board, "
                                        "without running it: per layer and call, prefill and "
                                        "decode, against FP16 and INT8 baselines")
    p.add_argument("model", nargs="?", help="checkpoint folder (config.json and weights)")
    p.add_argument("--preset", help="a known model instead of a folder: bitnet-b1.58-2B-4T, "
                                    "tiny (the bundled model)")
    p.add_argument("--board", help="a board of 'tritium boards' or a target (default "
                                   "ulx3s-85f; with --sweep: only this board)")
    p.add_argument("--rows", type=int, help="array rows, or the trees' k (default: the board's)")
    p.add_argument("--cols", type=int, help="array columns, or the trees' lanes (default: the "
                                            "board's)")
    p.add_argument("--engine", choices=tuple(ENGINE_NAMES),
                   help="the PE array, the adder trees or the digit-serial trees (default: "
                        "the board's; 'tritium boards' names it)")
    p.add_argument("--freq", type=float, help="array clock in MHz (default: the board's)")
    p.add_argument("--link", help="uart:BAUD, pcie:genG[xW] or mem:GBPS[:ddr|hbm] (default: "
                                  "the board's UART)")
    p.add_argument("--batch", type=int, default=1, help="tokens of the prefill phase (M)")
    p.add_argument("--node", default="7nm", choices=("45nm", "7nm"),
                   help="process node of the per-operation energies")
    p.add_argument("--static-mw", type=float, default=None,
                   help="the FPGA's static power in mW (default: the table's, if it has one)")
    p.add_argument("--plot", metavar="DIR", help="write layers.png, roofline.png and "
                                                 "energy.png into DIR")
    p.add_argument("--sweep", action="store_true",
                   help="try array shapes on every board; print the best for the model")
    p.add_argument("--json", action="store_true", help="print the JSON report and nothing else")
    p.set_defaults(func=_cmd_estimate)

    p = sub.add_parser("asm", help="assemble a control program (docs/firmware.md) and print "
                                   "its listing")
    p.add_argument("file", help="assembly source ('-' for stdin)")
    p.add_argument("--base", type=int, default=None,
                   help="program address of the first instruction (default: right after the "
                        "shipped firmware)")
    p.add_argument("--json", action="store_true", help="print {base, words, labels} as JSON")
    p.set_defaults(func=_cmd_asm)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .model import TokenizerUnavailable
    from .protocol import ProtocolError
    try:
        return args.func(args)
    except (ValueError, ProtocolError, TokenizerUnavailable) as e:
        print(f"tritium: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
