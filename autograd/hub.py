"""``autograd.hub``: what of PyTorch's ``torch.hub`` works without a network. Its progress bar, ``tqdm``
(tqdm's where it is installed, a bar that draws nothing otherwise), and its cache directory (``get_dir``,
``set_dir``). Loading from a hub downloads a model's code and weights, which chainrule never does:
``load``, ``list``, ``help``, ``load_state_dict_from_url`` and ``download_url_to_file`` refuse, saying so."""

import os
import re
from urllib.parse import urlparse  # noqa: F401  (torch.hub's: checkpoint helpers import it from there)

# the hash prefix in a checkpoint's file name, model-<hash>.pth (torch.hub's; timm imports it)
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")

try:
    from tqdm import tqdm
except ImportError:  # (tqdm is an optional extra: chainrule[demo])

    class tqdm:  # noqa: N801  (tqdm's own name)
        """A progress bar that draws nothing, with tqdm's calls: iterate it (or ``update(n)``), set its description
        or postfix, ``write`` a line, ``close`` it, use it in a with block."""

        def __init__(self, iterable=None, desc=None, total=None, disable=False, unit="it", unit_scale=False,
                     unit_divisor=1000, file=None, **options):
            self.iterable, self.desc, self.file, self.n = iterable, desc, file, 0
            self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total

        def __iter__(self):
            for item in self.iterable:
                yield item
                self.n += 1

        def __len__(self):
            return self.total or 0

        def update(self, n=1):
            self.n += n

        def set_description(self, desc=None, refresh=True):
            self.desc = desc

        def set_postfix(self, ordered_dict=None, refresh=True, **values):
            pass

        def write(self, s, file=None, end="\n"):
            print(s, file=file, end=end)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exception):
            self.close()


_directory = None  # set_dir's


def get_dir():
    """Where hub models would be cached: set_dir's, else $TORCH_HOME/hub (~/.cache/torch/hub), as PyTorch's."""
    if _directory is not None:
        return _directory
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def set_dir(d):
    global _directory
    _directory = os.path.expanduser(d)


def _no_downloads(name):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"autograd.hub.{name} downloads code or weights from the network, which chainrule never "
                           "does: load a state_dict saved on disk with autograd.load instead")

    refuse.__name__ = name
    return refuse


load = _no_downloads("load")
list = _no_downloads("list")  # noqa: A001  (torch.hub.list)
help = _no_downloads("help")  # noqa: A001  (torch.hub.help)
load_state_dict_from_url = _no_downloads("load_state_dict_from_url")
download_url_to_file = _no_downloads("download_url_to_file")
