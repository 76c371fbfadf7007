"""Full architectures: image flows and toy flows on points of the plane, each with its ordinary twin.

:func:`build` is the one entry point::

    model = models.build("residual", group="D4", data_shape=(1, 28, 28), depth=4, width=32)

``group="trivial"`` gives the non-equivariant twin of the same code, with ``width`` hidden channels.

**Like for like.** For any other group, ``build`` chooses the hidden fields (a
:class:`~gflows.nn.Hidden`: regular fields, topped up with scalar fields) whose model has the
parameter count closest to the trivial twin's with the same arguments (:func:`matched_hidden`), so
``build(kind, group=G, width=w, ...)`` and ``build(kind, group="trivial", width=w, ...)`` are
compared at equal size (within a few percent; ``tests/test_models.py`` asserts 10% for every kind,
group and several widths). Where the group decides the architecture (groups of 45° rotations have no
2x2 squeeze), the twin is built with the same choice, :func:`twin_arguments`. Passing ``hidden=``
yourself skips the matching.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Sequence, Union

import torch

from ..flows import FlowModel
from ..flows.base import as_data_shape
from ..groups import Group, get
from ..nn import Hidden
from . import autoregressive, coupling, residual
from .images import can_squeeze

KINDS = ("residual", "coupling", "iaf")
_MODULES = {"residual": residual, "coupling": coupling, "iaf": autoregressive}


def build(kind: str, *, group: "str | Group" = "trivial", data_shape: Sequence[int], **hparams) -> FlowModel:
    """Build a :class:`~gflows.flows.FlowModel` of family ``kind`` for ``data_shape`` equivariant to ``group``.

    Args:
        kind: one of :data:`KINDS`.
        group: a group name (``"trivial"``, ``"C4"``, ``"D4"``, ...) or :class:`~gflows.groups.Group`.
        data_shape: ``(C, H, W)`` for images or ``(2,)`` for points in the plane (a tuple of ints).
        **hparams: ``depth=`` and ``width=`` for every kind, plus the kind's own options (the keyword
            arguments of the ``image_flow`` / ``point_flow`` function of its module).
    Raises:
        ValueError: an unknown kind, a bad ``data_shape``, or ``depth`` / ``width`` below 1.
        TypeError: an unknown hyperparameter (with the closest known name), or one of the wrong type
            (``depth="2"``, ``width=2.7``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    G = get(group) if isinstance(group, str) else group
    data_shape = as_data_shape(data_shape)
    module = _MODULES[kind]
    _check_hparams(module.point_flow if data_shape == (2,) else module.image_flow, kind, data_shape, hparams)
    if hparams.get("hidden") is None and G.order > 1:
        hparams = {**hparams, "hidden": matched_hidden(kind, G, data_shape, **hparams)}
    return module.build(G, data_shape, **hparams)


def twin_arguments(kind: str, group: "str | Group", data_shape: Sequence[int], **hparams) -> dict:
    """``hparams`` with the choices that ``build`` makes from the group spelled out, so that
    ``build(kind, group="trivial", **twin_arguments(...))`` has the same architecture as the model of
    ``group``: the number of squeezes (a group of 45° rotations cannot squeeze, the trivial one can)."""
    G = get(group) if isinstance(group, str) else group
    data_shape = tuple(data_shape)
    if data_shape == (2,):
        return dict(hparams)
    if kind == "residual" and hparams.get("squeezes") is None:
        return {**hparams, "squeezes": min(residual.DEFAULT_SQUEEZES, residual.possible_squeezes(G, data_shape))}
    if kind != "residual" and hparams.get("squeeze") is None and hparams.get("split", "fields") == "fields":
        return {**hparams, "squeeze": can_squeeze(G, data_shape)}
    return dict(hparams)


def parameter_count(model) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_hidden(kind: str, group: "str | Group", data_shape: Sequence[int], **hparams) -> Hidden:
    """The hidden fields that give ``kind`` for ``group`` the parameter count of its trivial twin.

    The twin (``group="trivial"`` with :func:`twin_arguments`) fixes the target. The count grows with the
    number of regular fields F, so the largest F whose model is not larger is found by bisection;
    scalar fields then fill what is left (each adds far fewer parameters than a regular field), and
    the closest of these, or of F + 1 regular fields, wins. Counts come from building the models at
    the smallest depth that repeats the model's layers (one block per scale for residual flows, one
    pair of alternating layers otherwise: the count of the full model is the same fixed part plus
    depth times theirs), memoised per configuration, and without touching the random generators.
    """
    G = get(group) if isinstance(group, str) else group
    counted = {k: v for k, v in twin_arguments(kind, G, data_shape, **hparams).items() if k != "hidden"}
    counted["depth"] = min(counted.get("depth", _default(kind, data_shape, "depth")), 1 if kind == "residual" else 2)
    counted.setdefault("width", _default(kind, data_shape, "width"))
    key = (kind, G.name, tuple(data_shape), tuple(sorted((k, repr(v)) for k, v in counted.items())))
    with torch.random.fork_rng(devices=[]):
        return _matched_hidden(key, G, counted)


def _matched_hidden(key, G: Group, hparams) -> Hidden:
    kind, _, data_shape, _ = key
    target = _count(key, get("trivial"), hparams, Hidden(hparams["width"]))
    count = lambda regular, trivial=0: _count(key, G, hparams, Hidden(regular, trivial))  # noqa: E731
    if count(1) >= target:
        return Hidden(1)
    low, high = 1, 2
    while count(high) <= target:
        low, high = high, high * 2
    while high - low > 1:                       # count(low) <= target < count(high)
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) <= target else (low, middle)
    few, many = 0, max(1, G.order)
    while count(low, many) <= target:
        few, many = many, many * 2
    while many - few > 1:                       # count(low, few) <= target < count(low, many)
        middle = (few + many) // 2
        few, many = (middle, many) if count(low, middle) <= target else (few, middle)
    candidates = [Hidden(low, few), Hidden(low, many), Hidden(high)]
    return min(candidates, key=lambda h: (abs(_count(key, G, hparams, h) - target), h.trivial))


