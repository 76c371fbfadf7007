"""Benchmark scripts run in their quick mode and write the JSON their README promises."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    """The script as a module of that name (registered, so that its functions can run in spawned processes)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_residual_speed_quick_run_compares_both_variants_with_their_twins(tmp_path):
    out = tmp_path / "residual.json"
    _load("residual_speed").main(["--quick", "--groups", "trivial,C4", "--out", str(out)])
    document = json.loads(out.read_text())
    runs = {(r["variant"], r["group"]): r for r in document["results"]}
    assert set(runs) == {(v, g) for v in ("multiscale", "full-resolution") for g in ("trivial", "C4")}
    assert document["machine"]["torch"]
    for (variant, group), result in runs.items():
        assert result["images_per_s"] > 0 and result["peak_memory_mb"] > 0 and result["parameters"] > 0
        assert result["z_equivariance_error"] < 1e-5
        twin = runs[(variant, "trivial")]
        assert result["throughput_vs_twin"] == pytest.approx(result["images_per_s"] / twin["images_per_s"])
        assert 0.9 < result["parameters"] / twin["parameters"] < 1.1


def test_coupling_speed_quick_run_compares_both_kinds_with_their_twins(tmp_path):
    out = tmp_path / "coupling.json"
    _load("coupling_speed").main(["--quick", "--groups", "trivial,D4", "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert {(r["kind"], r["group"]) for r in results} == {(k, g) for k in ("coupling", "iaf") for g in ("trivial", "D4")}
    for result in results:
        assert result["images_per_s"] > 0 and result["peak_memory_mb"] > 0 and result["z_equivariance_error"] < 1e-5
        assert result["throughput_vs_twin"] == 1.0 if result["group"] == "trivial" else result["throughput_vs_twin"] > 0


def test_train_throughput_quick_run_times_training_and_the_time_to_a_target(tmp_path):
    out = tmp_path / "train.json"
    _load("train_throughput").main(["--quick", "--kinds", "coupling", "--groups", "trivial,C4", "--out", str(out)])
    results = {r["group"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"trivial", "C4"}
    for result in results.values():
        assert result["images_per_s"] > 0 and result["peak_memory_mb"] > 0 and result["z_equivariance_error"] < 1e-5
        assert 0.9 < result["parameters"] / result["twin_parameters"] < 1.1  # widths matched to the twin
        assert 0 < result["steps_to_target"] <= 60 and result["time_to_target_s"] > 0
        assert result["reached_target"] == (result["final_test_bpd"] <= 7.5)


def test_peer_benchmark_ideal_replays_exactly_the_convolutions_of_a_step():
    import torch
    peers = _load("peers")
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)

    def step():
        conv(x).square().sum().backward()

    replay = peers.convolutions_alone(step, steps=2, device=torch.device("cpu"))   # two steps
    forward = 2 * (2 * 5 * 8 * 8) * (3 * 3 * 3)              # 2 FLOP per multiply-add, per output value
    assert peers.convolution_gflop(replay) == pytest.approx(2 * 3 * forward / 1e9)   # + grads of input, weight


def test_peer_benchmark_quick_run_times_gflows_flows_and_their_ideals(tmp_path):
    out = tmp_path / "peers.json"
    _load("peers").main(["--quick", "--no-peers", "--groups", "trivial,C4", "--out", str(out)])
    results = {(r["kind"], r["group"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {(k, g) for k in ("residual", "coupling", "iaf") for g in ("trivial", "C4")}
    for (kind, group), r in results.items():
        assert r["seconds_per_step"] > 0 and r["ideal_seconds_per_step"] > 0 and r["conv_gflop_per_step"] > 0
        assert len(r["step_s"]) == len(r["ideal_s"]) == 2                          # one figure per round
        assert r["overhead"] == pytest.approx(r["seconds_per_step"] / r["ideal_seconds_per_step"])
        assert r["vs_twin"] == pytest.approx(r["seconds_per_step"] / results[(kind, "trivial")]["seconds_per_step"])
        assert 0.9 < r["parameters"] / results[(kind, "trivial")]["parameters"] < 1.1


def test_peer_benchmark_matches_normflows_models_to_the_twins(tmp_path):
    """normflows is installed for this benchmark only (benchmarks/requirements-peers.txt); ``.ci/run``
    installs it and sets GFLOWS_REQUIRE_PEERS=1, so that there this test runs instead of skipping."""
    try:
        import normflows  # noqa: F401
    except ImportError:
        if os.environ.get("GFLOWS_REQUIRE_PEERS") == "1":
            pytest.fail("GFLOWS_REQUIRE_PEERS=1 but normflows is not installed")
        pytest.skip("normflows is not installed (pip install -r benchmarks/requirements-peers.txt)")
    out = tmp_path / "peers.json"
    _load("peers").main(["--quick", "--groups", "trivial", "--shapes", "3x8x8", "--out", str(out)])
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    for peer, kind in (("normflows residual", "residual"), ("normflows realnvp", "coupling")):
        twin = results[f"gflows {kind} trivial"]
        assert 0.9 < results[peer]["parameters"] / twin["parameters"] < 1.1
        assert twin["vs_normflows"] == pytest.approx(twin["seconds_per_step"] / results[peer]["seconds_per_step"])
        assert results[peer]["conv_gflop_per_step"] > 0
