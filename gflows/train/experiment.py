r"""Experiments as YAML configurations: what data, what model, how to train, and what it costs.

A configuration has four sections::

    base: _digits-rot          # optional: start from another configuration, then override it
    name: my-run               # optional: the run's name (default: the file's name without .yaml)
    data:                      # what to load (gflows.data.images)
      name: digits             # digits | fashion-mnist | mnist | cifar10
      train_size: null         # a nested, class-balanced subset of the training set (images.subset) ...
      train_fraction: null     # ... by size or by share; null: all of it
      test_size: null          # likewise for the test set
      subset_seed: 0
      root: null               # the data folder (default $GFLOWS_DATA or ~/.cache/gflows)
      download: false
    model:                     # models.build(kind, group=..., data_shape=<the data's>, **the rest)
      kind: residual
      group: D4
      depth: 8
      width: 32
    train:                     # gflows.train.Options: steps, batch_size, lr, ..., seed
      steps: 5000
    expected:                  # what the run costs, for readers; never read by the trainer
      parameters: 12345

The configurations shipped with gflows live in ``gflows/configs`` (:func:`available`); ``--config
NAME`` finds them by name, and a path to a YAML file works too. Names starting with ``_`` are bases.
:func:`load` merges the bases, applies ``section.key=value`` overrides (values in YAML syntax) and
checks everything it can before any data is read: unknown keys (with a "did you mean"), wrong types,
unknown datasets, kinds and groups, and a model that :func:`gflows.models.build` refuses for the
data's shape. Errors are :class:`ConfigError` and name the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import yaml

from .. import groups, models
from ..data import images
from ..flows import FlowModel
from ..models import autoregressive, coupling, residual
from .loop import Options, Result, fit
from .rng import derive_seed

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SECTIONS = ("base", "name", "data", "model", "train", "expected")
#: ``(C, H, W)`` of each dataset's images, known before any file is read.
DATA_SHAPES: Dict[str, Tuple[int, int, int]] = {
    "digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
}
#: The function whose keyword arguments a kind's image model takes.
_IMAGE_BUILDERS = {"residual": residual.image_flow, "coupling": coupling.image_flow, "iaf": autoregressive.image_flow}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what is allowed."""


@dataclass
class DataConfig:
    """The ``data`` section (module docstring)."""

    name: str
    train_size: Optional[int] = None
    train_fraction: Optional[float] = None
    test_size: Optional[int] = None
    subset_seed: int = 0
    root: Optional[str] = None
    download: bool = False

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of the dataset's images (:data:`DATA_SHAPES`)."""
        return DATA_SHAPES[self.name]


@dataclass
class Experiment:
    """A validated configuration."""

    name: str
    data: DataConfig
    model: Dict[str, object]
    train: Options
    expected: Dict[str, object] = field(default_factory=dict)

    def sections(self) -> Dict[str, object]:
        """The configuration in plain types, as its YAML file would hold it (no base): the run's
        ``config.yaml``, saved in its checkpoint and metrics too."""
        train = dataclasses.asdict(self.train)
        train["betas"] = list(train["betas"])
        return {"name": self.name, "data": dataclasses.asdict(self.data), "model": dict(self.model), "train": train,
                "expected": dict(self.expected)}

    def check_processes(self, world_size: int) -> None:
        """ConfigError unless the global batch splits evenly over ``world_size`` processes."""
        if self.train.batch_size % world_size:
            raise ConfigError(f"train.batch_size {self.train.batch_size} is not divisible by the {world_size} processes "
                              f"(torchrun --nproc_per_node): choose a multiple of {world_size}")

    def build_model(self) -> FlowModel:
        """The model, its initial weights drawn from ``derive_seed(train.seed, "model")``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.train.seed, "model"))
            return _build(self.model, self.data.shape)

    def load_data(self) -> Tuple[images.ImageSet, images.ImageSet]:
        """The training and test sets, subsets taken as configured."""
        data = self.data
        train_set = images.load(data.name, "train", root=data.root, download=data.download)
        test_set = images.load(data.name, "test", root=data.root, download=data.download)
        if data.train_size is not None or data.train_fraction is not None:
            train_set = images.subset(train_set, size=data.train_size, fraction=data.train_fraction, seed=data.subset_seed)
        if data.test_size is not None:
            test_set = images.subset(test_set, size=data.test_size, seed=data.subset_seed)
        return train_set, test_set

    def run(self, out, *, resume: bool = False, callback=None) -> Result:
        """Load the data, build the model and :func:`~gflows.train.fit` it, writing into ``out``."""
        train_set, test_set = self.load_data()
        return fit(self.build_model(), train_set, test_set, self.train, out=out, resume=resume, callback=callback,
                   config=self.sections())


# ------------------------------------------------------------------------------------------ files
def available() -> List[str]:
    """Names of the configurations shipped with gflows (bases excluded)."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("_"))


def find(name_or_path: Union[str, Path]) -> Path:
    """The YAML file of a shipped configuration's name, or the path itself if it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = CONFIGS / f"{path.name[:-5] if path.name.endswith('.yaml') else path.name}.yaml"
    if packaged.is_file():
        return packaged
    names = available() + sorted(p.stem for p in CONFIGS.glob("_*.yaml"))
    raise ConfigError(f"no configuration {str(name_or_path)!r}: not a file, nor one of gflows/configs"
                      f"{_did_you_mean(path.stem, names)}; `python -m gflows.train --list` lists them")


def read(name_or_path: Union[str, Path], _seen: Tuple[Path, ...] = ()) -> Dict[str, object]:
    """The raw configuration with its ``base`` chain merged in (later files win, key by key)."""
    path = find(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"configurations include each other in a cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections ({', '.join(SECTIONS)})")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _merge(read(_base_path(str(base), path.parent), (*_seen, path)), raw)


def _base_path(base: str, folder: Path) -> Path:
    """A base named relative to the configuration's folder (with or without .yaml), else a shipped one."""
    for candidate in (folder / base, folder / f"{base}.yaml"):
        if candidate.is_file():
            return candidate
    return find(base)


