"""(g) Recurrent networks, float32, forward and backward, PyTorch with one thread:

- nn.LSTM and nn.GRU (input 32, hidden 128, 50 steps, batch 64) against torch.nn's,
  with the same weights (each layer is one fused node here);
- a recurrence written step by step with Tensor ops, 200 steps of
  h = tanh(h @ W + x_t @ U + b) (hidden 32, batch 8), loss and backward, against
  the same loop in PyTorch and written by hand in NumPy (forward and backward):
  this one measures the engine's cost per node, as the arithmetic is tiny.

NumPy's BLAS is held to one thread too when threadpoolctl is installed (it comes
with the reference extras); otherwise run with OPENBLAS_NUM_THREADS=1 for a
one-thread comparison.
"""

import numpy as np
from timing import best_time, one_thread, optional, table

import autograd

LAYER = {"input": 32, "hidden": 128, "steps": 50, "batch": 64}
LOOP = {"input": 16, "hidden": 32, "steps": 200, "batch": 8}


def layer_rows(name, torch):
    """Seconds per forward+backward of our layer and, when installed, PyTorch's."""
    import nn

    ours = getattr(nn, name)(LAYER["input"], LAYER["hidden"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((LAYER["steps"], LAYER["batch"], LAYER["input"])).astype(np.float32)
    inputs = autograd.tensor(x, requires_grad=True)

    def ours_step():
        output, _ = ours(inputs)
        output.sum().backward()
        return output

    rows = {}
    if torch is not None:
        theirs = getattr(torch.nn, name)(LAYER["input"], LAYER["hidden"])
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        torch_inputs = torch.tensor(x, requires_grad=True)

        def torch_step():
            output, _ = theirs(torch_inputs)
            output.sum().backward()
            return output

        np.testing.assert_allclose(ours_step().numpy(), torch_step().detach().numpy(), atol=1e-5)
        rows["PyTorch"] = best_time(torch_step, repeat=5)
    rows["chainrule"] = best_time(ours_step, repeat=5)
    return rows


def loop_data(seed=0):
    rng = np.random.default_rng(seed)
    hidden, size = LOOP["hidden"], LOOP["input"]
    weights = [(rng.uniform(-1, 1, shape) / np.sqrt(hidden)).astype(np.float32)
               for shape in ((hidden, hidden), (size, hidden), (hidden,))]
    x = rng.standard_normal((LOOP["steps"], LOOP["batch"], size)).astype(np.float32)
    return weights, x


def loop_chainrule(weights, x):
    W, U, b = (autograd.tensor(w, requires_grad=True) for w in weights)
    xs = autograd.tensor(x)

    def step():
        h = autograd.zeros(LOOP["batch"], LOOP["hidden"])
        for t in range(LOOP["steps"]):
            h = (h @ W + xs[t] @ U + b).tanh()
        loss = (h * h).mean()
        W.grad = None
        loss.backward()
        return loss.item(), W.grad.numpy()

    return step


def loop_torch(torch, weights, x):
    W, U, b = (torch.tensor(w, requires_grad=True) for w in weights)
    xs = torch.tensor(x)

    def step():
        h = torch.zeros(LOOP["batch"], LOOP["hidden"])
        for t in range(LOOP["steps"]):
            h = torch.tanh(h @ W + xs[t] @ U + b)
        loss = (h * h).mean()
        W.grad = None
        loss.backward()
        return loss.item(), W.grad.numpy()

    return step


def loop_numpy(weights, x):
    W, U, b = weights

    def step():
        hs = [np.zeros((LOOP["batch"], LOOP["hidden"]), dtype=np.float32)]
        for t in range(LOOP["steps"]):
            hs.append(np.tanh(hs[-1] @ W + x[t] @ U + b))
        h = hs[-1]
        loss = (h * h).mean()
        dh = 2 * h / h.size
        dW, dU, db = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
        for t in range(LOOP["steps"] - 1, -1, -1):
            da = dh * (1 - hs[t + 1] * hs[t + 1])
            dW += hs[t].T @ da
            dU += x[t].T @ da
            db += da.sum(0)
            dh = da @ W.T
        return loss, dW

    return step


def loop_rows(torch):
    weights, x = loop_data()
    steps = {"chainrule": loop_chainrule(weights, x), "NumPy by hand": loop_numpy(weights, x)}
    if torch is not None:
        steps["PyTorch"] = loop_torch(torch, weights, x)
    reference = steps["NumPy by hand"]()
    for step in steps.values():  # all compute the same loss and the same dL/dW
        loss, grad_w = step()
        np.testing.assert_allclose(loss, reference[0], rtol=1e-4)
        np.testing.assert_allclose(grad_w, reference[1], rtol=1e-3, atol=1e-7)
    return {name: best_time(step, repeat=5) for name, step in steps.items()}


def report():
    torch = optional("torch")
    with one_thread(torch) as note:
        shape = "input {input}, hidden {hidden}, {steps} steps, batch {batch}".format(**LAYER)
        lines = [table(f"(g) nn.{name} forward+backward ({shape}), float32", layer_rows(name, torch),
                       "PyTorch" if torch is not None else "chainrule") for name in ("LSTM", "GRU")]
        loop = "{steps} steps of h = tanh(h @ W + x_t @ U + b), hidden {hidden}, batch {batch}".format(**LOOP)
        lines.append(table(f"(g) a recurrence of Tensor ops: {loop}, loss and backward", loop_rows(torch),
                           "NumPy by hand"))
        lines.append(note)
        return "\n".join(lines)


if __name__ == "__main__":
    print(report())
