r"""Studies: grids of training runs on images, each trained once, checkpointed, resumable and cached.

A study asks how a flow family does with and without a symmetry built in as the training set grows:
one :class:`Run` per (family, group, share of the training set, seed, augmentation), all sharing one
:class:`Setup` (the data, the size of the models, the trainer's options). Chapter 7 runs::

    setup = study.Setup(study.Data("digits", symmetry="D4", validation_size=300),
                        model=dict(depth=4, width=32, hidden_layers=2),
                        options=train.Options(steps=800, batch_size=64, lr=3e-3, eval_every=80))
    runs = [study.Run("coupling", group, fraction, seed) for group in ("trivial", "C4", "D4")
            for fraction in (1/16, 1/8, 1/4, 1/2, 1) for seed in range(3)]
    outcomes = study.run_all(runs, setup, root="runs/digits", workers=2)
    study.summarize(outcomes, "test_bpd")   # {(label, fraction): Summary(mean, std, n)} at the selected step

**Data** (:func:`load_data`). ``Data(name, symmetry="D4")`` moves every training and test image by
its own random exact element of the group, drawn once from a fixed seed (:func:`rotated`): the images
are a sample of a G-invariant distribution, and a model sees exactly as many images as its share of
the training set holds. (Moving the images by a fresh element every epoch is data augmentation, which
a run asks for with ``augment=``: a baseline of its own.) ``validation_size`` images of the training
set are held out for model selection; the shares are nested, class-balanced subsets of the rest
(:func:`gflows.data.images.subset`, seeded by the run's seed).

**Protocol** (:func:`train_or_load`). A run trains with :func:`gflows.train.fit` in stages of
``eval_every`` steps, resuming from the trainer's checkpoint at each stage (which continues the run
exactly). After each stage the trainer has evaluated the averaged (EMA) weights on the validation set
(``valid_bpd``), and the stage's weights are evaluated on the test set, averaged over the data's
symmetry group (:func:`gflows.train.evaluate`: ``test_bpd``, ``test_bpd_group``, the invariance gap).
The **selected** row is the one of least validation bits/dim (early stopping); its weights are kept in
``best.pt``. Small training sets are fitted, then over-fitted, within a few hundred steps, so results
at the last step would measure over-fitting rather than what a model can learn from the data.

**Caching.** Each run has its own folder under ``root``, named after the run and the SHA-256 of
everything that decides its result (:func:`run_key`), so a changed setting never reuses an old
result. A finished run (its folder holds ``result.json``) is loaded, after checking the SHA-256 of
its ``best.pt`` recorded when it finished; weights load with ``torch.load(weights_only=True)``. An
interrupted run resumes from its last stage.

:func:`run_all` does this for a list of runs, in parallel worker processes if asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from . import models
from .data import images
from .flows import FlowModel
from .groups import get
from .train import Options, derive_seed, evaluate, fit, load_checkpoint
from .train.checkpoint import exists as checkpoint_exists, save, write_text
from .train.loop import CHECKPOINT
from .train.timing import seconds_per_step

RESULT = "result.json"
STAGES = "stages.json"
BEST = "best.pt"
#: Options that do not change a run's result, left out of its key.
_NOT_IN_KEY = ("progress", "device")


class CorruptRun(RuntimeError):
    """A finished run whose ``best.pt`` no longer has the SHA-256 recorded when it finished."""


@dataclass(frozen=True)
class Data:
    """The images of a study.

    Attributes:
        name: a dataset of :func:`gflows.data.images.load` (``"digits"``, ``"fashion-mnist"``, ...).
        symmetry: a group name: every training and test image is moved once by its own random exact
            element of it (:func:`rotated`); ``None`` keeps the images as they are.
        validation_size: images of the training set held out for model selection.
        test_size: evaluate on a class-balanced subset of this many test images (``None``: all).
        seed: decides the elements of :func:`rotated`, the validation images and the test subset.
        root, download: passed to :func:`gflows.data.images.load`.
    """

    name: str = "digits"
    symmetry: Optional[str] = "D4"
    validation_size: int = 300
    test_size: Optional[int] = None
    seed: int = 0
    root: Optional[str] = None
    download: bool = False


@dataclass(frozen=True)
class Run:
    """One training run of a study.

    Attributes:
        kind: the flow family (``"residual"``, ``"coupling"``, ``"iaf"``; :func:`gflows.models.build`).
        group: the group the model is equivariant to (``"trivial"`` for the ordinary twin).
        fraction: the share of the training pool (the training set less the validation images), in
            (0, 1]: a nested, class-balanced subset.
        seed: the run's seed: the model's initial weights, the data order and the subset.
        augment: a group name: every training image is moved by a fresh random element of it each
            epoch (data augmentation), or ``None``.
    """

    kind: str
    group: str
    fraction: float = 1.0
    seed: int = 0
    augment: Optional[str] = None

    @property
    def label(self) -> str:
        """The model's name in tables and legends, e.g. ``"coupling D4"`` or ``"coupling trivial + D4 aug."``."""
        return f"{self.kind} {self.group}" + (f" + {self.augment} aug." if self.augment else "")


