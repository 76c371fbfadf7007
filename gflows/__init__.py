"""gflows: G-equivariant finite normalizing flows (Bose, Brubaker, Kobyzev, arXiv 2110.08649).

The companion package of the gflows book. Modules, imports flowing one way:

* :mod:`gflows.groups`  - symmetry groups of the plane and their exact actions on images and points;
* :mod:`gflows.flows`   - the flow protocol, density model and invertible layers;
* :mod:`gflows.symmetrize` - Haar averaging (the Reynolds operator): equivariant maps, invariant functions;
* :mod:`gflows.transport` - Moser's construction: an equivariant map pushing one invariant density onto another;
* :mod:`gflows.checks`  - equivariance, invariance, inverse and log-det checks;
* :mod:`gflows.train`   - fit a flow to points or images: notebooks, ``python -m gflows.train``, torchrun;
* :mod:`gflows.runtime` - the ``quick`` / ``full`` profile switch;
* :mod:`gflows.viz`, :mod:`gflows.widgets` - figures and their interactive twins.
"""

from . import checks, flows, groups, runtime, symmetrize, transport

__version__ = "0.2.0"  # the one place of the version (CHANGELOG.md says where it is read)
__all__ = ["checks", "flows", "groups", "runtime", "symmetrize", "transport", "__version__"]
