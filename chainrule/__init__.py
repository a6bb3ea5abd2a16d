"""chainrule's command-line application (``chainrule demo``), built on ``autograd``, ``nn`` and
``optim``. The core never imports it."""
