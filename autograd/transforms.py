"""Input-level tools from the lecture: normalisation and data augmentation.

Each is a callable on a batch of inputs (a Tensor), for ``DataLoader(transform=...)``.
Augmentations draw from the global generator and change only the data, never
the labels: more varied training inputs, a regulariser at the input level.
"""

from .backend import xp
from .random import generator
from .tensor import Tensor, tensor_from


class Standardize:
    """x ← (x - μ) / σ per feature, with μ and σ fitted on the training split only and
    applied unchanged to validation and test data (no information leaks back)."""

    def __init__(self, eps=1e-8):
        self.eps, self.mean, self.std = eps, None, None

    def fit(self, X):
        data = X._data if isinstance(X, Tensor) else xp.asarray(X)
        self.mean, self.std = data.mean(0), data.std(0)
        return self

    def __call__(self, X):
        if self.mean is None:
            raise RuntimeError("Standardize: call fit(training_inputs) first")
        data = X._data if isinstance(X, Tensor) else xp.asarray(X)
        return tensor_from(((data - self.mean) / (self.std + self.eps)).astype(data.dtype))


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, X):
        for transform in self.transforms:
            X = transform(X)
        return X


class AddNoise:
    """x ← x + N(0, std²) elementwise."""

    def __init__(self, std=0.1):
        self.std = std

    def __call__(self, X):
        return tensor_from((X._data + xp.asarray(generator().normal(0, self.std, X.shape))).astype(X.dtype))


def _images(X, image_shape):
    """View a batch as (N, H, W): flat rows (N, H*W) need ``image_shape``."""
    if image_shape is not None:
        return X._data.reshape(len(X), *image_shape)
    if X.ndim < 3:
        raise ValueError(f"a batch of shape {tuple(X.shape)} is not images; pass image_shape=(H, W)")
    return X._data


class RandomFlip:
    """Mirror each image left-right with probability p (axis=-1; axis=-2 flips up-down)."""

    def __init__(self, p=0.5, axis=-1, image_shape=None):
        self.p, self.axis, self.image_shape = p, axis, image_shape

    def __call__(self, X):
        images = _images(X, self.image_shape)
        chosen = xp.asarray(generator().random(len(images)) < self.p)
        flipped = images.copy()
        flipped[chosen] = xp.flip(images[chosen], axis=self.axis)
        return tensor_from(flipped.reshape(X.shape))


class RandomShift:
    """Shift each image by up to ``max_shift`` pixels in each direction, filling with ``fill``."""

    def __init__(self, max_shift=1, image_shape=None, fill=0.0):
        self.max_shift, self.image_shape, self.fill = max_shift, image_shape, fill

    def __call__(self, X):
        images = _images(X, self.image_shape)
        height, width = images.shape[-2:]
        images = images.reshape(len(images), -1, height, width)  # (N, channels, H, W), one channel for (N, H, W)
        m = self.max_shift
        padded = xp.full(images.shape[:2] + (height + 2 * m, width + 2 * m), self.fill, dtype=images.dtype)
        padded[..., m:m + height, m:m + width] = images
        dy, dx = xp.asarray(generator().integers(-m, m + 1, (2, len(images))))
        # one gather for the whole batch (every channel of an image shifts alike): row and column
        # indices of each shifted window; NumPy puts the indexed axes first, so channels move last
        rows = (m - dy)[:, None] + xp.arange(height)[None, :]
        cols = (m - dx)[:, None] + xp.arange(width)[None, :]
        batch = xp.arange(len(images))[:, None, None]
        shifted = padded[batch, :, rows[:, :, None], cols[:, None, :]].transpose(0, 3, 1, 2)
        return tensor_from(shifted.reshape(X.shape))
