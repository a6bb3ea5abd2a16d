"""What the files of session 31's probe of pytorch/examples (tests/test_programs_probe31_examples_*.py, one an example
or a pair of examples) share.

They hold programs of the official pytorch/examples repository that session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written (its model classes, training and evaluation
functions and idioms) with sizes shrunk, datasets replaced by seeded random tensors and a few steps only; run on
chainrule and, where installed, on PyTorch under the same seeds, comparing losses, outputs and gradients, and checked
without PyTorch against invariants."""

from .pytorch_programs import same_dropout_masks

# whether dropout's masks are PyTorch's on this machine (measured: pytorch_programs.same_dropout_masks)
SAME_DROPOUT = same_dropout_masks()
