"""One process per device scanning shards into one run (what `--gpus` does), exercised on CPU processes."""

from __future__ import annotations

import json
import sqlite3

import pytest

from inspector.discovery import discover
from inspector.errors import InputError, InspectorError
from inspector.multigpu import parse_gpus, scan_on_devices
from inspector.scan import ScanConfig, with_report_and_metrics
from inspector.store import open_store


def test_shards_in_spawned_processes_fill_one_run_without_duplicates(tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"brand": "Acme", "price": 12.5}'] * n_images))
    db = tmp_path / "multi.db"
    config = ScanConfig(
        inputs=[str(sample_dir)], model=f"fake:{answers}", db=str(db), report=str(tmp_path / "r.html"),
        truth=str(sample_dir / "truth.csv"), batch_size=4,
    )  # fmt: skip
    summary = scan_on_devices(config, ["cpu", "cpu"])
    assert (summary.processed, summary.failed, summary.status) == (n_images, 0, "completed")
    assert summary.report_path is None and not (tmp_path / "r.html").exists()  # the caller writes it, once
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select run_id, image_id from predictions").fetchall()
        truth_rows = connection.execute("select count(*) from truth").fetchone()[0]
    assert len(rows) == len(set(rows)) == n_images
    assert {run_id for run_id, _ in rows} == {summary.run_id}
    assert truth_rows == n_images
    store = open_store(db)
    run = store.get_run(summary.run_id)
    assert (run.status, run.n_images) == ("completed", n_images)
    assert len(store.list_runs()) == 1
    assert with_report_and_metrics(config, store, summary).report_path == str(tmp_path / "r.html")
    assert (tmp_path / "r.html").is_file() and summary.metrics["brand"]["n"] == n_images

    # the same scan again, now on one process: it resumes that run and finds nothing left to do
    again = scan_on_devices(config, ["cpu"])
    assert (again.run_id, again.processed, again.already_done) == (summary.run_id, 0, n_images)


def test_parse_gpus():
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("2", 4) == [0, 1]
    assert parse_gpus("1,3", 4) == [1, 3]
    with pytest.raises(InputError, match="only 2 GPU"):
        parse_gpus("3", 2)
    with pytest.raises(InputError, match="none is visible"):
        parse_gpus("all", 0)
    with pytest.raises(InputError, match="takes 'all'"):
        parse_gpus("many", 2)


def test_a_shard_that_cannot_start_is_one_error_without_tracebacks(tmp_path, sample_dir, capfd):
    from inspector.multigpu import ShardError

    config = ScanConfig(
        inputs=[str(sample_dir)], model=f"fake:{tmp_path / 'missing.json'}", db=str(tmp_path / "m.db"), report=None
    )
    with pytest.raises(ShardError, match="fake model answers file") as raised:
        scan_on_devices(config, ["cpu", "cpu"])
    assert isinstance(raised.value, InspectorError)  # the CLI prints it as one `Error:` line
    assert "Traceback" not in capfd.readouterr().err


class _DiesInShardOne(ScanConfig):
    """A shard whose process is killed outright (like the OOM killer does): no error event ever reaches the parent."""

    def load_backend(self):
        if self.shard[0] == 1:
            import os

            os._exit(9)
        return super().load_backend()


def test_a_shard_killed_outright_fails_the_run(tmp_path, sample_dir):
    from inspector.multigpu import ShardError

    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    config = _DiesInShardOne(
        inputs=[str(sample_dir)], model=f"fake:{answers}", db=str(tmp_path / "k.db"), report=None, limit=4
    )
    with pytest.raises(ShardError, match="shard 1: .*exit code 9"):
        scan_on_devices(config, ["cpu", "cpu"])
    store = open_store(tmp_path / "k.db")
    assert store.list_runs()[0].status == "failed"


class _SlowConfig(ScanConfig):
    """Each shard's model takes a while per batch, so that the scan is still running when it is stopped."""

    def load_backend(self):
        import time

        backend = super().load_backend()
        generate = backend.generate

        def slow(*args, **kwargs):
            time.sleep(0.3)
            return generate(*args, **kwargs)

        backend.generate = slow
        return backend


SIGTERM_PARENT = """
import sys
sys.path.insert(0, sys.argv[1])
from inspector.interrupts import stop_signals_as_interrupts
from inspector.multigpu import scan_on_devices
from test_multigpu import _SlowConfig

class Progress:
    def start(self, total, already_done): pass
    def advance(self, n_images, n_failed): print("advanced", flush=True)
    def message(self, text): pass

config = _SlowConfig(inputs=[sys.argv[2]], model="fake:" + sys.argv[3], db=sys.argv[4], report=None, batch_size=2)
with stop_signals_as_interrupts():
    try:
        scan_on_devices(config, ["cpu", "cpu"], Progress())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_sigterm_stops_every_shard_and_closes_the_run_interrupted(tmp_path, sample_dir):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"brand": "Acme"}'] * 100))
    db = tmp_path / "m.db"
    parent = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_PARENT, str(Path(__file__).parent), str(sample_dir), str(answers), str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout.readline() == "advanced\n"
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0 and out.splitlines()[-1] == "interrupted", err
    run = open_store(db).list_runs()[0]
    assert run.status == "interrupted"
    assert 0 < run.n_images < len(discover([sample_dir]))  # stopped part-way: the rest is there to resume


def test_the_command_line_writes_the_report_of_a_scan_on_several_devices(tmp_path, sample_dir, monkeypatch):
    """`scan --gpus N` ends like every scan: one report and the metrics, written by `with_report_and_metrics`
    (here the N devices are CPU processes, as GPUs are not there)."""
    from click.testing import CliRunner

    import inspector.multigpu
    from inspector.cli import cli

    n_images = len(discover([sample_dir]))
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"brand": "Acme", "price": 12.5}'] * n_images))
    used: list[object] = []

    def on_cpus(config, gpus, progress=None, store=None):
        used.append(gpus)
        return scan_on_devices(config, ["cpu", "cpu"], progress, store)

    monkeypatch.setattr(inspector.multigpu, "scan_on_gpus", on_cpus)
    report = tmp_path / "r.html"
    result = CliRunner().invoke(
        cli,
        ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(tmp_path / "m.db"), "--gpus", "2",
         "--truth", str(sample_dir / "truth.csv"), "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert used == ["2"]
    assert report.is_file()
    assert f"Report: {report}" in result.output
