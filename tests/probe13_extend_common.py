"""What the files of session 13's probe of extending PyTorch (tests/test_programs_probe13_extend_*.py: custom
operators, operators in use, pytrees, benchmarks, autograd Functions) share: ``sub`` (the library's submodule by
name: ``torch.func``, ``torch.utils._pytree``, ...) and ``NS``, the one ``torch.library`` namespace every custom
operator of these files is defined in."""

import importlib


def sub(m, name):
    """The library's submodule ``name`` (``torch.func``, ``torch.utils._pytree``, ...)."""
    return importlib.import_module(f"{m.torch.__name__}.{name}")


NS = "probe13_extend"
