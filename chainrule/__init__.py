"""chainrule's command-line application (``chainrule demo``, ``chainrule predict``), built on
``autograd``, ``nn`` and ``optim``. The core never imports it."""

from .model_file import load_model, save_model
