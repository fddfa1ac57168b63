"""Speed-ups (inspector.speedups): fused kernels keep answers, optional packages fail in one line, the training loss
computed at labelled positions only equals the loss on the full logits. Tiny random Phi-3.5-vision on the CPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import inspector  # noqa: F401  (registers phi3_v)
from inspector.backends import GenerationSettings
from inspector.cli import cli
from inspector.errors import InputError, MissingExtraError
from inspector.models.phi3v import Phi3VForConditionalGeneration
from inspector.models.phi3v.tiny import tiny_phi3v_config
from inspector.scan import ScanConfig
from inspector.speedups import check_extras, quantize, resolve_fusion


@pytest.mark.parametrize(
    ("fusion", "device", "triton", "expected"),
    [
        ("auto", "cuda", True, "compile"),
        ("auto", "cuda:1", True, "compile"),
        ("auto", "cuda", False, "none"),  # Inductor's GPU kernels need Triton
        ("auto", "cpu", True, "none"),
        ("compile", "cpu", False, "compile"),
        ("liger", "cuda", True, "liger"),
        ("none", "cuda", True, "none"),
    ],
)
def test_fusion_setting_resolves_per_device(monkeypatch, fusion, device, triton, expected):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if triton else None) if name == "triton" else real(name, *a),
    )
    assert resolve_fusion(fusion, device) == expected


def test_unknown_fusion_is_an_input_error():
    with pytest.raises(InputError, match="use one of: auto, compile, liger, none"):
        resolve_fusion("fast", "cuda")


@pytest.mark.parametrize(
    ("fusion", "quantization", "package", "message"),
    [
        (
            "liger",
            "none",
            "liger_kernel",
            "--fuse liger needs the liger_kernel package: pip install 'inspector[liger]'",
        ),
        ("none", "fp8", "torchao", "--quantize fp8 needs the torchao package: pip install 'inspector[fp8]'"),
    ],
)
def test_a_missing_optional_package_is_one_line_that_names_the_extra(
    monkeypatch, fusion, quantization, package, message
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    monkeypatch.setitem(__import__("sys").modules, package, None)  # import fails as if not installed
    with pytest.raises(MissingExtraError) as caught:
        check_extras(fusion, quantization)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_fp8_on_the_cpu_is_refused_in_one_line():
    model = Phi3VForConditionalGeneration(tiny_phi3v_config())
    with pytest.raises(InputError, match="needs an NVIDIA GPU with fp8"):
        quantize(model, "fp8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "fp8"], "--quantize fp8 needs the torchao package"),
        (["--fuse", "liger"], "--fuse liger needs the liger_kernel package"),
    ],
)
def test_scan_flags_needing_missing_packages_fail_before_the_model_loads(
    monkeypatch, tmp_path, sample_dir, args, message
):
    monkeypatch.setitem(__import__("sys").modules, "torchao", None)
    monkeypatch.setitem(__import__("sys").modules, "liger_kernel", None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("torchao", "liger_kernel") else real(name, *a),
    )
    result = CliRunner().invoke(
        cli,
        ["scan", str(sample_dir), "--model", "fake:/never/read.json", "--db", str(tmp_path / "r.db"), *args],
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_scan_help_shows_auto_batch_size_and_speed_flags():
    text = CliRunner().invoke(cli, ["scan", "--help"], terminal_width=200).output
    assert "[default: auto]" in text.split("--batch-size", 1)[1].split("--prompt", 1)[0]
    assert "--fuse [auto|compile|liger|none]" in text
    assert "--quantize [none|fp8]" in text


def test_batch_size_defaults_to_auto_and_quantization_is_part_of_the_run_identity():
    from inspector.prompts import get_prompt

    config = ScanConfig(inputs=["x"])
    assert config.batch_size == 0  # auto
    prompt = get_prompt(None, None, None)
    assert ScanConfig(inputs=["x"], fuse="compile").run_key(prompt) == config.run_key(prompt)
    assert ScanConfig(inputs=["x"], quantize="fp8").run_key(prompt) != config.run_key(prompt)


def test_compiled_prefill_and_decode_answer_like_the_plain_backend(phi35v_dir, monkeypatch):
    """--fuse compile (prefill modules compiled in place + compiled decode step) gives the same answers (fp32).
    Traced by Dynamo as on a GPU, run without Inductor's code generation (minutes on a CI CPU); the Inductor decode
    step is checked against generate() in test_fastgen."""
    from inspector import speedups
    from inspector.backends.hf import HFBackend
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

    monkeypatch.setattr(speedups, "COMPILE_BACKEND", "aot_eager")

    processor = Phi3VProcessor.from_pretrained(phi35v_dir)
    torch.manual_seed(0)
    model = Phi3VForConditionalGeneration(tiny_phi3v_config()).eval()
    images = [Image.new("RGB", (800, 800), "red"), Image.new("RGB", (1000, 500), "blue")]
    prompts = ["Give the price as JSON.", "What brand?"]
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=3)
    plain = HFBackend.from_loaded(model, processor, "tiny", num_crops=4, fuse="none")
    expected = [a.text for a in plain.generate(images, prompts, settings)]
    fused = HFBackend.from_loaded(model, processor, "tiny", num_crops=4, fuse="compile")
    assert fused.describe()["fuse"] == "compile" and fused.fast_decoder._compiled_layer is not None
    assert [a.text for a in fused.generate(images, prompts, settings)] == expected
    assert fused.fast_decoder.compile_error is None


def _labelled_batch(model):
    from test_fastgen import batch  # pytest puts tests/ on the path

    inputs = batch(model, [(2, 2), (1, 3), (1, 1)])
    labels = inputs["input_ids"].clone()
    labels[:, :-6] = -100  # the answer: the last tokens of each row
    labels[0, -6:-3] = -100
    return inputs, labels


@pytest.mark.parametrize("num_items_in_batch", [None, 7])
def test_training_loss_at_labelled_positions_equals_the_full_logits_loss(num_items_in_batch):
    torch.manual_seed(0)
    model = Phi3VForConditionalGeneration(tiny_phi3v_config()).train()
    inputs, labels = _labelled_batch(model)
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": torch.tensor(num_items_in_batch)}
    results = []
    for labelled_only in (True, False):
        model.zero_grad()
        model.loss_on_labelled_positions_only = labelled_only
        output = model(**inputs, labels=labels, **extra)
        output.loss.backward()
        results.append((output, output.loss.item(), model.lm_head.weight.grad.clone()))
    (fast, fast_loss, fast_grad), (full, full_loss, full_grad) = results
    assert (
        fast.logits is None and full.logits is not None
    )  # the (batch, length, vocab) logits are never built
    assert fast_loss == pytest.approx(full_loss, rel=1e-6)
    torch.testing.assert_close(fast_grad, full_grad, rtol=1e-5, atol=1e-7)


def test_evaluation_mode_still_returns_full_logits():
    torch.manual_seed(0)
    model = Phi3VForConditionalGeneration(tiny_phi3v_config()).eval()
    inputs, labels = _labelled_batch(model)
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    assert output.logits.shape[:2] == inputs["input_ids"].shape and output.loss is not None
