"""chainrule's optim: PyTorch's optimizers and schedulers (``optim`` plays ``torch.optim``)."""

from autograd import _check_ours, _lazy

_check_ours.check("optim")

from .adadelta import Adadelta  # noqa: E402
from .adafactor import Adafactor  # noqa: E402
from .adagrad import Adagrad  # noqa: E402
from .adam import Adam, AdamW  # noqa: E402
from .adamax import Adamax  # noqa: E402
from .asgd import ASGD  # noqa: E402
from .lbfgs import LBFGS  # noqa: E402
from .nadam import NAdam  # noqa: E402
from .optimizer import Optimizer  # noqa: E402
from .radam import RAdam  # noqa: E402
from .rmsprop import RMSprop  # noqa: E402
from .rprop import Rprop  # noqa: E402
from .sgd import SGD  # noqa: E402

# The learning-rate schedulers and swa_utils (which builds on nn) load on first use (PEP 562), so that
# `import optim` stays quick: optim.lr_scheduler.StepLR and `from optim import lr_scheduler` work as before.
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"lr_scheduler": ".lr_scheduler",
                                                            "swa_utils": ".swa_utils"})
