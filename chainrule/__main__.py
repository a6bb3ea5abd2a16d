"""python -m chainrule demo: the same as the ``chainrule`` command."""

import sys

from .cli import main

sys.exit(main())
