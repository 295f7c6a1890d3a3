"""run_model on the emulator (and once on the RTL simulator) against the independent float32
reference in reference.py: identical greedy tokens and logits equal to float32 rounding, with
the device's memories small enough that some projections stream and prefill is split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware.commands import DeviceInfo
from host import Checkpoint, estimate, load_checkpoint, open_device, run_model
from host.model import TokenizerUnavailable
from sim.cocotb_runner import tool_missing

from reference import Reference

#: a 4x4 array with memories too small for the whole model: layer 0 stays resident, part of
#: layer 1 streams, a 50-token prefill is split into several RUNs
EMU = dict(rows=4, cols=4, weight_words=1800, act_bytes=1000, result_rows=64)
#: the configuration tests/host/test_sim_device.py builds (one Verilator build for both)
SIM = dict(rows=3, cols=4, weight_words=2048, act_bytes=20000, result_rows=512,
           max_payload=512)


def prompt_of(n, seed=0, vocab=97):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def assert_matches_reference(folder, prompt, r, max_new_tokens):
    tokens, logits = Reference(folder).generate(prompt, max_new_tokens)
    assert r.tokens == tokens
    assert r.logits.dtype == np.float32 and r.logits.shape == logits.shape
    # float32 rounding: different summation orders only (the worst seen is ~1e-5 of the range)
    assert np.allclose(r.logits, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


@pytest.mark.parametrize("shape,tied,linear_class,seed", [
    ("small", True, "autobitlinear", 1),
    ("small", False, "bitlinear", 2),
    ("gqa5", False, "autobitlinear", 3),
    ("gqa5", True, "bitlinear", 4),
    ("mha", False, "autobitlinear", 5),
])
def test_greedy_matches_reference(make_model, shape, tied, linear_class, seed):
    folder = make_model(seed=seed, shape=shape, tied=tied, linear_class=linear_class)
    prompt = prompt_of(50, seed)
    r = run_model(folder, prompt, device="emu", device_options=EMU, max_new_tokens=8)
    assert r.prompt_tokens == prompt and r.stop_reason == "max_new_tokens"
    assert r.text is None
    up = r.stats["upload"]
    assert up["resident"] > 0 and up["streamed"] > 0, up
    assert_matches_reference(folder, prompt, r, 8)


def test_short_prompt_and_checkpoint_object(make_model):
    folder = make_model(seed=7, shape="gqa5", tied=False)
    ckpt = load_checkpoint(folder)
    assert isinstance(ckpt, Checkpoint)
    r = run_model(ckpt, [5], device="emu", device_options=dict(rows=4, cols=4),
                  max_new_tokens=6)
    assert_matches_reference(folder, [5], r, 6)


def test_decode_equals_prefill_bit_for_bit(make_model):
    """The KV cache path and a prefill of the same tokens give identical logits: every float
    reduction before a quantizer is independent of the batch (see host.model._attention)."""
    ckpt = load_checkpoint(make_model(seed=9, shape="gqa5", tied=False))
    prompt = prompt_of(30, 9)
    r = run_model(ckpt, prompt, max_new_tokens=6)
    whole = run_model(ckpt, prompt + r.tokens[:-1], max_new_tokens=0)
    assert whole.tokens == [] and whole.stop_reason == "max_new_tokens"
    assert np.array_equal(whole.logits, r.logits)


def test_stats_are_consistent_and_serializable(make_model):
    folder = make_model(seed=8, tied=False)
    with open_device("emu", **EMU) as dev:
        words = dev.free_words
        before = dev.stats
        r = run_model(folder, prompt_of(20), device=dev, max_new_tokens=5)
        after = dev.stats
        assert dev.free_words == words            # every handle was freed ...
        dev.linear(np.ones((4, 3), np.int8), np.ones((1, 3), np.int8))   # ... device still open
    s = r.stats
    json.dumps(s)
    n_layers = load_checkpoint(folder).config.num_hidden_layers
    assert len(s["layers"]) == n_layers
    assert s["generated_tokens"] == 5 and s["prompt_tokens"] == 20
    # q|k|v, o, gate|up and down: four calls per layer, for the prefill and 4 decode steps
    assert s["total"]["linear_calls"] == 4 * n_layers * 5
    assert s["prefill"]["linear_calls"] == 4 * n_layers
    cycles = sum(after[k] - before[k] for k in ("busy", "stall_input", "stall_drain",
                                                "drain_tail"))
    assert s["total"]["device_cycles"] == cycles > 0
    assert s["total"]["device_cycles"] == sum(x["device_cycles"] for x in s["layers"])
    assert s["total"]["model_cycles"] == s["total"]["device_cycles"]
    total_sent = s["upload"]["bytes_sent"] + s["device_stats"]["bytes_sent"]
    assert total_sent == after["bytes_sent"] - before["bytes_sent"]
    assert s["total"]["bytes_received"] <= s["device_stats"]["bytes_received"]
    assert s["tokens_per_second"] > 0


def assert_estimate_counts(folder, prompt, r, info):
    """``tritium estimate`` of the model on this device's build counts what the run measured:
    link bytes both ways (upload, prefill of the whole prompt, each decode step) and the
    device's own cycle counters."""
    e = estimate.estimate(estimate.load_workload(folder), info=info, batch=len(prompt))
    s, steps = r.stats, r.stats["generated_tokens"] - 1
    assert s["upload"]["bytes_sent"] + s["upload"]["bytes_received"] == \
        e["residency"]["upload_bytes"]
    assert s["upload"]["streamed"] == e["residency"]["streamed_calls"]
    for phase, times in (("prefill", 1), ("decode", steps)):
        p = e["phases"][phase]
        assert s[phase]["bytes_sent"] == times * p["bytes"]["sent"], phase
        assert s[phase]["bytes_received"] == times * p["bytes"]["received"], phase
        assert s[phase]["device_cycles"] == times * p["cycles"]["array"], phase
        assert s[phase]["linear_calls"] == times * 4 * len(s["layers"])


