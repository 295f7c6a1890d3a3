"""The training script (``python -m train``) on a very small model: it learns, its export is
the model it trained, and the runtime reads it."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host import load_checkpoint, run_model                      # noqa: E402
from host.checkpoint import bf16_to_float32, float32_to_bf16      # noqa: E402
from train import corpus                                          # noqa: E402
from train.__main__ import main                                   # noqa: E402
from train.bitnet import Dims, TinyBitNet, ternarize              # noqa: E402

ARGS = ["--steps", "40", "--baseline-steps", "20", "--eval-every", "20", "--batch", "8",
        "--vocab", "300", "--hidden", "48", "--layers", "2", "--heads", "4", "--kv-heads",
        "2", "--ffn", "64", "--context", "32", "--sample-tokens", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["--out", str(out), *ARGS]) == 0
    return out, json.loads((out / "training.json").read_text())


def test_it_learns_and_reports(trained):
    out, report = trained
    curve = report["curve"]
    assert [c["step"] for c in curve] == [20, 40]
    # From chance (ln 300 = 5.70 nats) the held-out loss must have come down.
    assert curve[-1]["val_nats_per_token"] < 5.0
    r = report["results"]
    for key in ("ternary", "exported", "float_baseline"):
        assert r[key]["bits_per_byte"] > 0 and r[key]["tokens"] == r["ternary"]["tokens"]
    # per layer: q and o 48x48, k and v 24x48 (2 KV heads of 12), gate, up, down 64x48
    assert report["ternary_weights"] == 2 * (2 * 48 * 48 + 2 * 24 * 48 + 3 * 64 * 48)
    assert len(report["samples"]) == 4 and all(isinstance(s["text"], str)
                                               for s in report["samples"])
    assert (out / "README.md").read_text().startswith("# tiny")


def test_export_is_the_trained_model(trained):
    out, report = trained
    ckpt = load_checkpoint(out)
    assert ckpt.forms == {"packed": 14}
    assert ckpt.config.vocab_size == report["dims"]["vocab"] == 300
    # Exported loss differs from the trained one only by bf16 rounding of the floats.
    r = report["results"]
    assert abs(r["exported"]["nats_per_token"] - r["ternary"]["nats_per_token"]) < 0.02
    # The trits are absmean ternarization of some weights: about a third zeros, none other.
    trits = np.concatenate([lin.trits.ravel() for _, _, lin in ckpt.projections()])
    assert set(np.unique(trits)) <= {-1, 0, 1} and 0.1 < (trits == 0).mean() < 0.6


def test_runtime_logits_equal_torch(trained):
    """The same checkpoint through two independent forward passes: torch (fake-quantized
    float) and the host runtime (exact integer products on the emulated device)."""
    out, report = trained
    ckpt = load_checkpoint(out)
    d = report["dims"]
    model = TinyBitNet(Dims(vocab=d["vocab"], hidden=d["hidden"], layers=d["layers"],
                            heads=d["heads"], kv_heads=d["kv_heads"], ffn=d["ffn"],
                            context=d["context"]))
    model.load_checkpoint(ckpt)
    prompt = [5, 77, 13, 200, 9, 9, 150]
    with torch.no_grad():
        want = model(torch.tensor([prompt]))[0, -1].numpy()
    got = run_model(out, prompt, device="emu", max_new_tokens=0).logits
    assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max())


def test_tokenizer_round_trips_and_counts_bytes(trained):
    out, _ = trained
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    text = "def f(x):\n    return x  # \u00e9t\u00e9 \u2713"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    # Byte-level: the characters of the tokens' strings are the text's bytes, one each.
    assert sum(len(tok.id_to_token(i)) for i in ids) == len(text.encode())
    assert tok.token_to_id(corpus.EOS) == 0


def test_ternarize_and_bf16_helpers():
    w = torch.tensor([[0.3, -0.05, -0.4, 0.1]])       # mean |w| = 0.2125
    trits, scale = ternarize(w)
    assert trits.tolist() == [[1, 0, -1, 0]] and float(scale) == pytest.approx(0.2125)
    x = np.array([1.0, 3.14159, -2.5e-3], np.float32)
    assert np.allclose(bf16_to_float32(float32_to_bf16(x)), x, rtol=4e-3)


def test_a_second_run_gives_the_same_model(trained, tmp_path):
    """Reproducible: the same command writes the same checkpoint and the same figures."""
    out, report = trained
    assert main(["--out", str(tmp_path), *ARGS]) == 0
    assert (tmp_path / "model.safetensors").read_bytes() == \
        (out / "model.safetensors").read_bytes()
    again = json.loads((tmp_path / "training.json").read_text())
    assert again["results"] == report["results"] and again["samples"] == report["samples"]
