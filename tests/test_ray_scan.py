"""`inspector scan --ray` on a simulated multi-node Ray cluster (CPU only): the same run as a local scan, whatever
dies on the way. One module-scoped cluster (two nodes, two CPUs and an 80 MB object store each) serves every test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import postgres_server, postgres_url  # noqa: F401 - fixtures

from inspector.backends.fake import pixel_key
from inspector.cli import cli
from inspector.discovery import discover, read_source
from inspector.errors import RayError
from inspector.images import decode_image
from inspector.prompts import format_answer, get_prompt
from inspector.scan import ScanConfig, Scanner
from inspector.store import open_store
from inspector.truth import load_truth

ray = pytest.importorskip("ray", reason="Ray tests need pip install 'inspector[ray]'")

from inspector.ray_scan import AnswerStage, parse_address, scan_on_ray  # noqa: E402

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
OBJECT_STORE = 80 * 2**20


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node on this machine; this test process is the driver."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": OBJECT_STORE}
    )
    nodes.add_node(num_cpus=2, object_store_memory=OBJECT_STORE)
    ray.init(address=nodes.address)
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_dir_module) -> Path:
    """The sample listings, one image that cannot be decoded, and their catalogue."""
    folder = tmp_path_factory.mktemp("ray-images")
    for path in sample_dir_module.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "999_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def sample_dir_module() -> Path:
    folder = REPO / "sample_images"
    if not (folder / "truth.csv").is_file():
        pytest.fail("sample_images/truth.csv is missing: regenerate with `inspector samples sample_images`")
    return folder


@pytest.fixture(scope="module")
def answers_file(images: Path, tmp_path_factory) -> str:
    """A keyed fake model: each image's catalogue values as its answer, every third one with a wrong brand, so
    that answers, parsing and scoring all show in the rows."""
    sources = [s for s in discover([images]) if not s.location.endswith("broken.jpg")]
    match = load_truth(images / "truth.csv").match([s.path for s in sources], [images])
    answers = {}
    for index, source in enumerate(sources):
        fields = match.records[source.path].fields
        if index % 3 == 0:
            fields.brand = "Not The Brand"
        answers[pixel_key(decode_image(read_source(source)).image)] = format_answer(fields)
    path = tmp_path_factory.mktemp("answers") / "answers.json"
    path.write_text(json.dumps(answers))
    return f"fake:{path}"


def config_for(images: Path, model: str, db: str, **options) -> ScanConfig:
    return ScanConfig(
        inputs=[str(images)], model=model, db=db, report=None, truth=str(images / "truth.csv"), **options
    )


def comparable_rows(db: str) -> list[dict]:
    """Everything stored about a run's images, less what differs between any two scans (ids, times)."""
    with open_store(db) as store:
        (run,) = store.list_runs()
        rows = store.run_rows(run.id)
    for row in rows:
        for key in ("image_id", "prediction_id", "latency_ms", "created_at"):
            row.pop(key)
    return rows


def local_scan(config: ScanConfig) -> None:
    with open_store(config.db) as store:
        summary = Scanner(config, config.load_backend(), store).run()
    assert summary.status == "completed"


def prediction_counts(db: str) -> tuple[int, int]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "select count(*), count(distinct run_id || '-' || image_id) from predictions"
        ).fetchone()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_ray_scan_on_two_nodes_stores_the_same_rows_as_a_local_scan(
    cluster, images, answers_file, tmp_path, request, database
) -> None:
    local = config_for(images, answers_file, str(tmp_path / "local.db"), batch_size=4)
    local_scan(local)
    db = str(tmp_path / "ray.db") if database == "sqlite" else request.getfixturevalue("postgres_url")
    config = config_for(images, answers_file, db, batch_size=4)

    summary = scan_on_ray(config, actors=2)

    assert (summary.status, summary.found, summary.processed, summary.failed) == ("completed", 37, 37, 1)
    assert summary.run_key == local.run_key(get_prompt(None, None, None))
    expected = comparable_rows(local.db)
    assert len(expected) == 37
    assert comparable_rows(db) == expected
    with open_store(db) as store:
        (run,) = store.list_runs()
        assert (run.status, run.n_images, run.n_failed, run.backend) == ("completed", 37, 1, "fake")


