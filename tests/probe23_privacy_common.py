"""What the files of session 23's privacy probe (tests/test_programs_probe23_privacy_*.py: DP-SGD, federated
learning, attacks and unlearning) share: ``_func``, the library's ``torch.func`` that the per-sample, federated and
influence programs take.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same seed, comparing
values and gradients, with invariants and NumPy checks that hold without PyTorch."""

def _func(m):
    return m.torch.func
