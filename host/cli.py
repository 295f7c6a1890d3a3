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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"tritium: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
