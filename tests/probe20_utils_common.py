"""What the files of session 20's probe of torch.utils (tests/test_programs_probe20_utils_*.py: activation
checkpointing, data, trees, hooks and nn.utils) share: ``randn`` and ``set_weights``."""

import numpy as np


def randn(m, shape, seed):
    return m.torch.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def set_weights(m, model, seed=0):
    with m.torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(0.5 * randn(m, tuple(p.shape), seed + i))
    return model
