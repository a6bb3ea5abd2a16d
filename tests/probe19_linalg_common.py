"""What the files of session 19's linear-algebra probe (tests/test_programs_probe19_linalg_*.py, one kind of use
each) share: ``INF``, the order of the norms that the norm programs and the differential fuzz both take.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same data, comparing
values, gradients, dtypes and errors."""

INF = float("inf")