_COUNTS: dict = {}


def _count(key, G: Group, hparams, hidden: Hidden) -> int:
    """Parameters of the model of ``key`` for group ``G`` with ``hidden`` (memoised)."""
    memo = (key, G.name, hidden)
    if memo not in _COUNTS:
        kind, _, data_shape, _ = key
        settings = {**hparams, "hidden": hidden}
        _COUNTS[memo] = parameter_count(_MODULES[kind].build(G, data_shape, **settings))
    return _COUNTS[memo]


def _default(kind: str, data_shape, name: str):
    """The default of hyperparameter ``name`` of ``kind``'s builder for ``data_shape``."""
    module = _MODULES[kind]
    builder = module.point_flow if tuple(data_shape) == (2,) else module.image_flow
    return inspect.signature(builder).parameters[name].default
def _check_hparams(builder, kind: str, data_shape, hparams) -> None:
    hints = typing.get_type_hints(builder)
    known = [name for name, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for name, value in hparams.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{kind} models of shape {data_shape} take no hyperparameter {name!r}{hint}; "
                            f"they take {', '.join(known)}")
        expected = hints.get(name)
        if not _fits(value, expected):
            raise TypeError(f"{name} must be {_describe(expected)}, got {value!r} ({type(value).__name__})")
    for name in ("depth", "width"):
        if name in hparams and hparams[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {hparams[name]}")


def _fits(value, annotation) -> bool:
    """Whether ``value`` has the plain type ``annotation`` asks for (an int is a float, a bool is no int);
    annotations that are not plain types (estimators, say) accept anything."""
    if typing.get_origin(annotation) is Union:
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    return True


def _describe(annotation) -> str:
    if typing.get_origin(annotation) is Union:
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    return {int: "an int", float: "a number", bool: "True or False", str: "a string", type(None): "None"}.get(
        annotation, str(annotation))
