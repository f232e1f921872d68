"""mi-bounds: variational mutual-information bounds, and LLM alignment read as MI maximisation.

The public names of the bound library are re-exported here; the submodules are
:mod:`mi_bounds.bounds` (bounds on critic scores), :mod:`mi_bounds.preference` (preference
losses), :mod:`mi_bounds.decline.shape` (the shape of a chosen-likelihood curve),
:mod:`mi_bounds.estimation.critics` and :mod:`mi_bounds.estimation.training` (neural estimation) and
:mod:`mi_bounds.lm` (the small-LM path; optional extra ``lm``).
"""

from importlib import metadata as _metadata

from mi_bounds.bounds import (
    BOUNDS,
    BoundSpec,
    dv_bound,
    dv_bound_from_scores,
    get_bound,
    infonce_bound,
    infonce_bound_from_negatives,
    js_bound,
    nwj_bound,
    offdiagonal,
    smile_bound,
    split_scores,
    tuba_bound,
    value_with_gradient_of,
)
from mi_bounds.decline.shape import (
    DeclineShape,
    decline_shape,
    shapes_over_seeds,
    value_at_first_crossing,
)
from mi_bounds.preference import (
    LOSSES,
    LossSpec,
    get_loss,
    implicit_reward,
    preference_loss,
    preference_metrics,
    register_loss,
)

try:  # the installed distribution's version (pyproject.toml is the one place it is written)
    __version__ = _metadata.version("mi-bounds")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BOUNDS",
    "LOSSES",
    "BoundSpec",
    "DeclineShape",
    "LossSpec",
    "__version__",
    "decline_shape",
    "dv_bound",
    "dv_bound_from_scores",
    "get_bound",
    "get_loss",
    "implicit_reward",
    "infonce_bound",
    "infonce_bound_from_negatives",
    "js_bound",
    "nwj_bound",
    "offdiagonal",
    "preference_loss",
    "preference_metrics",
    "register_loss",
    "shapes_over_seeds",
    "smile_bound",
    "split_scores",
    "tuba_bound",
    "value_at_first_crossing",
    "value_with_gradient_of",
]