@dataclass(frozen=True)
class Setup:
    """What the runs of a study share: the data, the models' hyperparameters and the trainer's options.

    Each run trains with ``options`` with its own ``seed`` and ``augment``; the trainer evaluates the
    validation set without group averages (``group_metrics=False``), and the test set is evaluated
    over ``options.eval_group``, by default the data's symmetry.
    """

    data: Data = field(default_factory=Data)
    model: Mapping[str, object] = field(default_factory=dict)
    options: Options = field(default_factory=Options)

    @property
    def test_group(self) -> str:
        """The group the test metrics average over."""
        return self.options.eval_group or self.data.symmetry or "trivial"

    def options_for(self, run: Run) -> Options:
        """The trainer's options of ``run``."""
        return dataclasses.replace(self.options, seed=run.seed, augment=run.augment, eval_group=self.test_group,
                                   group_metrics=False, progress=False)


@dataclass
class Outcome:
    """A finished run.

    Attributes:
        run, setup: what was trained.
        history: one row per stage, at its last step: ``step``, ``time_s`` (seconds of training and
            validation so far), ``train_loss`` (mean over the stage), ``valid_bpd``, ``test_bpd``,
            ``test_bpd_group``, ``invariance_gap_max``, ``invariance_gap_mean``.
        parameters: the model's number of trainable parameters.
        train_size: the number of training images.
        folder: where the run's files are.
    """

    run: Run
    setup: Setup
    history: List[Dict[str, object]]
    parameters: int
    train_size: int
    folder: Optional[Path]

    @property
    def selected(self) -> Dict[str, object]:
        """The row of least validation bits/dim (the earliest of equals): the run's result."""
        return min(self.history, key=lambda row: row["valid_bpd"])

    @property
    def final(self) -> Dict[str, object]:
        """The last row (the end of training)."""
        return self.history[-1]

    def curve(self, key: str, x: str = "step") -> Tuple[List[float], List[float]]:
        """``x`` (``"step"`` or ``"time_s"``) and ``key`` of every row."""
        return [row[x] for row in self.history], [row[key] for row in self.history]

    def load_model(self) -> FlowModel:
        """The averaged (EMA) weights of the selected row, in eval mode."""
        state = load_checkpoint(_verified(self.folder))
        model = build_model(self.run, self.setup).train()  # the state was saved in training mode
        model.load_state_dict(state["ema"])
        return model.eval()


