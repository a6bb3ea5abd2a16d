"""``F.affine_grid`` and ``F.grid_sample`` (spatial transformers): their maths lives in
``autograd/ops/grid_sampling.py`` (``autograd.affine_grid_generator`` and ``autograd.grid_sampler`` are
PyTorch's top-level spellings); this module gives them to ``nn.functional``."""

from autograd.ops.grid_sampling import affine_grid, grid_sample  # noqa: F401  (F.affine_grid, F.grid_sample)
