"""Full architectures: image flows and toy flows on points of the plane, each with its ordinary twin.

:func:`build` is the one entry point::

    model = models.build("residual", group="D4", data_shape=(1, 28, 28), depth=4, width=32)

``group="trivial"`` gives the non-equivariant twin of the same code; hidden widths follow
:func:`gflows.nn.hidden_fields`, so parameter counts stay comparable across groups.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Sequence, Union

from ..flows import FlowModel
from ..flows.base import as_data_shape
from ..groups import Group, get
from . import autoregressive, coupling, residual

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
    return module.build(G, data_shape, **hparams)


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
