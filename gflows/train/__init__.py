r"""Training and evaluating flows: one trainer for points of the plane and for images, in a notebook,
from the command line, and on several GPUs.

In a notebook::

    import torch
    from gflows import models, train

    torch.manual_seed(0)
    model = models.build("residual", group="D4", data_shape=(2,), depth=4, width=32)
    result = train.fit(model, train_points, test_points,            # float tensors (N, 2)
                       train.Options(steps=2000, batch_size=256, lr=1e-3, eval_every=100, seed=0))
    result.history[-1]        # {'step': 2000, 'epoch': ..., 'train_loss': ..., 'test_nll': ...,
                              #  'test_nll_group': ..., 'invariance_gap_max': ..., ...}
    steps, nll = result.curve("test_nll")                           # a convergence curve
    result.ema                # the averaged weights the metrics were computed with (eval mode)

Images train the same way, from an ``ImageSet`` of :mod:`gflows.data.images` (dequantised afresh
every epoch) or from a float tensor ``(N, C, H, W)`` in [0, 1]; the metrics are then ``test_bpd``
and ``test_bpd_group`` in bits per dimension.

* **Loss**: mean bits/dim (images) or NLL in nats (points) of the batch; AdamW, linear warm-up,
  gradient-norm clipping; a NaN or infinite loss raises :class:`NonFiniteLoss` with the step.
* **Evaluation** uses the exponential moving average of the weights (``ema_decay``), at steps 0,
  every ``eval_every``, and the last: the test NLL / bpd, its average over every element of
  ``eval_group`` applied to the test set (exact elements on images), and the invariance gap
  ``max`` / ``mean |log p(g x) - log p(x)|`` (:mod:`.metrics`).
* **Files** (with ``out=``): ``metrics.csv`` and ``metrics.json`` (a row per evaluation) and an
  atomic ``checkpoint.pt``; ``fit(..., out=folder, resume=True)`` continues a killed run and
  reproduces the uninterrupted one exactly.
* **Seeds**: one, ``Options.seed``; every stream derives from it (:mod:`.rng`).
* **Several GPUs**: under ``torchrun`` the same call trains with DistributedDataParallel
  (:mod:`.distributed`); ``batch_size`` is the global batch.

From the command line, with the experiment configurations shipped in ``gflows/configs``
(:mod:`.experiment`)::

    python -m gflows.train --config digits-rot-residual-D4 --out runs/digits
    python -m gflows.train --config digits-rot-residual-D4 --out runs/digits --resume
    torchrun --nproc_per_node 4 -m gflows.train --config cifar10-coupling-D4 --override train.lr=5e-4
"""

from .checkpoint import load as load_checkpoint
from .loop import NonFiniteLoss, Options, Result, fit
from .metrics import evaluate
from .rng import derive_seed
from .sources import ImageSource, Source, TensorSource

__all__ = [
    "ImageSource",
    "NonFiniteLoss",
    "Options",
    "Result",
    "Source",
    "TensorSource",
    "derive_seed",
    "evaluate",
    "fit",
    "load_checkpoint",
]