def test_estimate_counts_what_the_emulator_measures(make_model):
    """Partly streamed weights and a 50-token prefill split into several RUNs."""
    folder = make_model(seed=4, shape="gqa5", tied=False)
    prompt = prompt_of(50, 4)
    with open_device("emu", **EMU) as dev:
        info = DeviceInfo(**dev.info)
        r = run_model(folder, prompt, device=dev, max_new_tokens=4)
    assert r.stats["upload"]["streamed"] > 0 and r.stats["upload"]["resident"] > 0
    assert_estimate_counts(folder, prompt, r, info)


def test_on_the_serial_trees(make_model):
    """The digit-serial trees with ``linear`` hardwired (the UP5K's kind), partly streamed: the
    reference's tokens, and the estimate counting what the run measured (steps' words of 4
    memory words, the serial engine's cycles). 4 x 4 trees take the layers' 1,620 steps'
    words; 1,200 fit (the 3 memory words past them make no step's word)."""
    folder = make_model(seed=5, shape="gqa5", tied=False)
    prompt = prompt_of(50, 5)
    with open_device("emu", rows=4, cols=4, engine="serial", control="hardwired",
                     weight_words=4 * 1200 + 3, act_bytes=1000, result_rows=64) as dev:
        assert dev.free_words == 1200
        info = DeviceInfo(**dev.info)
        r = run_model(folder, prompt, device=dev, max_new_tokens=4)
    assert r.stats["upload"]["streamed"] > 0 and r.stats["upload"]["resident"] > 0
    assert_matches_reference(folder, prompt, r, 4)
    assert_estimate_counts(folder, prompt, r, info)


def test_streaming_when_resident_weights_fill_the_memory(make_model):
    """Layer 0 plus q|k|v and o of layer 1 would fill the weight memory to the last word; the
    rest must still stream (Device.load_many keeps scratch room for it)."""
    folder = make_model(seed=10, tied=False)
    # 4x4 array, small shape: q|k|v 96 x 48 is 6 tiles x 48 words, o 3 x 48, gate|up 184 x 48
    # 12 x 48, down 3 x 92: 1284 words a layer.
    words = 1284 + 288 + 144
    r = run_model(folder, prompt_of(6), device="emu", max_new_tokens=3,
                  device_options=dict(rows=4, cols=4, weight_words=words))
    assert r.stats["upload"]["streamed"] > 0
    assert_matches_reference(folder, prompt_of(6), r, 3)


