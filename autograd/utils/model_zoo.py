"""``autograd.utils.model_zoo``, as ``torch.utils.model_zoo``: ``load_url`` is ``hub.load_state_dict_from_url``
(a file already in the hub's cache, or a download where the program may make one)."""

from ..hub import load_state_dict_from_url as load_url

__all__ = ["load_url"]
