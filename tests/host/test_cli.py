"""The ``tritium`` command line: plan, selftest and asm."""

import json

from host.cli import main


def test_plan_json(capsys):
    assert main(["plan", "-m", "1", "-n", "2560", "-k", "2560", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # 10 tiles of 256 outputs x 11 chunks of K (255 steps at most per pass)
    assert report["passes"] == 110 and report["k_chunks"] == 11
    assert report["utilization"] >= 0.99


def test_plan_on_the_adder_trees(capsys):
    """2560 outputs on 64 lanes are 40 passes; K = 2560 is 80 steps of k = 32. Each pass's
    last step waits latency + 2 = log2(32) + 3 = 8 cycles for the previous result, so every pass
    after the first costs its 80 steps, and the last result leaves latency + 1 = 7 cycles
    after its step."""
    assert main(["plan", "--engine", "tree", "--rows", "32", "--cols", "64", "-n", "2560",
                 "-k", "2560", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "tree" and report["passes"] == 40
    assert report["steps_per_pass"] == 80
    assert report["cycles"] == 40 * 80 + 7
    assert report["utilization"] == round(2560 * 2560 / (2048 * (40 * 80 + 7)), 4)
    assert main(["plan", "--engine", "tree", "--rows", "24", "-n", "8", "-k", "8"]) == 2
    assert "power of two" in capsys.readouterr().err


def test_plan_on_the_serial_trees(capsys):
    """The UP5K's 32 x 4 trees with 2-bit digits, as the device core builds them (no
    back-pressure: no beat waits): 128 outputs are 32 passes of 4 steps; a step takes 4
    cycles, the run's 128 steps 129 slots (the first without digits), and the last result
    leaves in its capture cycle, log2(32) + 1 = 6 cycles after the last beat. 32 products a
    cycle."""
    assert main(["plan", "--engine", "serial", "--rows", "32", "--cols", "4", "-n", "128",
                 "-k", "128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "serial" and report["passes"] == 32
    assert (report["trees"]["digit_bits"], report["trees"]["cycles_per_step"]) == (2, 4)
    assert report["cycles"] == 129 * 4 + 6
    assert report["utilization"] == round(128 * 128 / (32 * (129 * 4 + 6)), 4)
    assert main(["plan", "--engine", "serial", "--rows", "32", "--cols", "6", "-n", "8",
                 "-k", "8"]) == 2
    assert "lanes (6) must be a multiple of the 4 digits" in capsys.readouterr().err


def test_plan_rejects_huge_k(capsys):
    assert main(["plan", "-n", "3", "-k", "99999999"]) == 2
    assert "exceeds" in capsys.readouterr().err


def test_selftest_emu_json(capsys):
    assert main(["selftest", "--device", "emu", "--frames", "5", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)          # nothing but the JSON on stdout
    assert report["ok"] and all(layer["exact"] for layer in report["layers"])
    assert report["round_trips"]["frames"] == 5
    assert report["errors"]["retries"] == 0


def test_selftest_missing_port(capsys):
    assert main(["selftest", "--device", "serial:/dev/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert "does-not-exist" in err and "Traceback" not in err


def test_asm_listing_json_and_errors(tmp_path, capsys):
    src = tmp_path / "p.s"
    src.write_text("start: LI r0, 7\nBEQ r0, r1, done\ndone: HALT\n")
    assert main(["asm", str(src), "--base", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["base"] == 40 and len(out["words"]) == 3
    assert out["labels"] == {"start": 40, "done": 42}
    assert main(["asm", str(src)]) == 0          # default base: after the shipped firmware
    assert "BEQ   r0, r1, done" in capsys.readouterr().out
    src.write_text("HALT\nJUMP r0\n")
    assert main(["asm", str(src)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: unknown instruction 'JUMP'" in err and "Traceback" not in err
    assert main(["asm", str(tmp_path / "missing.s")]) == 2
    assert "cannot read" in capsys.readouterr().err
