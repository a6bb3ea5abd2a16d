"""``model.npz``: a trained model with everything needed to use it again.

One ``autograd.save`` archive (arrays plus a JSON description, never pickle: loading runs no
code) holding a dict:

- ``"model"`` and ``"architecture"``: the class and its constructor's arguments
  (``nn.MLP(**architecture)``);
- ``"state_dict"``: the trained weights;
- ``"standardize"``: the input standardisation fitted on the training split,
  x ← (x - mean) / (std + eps), as arrays ``mean`` and ``std`` and the number ``eps``;
- ``"data"``, ``"seed"``, ``"validation_accuracy"``: where it was trained and what it
  scored, so ``chainrule predict`` rebuilds the same validation split.

Reloading, in three lines::

    import chainrule
    model, standardize = chainrule.load_model("chainrule-demo/model.npz")
    predictions = model(standardize(X)).argmax(1)
"""

import os

import autograd
import nn
from autograd.transforms import Standardize
from chainrule.digits_cnn import DigitsCNN

FORMAT = "chainrule-model/1"
MODELS = {"MLP": nn.MLP, "DigitsCNN": DigitsCNN}  # the "model" name in a file: the class that rebuilds it


def save_model(path, model, architecture, standardize, **about):
    """Write ``model`` (built as ``MODELS[architecture["model"]](**architecture["arguments"])``)
    with its fitted ``standardize`` and the facts in ``about`` (JSON values) to ``path``."""
    autograd.save({
        "format": FORMAT,
        "model": architecture["model"],
        "architecture": architecture["arguments"],
        "state_dict": model.state_dict(),
        "standardize": {"mean": standardize.mean, "std": standardize.std, "eps": standardize.eps},
        **about,
    }, path)


def load_model(path):
    """``(model, standardize)`` from a file written by ``save_model`` (or the folder holding
    ``model.npz``): the model in eval mode, and the callable that standardises raw inputs."""
    model, standardize, _ = read_model(path)
    return model, standardize


def read_model(path):
    """``load_model``'s pair and, third, the rest of what the file says (data, seed, accuracy)."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    saved = autograd.load(path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a model written by chainrule demo (it has no {FORMAT!r} entry)")
    model = MODELS[saved.pop("model")](**saved.pop("architecture"))
    model.load_state_dict(saved.pop("state_dict"))
    model.eval()
    scaling = saved.pop("standardize")
    standardize = Standardize(eps=scaling["eps"])
    standardize.mean, standardize.std = scaling["mean"], scaling["std"]
    return model, standardize, saved
