"""What the files of session 13's optimiser probe (tests/test_programs_probe13_optim_*.py: every optimiser,
optimisers written as code, schedulers) share: ``TORCH``, PyTorch's modules where installed (else None), which the
checkpoint and focused tests read.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data,
comparing losses, parameters, ``optimizer.state_dict()`` (entries, shapes, dtypes, values) and learning rates."""

from .pytorch_programs import pytorch

TORCH = pytorch()
