"""python -m autograd demo: forwards to the ``chainrule`` command (python -m chainrule)."""

import importlib
import sys

sys.exit(importlib.import_module("chainrule.cli").main())
