"""A run's folder on the command line: one owner at a time, no stale files, a checkpoint to fall back
on, readable files, and failures that say what to do without changing anything."""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import warnings

import pytest
import torch
import yaml

from gflows import models, train
from gflows._files import atomic_write, remove_stale_temporaries
from gflows.train import checkpoint, runfolder
from gflows.train.__main__ import main
from gflows.train.loop import ResumeError

TINY = ["model.depth=2", "model.width=8", "train.steps=3", "train.eval_every=3", "train.eval_batch_size=100",
        "data.test_size=100", "train.progress=false"]
CONFIG = "digits-rot-coupling-C4"

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(capsys, *args):
    """Exit status and standard error of ``python -m gflows.train ARGS``, run in this process."""
    status = main(list(args))
    return status, capsys.readouterr().err


def _one_line_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _train(out, capsys, steps=3, *extra):
    status, err = _cli(capsys, "--config", CONFIG, "--out", str(out), "--override", *TINY, f"train.steps={steps}",
                       "train.checkpoint_every=1", *extra)
    assert status == 0, err


@contextlib.contextmanager
def _held_by_another_process(folder):
    """Another process holds ``folder`` until the block ends or the process is killed."""
    code = ("import sys\nfrom gflows.train import runfolder\nwith runfolder.hold(sys.argv[1]):\n"
            "    print('held', flush=True)\n    sys.stdin.read()")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    with _held_by_another_process(out) as holder:
        status, err = _cli(capsys, "--config", CONFIG, "--out", str(out), "--override", *TINY)
        assert status == 2 and f"process {holder.pid}" in _one_line_error(err)
        assert sorted(p.name for p in out.iterdir()) == [".lock"], "a refused run writes nothing"
        with pytest.raises(runfolder.RunFolderBusy, match=str(holder.pid)):
            train.fit(models.build("coupling", group="C4", data_shape=(2,), depth=1, width=4), torch.randn(16, 2),
                      options=train.Options(steps=1, batch_size=8, progress=False), out=out)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        _train(out, capsys)                      # the dead process's lock is taken over
    assert (out / "checkpoint.pt").is_file()


def test_resume_while_the_run_is_going_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, capsys)
    with _held_by_another_process(out) as running:
        status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
        assert status == 2 and f"process {running.pid}" in _one_line_error(err)
    with runfolder.hold(out), runfolder.hold(out):   # re-entrant within one process
        status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 0, err


def test_stale_temporary_files_are_removed_when_a_run_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, capsys)
    stale = [out / ".checkpoint.pt.k1ll3d.tmp", out / ".metrics.json.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("a user's file")
    status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=4")
    assert status == 0, err
    assert not any(path.exists() for path in stale) and (out / "notes.tmp").exists()


def test_remove_stale_temporaries_takes_exactly_what_atomic_write_leaves(tmp_path):
    class Crash(Exception):
        pass

    def crash(file):
        file.write(b"partial")
        raise Crash

    with pytest.raises(Crash):
        atomic_write(tmp_path / "x.pt", crash)
    assert list(tmp_path.iterdir()) == []                  # a failed write cleans up after itself ...
    left = tmp_path / ".x.pt.abc123.tmp"                   # ... a killed one cannot
    left.write_bytes(b"partial")
    (tmp_path / ".hidden").write_text("kept")
    assert remove_stale_temporaries(tmp_path) == [left] and (tmp_path / ".hidden").exists()


@pytest.mark.parametrize("damage", ["truncate", "empty", "missing"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, capsys, damage):
    out = tmp_path / "run"
    _train(out, capsys, steps=3)
    newest, previous = out / "checkpoint.pt", checkpoint.previous(out / "checkpoint.pt")
    assert train.load_checkpoint(newest)["progress"]["step"] == 3
    assert train.load_checkpoint(previous)["progress"]["step"] == 2
    if damage == "missing":           # a crash between keeping the previous file and renaming the new one
        newest.unlink()
    else:
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2] if damage == "truncate" else b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 0, err
    messages = [str(w.message) for w in caught if "previous checkpoint" in str(w.message)]
    assert len(messages) == 1 and "at step 2" in messages[0], [str(w.message) for w in caught]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["step"] for row in history] == [0, 3, 5]


def test_when_no_checkpoint_loads_the_resume_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, capsys)
    for path in (out / "checkpoint.pt", checkpoint.previous(out / "checkpoint.pt")):
        path.write_bytes(b"")
    status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 2
    line = _one_line_error(err)
    assert "checkpoint.pt does not load" in line and "checkpoint.previous.pt does not load" in line


def test_run_files_get_the_umasks_permissions(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        _train(tmp_path / "run", capsys)
    finally:
        os.umask(old)
    for name in ("config.yaml", "metrics.csv", "metrics.json", "checkpoint.pt", "checkpoint.previous.pt"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_a_checkpoint_of_another_process_count_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, capsys)
    for path in (out / "checkpoint.pt", checkpoint.previous(out / "checkpoint.pt")):
        state = train.load_checkpoint(path)
        state["world_size"] = 2
        checkpoint.save(state, path, keep_previous=False)
    status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 2 and "written by 2 process(es)" in _one_line_error(err) and "--nproc_per_node 2" in err


def test_a_resumed_run_keeps_its_configurations_name(tmp_path, capsys):
    out = tmp_path / "lr-sweep-3"
    _train(out, capsys)
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == CONFIG
    status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 0, err
    assert json.loads((out / "metrics.json").read_text())["config"]["name"] == CONFIG


def test_a_resume_that_cannot_go_on_changes_nothing_in_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, capsys)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    other_model = ["--config", "digits-rot-coupling-D4", "--out", str(out), "--resume", "--override", *TINY]
    status, err = _cli(capsys, *other_model)
    assert status == 2 and "model.group: 'C4' -> 'D4'" in _one_line_error(err)
    other_width = ["--config", CONFIG, "--out", str(out), "--resume", "--override", *TINY, "model.width=12"]
    status, err = _cli(capsys, *other_width)
    assert status == 2 and "model.width: 8 -> 12" in _one_line_error(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "a refused resume must not touch the run"
    status, err = _cli(capsys, "--out", str(out), "--resume", "--override", "train.steps=5")
    assert status == 0, err                                        # and the run still resumes with its own config

    empty = tmp_path / "empty"
    empty.mkdir()
    status, err = _cli(capsys, "--config", CONFIG, "--out", str(empty), "--resume", "--override", *TINY)
    assert status == 2 and "no checkpoint" in _one_line_error(err) and list(empty.iterdir()) == []
    status, err = _cli(capsys, "--out", str(tmp_path / "nowhere"), "--resume")
    assert status == 2 and "holds no run" in _one_line_error(err) and not (tmp_path / "nowhere").exists()


def test_resuming_fit_with_another_model_is_a_resume_error(tmp_path):
    data = torch.randn(16, 2)
    options = train.Options(steps=2, batch_size=8, progress=False)
    train.fit(models.build("coupling", group="C4", data_shape=(2,), depth=1, width=4), data, options=options, out=tmp_path)
    with pytest.raises(ResumeError, match="another model"):
        train.fit(models.build("coupling", group="C4", data_shape=(2,), depth=2, width=4), data,
                  options=train.Options(steps=3, batch_size=8, progress=False), out=tmp_path, resume=True)


def test_gflows_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("GFLOWS_DEBUG", "1")
    with pytest.raises(ResumeError):
        main(["--config", CONFIG, "--out", str(tmp_path), "--resume"])
