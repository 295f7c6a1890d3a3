"""The bundled model, models/tiny, as users run it: text in, text out, exact against the
independent float32 reference, resident on an iCEBreaker-sized device."""

from pathlib import Path

import numpy as np
import pytest

from host import estimate, load_checkpoint, open_device, run_model
from sim import boards
from sim.cocotb_runner import tool_missing

from reference import Reference

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
PROMPT = "The with statement"


def test_shape_fits_the_small_boards():
    ckpt = load_checkpoint(TINY)
    cfg = ckpt.config
    assert ckpt.forms == {"packed": 7 * cfg.num_hidden_layers}
    assert ckpt.tokenizer_path is not None
    r = estimate.estimate(estimate.workload_of(ckpt, "tiny", str(TINY)), board="icebreaker")
    assert r["residency"]["all_resident"]


def test_greedy_text_matches_reference_resident_on_icebreaker_shape():
    b = boards.board("icebreaker")
    words = b.weight_trits // b.word_trits    # the UP5K's SPRAM in its engine's memory words
    r = run_model(TINY, PROMPT, device="emu", max_new_tokens=16,
                  device_options=dict(rows=b.rows, cols=b.cols, weight_words=words,
                                      engine=b.engine, control=b.control))
    up = r.stats["upload"]
    assert up["streamed"] == 0 and up["resident"] == 4 * 4    # q|k|v, o, gate|up, down
    tokens, logits = Reference(TINY).generate(r.prompt_tokens, 16)
    assert r.tokens == tokens
    assert np.allclose(r.logits, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    assert isinstance(r.text, str) and len(r.text) > 16


@pytest.mark.parametrize("name", ["ulx3s-85f", "icebreaker"])
def test_resident_on_the_default_builds(name):
    """The engines and weight memories ``tritium build`` makes for the two boards the issue
    names (the ULX3S-85F's adder trees, the iCEBreaker's with ``linear`` hardwired) hold every
    projection: nothing streams, and the text is the reference's."""
    from boards import board
    b = board(name)
    r = run_model(TINY, PROMPT, device="emu", max_new_tokens=4,
                  device_options=dict(rows=b.rows, cols=b.cols, weight_words=b.weight_words,
                                      engine=b.engine, control=b.control))
    up = r.stats["upload"]
    assert up["streamed"] == 0 and up["resident"] == 4 * 4
    tokens, _ = Reference(TINY).generate(r.prompt_tokens, 4)
    assert r.tokens == tokens


def test_on_the_rtl_simulator():
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    from test_run_model import SIM              # one Verilator build for the model tests
    with open_device("sim", progress=lambda msg: None, **SIM) as dev:
        r = run_model(TINY, PROMPT, device=dev, max_new_tokens=3)
    assert r.stats["total"]["device_cycles"] == r.stats["total"]["model_cycles"]
    tokens, _ = Reference(TINY).generate(r.prompt_tokens, 3)
    assert r.tokens == tokens


def test_resident_on_the_built_icebreaker_core():
    """The core the iCEBreaker is built with (``tritium build --board icebreaker``: the
    digit-serial adder trees with ``linear`` hardwired, their weights in the UP5K's SPRAMs)
    holds the whole model: the RTL in Verilator gives the reference's tokens without
    streaming a weight."""
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    from boards import board
    b = board("icebreaker")
    core = boards.core_config(b.rows, b.cols, b.weight_words, b.family, b.engine)
    assert core["weight_ram"] == "spram" and not core["registered_ports"]
    assert (core["engine"], core["control"], core["act_copies"]) == ("serial", "hardwired", 1)
    options = {k: core[k] for k in ("rows", "cols", "weight_words", "act_bytes", "result_rows",
                                    "max_payload", "weight_ram", "registered_ports", "engine",
                                    "control")}
    with open_device("sim", progress=lambda msg: None, **options) as dev:
        r = run_model(TINY, PROMPT, device=dev, max_new_tokens=3)
    up = r.stats["upload"]
    assert up["streamed"] == 0 and up["resident"] == 4 * 4
    assert r.stats["total"]["device_cycles"] == r.stats["total"]["model_cycles"]
    tokens, _ = Reference(TINY).generate(r.prompt_tokens, 3)
    assert r.tokens == tokens
