"""``autograd.backends.cuda``: PyTorch's ``torch.backends.cuda`` precision switches, kept and changing nothing
(``torch.backends.cuda.matmul.allow_tf32 = True``, from training scripts), as on a CPU build of PyTorch."""

import types

matmul = types.SimpleNamespace(allow_tf32=False, allow_fp16_reduced_precision_reduction=True,
                               allow_bf16_reduced_precision_reduction=True)


def is_built():
    return False