def test_eos_stops_and_on_token_streams(make_model):
    folder = make_model(seed=2, tied=False)
    first = run_model(folder, prompt_of(10), max_new_tokens=4)
    eos = first.tokens[2]
    folder = make_model("with_eos", seed=2, tied=False, eos=eos)
    seen = []
    r = run_model(folder, prompt_of(10), max_new_tokens=8, on_token=seen.append)
    stop = first.tokens.index(eos) + 1
    assert r.tokens == first.tokens[:stop] == seen and r.stop_reason == "eos"
    r = run_model(folder, prompt_of(10), max_new_tokens=8, on_token=lambda t: False)
    assert len(r.tokens) == 1 and r.stop_reason == "callback"


def test_context_limit(make_model):
    folder = make_model(seed=3, max_pos=12)
    r = run_model(folder, prompt_of(10), max_new_tokens=8)
    assert len(r.tokens) == 3 and r.stop_reason == "context"    # positions 10, 11 fed; 12 not
    run_model(folder, prompt_of(12), max_new_tokens=1)
    with pytest.raises(ValueError, match="13 tokens, more than the model's context of 12"):
        run_model(folder, prompt_of(13), max_new_tokens=1)


def test_sampling(make_model):
    folder = make_model(seed=4, tied=False)
    ckpt = load_checkpoint(folder)
    greedy = run_model(ckpt, prompt_of(8), max_new_tokens=6)
    assert run_model(ckpt, prompt_of(8), max_new_tokens=6, temperature=1.0, top_k=1,
                     seed=5).tokens == greedy.tokens
    a = run_model(ckpt, prompt_of(8), max_new_tokens=6, temperature=2.0, seed=11)
    b = run_model(ckpt, prompt_of(8), max_new_tokens=6, temperature=2.0, seed=11)
    assert a.tokens == b.tokens
    others = {tuple(run_model(ckpt, prompt_of(8), max_new_tokens=6, temperature=5.0,
                              seed=s).tokens) for s in range(4)}
    assert len(others) > 1


@pytest.mark.parametrize("prompt,error,match", [
    ([], ValueError, "empty"),
    ([3, 97], ValueError, "token 1 is 97, outside the vocabulary"),
    ([3, -1], ValueError, "outside the vocabulary"),
    ([1.5], TypeError, "not an integer"),
    ("hello", ValueError, "tokenizer.json"),
])
def test_bad_prompts(make_model, prompt, error, match):
    folder = make_model()
    with pytest.raises(error, match=match):
        run_model(folder, prompt, max_new_tokens=1)


def test_bad_arguments(make_model):
    folder = make_model()
    for kw in (dict(max_new_tokens=-1), dict(temperature=-0.5), dict(top_k=0)):
        with pytest.raises(ValueError):
            run_model(folder, [1], **kw)
    with pytest.raises(ValueError, match="unknown device spec"):
        run_model(folder, [1], device="nope")


def test_text_prompt_without_tokenizers_package(make_model, monkeypatch):
    folder = make_model()
    (folder / "tokenizer.json").write_text("{}")
    import builtins
    real_import = builtins.__import__

    def no_tokenizers(name, *a, **kw):
        if name == "tokenizers":
            raise ImportError("no tokenizers")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tokenizers)
    with pytest.raises(TokenizerUnavailable, match="pip install tokenizers"):
        run_model(folder, "hello", max_new_tokens=1)
    r = run_model(folder, [1, 2], max_new_tokens=1)      # token ids still work, no text
    assert r.text is None


def test_on_the_rtl_simulator(make_model):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    folder = make_model(seed=6, shape="gqa5", tied=False)
    prompt = prompt_of(12, 6)
    with open_device("sim", progress=lambda msg: None, **SIM) as dev:
        info = DeviceInfo(**dev.info)
        r = run_model(folder, prompt, device=dev, max_new_tokens=4)
    assert r.stats["upload"]["streamed"] > 0
    assert r.stats["total"]["device_cycles"] == r.stats["total"]["model_cycles"]
    assert_matches_reference(folder, prompt, r, 4)
    # the RTL's own counters and the bytes on its link, as tritium estimate predicts them
    assert_estimate_counts(folder, prompt, r, info)
