"""What session 37's program probes (tests/test_programs_probe37_*.py) share: the seeded data and the small
models the programs train, and NumPy's own forward pass and loss of those models, which the tests use without
PyTorch to check a program's first loss independently of the library."""

import numpy as np

F32 = {"rtol": 1e-4, "atol": 1e-5}  # float32 training runs: a few steps, sums in another order
F64 = {"rtol": 1e-9, "atol": 1e-11}


def batch(m, n=16, features=5, classes=3, seed=1):
    """(x, y): n rows of standard normal features and integer class labels, from the library's own seeded RNG."""
    m.torch.manual_seed(seed)
    return m.torch.randn(n, features), m.torch.randint(0, classes, (n,))


def mlp(m, seed=0, hidden=8):
    """Linear(5, hidden) -> Tanh -> Linear(hidden, 3), PyTorch's default initialisation under the seed."""
    m.torch.manual_seed(seed)
    return m.nn.Sequential(m.nn.Linear(5, hidden), m.nn.Tanh(), m.nn.Linear(hidden, 3))


def numpy_mlp_loss(weights, x, y):
    """Cross-entropy of ``mlp``'s forward pass from its state_dict as arrays: the library's first loss, by hand."""
    h = np.tanh(x @ weights["0.weight"].T + weights["0.bias"])
    logits = h @ weights["2.weight"].T + weights["2.bias"]
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean()


def arrays(module):
    return {k: v.detach().numpy().astype(np.float64) for k, v in module.state_dict().items()}