# ------------------------------------------------------------------------------------------- data
def rotated(ds: images.ImageSet, group: str, seed: int) -> images.ImageSet:
    """``ds`` with image ``i`` moved by its own uniformly random exact element of ``group``.

    The elements are drawn once from ``seed``. If the images are a sample of a distribution
    :math:`p`, the moved images are a sample of the G-invariant distribution
    :math:`\\bar p(x) = \\frac{1}{|G|}\\sum_g p(g^{-1}x)` (:mod:`gflows.data.transforms`).
    """
    generator = torch.Generator().manual_seed(seed)
    return images.ImageSet(images.random_exact_action(ds.pixels, group, generator), ds.labels, ds.name, ds.split)


def held_out(ds: images.ImageSet, size: int, seed: int) -> Tuple[images.ImageSet, images.ImageSet]:
    """``(rest, held)``: ``size`` images of ``ds`` chosen at random by ``seed``, and the others (both in
    their order in ``ds``)."""
    if not 0 < size < len(ds):
        raise ValueError(f"hold out between 1 and {len(ds) - 1} of the {len(ds)} images, not {size}")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    held, rest = order[:size].sort().values, order[size:].sort().values
    return tuple(images.ImageSet(ds.pixels[i], ds.labels[i], ds.name, ds.split) for i in (rest, held))


@lru_cache(maxsize=4)
def load_data(data: Data) -> Tuple[images.ImageSet, images.ImageSet, images.ImageSet]:
    """``(pool, validation, test)``: the training set less ``validation_size`` held-out images, those
    images, and the test set; moved by :func:`rotated` if ``data.symmetry``, the test set cut to
    ``data.test_size`` (cached per process)."""
    train_set = images.load(data.name, "train", root=data.root, download=data.download)
    test_set = images.load(data.name, "test", root=data.root, download=data.download)
    if data.symmetry is not None:
        train_set = rotated(train_set, data.symmetry, derive_seed(data.seed, "rotated", "train"))
        test_set = rotated(test_set, data.symmetry, derive_seed(data.seed, "rotated", "test"))
    pool, validation = held_out(train_set, data.validation_size, derive_seed(data.seed, "validation"))
    if data.test_size is not None:
        test_set = images.subset(test_set, size=data.test_size, seed=data.seed)
    return pool, validation, test_set


def training_set(run: Run, setup: Setup) -> images.ImageSet:
    """The run's share of the training pool (all of it for ``fraction == 1``)."""
    pool = load_data(setup.data)[0]
    return pool if run.fraction == 1 else images.subset(pool, fraction=run.fraction, seed=run.seed)


