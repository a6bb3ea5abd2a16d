"""What the files of session 22's probe of spiking networks (tests/test_programs_probe22_spiking_*.py, one family of
programs each) share: the short name of a dtype that the programs report their results' dtypes by.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same seed (random
draws match bit for bit), comparing values, gradients, spike counts and dtypes, with literals, NumPy by hand and
invariants where PyTorch is missing. The library bugs these programs found are tested in
tests/test_probe22_spiking_fixes.py."""

def dtype_name(dtype):
    return str(dtype).split(".")[-1]
