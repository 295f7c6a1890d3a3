"""The ``tritium`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys

from sim import cycles, schedule


def _cmd_plan(args) -> int:
    """Show how a linear layer maps onto an array and what the cycle model predicts."""
    cfg = schedule.ArrayConfig(rows=args.rows, cols=args.cols, psum_bits=args.psum_bits)
    plan = schedule.plan_linear(cfg, args.m, args.n, args.k)
    total = cycles.plan_cycles(plan)
    report = {
        "array": {"rows": cfg.rows, "cols": cfg.cols, "psum_bits": cfg.psum_bits,
                  "pass_k_max": cfg.pass_k_max},
        "layer": {"M": plan.M, "N": plan.N, "K": plan.K},
        "mapping": plan.mapping,
        "passes": len(plan.passes),
        "k_chunks": len(plan.chunks),
        "cycles": total,
        "utilization": round(cycles.utilization(plan, total), 4),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{plan.M}x{plan.K} @ ({plan.N}x{plan.K})^T on a {cfg.rows}x{cfg.cols} array: "
              f"mapping '{plan.mapping}', {len(plan.passes)} passes "
              f"({len(plan.chunks)} chunk(s) of K), {total} cycles, "
              f"{100 * report['utilization']:.1f}% PE utilization")
    return 0


def _cmd_selftest(args) -> int:
    """Round trips, exact random layers, throughput and error counts on one device."""
    from . import open_device
    from .selftest import run_selftest
    say = (lambda msg: None) if args.json else (lambda msg: print(f"selftest: {msg}",
                                                                    file=sys.stderr))
    with open_device(args.device) as dev:
        report = run_selftest(dev, frames=args.frames, progress=say)
    if args.json:
        print(json.dumps(report))
    else:
        rt = report["round_trips"]
        print(f"device {report['device']}: {report['info']['rows']}x{report['info']['cols']} "
              f"array, protocol v{report['info']['version']}")
        print(f"round trips: {rt['frames']} in {rt['seconds']} s ({rt['per_second']}/s)")
        for layer in report["layers"]:
            print(f"layer M={layer['M']} N={layer['N']} K={layer['K']}: "
                  f"{'exact' if layer['exact'] else 'WRONG'}, {layer['bytes_sent']} bytes sent "
                  f"in {layer['seconds']} s")
        print("errors: " + ", ".join(f"{k} {v}" for k, v in report["errors"].items()))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritium", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="map a linear layer onto the array; print passes, cycles, "
                                    "utilization (golden cycle model)")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--cols", type=int, default=16)
    p.add_argument("--psum-bits", type=int, default=16)
    p.add_argument("-m", type=int, default=1, help="tokens (M)")
    p.add_argument("-n", type=int, required=True, help="outputs (N)")
    p.add_argument("-k", type=int, required=True, help="inputs (K)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("selftest", help="check a device link: round trips, exact random "
                                        "layers, throughput, error counts")
    p.add_argument("--device", default="emu", help="emu, sim, serial:PATH[@BAUD] or pcie:DEV")
    p.add_argument("--frames", type=int, default=100, help="round trips to time")
    p.add_argument("--json", action="store_true", help="print one JSON report and nothing else")
    p.set_defaults(func=_cmd_selftest)

    p = sub.add_parser("sim-serve", help="run the simulated board (device core + UART, bit "
                                         "level) behind a pseudo-terminal and print its path")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--divisor", type=int, default=8, help="simulated clock cycles per UART bit")
    p.set_defaults(func=_cmd_sim_serve)

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
    from .protocol import ProtocolError
    try:
        return args.func(args)
    except (ValueError, ProtocolError) as e:
        print(f"tritium: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
