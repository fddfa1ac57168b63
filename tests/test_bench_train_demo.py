"""The demo-model recipe (bench/train_demo.py) end to end on CPU at toy size: the folder it writes is what
`inspector/demo_model/` must be (bf16 weights with the head tied to the embedding, tokenizer, the question it was
trained on, a model card), and a scan of it asks that question without options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_recipe_writes_a_demo_folder_that_asks_its_own_question(tmp_path, phi35v_dir, monkeypatch):
    import torch
    from safetensors import safe_open

    sys.path.insert(0, str(REPO / "bench"))
    import train_demo

    out = tmp_path / "demo"
    train_demo.main(
        ["--tiny", "--runs", "real:0", "--steps", "2", "--eval-every", "2", "--out", str(out),
         "--tokenizer-dir", str(phi35v_dir)]
    )  # fmt: skip
    results = json.loads((out / "demo.json").read_text())
    run = results["runs"]["real:0"]
    assert run["steps"] == 2 and run["config"]["max_steps"] == 2 and run["config"]["seed"] == 0
    assert [record["step"] for record in run["evaluations"]] == [2]  # the curve's points, by step
    assert "| category | 95% |" in (out / "demo.md").read_text()

    folder = out / "demo_model"
    with safe_open(folder / "model.safetensors", "pt") as weights:
        names = list(weights.keys())  # a safetensors handle is not iterable
        assert {weights.get_tensor(name).dtype for name in names} == {torch.bfloat16}
    trained = json.loads((folder / "train_config.json").read_text())
    assert trained["fields_file"] == "fields.toml" and trained["truth"] == "" and trained["model"] == ""
    assert "colour" in (folder / "fields.toml").read_text()
    assert "synthetic" in (folder / "README.md").read_text()

    from inspector.scan import ScanConfig, ask_as_trained

    asked, question = ask_as_trained(ScanConfig(inputs=[str(REPO / "sample_images")], model=str(folder)))
    assert question is not None and "colour" in asked.scan_prompt().text
    assert asked.num_crops == 1  # the --tiny recipe's crops, read back from the folder

    # One more chunk from that folder (another machine, another call): fresh cards, the weights it left
    history = json.loads((folder / "training_history.json").read_text())
    assert [(chunk["steps"], chunk["card_seed"]) for chunk in history] == [(2, 0)]
    more = tmp_path / "demo2"
    train_demo.main(
        ["--tiny", "--runs", "real:0", "--steps", "3", "--eval-every", "3", "--seed", "1", "--init", str(folder),
         "--out", str(more), "--tokenizer-dir", str(phi35v_dir)]
    )  # fmt: skip
    again = json.loads((more / "demo.json").read_text())["runs"]["real:0"]
    assert again["init"] == str(folder) and again["config"]["model"] == str(folder)
    history = json.loads((more / "demo_model" / "training_history.json").read_text())
    assert [(chunk["steps"], chunk["card_seed"]) for chunk in history] == [(2, 0), (3, 1)]
    assert "Steps: 5 of batch 2 (10 cards" in (more / "demo_model" / "README.md").read_text()
    assert "Chunks: 2" in (more / "demo_model" / "README.md").read_text()
    with pytest.raises(SystemExit):  # a folder without a history is no earlier chunk of this recipe
        train_demo.main(["--tiny", "--init", str(tmp_path), "--out", str(tmp_path / "x")])


def test_the_demo_size_is_within_the_budget_with_tied_embeddings():
    """~40 MB of bf16 weights at most (issue 16): the demo architecture, counted on the meta device."""
    import torch

    from inspector.models.phi3v.modeling_phi3_v import Phi3VForConditionalGeneration
    from inspector.models.phi3v.tiny import tiny_phi3v_config

    sys.path.insert(0, str(REPO / "bench"))
    from train_demo import DEMO_TEXT, DEMO_VISION

    with torch.device("meta"):
        model = Phi3VForConditionalGeneration(tiny_phi3v_config(**DEMO_TEXT, vision_config=DEMO_VISION))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert 2 * sum(unique.values()) <= 41 * 10**6
