"""The trainer: exact resume, atomic checkpoints, EMA / warm-up / clipping as documented, metrics."""

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing

from gflows import groups, models, train
from gflows.data import images
from gflows.flows.logdet import PowerSeries
from gflows.train import checkpoint, distributed

POINTS = (2,)
IMAGES = (1, 4, 4)


pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands for the process being killed after a step."""


def _data(shape, n, seed):
    """Points as a float tensor; 8-bit images as an ImageSet (dequantised afresh every epoch)."""
    generator = torch.Generator().manual_seed(seed)
    if shape == POINTS:
        return torch.randn(n, 2, generator=generator) * torch.tensor([1.5, 0.5]) + 0.3
    pixels = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
    return images.ImageSet(pixels, torch.zeros(n, dtype=torch.int64), "digits", "train")


def _model(kind, shape, group="C4"):
    torch.manual_seed(0)
    return models.build(kind, group=group, data_shape=shape, depth=1 if shape == IMAGES else 2, width=4)


def _without_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


@pytest.mark.parametrize("shape", [POINTS, IMAGES], ids=["points", "images"])
@pytest.mark.parametrize("kind", models.KINDS)
def test_a_killed_and_resumed_run_repeats_the_uninterrupted_one(kind, shape, tmp_path):
    """40 samples in batches of 8: 5 steps an epoch. Checkpoints at steps 3 and 6, rows at 0, 4, 7; the
    run is killed after step 5 and resumed from step 3 (mid-epoch, with a half-accumulated training loss)."""
    options = train.Options(steps=7, batch_size=8, eval_every=4, checkpoint_every=3, eval_batch_size=16,
                            ema_decay=0.5, progress=False, seed=3)
    train_data, test_data = _data(shape, 40, 1), _data(shape, 16, 2)
    whole = train.fit(_model(kind, shape), train_data, test_data, options, out=tmp_path / "whole")

    def kill(step, history):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train.fit(_model(kind, shape), train_data, test_data, options, out=tmp_path / "killed", callback=kill)
    assert train.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["progress"]["step"] == 3
    resumed = train.fit(_model(kind, shape), train_data, test_data, options, out=tmp_path / "killed", resume=True)

    assert [row["step"] for row in whole.history] == [0, 4, 7]
    assert _without_time(resumed.history) == _without_time(whole.history)
    for a, b in zip([*whole.model.state_dict().values(), *whole.ema.state_dict().values()],
                    [*resumed.model.state_dict().values(), *resumed.ema.state_dict().values()]):
        assert not torch.is_tensor(a) or torch.equal(a, b)
    assert (tmp_path / "killed" / "metrics.csv").read_text() .splitlines()[0].startswith("step,epoch,time_s,lr")


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": 1, "weights": torch.arange(3.0)}, path)

    def dies_half_way(state, file):
        file.write(b"half a checkpoint")
        raise Killed

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(Killed):
        checkpoint.save({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = checkpoint.load(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


class _PoisonedAt(train.TensorSource):
    """Training points whose batch ``bad`` (0-based) of the first epoch is finite but so large that
    their log-density overflows float32 (NaN data itself is refused before any loss is computed)."""

    def __init__(self, data, bad):
        super().__init__(data)
        self.bad = bad

    def epoch(self, epoch, batch_size, *, rank=0, world_size=1, start=0):
        for index, x in enumerate(super().epoch(epoch, batch_size, rank=rank, world_size=world_size, start=start), start):
            yield torch.full_like(x, 1e30) if (epoch, index) == (0, self.bad) else x


def test_a_nan_loss_raises_with_its_step_and_is_not_applied():
    model = _model("coupling", POINTS)
    with pytest.raises(train.NonFiniteLoss, match="step 3 ") as error:
        train.fit(model, _PoisonedAt(_data(POINTS, 64, 1), bad=2), None,
                  train.Options(steps=5, batch_size=8, progress=False))
    assert error.value.step == 3 and not math.isfinite(error.value.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_warmup_clipping_and_ema_follow_their_definitions():
    lr, warmup, clip, decay = 0.01, 4, 1e-3, 0.8
    model = _model("coupling", POINTS)
    weights, clipped_norms = [], []

    def record(step, history):
        clipped_norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
        weights.append([p.detach().clone() for p in model.parameters()])

    initial = [p.detach().clone() for p in model.parameters()]
    options = train.Options(steps=6, batch_size=8, lr=lr, warmup_steps=warmup, grad_clip=clip, ema_decay=decay,
                            eval_every=1, progress=False)
    result = train.fit(model, _data(POINTS, 64, 1), None, options, callback=record)
    rows = result.history[1:]
    assert [row["lr"] for row in rows] == pytest.approx([lr * min(1, k / warmup) for k in range(1, 7)])
    assert all(row["grad_norm"] > clip for row in rows)  # the logged norm is the norm before clipping
    assert max(clipped_norms) == pytest.approx(clip, rel=1e-4)

    averaged = initial  # the points coupling has no data-dependent initialisation to change them
    for t, current in enumerate(weights):
        beta = min(decay, (1 + t) / (10 + t))
        averaged = [beta * a + (1 - beta) * c for a, c in zip(averaged, current)]
    for a, p in zip(averaged, result.ema.parameters()):
        torch.testing.assert_close(p, a)


def test_evaluation_moves_the_probes_with_the_input_so_the_gap_measures_the_model_only():
    """A G-Residual image flow with a random-probe series (not the default, which moves its probe
    itself). The evaluation repeats the random numbers for every group element and moves the probes
    along: the invariance gap of an equivariant flow is round-off, although two independent estimates
    of log p differ far more."""
    G = groups.get("D4")
    model = models.build("residual", group="D4", data_shape=IMAGES, depth=1, width=4,
                         eval_estimator=PowerSeries(10)).double()
    x = torch.rand(8, *IMAGES, dtype=torch.float64)
    model(x)  # ActNorm initialisation
    model.eval()
    state = torch.get_rng_state()
    metrics = train.evaluate(model, x.split(4), G, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert metrics == train.evaluate(model, x.split(4), G, seed=5)
    assert metrics["invariance_gap_max"] < 1e-10
    assert metrics["test_bpd_group"] == pytest.approx(metrics["test_bpd"], abs=1e-12)
    with torch.no_grad():
        independent = (model.log_prob(x) - model.log_prob(x)).abs().max().item()
    assert independent > 1e-6

    twin = models.build("residual", group="trivial", data_shape=IMAGES, depth=1, width=4,
                        eval_estimator=PowerSeries(10)).double()
    twin(x)
    twin.eval()
    assert train.evaluate(twin, x.split(4), G, seed=5)["invariance_gap_mean"] > 1e-4


#: (name, kind, data shape) of the runs compared across process counts: two deterministic models
#: (a coupling, and a G-Residual flow of points with exact log-dets and power-iterated norms), and a
#: G-Residual image flow with the memory-efficient Russian-roulette backward.
DDP_RUNS = [("coupling-images", "coupling", IMAGES), ("residual-points", "residual", POINTS),
            ("residual-images", "residual", IMAGES)]
DDP_OPTIONS = dict(steps=4, batch_size=8, eval_every=2, eval_batch_size=4, progress=False, seed=1)


def _ddp_runs(folder, world_size):
    results = {}
    for name, kind, shape in DDP_RUNS:
        result = train.fit(_model(kind, shape), _data(shape, 24, 1), _data(shape, 12, 2), train.Options(**DDP_OPTIONS),
                           out=folder / name)
        results[name] = {"history": _without_time(result.history), "model": result.model.state_dict()}
    return results


def _ddp_worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.setup().size == 2
    try:
        torch.save(_ddp_runs(folder, 2), folder / f"rank{rank}.pt")
    finally:
        distributed.teardown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_half_batches_follow_one_process_with_whole_batches(tmp_path):
    """DDP on gloo: 2 processes with per-process batch 4 against 1 process with batch 8 on the same
    global batches; every process ends with the same weights; only rank 0 writes files."""
    torch.multiprocessing.spawn(_ddp_worker, args=(_free_port(), tmp_path / "ddp"), nprocs=2)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = _ddp_runs(tmp_path / "single", 1)
    for name, _, _ in DDP_RUNS:
        for key, value in ranks[0][name]["model"].items():
            assert not torch.is_tensor(value) or torch.equal(value, ranks[1][name]["model"][key]), (name, key)
        assert ranks[0][name]["history"] == ranks[1][name]["history"]
        state = train.load_checkpoint(tmp_path / "ddp" / name / "checkpoint.pt")
        assert state["world_size"] == 2 and len(state["rng"]) == 2
    for name in ("coupling-images", "residual-points"):  # deterministic: the same trajectory
        for key, value in single[name]["model"].items():
            if torch.is_tensor(value) and value.is_floating_point():
                torch.testing.assert_close(ranks[0][name]["model"][key], value, rtol=1e-4, atol=1e-6, msg=f"{name} {key}")
        for row_ddp, row_single in zip(ranks[0][name]["history"], single[name]["history"], strict=True):
            assert row_ddp.keys() == row_single.keys()
            for key, value in row_single.items():
                assert row_ddp[key] == (value if value is None else pytest.approx(value, rel=1e-4, abs=1e-6)), (name, key)
    assert all(math.isfinite(row["test_bpd"]) for row in ranks[0]["residual-images"]["history"])


@pytest.mark.parametrize("shape, group", [((1, 4, 4), "D4"), ((1, 4, 4), "C8"), ((2,), "D8")])
def test_tensor_source_moves_each_sample_by_its_own_random_element(shape, group):
    G = groups.get(group)
    data = torch.randn(64, *shape, generator=torch.Generator().manual_seed(0))
    (batch,) = train.TensorSource(data, seed=1, augment=group).epoch(0, 64)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(train.derive_seed(1, "epoch", 0)))
    elements = G.exact_elements() if len(shape) == 3 else G.elements()
    act = G.act_image if len(shape) == 3 else G.act_points
    used = set()
    for source, moved in zip(data[order], batch):
        matches = [k for k, g in enumerate(elements) if torch.allclose(act(source[None], g)[0], moved, atol=1e-6)]
        assert matches, "every sample is its source moved by an element (an exact one for images)"
        used.update(matches)
    assert len(used) == len(elements)      # with this seed every element is drawn at least once
