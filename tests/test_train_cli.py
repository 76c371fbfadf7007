"""Experiment configurations and the command line ``python -m gflows.train``."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from gflows.data import images
from gflows.train import experiment
from gflows.train.__main__ import main
from gflows.train.experiment import ConfigError

#: A few seconds on a CPU: the digits configuration shrunk to two tiny layers and three steps.
TINY = ["model.depth=2", "model.width=8", "train.steps=3", "train.eval_every=3", "train.eval_batch_size=100",
        "data.test_size=100", "train.progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_image_shapes_known_before_loading_are_those_of_the_data():
    assert set(experiment.DATA_SHAPES) == set(images.DATASETS)
    assert images.load("digits").shape == experiment.DATA_SHAPES["digits"]


def test_the_grid_ships_every_dataset_kind_and_group():
    names = set(experiment.available())
    for dataset in ("digits-rot", "fashion-rot", "cifar10", "cifar10-rot"):
        for kind in ("residual", "coupling", "iaf"):
            assert {f"{dataset}-{kind}-{g}" for g in ("trivial", "C4", "D4")} <= names
        assert {f"{dataset}-residual-{g}" for g in ("C8", "D8")} <= names


@pytest.mark.parametrize("name", [n for n in experiment.available() if n.startswith("digits-rot")])
def test_a_digits_configuration_builds_the_model_whose_parameters_it_records(name):
    config = experiment.load(name)
    count = sum(p.numel() for p in config.build_model().parameters())
    assert count == config.expected["parameters"]
    assert 0.9 < config.expected["parameters_vs_trivial"] < 1.1
    assert config.train.eval_group == "C4" and config.train.augment == "C4"


def _write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


BASE = "data: {name: digits}\nmodel: {kind: coupling, group: C4}\n"


@pytest.mark.parametrize("text, message", [
    (BASE + "train: {stpes: 10}", r"train: unknown key 'stpes' \(did you mean 'steps'\?\)"),
    (BASE + "trian: {steps: 10}", r"unknown key 'trian' \(did you mean 'train'\?\)"),
    (BASE + "train: {steps: ten}", r"train.steps: expected an int, got 'ten'"),
    (BASE + "train: {lr: fast}", r"train.lr: expected a float, got 'fast'"),
    (BASE + "train: {betas: [0.9]}", r"train.betas: expected a list of 2 numbers"),
    (BASE + "train: {batch_size: 0}", r"train: batch_size must be a positive integer"),
    (BASE + "train: {eval_group: D33}", r"unknown group 'D33'"),
    ("data: {name: cifar100}\nmodel: {kind: coupling}", r"data.name: unknown dataset 'cifar100' \(did you mean 'cifar10'\?\)"),
    ("data: {name: digits}\nmodel: {kind: resdiual}", r"model.kind: unknown kind 'resdiual' \(did you mean 'residual'\?\)"),
    ("data: {name: digits}\nmodel: {kind: residual, group: Q4}", r"model.group: unknown group 'Q4'"),
    ("data: {name: digits}\nmodel: {kind: residual, widht: 8}", r"unknown key 'widht' \(did you mean 'width'\?\)"),
    ("data: {name: digits}\nmodel: {kind: residual, coeff: high}", r"model.coeff: expected a float"),
    ("data: {name: digits}\nmodel: {kind: coupling, group: C8}", r"coupling with group C8 does not fit images of shape \(1, 8, 8\)"),
    ("data: {name: digits, train_size: 10, train_fraction: 0.5}\nmodel: {kind: iaf}", r"train_size or train_fraction, not both"),
    ("model: {kind: iaf}", r"needs a 'data' section"),
])
def test_invalid_configurations_are_refused_with_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        experiment.load(_write(tmp_path, text))


def test_bases_overrides_and_yaml_number_spellings(tmp_path):
    config = experiment.load(_write(tmp_path, "base: _digits-rot\nmodel: {kind: iaf, group: D4}\ntrain: {lr: 3e-4, steps: 2e3}"),
                             ["train.warmup_steps=10", "model.width=16", "train.betas=[0.8, 0.9]"])
    assert config.data.name == "digits" and config.train.augment == "C4"  # from the base
    assert config.train.lr == 3e-4 and config.train.steps == 2000 and config.train.warmup_steps == 10
    assert config.model["width"] == 16 and config.train.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match="section.key=value"):
        experiment.load("digits-rot-iaf-C4", ["lr=3"])
    with pytest.raises(ConfigError, match=r"no configuration 'digits-rot-iaf-C5'.*did you mean 'digits-rot-iaf-C4'"):
        experiment.load("digits-rot-iaf-C5")
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        config.check_processes(3)
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="cycle"):
        experiment.load(tmp_path / "a.yaml")


def test_the_command_line_trains_resumes_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "gflows.train", "--config", "digits-rot-coupling-C4", "--out", str(out), "--override", *TINY]
    single_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors (see the fixture above)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=single_thread)
    assert finished.returncode == 0, finished.stderr
    assert "finished digits-rot-coupling-C4" in finished.stdout
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == [0, 3]
    assert all(0 < float(row["test_bpd"]) < 16 and float(row["invariance_gap_max"]) < 1e-3 for row in rows)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["width"] == 8

    assert main(["--config", "digits-rot-coupling-C4", "--out", str(out), "--override", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "--override", "train.steps=5"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["step"] for row in history] == [0, 3, 5]
