"""The backend registry (issue 19.3): one table picks the backend for `--model`; settings travel as one object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import inspector
from inspector.backends import (
    BACKENDS,
    BackendOptions,
    GenerationSettings,
    backend_name,
    choose_backend,
    load_backend,
    register_backend,
)
from inspector.backends.fake import FakeBackend
from inspector.cli import cli
from inspector.errors import InputError
from inspector.registry import DEMO_MODEL_DIR
from inspector.scan import ScanConfig

UNKNOWN = (
    "--model vllm:some/model: unknown backend 'vllm'; use fake:FILE (answers replayed from FILE, for tests and "
    "demos), or a Hugging Face id or model folder (transformers)"
)


def test_the_registry_resolves_each_kind_of_model_reference(tmp_path, monkeypatch):
    fake = choose_backend(f"fake:{tmp_path / 'answers.json'}")
    assert (fake.name, fake.target, fake.runs_model, fake.registered) == (
        "fake", str(tmp_path / "answers.json"), False, None
    )
    demo = choose_backend("demo")  # a registered model name: the hf backend, loading the registered folder
    assert (demo.name, demo.target, demo.runs_model) == ("hf", "demo", True)
    assert demo.registered is not None and demo.registered.folder == DEMO_MODEL_DIR
    hub = choose_backend("microsoft/Phi-3.5-vision-instruct")
    assert (hub.name, hub.target, hub.registered) == ("hf", "microsoft/Phi-3.5-vision-instruct", None)
    assert choose_backend(str(tmp_path)).name == "hf"
    assert choose_backend("C:\\models\\phi").name == "hf"  # a Windows drive is not a scheme
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoint:7").mkdir()  # an existing folder whose name looks like a scheme is still a folder
    assert (choose_backend("checkpoint:7").name, choose_backend("checkpoint:7").target) == ("hf", "checkpoint:7")
    assert [backend_name(m) for m in ("fake:x", "demo", "org/name")] == ["fake", "hf", "hf"]


def test_an_unknown_scheme_is_a_one_line_error():
    with pytest.raises(InputError) as raised:
        choose_backend("vllm:some/model")
    assert str(raised.value) == UNKNOWN
    with pytest.raises(InputError, match="unknown backend 'vllm'"):  # too long to be a folder: still one line
        choose_backend("vllm:" + "a" * 300)


def test_the_cli_refuses_an_unknown_backend_in_one_line(sample_dir, tmp_path):
    result = CliRunner().invoke(
        cli, ["scan", str(sample_dir), "--model", "vllm:some/model", "--db", str(tmp_path / "r.db"), "--no-report"]
    )
    assert result.exit_code == 1
    assert result.output == f"Error: {UNKNOWN}\n"
    assert not (tmp_path / "r.db").exists()  # refused before anything was written


def test_load_backend_builds_the_fake_backend_from_its_file(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["one", "two"]))
    backend = load_backend(f"fake:{answers}")
    assert isinstance(backend, FakeBackend)
    assert backend.describe()["model"] == "fake:answers.json"
    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), "white")]
    assert backend.generate(images, ["q", "q"], GenerationSettings()) == ["one", "two"]


def test_a_registered_backend_gets_the_scan_settings_as_one_options_object(monkeypatch):
    """A new backend is one registration; the scan's backend settings reach it as one BackendOptions."""
    seen: list[tuple[str, BackendOptions]] = []

    def load(target: str, options: BackendOptions) -> FakeBackend:
        seen.append((target, options))
        return FakeBackend(["ok"], model_name=f"probe:{target}")

    monkeypatch.setattr(inspector.backends.registry, "BACKENDS", dict(BACKENDS))
    register_backend("probe", scheme="probe", description="probe:NAME (a test backend)")(load)
    config = ScanConfig(
        inputs=["x"], model="probe:m1", device="cpu", dtype="float32", num_crops=8, attn_implementation="eager",
        fuse="none", quantize="fp8", trust_remote_code=True,
    )  # fmt: skip
    backend = config.load_backend()
    assert backend.model_name == "probe:m1"
    assert seen == [
        (
            "m1",
            BackendOptions(
                device="cpu", dtype="float32", trust_remote_code=True, attn_implementation="eager", num_crops=8,
                fuse="none", quantize="fp8",
            ),
        )
    ]  # fmt: skip
    assert "probe:NAME (a test backend)" in str(pytest.raises(InputError, choose_backend, "nope:x").value)
    with pytest.raises(ValueError, match="registered twice"):
        register_backend("probe", description="again")(load)


def test_every_backend_option_is_a_scan_setting():
    """`ScanConfig.backend_options()` takes the settings of the same names: a new one must exist on both."""
    scan_settings = set(ScanConfig.__dataclass_fields__)
    assert set(BackendOptions.__dataclass_fields__) <= scan_settings


def test_no_backend_prefix_checks_outside_the_registry():
    """Only `inspector/backends/registry.py` reads a model reference's scheme; everything else asks it."""
    package = Path(inspector.__file__).parent
    check = re.compile(
        r"""(startswith|removeprefix|partition|split)\(\(?\s*["']fake|==\s*["']fake:?["']|["']fake["']\s*=="""
    )
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path != package / "backends" / "registry.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if check.search(line)
    ]
    assert found == []
