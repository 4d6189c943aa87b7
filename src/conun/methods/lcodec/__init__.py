"""L-CODEC: conditionally independent, block-restricted Newton unlearning (Mehta, Pal, Singh,
Ravi, CVPR 2022), registered as ``lcodec``.

- :mod:`conun.methods.lcodec.selection`: the CODEC coefficient, FOCI, and the input-perturbation
  features of every output unit that FOCI selects from;
- :mod:`conun.methods.lcodec.newton`: the selected parameters, exact Hessians and
  Hessian-vector products, the MINRES and matrix solves, and the removal step;
- :mod:`conun.methods.lcodec.method`: the options, and the method itself (the algorithm and its
  departures from the authors' code are described there).
"""

from conun.methods.lcodec.method import LCodec, LCodecOptions, SelectionTooLargeError, newton_update
from conun.methods.lcodec.newton import (
    ParameterBlock,
    SolverResult,
    gather_selected,
    gaussian_mechanism_std,
    hessian_vector_product,
    newton_removal_step,
    removed_gradient_sum,
    scatter_selected,
    selected_blocks,
    selected_hessian,
    solve_damped_minres,
    write_selected_,
)
from conun.methods.lcodec.selection import (
    NEIGHBOUR_CHUNK,
    FociResult,
    UnitLayer,
    codec,
    foci,
    perturbation_features,
    unit_layers,
)

__all__ = [
    "NEIGHBOUR_CHUNK",
    "FociResult",
    "LCodec",
    "LCodecOptions",
    "ParameterBlock",
    "SelectionTooLargeError",
    "SolverResult",
    "UnitLayer",
    "codec",
    "foci",
    "gather_selected",
    "gaussian_mechanism_std",
    "hessian_vector_product",
    "newton_removal_step",
    "newton_update",
    "perturbation_features",
    "removed_gradient_sum",
    "scatter_selected",
    "selected_blocks",
    "selected_hessian",
    "solve_damped_minres",
    "unit_layers",
    "write_selected_",
]
