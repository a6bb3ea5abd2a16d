"""The bilinear map of two inputs, ``autograd.bilinear`` (PyTorch's top-level spelling;
``nn.functional.bilinear`` and ``nn.Bilinear`` use it):

    y_k = x1ᵀ A_k x2 + b_k,   A of shape (out_features, in1_features, in2_features)

composed of a batched matrix product and a sum, so its gradients are theirs:
dL/dx1 = Σ_k dL/dy_k A_k x2, dL/dx2 = Σ_k dL/dy_k A_kᵀ x1, dL/dA_k = Σ_batch dL/dy_k x1 x2ᵀ.
"""

from .names import names


@names("bilinear", method=False)
def bilinear(input1, input2, weight, bias=None):
    """y_k = x1ᵀ A_k x2 + b_k for A of shape (out, in1, in2); leading dims are batch dims."""
    if input1.shape[:-1] != input2.shape[:-1]:
        raise RuntimeError(f"bilinear(): input batch dimensions do not match: got {input1.shape[:-1]} and "
                           f"{input2.shape[:-1]}")
    if weight.ndim != 3 or weight.shape[1] != input1.shape[-1] or weight.shape[2] != input2.shape[-1]:
        raise RuntimeError(f"bilinear(): weight of shape {tuple(weight.shape)} does not fit inputs of shapes "
                           f"{tuple(input1.shape)} and {tuple(input2.shape)}")
    batch = input1.shape[:-1]
    x1 = input1.reshape(-1, input1.shape[-1])
    x2 = input2.reshape(-1, input2.shape[-1])
    # (out, n, in2): x1 A_k for every k, then the dot product with x2 of each row
    left = x1.unsqueeze(0) @ weight
    # (summed in the inputs' dtype: sum's promotion of integers to int64 is not bilinear's)
    y = (left * x2.unsqueeze(0)).sum(-1, dtype=left.dtype).T.reshape(*batch, weight.shape[0])
    return y if bias is None else y + bias  # (the bias added last, as PyTorch's: its node AddBackward0)
