"""``autograd.utils.tensorboard``, as ``torch.utils.tensorboard``: ``SummaryWriter`` writes TensorBoard's
event files (scalars, histograms, images, figures, audio, text, PR curves, hyperparameters, the model's
graph) with no ``tensorboard`` package needed; view them with ``tensorboard --logdir runs``."""

from .writer import FileWriter, SummaryWriter

__all__ = ["FileWriter", "SummaryWriter"]
