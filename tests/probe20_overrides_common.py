"""What the files of session 20's probe of Tensor subclasses and the ``__torch_function__`` protocol
(tests/test_programs_probe20_overrides_*.py: plain subclasses and parameters, libraries' subclasses and the protocol,
metadata and training) share: ``name``, the class name of a result, which the programs return to compare classes
across the two libraries."""


def name(x):
    return type(x).__name__
