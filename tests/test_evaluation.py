"""`sam2rl-fast eval` and `demo` on a random-weight model (the pipeline, not the scores)."""

import json

import pytest

from sam2rl_fast.cli import main

MODEL = ["--model", "sam2.1_hiera_t", "--image-size", "256", "--device", "cpu", "--quiet"]


def test_eval_writes_table_csv_json_and_plots(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--suite", "occlusion", "--suite", "easy", "--agent", "sam2",
                 "--agent", "dam4sam", "--videos", "1", "--frames", "6", "--size", "64",
                 *MODEL, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "occlusion" in table and "dam4sam" in table
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["suite"], r["agent"]) for r in rows] == [
        ("occlusion", "sam2"), ("occlusion", "dam4sam"), ("easy", "sam2"), ("easy", "dam4sam")]
    for r in rows:
        assert 0 <= r["J"] <= 1 and 0 <= r["F"] <= 1 and r["FPS"] > 0
    assert len(list((out / "plots").glob("*.png"))) == 2
    assert main(["eval", "--suite", "nope", *MODEL, "--out", str(tmp_path / "x")]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_demo_writes_overlays_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--frames", "5", *MODEL, "--out", str(out)]) == 0
    for name in ("overlay.mp4", "overlay.gif", "memory.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {r["agent"] for r in rows} == {"sam2", "samurai", "dam4sam", "sam2long"}
    from PIL import Image

    gif = Image.open(out / "overlay.gif")
    assert gif.n_frames == 5 and gif.size == (5 * 256, 256)  # ground truth + 4 agents
    assert main(["demo", "--frames", "5", *MODEL, "--out", str(out)]) == 2


def test_demo_without_a_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import sam2rl_fast.model.bundled as dm

    monkeypatch.setattr(dm, "CHECKPOINT", tmp_path / "absent.pt")
    assert main(["demo", "--device", "cpu", "--quiet", "--out", str(tmp_path / "d")]) == 2
    assert "bundled demo model" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_evaluate_agents_on_given_seeds():
    from sam2rl_fast.eval.evaluation import evaluate_agents
    from sam2rl_fast.model.loading import build_model

    scores = evaluate_agents(["occlusion"], ["sam2"], build_model(None, device="cpu"), seeds=[1_000_003],
                             num_frames=4, size=128, log=lambda m: None)
    assert [(s.suite, s.seed, s.agent) for s in scores] == [("occlusion", 1_000_003, "sam2")]
