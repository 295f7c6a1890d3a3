"""Link faults (host/faults.py): each kind does what it says, the same seed gives the same
faults, and through them the protocol gives exact results or a clear error, never a wrong
result, on the emulator and on the RTL in Verilator. The 10^4-frame figures are in
``make bench`` (``faults``)."""

import json

import numpy as np
import pytest

from host import open_device
from host.cli import main
from host.device import DeviceTimeout
from host.faults import KINDS, FaultSpec, FaultyTransport
from host.transport import Transport
from sim import numerics


class Loopback(Transport):
    """Whatever is written comes back on the next read."""
    name = "loopback"

    def __init__(self):
        self.pending = b""

    def write(self, data):
        self.pending += bytes(data)

    def read(self, max_bytes, timeout):
        data, self.pending = self.pending[:max_bytes], self.pending[max_bytes:]
        return data


def through(spec, chunks, direction="h2c"):
    """Bytes that arrive when ``chunks`` go through a FaultyTransport one write at a time."""
    t = FaultyTransport(Loopback(), spec)
    out = b""
    for c in chunks:
        if direction == "h2c":
            t.write(c)
            out += t.inner.read(1 << 20, 0)
        else:
            t.inner.write(c)
            out += t.read(1 << 20, 0)
    return out, t.injected


DATA = [bytes(range(256)) * 4] * 5


@pytest.mark.parametrize("direction", ["h2c", "c2h"])
def test_each_kind_does_what_it_says(direction):
    sent = b"".join(DATA)
    flipped, n = through(FaultSpec(0.01, seed=1, kinds=("flip",)), DATA, direction)
    assert len(flipped) == len(sent) and n["flip"] > 0
    diff = [a ^ b for a, b in zip(flipped, sent) if a != b]
    assert len(diff) == n["flip"] and all(bin(d).count("1") == 1 for d in diff)
    dropped, n = through(FaultSpec(0.01, seed=1, kinds=("drop",)), DATA, direction)
    assert len(dropped) == len(sent) - n["drop"] > 0
    doubled, n = through(FaultSpec(0.01, seed=1, kinds=("duplicate",)), DATA, direction)
    assert len(doubled) == len(sent) + n["duplicate"] > len(sent)
    cut, n = through(FaultSpec(0.001, seed=3, kinds=("truncate",)), DATA, direction)
    assert 0 < n["truncate"] <= len(DATA) and len(cut) < len(sent)
    late, n = through(FaultSpec(0.001, seed=3, kinds=("delay",)), DATA, direction)
    # Late bytes come with the next transfer: nothing is lost except what is still held back.
    assert n["delay"] > 0 and sent.startswith(late) and len(late) < len(sent)


def test_same_seed_same_faults_and_rate_zero_is_clean():
    a = through(FaultSpec(0.003, seed=7), DATA)
    assert a == through(FaultSpec(0.003, seed=7), DATA)
    assert a != through(FaultSpec(0.003, seed=8), DATA)
    assert sum(a[1].values()) > 0
    assert through(FaultSpec(0.0), DATA) == (b"".join(DATA), dict.fromkeys(KINDS, 0))


@pytest.mark.parametrize("bad", [-0.1, 1.0, "x", True, {"rate": 0.1, "kinds": ["melt"]},
                                 {"rate": 0.1, "directions": ["up"]}])
def test_bad_specs_are_refused_before_anything_opens(bad):
    with pytest.raises((ValueError, TypeError)):
        open_device("emu", faults=bad)


def layers(rng, count, R=4, C=4):
    for _ in range(count):
        N, K = int(rng.integers(1, 3 * R * C)), int(rng.integers(1, 300))
        M = int(rng.integers(1, R + 3))
        yield (rng.integers(-1, 2, (N, K)).astype(np.int8),
               rng.integers(numerics.ACT_MIN, numerics.ACT_MAX + 1, (M, K)).astype(np.int8))


SMALL = dict(rows=4, cols=4, weight_words=256, act_bytes=1024, result_rows=64, max_payload=256)


@pytest.mark.parametrize("spec, calls, extra", [
    ("emu", 150, {}),
    # The RTL: a lost frame costs a real timeout here, so fewer calls and short waits.
    ("sim", 25, {"timeout": 0.3, "frame_timeout": 4096}),
])
def test_exact_through_faults(spec, calls, extra):
    rng = np.random.default_rng(11)
    with open_device(spec, faults={"rate": 1e-3, "seed": 5}, retries=16, **SMALL,
                     **extra) as dev:
        w0, x0 = next(layers(rng, 1))
        resident = dev.load(w0)                       # uploaded once, through the faults
        for w, x in layers(rng, calls):               # streamed weights, then the resident
            assert np.array_equal(dev.linear(w, x), numerics.ternary_matmul(w, x))
            assert np.array_equal(dev.linear(resident, x0), numerics.ternary_matmul(w0, x0))
        assert resident.resident
        assert dev.stats["retries"] > 0 and sum(dev.transport.injected.values()) > 0


def test_hopeless_link_is_a_clear_error_never_a_wrong_result():
    with pytest.raises(DeviceTimeout, match=r"emu: no valid response to INFO .* after 4 "):
        open_device("emu", faults={"rate": 0.2, "seed": 1}, **SMALL)
    with open_device("emu", **SMALL) as dev:            # a link that goes bad once open
        dev.transport = FaultyTransport(dev.transport, {"rate": 0.2, "seed": 1})
        for w, x in layers(np.random.default_rng(12), 5):
            with pytest.raises(DeviceTimeout, match=r"emu: no valid response to \w+ "):
                dev.linear(w, x)


def test_selftest_with_faults(capsys):
    assert main(["selftest", "--faults", "1e-3", "--fault-seed", "2", "--frames", "50",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["errors"]["retries"] > 0
    assert report["faults"]["rate"] == 1e-3 and sum(report["faults"]["injected"].values()) > 0
    assert main(["selftest", "--faults", "0.3", "--frames", "5"]) == 2
    assert "no valid response" in capsys.readouterr().err