def test_a_second_ray_scan_resumes_the_run_and_answers_nothing_again(cluster, images, answers_file, tmp_path):
    config = config_for(images, answers_file, str(tmp_path / "r.db"), batch_size=4)
    first = scan_on_ray(config, actors=1)

    again = scan_on_ray(config, actors=1)

    assert again.run_id == first.run_id
    assert (again.already_done, again.processed) == (37, 0)
    assert prediction_counts(config.db) == (37, 37)


def test_an_answer_with_a_number_no_float_holds_stops_no_ray_scan(cluster, images, answers_file, tmp_path):
    """A 309+ digit price raised OverflowError in the parse stage: Ray retried the task, the run ended `failed`,
    and every rerun failed the same way."""
    answers = json.loads(Path(answers_file.removeprefix("fake:")).read_text())
    first = sorted(answers)[0]
    answers[first] = '{"brand": "Huge", "price": ' + "9" * 400 + "}"
    huge = tmp_path / "answers.json"
    huge.write_text(json.dumps(answers))
    config = config_for(images, f"fake:{huge}", str(tmp_path / "r.db"), batch_size=4)

    summary = scan_on_ray(config, actors=1)

    assert (summary.status, summary.processed, summary.unrepresentable_values) == ("completed", 37, 1)
    with open_store(config.db) as store:
        (row,) = [r for r in store.run_rows(summary.run_id) if r["predicted"]["brand"] == "Huge"]
    assert (row["error"], row["predicted"]["price"]) == (None, None)
    again = scan_on_ray(config, actors=1)
    assert (again.status, again.already_done) == ("completed", 37)


class DiesOnce(AnswerStage):
    """The model stage, except that the first actor to reach its second batch while the marker file exists
    removes it and dies on the spot (as if killed or out of memory): a real mid-scan death, once."""

    marker: str = ""

    def __init__(self, config: ScanConfig) -> None:
        super().__init__(config)
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        self.calls += 1
        if self.calls == 2:
            try:
                os.remove(self.marker)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return super().__call__(batch)


def test_a_model_actor_that_dies_mid_scan_loses_and_duplicates_nothing(
    cluster, images, answers_file, tmp_path, monkeypatch
):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    marker = tmp_path / "die-once"
    marker.write_text("")
    monkeypatch.setattr(DiesOnce, "marker", str(marker))
    local = config_for(images, answers_file, str(tmp_path / "local.db"), batch_size=2)
    local_scan(local)
    config = config_for(images, answers_file, str(tmp_path / "ray.db"), batch_size=2)

    summary = scan_on_ray(config, actors=2, answer_stage=DiesOnce)

    assert not marker.exists()  # an actor did die
    assert (summary.status, summary.processed, summary.duplicates) == ("completed", 37, 0)
    assert prediction_counts(config.db) == (37, 37)
    assert comparable_rows(config.db) == comparable_rows(local.db)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "phi3v"])
def test_the_tiny_model_gives_the_same_answers_on_ray_as_locally(cluster, images, tmp_path, request, family):
    """Greedy, fp32, one image per call: the answer depends on the image alone, not on which actor or batch.
    Phi-3.5-vision also makes its inputs per image (`prepare_item`), in the actor's threads."""
    model = request.getfixturevalue(f"tiny_{family}")
    options = {"batch_size": 1, "max_new_tokens": 12, "device": "cpu", "dtype": "fp32", "limit": 8}
    if family == "phi3v":
        options["num_crops"] = 1  # 336×336 pixels per image: enough to test, quick on a CPU
    local = config_for(images, str(model), str(tmp_path / "local.db"), **options)
    local_scan(local)
    config = config_for(images, str(model), str(tmp_path / "ray.db"), **options)

    summary = scan_on_ray(config, actors=2)

    assert (summary.status, summary.processed) == ("completed", 8)
    rows = comparable_rows(config.db)
    assert all(r["error"] is None and r["raw_output"] for r in rows)
    assert [r["raw_output"] for r in rows] == [r["raw_output"] for r in comparable_rows(local.db)]
    assert rows == comparable_rows(local.db)


