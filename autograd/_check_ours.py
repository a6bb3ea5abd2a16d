"""PyPI's ``autograd`` (HIPS autograd, a dependency of pymoo, pennylane, lifelines, ...) is a
different package with chainrule's import name. pip installs both into one ``autograd/``
folder, the later one's ``__init__.py`` winning, and neither works. Say so at import, naming
both packages and the fix, instead of failing later with a bare ImportError.

Cheap, for every ``import autograd`` (whose first import is this module): a few stat calls,
no imports beyond ``os`` and ``sys``.
"""

import os
import sys

OURS = os.path.dirname(os.path.abspath(__file__))  # chainrule's autograd folder
# files in HIPS autograd's wheel (1.x) and never in chainrule's: autograd/numpy/, builtins.py, ...
HIPS_ONLY = ("numpy", "builtins.py", "wrap_util.py", "tracer.py")
FIX = ("Install chainrule into a virtual environment of its own (python -m venv chainrule-env, "
       "then chainrule-env/bin/pip install chainrule; in chainrule's repository: make install), "
       "and HIPS autograd into another.")


def hips_files(folder):
    return [name for name in HIPS_ONLY if os.path.exists(os.path.join(folder, name))]


def check_folder():
    """Raise ImportError when HIPS autograd's files share chainrule's autograd folder."""
    if found := hips_files(OURS):
        raise ImportError(
            f"two different packages named 'autograd' are installed into {OURS}: chainrule's "
            f"(autograd, nn, optim) and HIPS autograd (pip's 'autograd', whose {', '.join(found)} are there); "
            f"their files are mixed and neither works. {FIX}"
        )


def check(package):
    """For ``nn`` and ``optim``: the ``autograd`` imported must be chainrule's, beside ``package``."""
    check_folder()
    autograd_file = os.path.abspath(getattr(sys.modules.get("autograd"), "__file__", None) or "?")
    beside = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules[package].__file__)))
    # an editable install's finder supplies this module even when another autograd was imported
    if os.path.dirname(autograd_file) != OURS or os.path.dirname(OURS) != beside:
        raise ImportError(
            f"{package} belongs to chainrule, but the 'autograd' imported is {autograd_file}, another "
            f"package's (HIPS autograd, pip's 'autograd', a dependency of pymoo, pennylane, ...). {FIX}"
        )


check_folder()