# ------------------------------------------------------------------------------------------- runs
def build_model(run: Run, setup: Setup) -> FlowModel:
    """The run's model with its initial weights, drawn from ``derive_seed(run.seed, "model")``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(run.seed, "model"))
        return models.build(run.kind, group=run.group, data_shape=load_data(setup.data)[0].shape, **setup.model)


def run_key(run: Run, setup: Setup) -> Dict[str, object]:
    """Everything that decides the run's result, as plain types (hashed into its folder's name)."""
    options = {k: v for k, v in dataclasses.asdict(setup.options_for(run)).items() if k not in _NOT_IN_KEY}
    options["betas"] = list(options["betas"])
    return {"data": dataclasses.asdict(setup.data), "model": dict(sorted(setup.model.items())),
            "options": options, "run": dataclasses.asdict(run)}


def run_folder(run: Run, setup: Setup, root: Union[str, Path]) -> Path:
    """``root / "<kind>-<group>[-aug<G>]-f<fraction>-s<seed>-<first 12 hex digits of the key's SHA-256>"``."""
    digest = hashlib.sha256(json.dumps(run_key(run, setup), sort_keys=True).encode()).hexdigest()[:12]
    augment = f"-aug{run.augment}" if run.augment else ""
    return Path(root) / f"{run.kind}-{run.group}{augment}-f{run.fraction:.4g}-s{run.seed}-{digest}"


def train_or_load(run: Run, setup: Setup, root: Union[str, Path]) -> Outcome:
    """The :class:`Outcome` of ``run``: loaded if finished, else trained or resumed (module docstring).

    Raises:
        CorruptRun: a finished run's ``best.pt`` does not match the SHA-256 recorded in ``result.json``.
    """
    folder = run_folder(run, setup, root)
    if not (folder / RESULT).is_file():
        _train(run, setup, folder)
    record = json.loads((folder / RESULT).read_text())
    _verified(folder, record)
    return Outcome(run, setup, record["history"], record["parameters"], record["train_size"], folder)


def _train(run: Run, setup: Setup, folder: Path) -> None:
    """Train ``run`` stage by stage into ``folder``, continuing from the last finished stage."""
    train_set, (_, validation, test_set) = training_set(run, setup), load_data(setup.data)
    options = setup.options_for(run)
    model = build_model(run, setup)
    rows: List[Dict[str, object]] = json.loads((folder / STAGES).read_text()) if (folder / STAGES).is_file() else []
    best = min((row["valid_bpd"] for row in rows), default=math.inf)
    stops = list(range(options.eval_every, options.steps, options.eval_every)) + [options.steps]
    for stop in stops[len(rows):]:
        resume = checkpoint_exists(folder / CHECKPOINT)
        result = fit(model, train_set, validation, dataclasses.replace(options, steps=stop), out=folder, resume=resume,
                     config=run_key(run, setup))
        trained = result.final                       # the row of the stage's end, whose weights result.ema holds
        row = {key: trained[key] for key in ("step", "time_s", "train_loss")}
        row["valid_bpd"] = trained["test_bpd"]
        row.update(evaluate(result.ema, images.eval_batches(test_set, options.eval_batch_size, seed=derive_seed(run.seed, "test")),
                            get(setup.test_group), seed=derive_seed(run.seed, "eval")))
        rows.append(row)
        if row["valid_bpd"] < best:
            best = row["valid_bpd"]
            save({"ema": _training_state(result.ema), "step": row["step"]}, folder / BEST, keep_previous=False)
        write_text(json.dumps(rows, indent=1), folder / STAGES)
    record = {"key": run_key(run, setup), "history": rows, "train_size": len(train_set),
              "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "best_sha256": _sha256(folder / BEST)}
    write_text(json.dumps(record, indent=1), folder / RESULT)


def _training_state(model: FlowModel) -> Dict[str, torch.Tensor]:
    """The state dict as in training mode (the mode the checkpoints are written in)."""
    model.train()
    state = model.state_dict()
    model.eval()
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(folder: Path, record: Optional[Dict[str, object]] = None) -> Path:
    """``folder / best.pt`` after checking its SHA-256 against ``result.json``."""
    record = record or json.loads((folder / RESULT).read_text())
    path = folder / BEST
    if not path.is_file() or _sha256(path) != record["best_sha256"]:
        raise CorruptRun(f"{path} is missing or differs from the weights the run finished with "
                         f"(SHA-256 in {folder / RESULT}); delete {folder} to train the run again")
    return path


def time_steps(run: Run, setup: Setup, steps: int = 20) -> Tuple[float, float]:
    """:func:`seconds_per_step` of the run's model on its first training batch (on the CPU, in the
    calling process's threads; no evaluation)."""
    options = setup.options_for(run)
    batch = next(images.epoch_batches(training_set(run, setup), options.batch_size, seed=run.seed, epoch=0,
                                      group=run.augment, drop_last=False))
    return seconds_per_step(build_model(run, setup), batch, steps, options.lr)


def _train_in_worker(run: Run, setup: Setup, root: str, threads: int) -> None:
    torch.set_num_threads(threads)
    train_or_load(run, setup, root)