@pytest.mark.slow
def test_a_killed_driver_is_resumed_by_rerunning_the_command(cluster, images, tiny_llava, tmp_path):
    db = tmp_path / "r.db"
    args = [
        "scan", str(images), "--model", str(tiny_llava), "--db", str(db), "--no-report", "--batch-size", "1",
        "--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "48", "--min-new-tokens", "48",
        "--ray", cluster.address,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "inspector", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stored = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                stored = prediction_counts(str(db))[0]
            except sqlite3.OperationalError:  # tables not created yet
                continue
            if stored > 0:
                break
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert 0 < stored < 37, driver.stderr.read().decode()[-2000:]
    at_kill = prediction_counts(str(db))[0]

    result = CliRunner().invoke(cli, args)  # this process already is a driver of the cluster: it resumes there

    assert result.exit_code == 0, result.output
    assert f", {at_kill} already done" in result.output
    assert prediction_counts(str(db)) == (37, 37)
    with open_store(str(db)) as store:
        (run,) = store.list_runs()
        assert run.status == "completed"


@pytest.mark.slow
def test_sigterm_stops_a_ray_driver_within_seconds_with_the_run_interrupted(cluster, images, tiny_llava, tmp_path):
    """ray.init replaced our SIGTERM handler with one that exits with status 15: the run ended `failed`."""
    db = tmp_path / "r.db"
    args = [
        "scan", str(images), "--model", str(tiny_llava), "--db", str(db), "--no-report", "--batch-size", "1",
        "--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "48", "--min-new-tokens", "48",
        "--ray", cluster.address,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "inspector", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and driver.poll() is None and stored == 0:
        time.sleep(0.05)
        try:
            stored = prediction_counts(str(db))[0] if db.exists() else 0
        except sqlite3.OperationalError:  # tables not created yet
            continue
    stopped = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    try:
        out, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert time.monotonic() - stopped <= 5, err[-2000:]
    assert driver.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.splitlines()[-1] == "Stopped (SIGTERM).", err[-2000:]
    with open_store(str(db)) as store:
        (run,) = store.list_runs()
    assert (run.status, run.n_images) == ("interrupted", prediction_counts(str(db))[0])
    assert 0 < run.n_images < 37


def test_an_address_where_nothing_answers_is_a_one_line_error_within_seconds(images, answers_file, tmp_path):
    """Ray retried 127.0.0.1:1 for more than 200 s, and Ctrl-C then took 36 s."""
    args = ["scan", str(images), "--model", answers_file, "--db", str(tmp_path / "r.db"), "--no-report",
            "--ray", "127.0.0.1:1"]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | {"PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "inspector", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == (
        "Error: cannot join a Ray cluster at 127.0.0.1:1: nothing answers there (connection refused); "
        "start one there (`ray start --head`) or check the address"
    )
    assert "Traceback" not in done.stderr


def test_gpus_on_a_cluster_without_gpus_is_a_one_line_error(cluster, images, answers_file, tmp_path):
    args = ["scan", str(images), "--model", answers_file, "--db", str(tmp_path / "r.db"), "--gpus", "2", "--ray"]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: --gpus 2: the Ray cluster has no GPUs (check `ray status` on the head node)"
    )
    assert not (tmp_path / "r.db").exists() or prediction_counts(str(tmp_path / "r.db")) == (0, 0)


def test_ray_missing_is_a_one_line_error_naming_the_extra(images, answers_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    args = ["scan", str(images), "--model", answers_file, "--db", str(tmp_path / "r.db"), "--ray"]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 1
    assert result.output == "Error: --ray needs Ray Data, which is not installed: pip install 'inspector[ray]'\n"
    assert not (tmp_path / "r.db").exists()


def test_a_path_typed_after_ray_is_scanned_not_taken_for_an_address(images, answers_file, tmp_path, monkeypatch):
    """Issue 20.7: `scan --ray ./images` read ./images as --ray's value. It is a path: --ray goes on, alone (here
    to the missing extra's one-line error, which comes only once the address is settled)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    args = ["scan", "--model", answers_file, "--db", str(tmp_path / "r.db"), "--ray", str(images)]

    result = CliRunner().invoke(cli, args)

    assert result.output == "Error: --ray needs Ray Data, which is not installed: pip install 'inspector[ray]'\n"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("local", None),  # --ray alone
        ("auto", "auto"),
        ("10.0.0.5:6379", "10.0.0.5:6379"),
        ("head.example.com:6379", "head.example.com:6379"),
        ("ray://head:10001", "ray://head:10001"),
    ],
)
def test_ray_addresses(value, address) -> None:
    assert parse_address(value) == address


@pytest.mark.parametrize("value", ["images/", "./more_images", "photos"])
def test_a_path_after_ray_is_not_taken_for_an_address(value) -> None:
    with pytest.raises(RayError, match="put --ray after the paths to scan"):
        parse_address(value)


def test_importing_inspector_and_a_local_scan_never_import_ray(images, answers_file, tmp_path) -> None:
    code = (
        "import sys\n"
        "from inspector.cli import cli\n"
        f"cli.main({['scan', str(images), '--model', answers_file, '--db', str(tmp_path / 'r.db'), '--no-report']!r},"
        " standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "ok"


def test_a_rerun_with_nothing_to_do_does_not_start_ray(images, answers_file, tmp_path, monkeypatch) -> None:
    """Issue 20.9: a rerun with every image stored took 36 s (Ray starting) against 11 s for a local rerun. The
    driver finds every file stored, by its bytes' sha256 as a local rerun does, and never starts Ray; a file
    changed at the same path still goes to Ray."""
    import inspector.ray_scan as ray_scan

    config = config_for(images, answers_file, str(tmp_path / "r.db"), batch_size=8)
    local_scan(config)  # a local scan and a Ray scan of the same images are one run
    started = []

    def connect(address):
        started.append(address)
        raise RayError("Ray was started")

    monkeypatch.setattr(ray_scan, "connect", connect)
    again = scan_on_ray(config)
    assert started == []
    assert (again.run_id, again.status, again.found, again.already_done, again.processed) == (1, "completed", 37, 37, 0)
    with open_store(config.db) as store:
        (run,) = store.list_runs()
        assert (run.status, run.n_images, run.stats["ray"]) == ("completed", 37, {"started": False})

    changed = tmp_path / "changed"
    shutil.copytree(images, changed)
    moved = config_for(changed, answers_file, str(tmp_path / "r.db"), batch_size=8)
    local_scan(moved)
    (changed / "999_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 other broken bytes")
    with pytest.raises(RayError, match="Ray was started"):
        scan_on_ray(moved)


def test_rays_log_lines_go_to_a_file_not_over_the_progress_bar(cluster, images, answers_file, tmp_path, monkeypatch, capfd):
    """Issue 20.9: Ray's INFO lines ("Starting execution of Dataset ...") were printed over the progress bar."""
    import inspector.ray_scan as ray_scan

    log = tmp_path / "ray" / "inspector-driver.log"
    monkeypatch.setattr(ray_scan, "ray_log_file", lambda: log)
    config = config_for(images, answers_file, str(tmp_path / "r.db"), batch_size=8, limit=4)
    capfd.readouterr()

    summary = scan_on_ray(config, "auto", actors=1)

    assert summary.status == "completed"
    printed = capfd.readouterr()
    assert "Starting execution of Dataset" not in printed.out + printed.err
    assert "streaming_executor" not in printed.out + printed.err
    assert "Starting execution of Dataset" in log.read_text(encoding="utf-8")
