"""chainrule's optim: PyTorch's optimizers and schedulers (``optim`` plays ``torch.optim``)."""

from autograd import _check_ours, _lazy

_check_ours.check("optim")

from .adam import Adam, AdamW  # noqa: E402
from .optimizer import Optimizer  # noqa: E402
from .sgd import SGD  # noqa: E402

# The learning-rate schedulers, swa_utils (which builds on nn) and the optimizers beyond SGD, Adam and AdamW load
# on first use (PEP 562), so that `import optim` stays quick: optim.lr_scheduler.StepLR, `from optim import LBFGS`
# and `optim.RMSprop(...)` work as before.
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {
    "lr_scheduler": ".lr_scheduler",
    "_functional": "._functional",
    "swa_utils": ".swa_utils",
    "ASGD": ".asgd:ASGD",
    "Adadelta": ".adadelta:Adadelta",
    "Adafactor": ".adafactor:Adafactor",
    "Adagrad": ".adagrad:Adagrad",
    "Adamax": ".adamax:Adamax",
    "LBFGS": ".lbfgs:LBFGS",
    "Muon": ".muon:Muon",
    "NAdam": ".nadam:NAdam",
    "RAdam": ".radam:RAdam",
    "RMSprop": ".rmsprop:RMSprop",
    "Rprop": ".rprop:Rprop",
    "SparseAdam": ".sparse_adam:SparseAdam",
})

_lazy.register_home("autograd.optim", "optim")  # torch.optim.AdamW in a program that imports torch alone (autograd
# does not import optim: optim says where it is)
