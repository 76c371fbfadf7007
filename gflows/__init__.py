"""gflows: G-equivariant finite normalizing flows (Bose, Brubaker, Kobyzev, arXiv 2110.08649).

The companion package of the gflows book. Modules, imports flowing one way:

* :mod:`gflows.groups`  - symmetry groups of the plane and their exact actions on images and points;
* :mod:`gflows.flows`   - the flow protocol, density model and invertible layers;
* :mod:`gflows.checks`  - equivariance, invariance, inverse and log-det checks;
* :mod:`gflows.train`   - fit a flow to points or images: notebooks, ``python -m gflows.train``, torchrun;
* :mod:`gflows.runtime` - the ``quick`` / ``full`` profile switch;
* :mod:`gflows.viz`, :mod:`gflows.widgets` - figures and their interactive twins.
"""

from . import checks, flows, groups, runtime

__version__ = "0.1.0"
__all__ = ["checks", "flows", "groups", "runtime", "__version__"]