def run_all(runs: Sequence[Run], setup: Setup, root: Union[str, Path], *, workers: int = 1,
            threads_per_worker: int = 1, verbose: int = 0) -> List[Outcome]:
    """:func:`train_or_load` every run, in order; with ``workers > 1`` the unfinished ones train in that
    many processes first (joblib), each with ``threads_per_worker`` torch threads.

    Small models train faster in several one-thread processes than in one process with several
    threads. Returns the outcomes in the order of ``runs``.
    """
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if workers > 1:
        from joblib import Parallel, delayed

        missing = [run for run in runs if not (run_folder(run, setup, root) / RESULT).is_file()]
        Parallel(n_jobs=workers, verbose=verbose)(
            delayed(_train_in_worker)(run, setup, str(root), threads_per_worker) for run in missing)
    return [train_or_load(run, setup, root) for run in runs]


# ------------------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value) of a metric over seeds."""

    mean: float
    std: float
    n: int

    def text(self, digits: int = 3) -> str:
        """``"mean ± std"`` with ``digits`` decimals (the mean alone for one value)."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}" if self.n > 1 else f"{self.mean:.{digits}f}"

    def __str__(self) -> str:
        return self.text()


def summarize(outcomes: Sequence[Outcome], key: str = "test_bpd", row: str = "selected") -> Dict[Tuple[str, float], Summary]:
    """``{(label, fraction): Summary}`` of ``key`` in the ``"selected"`` (or ``"final"``) row of each run,
    over the seeds of each model and share."""
    if row not in ("selected", "final"):
        raise ValueError(f"row is 'selected' or 'final', got {row!r}")
    values: Dict[Tuple[str, float], List[float]] = {}
    for outcome in outcomes:
        values.setdefault((outcome.run.label, outcome.run.fraction), []).append(float(getattr(outcome, row)[key]))
    return {where: _summary(vs) for where, vs in values.items()}


def _summary(values: Sequence[float]) -> Summary:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, std, n)


def mean_curve(outcomes: Sequence[Outcome], key: str = "test_bpd", x: str = "step") -> Tuple[List[float], List[Summary]]:
    """The curve of ``key`` against ``x`` averaged over runs evaluated at the same steps (e.g. the seeds
    of one model): ``x`` averaged too (for ``"time_s"``), and a :class:`Summary` per point."""
    curves = [outcome.curve(key, x) for outcome in outcomes]
    steps = [outcome.curve(key, "step")[0] for outcome in outcomes]
    if any(s != steps[0] for s in steps):
        raise ValueError("the runs were evaluated at different steps; average runs of one setup only")
    xs = [sum(c[0][i] for c in curves) / len(curves) for i in range(len(steps[0]))]
    return xs, [_summary([c[1][i] for c in curves]) for i in range(len(steps[0]))]


def table(summaries: Mapping[Tuple[str, float], Summary], labels: Sequence[str], fractions: Sequence[float],
          sizes: Optional[Mapping[float, int]] = None, digits: int = 3) -> str:
    """A text table, one row per label and one column per fraction (headed by its number of images),
    each cell ``mean ± std`` with ``digits`` decimals."""
    heads = [f"{sizes[f]} img" if sizes else f"{f:.4g}" for f in fractions]
    width = max(len(label) for label in labels)
    lines = [" " * width + "".join(f"{head:>17s}" for head in heads)]
    for label in labels:
        cells = [summaries[(label, f)].text(digits) if (label, f) in summaries else "-" for f in fractions]
        lines.append(f"{label:{width}s}" + "".join(f"{cell:>17s}" for cell in cells))
    return "\n".join(lines)


def labels(outcomes: Sequence[Outcome]) -> List[str]:
    """The distinct labels of ``outcomes``, in order of appearance."""
    return list(dict.fromkeys(outcome.run.label for outcome in outcomes))


__all__ = [
    "CorruptRun", "Data", "Outcome", "Run", "Setup", "Summary", "build_model", "held_out",
    "labels", "load_data", "mean_curve", "rotated", "run_all", "run_folder", "run_key", "seconds_per_step",
    "summarize", "table", "time_steps", "train_or_load", "training_set",
]
