"""``torch.utils.benchmark``: ``Timer`` (timeit with warm-up and replicates), ``Measurement`` (their statistics,
printed as PyTorch prints them) and ``Compare`` (a table of many). Python statements only: the C++ timer,
callgrind and the fuzzers need PyTorch's toolchain."""

from .common import Measurement, TaskSpec, ordered_unique, select_unit, set_torch_threads, trim_sigfig, unit_to_english
from .compare import Colorize, Compare
from .timer import Language, Timer

__all__ = ["Colorize", "Compare", "Language", "Measurement", "TaskSpec", "Timer", "ordered_unique", "select_unit",
           "set_torch_threads", "trim_sigfig", "unit_to_english"]
