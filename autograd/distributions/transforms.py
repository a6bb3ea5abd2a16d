"""``distributions.transforms``: invertible maps y = f(x) with the log |det ∂y/∂x| that a change
of variables needs, as PyTorch's:

    log p_Y(y) = log p_X(f⁻¹(y)) - log |det J_f(f⁻¹(y))|

Each transform says where it maps from and to (``domain``, ``codomain``: constraints whose
``event_dim`` is how many trailing dims one event spans), whether it is a bijection, its ``sign``
(the direction of a monotone scalar map), and ``inv``, the inverse, itself a Transform. With
``cache_size=1`` a transform remembers its last (x, y), so ``t.inv(t(x))`` returns x itself.

What a transform is and how transforms combine: transform.py; the elementwise maps:
scalar_transforms.py; the maps onto simplices and matrices: matrix_transforms.py.
"""

from .matrix_transforms import (  # noqa: F401
    CorrCholeskyTransform,
    LowerCholeskyTransform,
    PositiveDefiniteTransform,
    SoftmaxTransform,
    StickBreakingTransform,
    tril_matrix_to_vec,
    vec_to_tril_matrix,
)
from .scalar_transforms import (  # noqa: F401
    AbsTransform,
    AffineTransform,
    CumulativeDistributionTransform,
    ExpTransform,
    PowerTransform,
    SigmoidTransform,
    SoftplusTransform,
    TanhTransform,
    log_sigmoid,
)
from .transform import (  # noqa: F401
    CatTransform,
    ComposeTransform,
    IndependentTransform,
    ReshapeTransform,
    StackTransform,
    Transform,
    _InverseTransform,
    identity_transform,
)

__all__ = ["AbsTransform", "AffineTransform", "CatTransform", "ComposeTransform", "CorrCholeskyTransform",
           "CumulativeDistributionTransform", "ExpTransform", "IndependentTransform", "LowerCholeskyTransform",
           "PositiveDefiniteTransform", "PowerTransform", "ReshapeTransform", "SigmoidTransform", "SoftmaxTransform",
           "SoftplusTransform", "StackTransform", "StickBreakingTransform", "TanhTransform", "Transform",
           "identity_transform"]

