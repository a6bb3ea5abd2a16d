"""Muon: momentum, orthogonalised by a Newton–Schulz iteration, for the 2-D weights of hidden layers."""

import math

import autograd

from .optimizer import Optimizer, check_tensor_lr, require

# Keller Jordan's coefficients and step count, PyTorch's defaults
DEFAULT_A, DEFAULT_B, DEFAULT_C = 3.4445, -4.7750, 2.0315
DEFAULT_NS_STEPS = 5
EPS = 1e-7


def zeropower_via_newtonschulz(matrix, ns_coefficients, ns_steps, eps):
    """An approximate orthogonalisation of ``matrix`` (U S Vᵀ ↦ about U Vᵀ), by the quintic iteration

        X ← M / max(‖M‖_F, ε)                 (so every singular value is at most 1)
        repeat k times:  A ← X Xᵀ,   X ← a X + (b A + c A²) X

    on the wide orientation of M (transposed when it has more rows than columns, so that A is the
    smaller Gram matrix). Each step maps a singular value σ to aσ + bσ³ + cσ⁵; the coefficients push
    small values up fast, so after a few steps they lie around 1 (between about 0.5 and 1.5, not
    exactly 1, which serves training as well). PyTorch runs this in bfloat16; NumPy has none, so it
    runs here in the gradient's own dtype (the result agrees with PyTorch's to bfloat16's precision)."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if matrix.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def adjust_lr(lr, adjust_lr_fn, shape):
    """The step size for a weight of shape (A, B): ``lr`` · √max(1, A/B) ("original", Keller Jordan's:
    the same update RMS for every shape), or ``lr`` · 0.2 √max(A, B) ("match_rms_adamw", Moonshot's:
    AdamW's update RMS, so AdamW's lr and weight decay carry over)."""
    rows, columns = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / columns))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, columns))
    return lr


class Muon(Optimizer):
    """Muon (Jordan et al., 2024; Liu et al., 2025, "Muon is Scalable for LLM Training"), as ``torch.optim.Muon``:

        B ← μ B + (1 - μ) g                          (PyTorch's form: an average, B.lerp_(g, 1 - μ))
        U ← g + μ (B - g) if nesterov else B          (g.lerp(B, μ))
        O ← NS(U)                                    (zeropower_via_newtonschulz: about U's orthogonal factor)
        W ← W (1 - η λ)                              (decoupled weight decay)
        W ← W - adjust_lr(η, shape) O

    For the 2-D weights of hidden layers only (a parameter of another shape is refused); biases,
    embeddings and the output layer go to another optimizer, such as AdamW.
    """

    supports_complex = False  # "Muon does not support complex parameters", as PyTorch's

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), eps=EPS, ns_steps=DEFAULT_NS_STEPS,
                 adjust_lr_fn=None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn))

    def check_hyperparameters(self, group):
        check_tensor_lr(group)
        require(group["lr"] >= 0, f"Learning rate should be >= 0 but is: {group['lr']}")
        require(group["momentum"] >= 0, f"momentum should be >= 0 but is: {group['momentum']}")
        require(group["weight_decay"] >= 0, f"weight decay should be >= 0 but is: {group['weight_decay']}")
        require(group["adjust_lr_fn"] in (None, "original", "match_rms_adamw"),
                f"Adjust learning rate function {group['adjust_lr_fn']} is not supported")
        for p in group.get("params", ()):  # (the defaults are checked before the parameters are seen)
            require(p.ndim == 2, f"Muon only supports 2D parameters whereas we found a parameter with size: "
                                 f"{p.size()}")
        super().check_hyperparameters(group)

    def update(self, param, grad, state, group):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = autograd.zeros_like(grad)
        lr, momentum = group["lr"], group["momentum"]
        buffer = state["momentum_buffer"]
        buffer.lerp_(grad, 1 - momentum)
        direction = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
        orthogonal = zeropower_via_newtonschulz(direction, group["ns_coefficients"], group["ns_steps"], group["eps"])
        param.mul_(1 - lr * group["weight_decay"])
        param.add_(orthogonal, alpha=-adjust_lr(lr, group["adjust_lr_fn"], param.shape))
