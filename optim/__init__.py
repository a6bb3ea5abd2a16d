"""chainrule's optim: PyTorch's optimizers and schedulers (``optim`` plays ``torch.optim``)."""

from autograd import _check_ours

_check_ours.check("optim")

from . import lr_scheduler  # noqa: E402
from .adadelta import Adadelta  # noqa: E402
from .adagrad import Adagrad  # noqa: E402
from .adam import Adam, AdamW  # noqa: E402
from .adamax import Adamax  # noqa: E402
from .asgd import ASGD  # noqa: E402
from .lbfgs import LBFGS  # noqa: E402
from .nadam import NAdam  # noqa: E402
from .optimizer import Optimizer  # noqa: E402
from .radam import RAdam  # noqa: E402
from .rmsprop import RMSprop  # noqa: E402
from .sgd import SGD  # noqa: E402
