"""What the files of session 12's resume probe (tests/test_programs_probe12_resume_*.py, one kind of training state
each) share: whether dropout masks can be compared with PyTorch's (SAME_MASKS), the two-part and BatchNorm networks
most programs train, and their data.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and
seeds, comparing losses step by step, final weights and optimizer states, and each resumed run against the
uninterrupted one bit for bit."""

import numpy as np

from .pytorch_programs import same_dropout_masks

# Where PyTorch draws dropout masks through MKL's generator (some Intel processors), which chainrule does not
# reproduce, the programs with Dropout are compared with themselves (resumed against uninterrupted) only
SAME_MASKS = same_dropout_masks()


def two_part_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def roundtrip_data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)


def bn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
