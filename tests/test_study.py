"""Tests of gflows.study: invariant data by fixed random elements, run folders keyed by their settings,
train-or-load with resume and checksums, and the summaries of the chapters' tables."""

import dataclasses
import json
import shutil
import statistics

import pytest
import torch

from gflows import groups, study, train
from gflows.data import images
from threads import single_thread

SETUP = study.Setup(study.Data("digits", symmetry="D4", test_size=40),
                    model=dict(depth=1, width=4),
                    options=train.Options(steps=6, batch_size=16, lr=3e-3, eval_every=2, ema_decay=0.9))
RUN = study.Run("coupling", "D4", fraction=1 / 16, seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """RUN trained once, in one thread: (its root folder, its outcome)."""
    root = tmp_path_factory.mktemp("finished")
    with single_thread():
        return root, study.train_or_load(RUN, SETUP, root)


def metrics(history):
    """The history without the wall-clock (the only column that differs between identical runs)."""
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_rotated_moves_each_image_by_an_exact_element_of_the_group():
    digits = images.load("digits")
    moved = study.rotated(digits, "D4", seed=3)
    D4 = groups.get("D4")
    orbit = torch.stack([D4.act_image(digits.pixels, g) for g in D4.exact_elements()], 1)   # (N, 8, C, H, W)
    which = (orbit == moved.pixels[:, None]).flatten(2).all(2).float().argmax(1)
    assert torch.equal(orbit[torch.arange(len(digits)), which], moved.pixels)
    assert torch.equal(moved.labels, digits.labels) and moved.pixels.dtype == torch.uint8
    assert torch.bincount(which, minlength=8).min() > 100                 # all eight elements are drawn
    assert torch.equal(study.rotated(digits, "D4", seed=3).pixels, moved.pixels)
    assert not torch.equal(study.rotated(digits, "D4", seed=4).pixels, moved.pixels)


def test_validation_images_are_held_out_of_the_training_pool():
    pool, validation, test_set = study.load_data(SETUP.data)
    assert (len(pool), len(validation), len(test_set)) == (1200, 300, 40)
    everything = study.load_data(study.Data("digits", symmetry="D4", validation_size=1))
    whole = torch.cat([everything[0].pixels, everything[1].pixels]).flatten(1)
    assert sorted(map(tuple, torch.cat([pool.pixels, validation.pixels]).flatten(1).tolist())) == sorted(map(tuple, whole.tolist()))
    with pytest.raises(ValueError, match="hold out"):
        study.held_out(pool, 0, seed=0)


def test_run_folders_change_with_every_setting_that_changes_the_result(tmp_path):
    folder = study.run_folder(RUN, SETUP, tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith("coupling-D4-f0.0625-s1-")
    assert study.run_folder(study.Run("coupling", "D4", 1 / 16, 1), SETUP, tmp_path) == folder
    other_options = dataclasses.replace(SETUP, options=dataclasses.replace(SETUP.options, lr=1e-3))
    for run, setup in [(dataclasses.replace(RUN, seed=2), SETUP), (dataclasses.replace(RUN, augment="D4"), SETUP),
                       (RUN, other_options), (RUN, dataclasses.replace(SETUP, model=dict(depth=2, width=4))),
                       (RUN, dataclasses.replace(SETUP, data=study.Data("digits", symmetry="C4", test_size=40)))]:
        assert study.run_folder(run, setup, tmp_path) != folder
    unimportant = dataclasses.replace(SETUP, options=dataclasses.replace(SETUP.options, progress=True, device="cpu"))
    assert study.run_folder(RUN, unimportant, tmp_path) == folder


def test_train_or_load_trains_once_then_loads_the_same_result(finished, monkeypatch):
    root, outcome = finished
    assert [row["step"] for row in outcome.history] == [2, 4, 6]
    assert outcome.selected == min(outcome.history, key=lambda row: row["valid_bpd"])
    assert outcome.train_size == 75 and outcome.parameters == sum(p.numel() for p in study.build_model(RUN, SETUP).parameters())
    assert all(row["invariance_gap_max"] < 1e-3 for row in outcome.history)   # a D4 model on D4-moved test images

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(study, "fit", no_training)
    again = study.train_or_load(RUN, SETUP, root)
    assert again.history == outcome.history
    model = again.load_model()                                  # the EMA weights of the selected row
    test_set = study.load_data(SETUP.data)[2]
    options = SETUP.options_for(RUN)
    measured = train.evaluate(model, images.eval_batches(test_set, options.eval_batch_size, seed=train.derive_seed(RUN.seed, "test")),
                              groups.get("D4"), seed=train.derive_seed(RUN.seed, "eval"))
    assert measured["test_bpd"] == pytest.approx(outcome.selected["test_bpd"], abs=1e-6)


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(finished, tmp_path, monkeypatch):
    _, reference = finished
    fit = study.fit

    def killed_at_step_3(*args, **kwargs):
        def kill(step, history):
            if step == 3:
                raise KeyboardInterrupt

        return fit(*args, **kwargs, callback=kill)

    monkeypatch.setattr(study, "fit", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        study.train_or_load(RUN, SETUP, tmp_path / "killed")
    folder = study.run_folder(RUN, SETUP, tmp_path / "killed")
    assert (folder / study.CHECKPOINT).is_file() and not (folder / study.RESULT).exists()
    assert [row["step"] for row in json.loads((folder / study.STAGES).read_text())] == [2]
    monkeypatch.setattr(study, "fit", fit)
    resumed = study.train_or_load(RUN, SETUP, tmp_path / "killed")
    assert metrics(resumed.history) == metrics(reference.history)


def test_a_changed_checkpoint_is_refused(finished, tmp_path):
    root, _ = finished
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    outcome = study.train_or_load(RUN, SETUP, tmp_path)
    path = outcome.folder / study.BEST
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(study.CorruptRun, match="delete"):
        study.train_or_load(RUN, SETUP, tmp_path)
    with pytest.raises(study.CorruptRun):
        outcome.load_model()


def test_run_all_in_two_worker_processes_matches_one_process(finished, tmp_path):
    runs = [RUN, study.Run("coupling", "trivial", fraction=1 / 16, seed=1, augment="D4")]
    parallel = study.run_all(runs, SETUP, tmp_path, workers=2)
    assert [o.run for o in parallel] == runs
    assert metrics(parallel[0].history) == metrics(finished[1].history)
    with pytest.raises(ValueError, match="workers"):
        study.run_all(runs, SETUP, tmp_path, workers=0)
    record = json.loads((parallel[1].folder / study.RESULT).read_text())
    assert record["key"]["options"]["augment"] == "D4" and record["key"]["options"]["eval_group"] == "D4"


def outcome_with(label_run, values, steps=(0, 10)):
    history = [{"step": s, "time_s": 0.5 * s, "test_bpd": v, "valid_bpd": v} for s, v in zip(steps, values)]
    return study.Outcome(label_run, SETUP, history, parameters=1, train_size=1, folder=None)


def test_summaries_over_seeds():
    a = [outcome_with(study.Run("coupling", "D4", 0.5, seed), [5.0, v]) for seed, v in enumerate([2.0, 2.5, 3.5])]
    b = [outcome_with(study.Run("coupling", "trivial", 0.5, 0), [6.0, 4.0])]
    summaries = study.summarize(a + b)
    assert study.summarize(a + b, row="final") == summaries                  # the last rows have the least bits/dim
    assert study.summarize(a, "test_bpd", row="selected")[("coupling D4", 0.5)].n == 3
    with pytest.raises(ValueError, match="selected"):
        study.summarize(a, row="best")
    assert summaries[("coupling D4", 0.5)].mean == pytest.approx(statistics.mean([2.0, 2.5, 3.5]))
    assert summaries[("coupling D4", 0.5)].std == pytest.approx(statistics.stdev([2.0, 2.5, 3.5]))
    assert summaries[("coupling trivial", 0.5)] == study.Summary(4.0, 0.0, 1)
    assert str(summaries[("coupling D4", 0.5)]) == "2.667 ± 0.764" and str(summaries[("coupling trivial", 0.5)]) == "4.000"
    assert study.labels(b + a) == ["coupling trivial", "coupling D4"]
    text = study.table(summaries, ["coupling trivial", "coupling D4"], [0.5, 1.0], {0.5: 750, 1.0: 1500})
    assert text.splitlines()[0].split() == ["750", "img", "1500", "img"]
    assert text.splitlines()[2].split()[2:] == ["2.667", "±", "0.764", "-"]
    assert study.table(summaries, ["coupling D4"], [0.5], digits=0).splitlines()[1].split()[2:] == ["3", "±", "1"]
    xs, points = study.mean_curve(a, x="time_s")
    assert xs == [0.0, 5.0] and points[0] == study.Summary(5.0, 0.0, 3)
    with pytest.raises(ValueError, match="different steps"):
        study.mean_curve([a[0], outcome_with(study.Run("coupling", "D4"), [1.0, 2.0], steps=(0, 20))])


def test_time_steps_times_real_training_steps():
    wall, cpu = study.time_steps(RUN, SETUP, steps=2)
    assert wall > 0 and cpu > 0
    model = study.build_model(RUN, SETUP)
    before = [p.detach().clone() for p in model.parameters()]
    study.seconds_per_step(model, next(images.eval_batches(study.load_data(SETUP.data)[2], 8)), steps=1)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # the optimiser stepped
