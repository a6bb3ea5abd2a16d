"""PyPI has other packages named ``autograd``, ``nn`` and ``optim``; installed in the
same environment, one silently replaces the other. Fail loudly instead."""

import pathlib

import autograd

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def check(package):
    found = pathlib.Path(autograd.__file__).resolve().parent.parent
    if found != REPOSITORY or not (found / package).is_dir():
        raise ImportError(
            f"{package} belongs to chainrule, but the 'autograd' imported is {autograd.__file__}; "
            "another package named autograd (HIPS autograd, a dependency of pymoo, pennylane, ...) "
            "is installed here. Use chainrule's own environment: make install"
        )
