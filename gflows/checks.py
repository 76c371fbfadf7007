r"""Numerical checks of the properties every layer and model in this book must have.

Each check *measures* and returns the error (so the book can print it); :func:`assert_equivariant`
turns a measurement into a test with a dtype-aware tolerance. Differences are computed in float64.

* :func:`equivariance_error`: :math:`\max_g \lVert f(g\cdot x) - g\cdot f(x)\rVert_\infty`;
* :func:`invariance_error`: :math:`\max_g \lvert \phi(g\cdot x) - \phi(x)\rvert`, e.g. for ``log_prob``;
* :func:`inverse_error`: :math:`\lVert f^{-1}(f(x)) - x\rVert_\infty`;
* :func:`exact_logdet`: :math:`\log\lvert\det \partial f/\partial x\rvert` by a brute-force Jacobian.

On images the maximum is by default over ``G.exact_elements()``, which act on pixel grids without
interpolation, so an equivariant map shows an error at the level of floating-point round-off; on
points it is over every element. The checks run with autograd enabled, because some layers compute
log-determinants with vector-Jacobian products; wrap a call in ``torch.no_grad()`` when yours do not.

>>> import torch
>>> from gflows import groups
>>> G = groups.get("C4")
>>> x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
>>> equivariance_error(torch.tanh, x, G) < 1e-12   # pointwise maps commute with moving pixels
True
>>> equivariance_error(lambda v: v.roll(1, dims=-1), x, G) > 0.1
True
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch

from .groups import Group, GroupElement

Action = Callable[[torch.Tensor, GroupElement], torch.Tensor]

#: Relative tolerances of :func:`assert_equivariant`, by the dtype of the input.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}


def _default_action(G: Group, example: torch.Tensor, field_type=None) -> Action:
    """Images (B, C, H, W) are moved by ``act_image``; points (B, 2) by ``act_points``."""
    if example.dim() == 4:
        return lambda t, g: G.act_image(t, g, field_type)
    if example.dim() == 2 and example.shape[-1] == 2:
        return G.act_points
    raise ValueError(
        f"cannot tell how {G.name} acts on a tensor of shape {tuple(example.shape)}: "
        "pass images (B, C, H, W), points (B, 2), or an explicit action"
    )


def _split_output(output) -> Tuple[torch.Tensor, Sequence[torch.Tensor]]:
    """A tensor output follows g; in a tuple (e.g. a flow's ``(z, logdet)``) the rest must not move."""
    if torch.is_tensor(output):
        return output, ()
    if isinstance(output, (tuple, list)) and output and all(torch.is_tensor(t) for t in output):
        return output[0], tuple(output[1:])
    raise TypeError("f must return a tensor or a tuple of tensors (the first one equivariant)")


def _max_abs(t: torch.Tensor) -> float:
    return float(t.detach().to(torch.float64).abs().max()) if t.numel() else 0.0


def equivariance_error(
    f: Callable,
    x: torch.Tensor,
    G: Group,
    *,
    elements: Optional[Iterable[GroupElement]] = None,
    in_field_type=None,
    out_field_type=None,
    in_action: Optional[Action] = None,
    out_action: Optional[Action] = None,
    relative: bool = False,
    per_element: bool = False,
) -> Union[float, Dict[str, float]]:
    r"""Largest deviation from equivariance, :math:`\max_g \lVert f(g\cdot x) - g\cdot f(x)\rVert_\infty`.

    Args:
        f: maps a batch to a tensor, or to a tuple whose first tensor should be equivariant and
            whose other tensors should be invariant (a flow's ``(z, logdet)``).
        x: a batch of images ``(B, C, H, W)`` or points ``(B, 2)``.
        G: the group; ``elements`` defaults to ``G.exact_elements()`` for images and to all of
            ``G.elements()`` for points (on which every element acts without interpolation).
        in_field_type, out_field_type: escnn field types of the input / output channels for
            images (default: scalar fields, as for image data).
        in_action, out_action: explicit actions ``(tensor, g) -> tensor`` instead of the defaults.
        relative: divide by the size of the output, :math:`\lVert f(x)\rVert_\infty` for the
            equivariant output, and for each invariant one the larger of that and its own largest
            absolute value (a log-det summed over many pixels is large, and float32 can only round
            it to its own precision).
        per_element: return ``{G.describe(g): error}`` instead of the maximum.
    """
    act_in = in_action or _default_action(G, x, in_field_type)
    if elements is None:  # every element acts exactly on points; on pixel grids only some do
        elements = G.exact_elements() if x.dim() == 4 else G.elements()
    reference, invariants = _split_output(f(x))
    act_out = out_action or _default_action(G, reference, out_field_type)
    def scale(t: torch.Tensor) -> float:
        return max(_max_abs(t), torch.finfo(torch.float64).tiny) if relative else 1.0

    errors = {}
    for g in elements:
        moved, moved_invariants = _split_output(f(act_in(x, g)))
        error = _max_abs(moved.to(torch.float64) - act_out(reference, g).to(torch.float64)) / scale(reference)
        for before, after in zip(invariants, moved_invariants):
            invariant_scale = max(scale(before), scale(reference))
            error = max(error, _max_abs(after.to(torch.float64) - before.to(torch.float64)) / invariant_scale)
        errors[G.describe(g)] = error
    return errors if per_element else max(errors.values(), default=0.0)


def invariance_error(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    G: Group,
    *,
    elements: Optional[Iterable[GroupElement]] = None,
    in_action: Optional[Action] = None,
    per_element: bool = False,
) -> Union[float, Dict[str, float]]:
    r"""Largest change of ``fn`` under the group, :math:`\max_g \max_b \lvert\phi(g\cdot x)_b - \phi(x)_b\rvert`.

    For ``fn = model.log_prob`` the error is in nats; an equivariant flow with an invariant base
    density gives a G-invariant density, so this is round-off for every exact element.
    """
    return equivariance_error(
        fn, x, G, elements=elements, in_action=in_action,
        out_action=lambda value, g: value, per_element=per_element,
    )


def assert_equivariant(f: Callable, x: torch.Tensor, G: Group, *, tolerance: Optional[float] = None, **kwargs) -> Dict[str, float]:
    """Assert the *relative* equivariance error is below ``tolerance`` (default by dtype, see ``TOLERANCE``).

    Returns the per-element errors; on failure the message lists them. Keyword arguments go to
    :func:`equivariance_error`.
    """
    __tracebackhide__ = True
    tolerance = TOLERANCE.get(x.dtype, 1e-5) if tolerance is None else tolerance
    errors = equivariance_error(f, x, G, relative=True, per_element=True, **kwargs)
    failing = {name: err for name, err in errors.items() if not err <= tolerance}
    assert not failing, (
        f"not equivariant to {G.name} (relative tolerance {tolerance:g}): "
        + ", ".join(f"{name}: {err:.3g}" for name, err in failing.items())
    )
    return errors


def inverse_error(model: Callable, x: torch.Tensor) -> float:
    """:math:`\\lVert f^{-1}(f(x)) - x\\rVert_\\infty` for a flow whose call returns ``(z, logdet)``."""
    z, _ = _split_output(model(x))
    return _max_abs(model.inverse(z).to(torch.float64) - x.to(torch.float64))


def exact_logdet(f: Callable, x: torch.Tensor, *, max_dim: int = 4096) -> torch.Tensor:
    r"""Brute-force :math:`\log\lvert\det J_f(x_b)\rvert` for each sample, from the full autograd Jacobian.

    Args:
        f: maps a batch to a batch of the same per-sample size (a tensor, or a tuple whose first
            element is the output, like a flow's ``(z, logdet)``). Each sample is pushed through
            alone, so ``f`` must not mix samples (use eval mode for batch-statistics layers).
        x: ``(B, ...)`` with at most ``max_dim`` numbers per sample (the Jacobian is D x D).
    Returns:
        ``(B,)`` tensor, in x's dtype. Cost O(D) backward passes per sample: small inputs only.
    """
    dim = x[0].numel()
    if dim > max_dim:
        raise ValueError(f"exact_logdet builds a {dim}x{dim} Jacobian per sample; keep D <= {max_dim}")

    def flat(v: torch.Tensor) -> torch.Tensor:
        out, _ = _split_output(f(v.reshape(1, *x.shape[1:])))
        if out.numel() != dim:
            raise ValueError(f"f changes the dimension ({dim} -> {out.numel()}); its Jacobian is not square")
        return out.reshape(-1)

    values = []
    for sample in x.detach():
        jacobian = torch.autograd.functional.jacobian(flat, sample.reshape(-1))
        values.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(values)
