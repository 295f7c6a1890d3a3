"""``tritium run``: streamed text, the summary, ``--json``, and one clear error per mistake."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from host import run_model
from host.cli import main


def word_tokenizer(folder, vocab: int) -> None:
    """tokenizer.json for a fixture model: token i is the word ``w<i>``."""
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def test_json_is_the_run(make_model, capsys):
    folder = make_model(seed=1, tied=False)
    assert main(["run", str(folder), "--ids", "3,1,4,1,5", "--max-new-tokens", "6",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)         # nothing but the JSON on stdout
    r = run_model(folder, [3, 1, 4, 1, 5], max_new_tokens=6)
    assert out["tokens"] == r.tokens and out["text"] is None
    assert out["stats"]["prompt_tokens"] == 5 and out["stats"]["generated_tokens"] == 6
    assert set(out["stats"]["projected"]) == {"ulx3s-85f", "icebreaker", "ulx3s-12f",
                                              "ulx3s-25f", "ulx3s-45f", "ecpix5-85f",
                                              "orangecrab-85f", "icesugar", "upduino-v3",
                                              "ulx3s-85f-goal", "icebreaker-goal"}
    for name, p in out["stats"]["projected"].items():
        assert p["tokens_per_second"] > 0
        assert p["basis"] == ("target" if name.endswith("-goal") else "measured")


def test_text_streams_then_summary(make_model, capsys):
    folder = make_model(seed=1, tied=False)
    word_tokenizer(folder, 97)
    prompt = "w3 w1 w4 w1 w5"
    assert main(["run", str(folder), "--prompt", prompt, "--max-new-tokens", "5",
                 "--temperature", "0.7", "--top-k", "5", "--seed", "9",
                 "--rows", "4", "--cols", "4"]) == 0
    out, err = capsys.readouterr()
    r = run_model(folder, prompt, max_new_tokens=5, temperature=0.7, top_k=5, seed=9)
    text, summary = out.split("\n\n", 1)
    assert text == prompt + r.text                    # WordLevel decodes with spaces
    assert r.text.count("w") == 5
    assert "upload (8 calls resident, 0 streamed)" in summary
    assert "on emu 4x4" in summary and "projected on icebreaker" in summary
    assert "projected on ulx3s-85f-goal (adder trees 32x64 at 100 MHz" in summary
    assert "2 layers" in err and "uploading" in err


@pytest.mark.parametrize("args, message", [
    (["{missing}", "--ids", "1"], "not a directory"),
    (["{model}", "--prompt", "hello"], "tokenizer.json"),
    (["{model}", "--ids", "1,x"], "--ids must be token ids"),
    (["{model}", "--ids", "1,500"], "outside the vocabulary"),
    (["{model}", "--ids", "1", "--max-new-tokens", "-1"], "max_new_tokens"),
    (["{model}", "--ids", "1", "--device", "serial:/dev/does-not-exist"], "does-not-exist"),
])
def test_mistakes_get_one_line(make_model, tmp_path, capsys, args, message):
    folder = make_model(seed=1)
    args = [a.format(model=folder, missing=tmp_path / "nothing") for a in args]
    assert main(["run", *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err
    assert out == ""
