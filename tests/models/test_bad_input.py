"""Every row of the bad-input table (docs/bad-input.md) that a user can meet through
``tritium run``: one line on stderr naming the problem, exit status 2, no traceback, nothing
on stdout. The API-level rows are tested next to the code (the table names each test)."""

from __future__ import annotations

import numpy as np
import pytest

from checkpoint_edits import rewrite
from host.cli import main


def break_config(folder):
    (folder / "config.json").write_text("{not json")


def remove_weights(folder):
    (folder / "model.safetensors").unlink()


def pickle_only(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")


def truncate(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def not_safetensors(folder):
    (folder / "model.safetensors").write_bytes(b"PK\x03\x04 a zip file, say")


def wrong_shape(folder):
    name = "model.layers.1.mlp.down_proj.weight"
    rewrite(folder, lambda t, d: t.update({name: t[name][:, :-4]}))


def code_3(folder):
    name = "model.layers.0.self_attn.o_proj.weight"

    def poison(t, d):
        t[name] = t[name].copy()
        t[name][2, 5] = 0b01_11_01_01
    rewrite(folder, poison)


def nan_embedding(folder):
    name = "model.embed_tokens.weight"

    def poison(t, d):
        t[name] = t[name].copy()
        t[name][5, 3] = 0x7FC0                       # a bf16 NaN
    rewrite(folder, poison)


@pytest.mark.parametrize("damage, args, message", [
    (None, ["{missing}", "--ids", "1"], "not a directory"),
    (break_config, ["{model}", "--ids", "1"], "config.json: not valid JSON"),
    (remove_weights, ["{model}", "--ids", "1"], "no model.safetensors"),
    (pickle_only, ["{model}", "--ids", "1"], "Only safetensors + JSON checkpoints"),
    (truncate, ["{model}", "--ids", "1"], "truncated"),
    (not_safetensors, ["{model}", "--ids", "1"], "not a safetensors file"),
    (wrong_shape, ["{model}", "--ids", "1"], "does not match the config"),
    (code_3, ["{model}", "--ids", "1"], "code 3"),
    (nan_embedding, ["{model}", "--ids", "1"], "NaN or infinite"),
    (None, ["{model}", "--ids", ",".join(["1"] * 129)], "more than the model's context of 128"),
    (None, ["{model}", "--ids", "1,500"], "outside the vocabulary"),
    (None, ["{model}", "--ids", "1", "--device", "serial:/dev/does-not-exist"],
     "does-not-exist"),
    (None, ["{model}", "--ids", "1", "--device", "nope"], "unknown device spec"),
])
def test_bad_input_gets_one_clear_line(make_model, tmp_path, capsys, damage, args, message):
    folder = make_model(seed=1)
    if damage is not None:
        damage(folder)
    before = sorted(p.name for p in folder.iterdir())
    args = [a.format(model=folder, missing=tmp_path / "nothing") for a in args]
    assert main(["run", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    # Progress lines may come first (what was loaded); the error is one line, the last.
    errors = [line for line in err.splitlines() if line.startswith("tritium: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and message in errors[0]
    assert sorted(p.name for p in folder.iterdir()) == before      # nothing written


def test_device_speaking_another_protocol_version(make_model, capsys, monkeypatch):
    import host.emu
    monkeypatch.setattr(host.emu, "PROTOCOL_VERSION", host.emu.PROTOCOL_VERSION - 1)
    assert main(["run", str(make_model(seed=1)), "--ids", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert "device speaks protocol version 5, this host speaks 6" in err


def test_selftest_on_a_missing_port(capsys):
    assert main(["selftest", "--device", "serial:/dev/does-not-exist"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "does-not-exist" in err and "Traceback" not in err


def test_nothing_written_when_a_checkpoint_cannot_be_saved(tmp_path):
    from host.checkpoint import save_checkpoint
    out = tmp_path / "model"
    name = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match=f"{name}: .*not ternary"):
        save_checkpoint(out, {"hidden_size": 4}, {name: np.full((4, 4), 2, np.int8),
                                                  name + "_scale": np.float32(1)})
    assert not out.exists()