def _merge(base: Dict[str, object], override: Dict[str, object]) -> Dict[str, object]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def apply_overrides(raw: Dict[str, object], overrides: Iterable[str]) -> Dict[str, object]:
    """``raw`` with every ``section.key=value`` applied (the value parsed as YAML: 3e-4, null, [0.9, 0.99])."""
    raw = _merge(raw, {})
    for override in overrides:
        key, equals, text = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not equals or not dot or not name:
            raise ConfigError(f"an override reads section.key=value (e.g. train.lr=3e-4), got {override!r}")
        if section not in SECTIONS or section in ("base", "name"):
            raise ConfigError(f"override {override!r}: no section {section!r}{_did_you_mean(section, SECTIONS[2:])}")
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {})
        try:
            raw[section][name] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from None
    return raw


def load(name_or_path: Union[str, Path], overrides: Sequence[str] = ()) -> Experiment:
    """Read, merge, override and :func:`validate` a configuration."""
    raw = apply_overrides(read(name_or_path), overrides)
    return validate(raw, name=find(name_or_path).stem)


# ------------------------------------------------------------------------------------- validation
def validate(raw: Dict[str, object], name: str = "experiment") -> Experiment:
    """An :class:`Experiment` from a raw mapping, or a :class:`ConfigError` naming what is wrong.
    Its name is ``raw["name"]`` where given, else ``name``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a configuration is a mapping of sections ({', '.join(SECTIONS)})")
    _check_keys(raw, SECTIONS, "the configuration")
    name = raw.get("name", name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: expected a non-empty string, got {name!r}")
    for section in ("data", "model"):
        if not isinstance(raw.get(section), dict):
            raise ConfigError(f"the configuration needs a '{section}' section (a mapping)")
    data = _dataclass_from(DataConfig, raw["data"], "data")
    if data.name not in DATA_SHAPES:
        raise ConfigError(f"data.name: unknown dataset {data.name!r}{_did_you_mean(data.name, DATA_SHAPES)}; "
                          f"choose one of {', '.join(DATA_SHAPES)}")
    if data.train_size is not None and data.train_fraction is not None:
        raise ConfigError("data: give train_size or train_fraction, not both")
    model = _validate_model(dict(raw["model"]), data.shape)
    train = _dataclass_from(Options, raw.get("train") or {}, "train")
    expected = raw.get("expected") or {}
    if not isinstance(expected, dict):
        raise ConfigError("expected: a mapping of measured numbers")
    return Experiment(name, data, model, train, dict(expected))


def _validate_model(model: Dict[str, object], data_shape: Tuple[int, int, int]) -> Dict[str, object]:
    kind = model.get("kind")
    if kind not in models.KINDS:
        raise ConfigError(f"model.kind: unknown kind {kind!r}{_did_you_mean(str(kind), models.KINDS)}; "
                          f"choose one of {', '.join(models.KINDS)}")
    model.setdefault("group", "trivial")
    try:
        groups.get(model["group"])
    except ValueError as error:
        raise ConfigError(f"model.group: {error}") from None
    hints = typing.get_type_hints(_IMAGE_BUILDERS[kind])
    parameters = {name: hints.get(name) for name, p in inspect.signature(_IMAGE_BUILDERS[kind]).parameters.items()
                  if p.kind is p.KEYWORD_ONLY and _is_plain(hints.get(name))}
    _check_keys(model, ("kind", "group", *parameters), f"model (kind {kind})")
    for key in list(model):
        if key in parameters:
            model[key] = _checked(model[key], parameters[key], f"model.{key}")
    try:
        with torch.random.fork_rng(devices=[]):
            _build(model, data_shape, depth=1)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {kind} with group {model['group']} does not fit images of shape {data_shape}: {error}") from None
    return model


def _build(model: Dict[str, object], data_shape: Tuple[int, int, int], **changes) -> FlowModel:
    """``models.build`` with the ``model`` section's kind, group and settings, ``changes`` overriding them."""
    settings = {k: v for k, v in model.items() if k not in ("kind", "group")}
    return models.build(model["kind"], group=model["group"], data_shape=data_shape, **{**settings, **changes})


def _dataclass_from(cls, values: Dict[str, object], section: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _check_keys(values, names, section)
    checked = {key: _checked(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in checked
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{section}: missing {', '.join(missing)}")
    try:
        return cls(**checked)
    except ValueError as error:
        raise ConfigError(f"{section}: {error}") from None


def _check_keys(values: Dict[str, object], allowed: Sequence[str], where: str) -> None:
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(str(key), allowed)}; "
                              f"allowed: {', '.join(allowed)}")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_PLAIN = (bool, int, float, str, type(None))


def _is_plain(annotation) -> bool:
    """True for the types a YAML value can have: bool, int, float, str, their Optional, tuples of them."""
    if annotation in _PLAIN:
        return True
    return typing.get_origin(annotation) in (Union, tuple) and all(_is_plain(a) for a in typing.get_args(annotation) if a is not Ellipsis)


def _checked(value, annotation, where: str):
    """``value`` as ``annotation`` asks (an int is a float; '1e-3' is a float), or a ConfigError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _checked(value, inner, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_checked(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:  # 5e3 is a string in YAML 1.1, 5000.0 a float: both are the integer 5000
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    elif isinstance(value, annotation):
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{where}: expected {'a' if name != 'int' else 'an'} {name}, got {value!r} ({type(value).__name__})")
