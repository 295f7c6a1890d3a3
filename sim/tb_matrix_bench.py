"""cocotb throughput bench for ``rtl.systolic.MatrixEngine`` (used by ``make bench``).

Runs decode- and prefill-shaped layers at full rate, checks them like the verification bench
does, and writes measured cycles, utilization and simulated cycles per second to the JSON file
named in the configuration.
"""

from __future__ import annotations

import json

import cocotb
import numpy as np

from sim import cycles
from sim.cocotb_runner import bench_config
from sim.tb_matrix import TB, _random_layer


@cocotb.test()
async def throughput(dut):
    config = bench_config()
    tb = TB(dut, config)
    rng = np.random.default_rng(config["seed"])
    await tb.reset()
    report = {}
    for label, (M, N, K) in config["layers"].items():
        w, x = _random_layer(rng, M, N, K)
        r = await tb.check_layer(w, x, rng, label=label)
        plan = r["plan"]
        report[label] = {
            "M": M, "N": N, "K": K, "mapping": plan.mapping, "passes": len(plan.passes),
            "rtl_cycles": r["cycles"], "model_cycles": cycles.plan_cycles(plan),
            "utilization": round(cycles.utilization(plan, r["cycles"]), 4),
            "sim_cycles_per_second": round(r["cycles"] / r["seconds"]),
        }
    with open(config["report_path"], "w") as f:
        json.dump(report, f, indent=2)
