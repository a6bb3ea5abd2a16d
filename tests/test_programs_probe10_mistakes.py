"""A new user's first hour: short programs that each make one mistake people really make, run on chainrule
and (where installed) PyTorch. Each must (a) raise where PyTorch raises, an exception of PyTorch's class (or
a subclass) whose message names the problem, (b) warn where PyTorch warns, with the same warning class and
the same result, or (c) give the same wrong-but-legal answer PyTorch gives.

What they exercise: a model's shapes (in_features, a conv output not flattened, the batch flattened too, NHWC
images, 5-d input, a kernel larger than the image), the losses' targets (float, one-hot, out of range, int32,
a batch of one squeezed away, a softmax before cross_entropy, log forgotten before nll_loss, logits into
BCELoss, None from a forward without return), autograd (backward twice through an unrolled RNN, a non-scalar
backward, backward under no_grad, forgotten zero_grad, a scaled "leaf", manual updates, in-place writes over
saved outputs, detach), optimisers and schedulers (a consumed generator, parameters without the call, lr as a
string, a layer added after the optimiser, scheduler before optimiser), modules (registering before
super().__init__(), a plain list of layers, a plain tensor attribute, BatchNorm on a batch of one), data
(float64 NumPy data, ragged items), checkpoints (missing, unexpected and prefixed keys, size mismatches, the
best state saved without a copy) and tensor basics (cat/stack/squeeze/expand/reshape/Embedding errors,
accuracy from bools, int tensors updated with floats).

Deliberate differences the README names (a loss of mismatched shapes raises; ``view`` of a transposed tensor
and ``numpy()`` of a tensor that requires grad work) are not repeated here.
"""

import copy
import re
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.program_errors import raises_alike
from tests.pytorch_programs import OURS, assert_same, load, plain, pytorch, run_both, weights_of

nn = ported_nn.nn  # fixtures: chainrule's nn and F, then PyTorch's (for the focused tests at the end)
F = ported_nn.F


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def warns_alike(program, match, *args, kind=UserWarning, rtol=1e-5, atol=1e-6):
    """``program(modules, *args)`` warns on both libraries (ours a ``kind`` matching ``match``, PyTorch's one of
    that class) and returns the same result on both. Returns ours."""
    with warnings.catch_warnings(record=True) as ours_caught:
        warnings.simplefilter("always")
        ours = plain(program(OURS, *args))
    assert any(issubclass(w.category, kind) and re.search(match, str(w.message)) for w in ours_caught), (
        [f"{w.category.__name__}: {w.message}" for w in ours_caught])
    torch_modules = pytorch()
    if torch_modules is not None:
        with warnings.catch_warnings(record=True) as theirs_caught:
            warnings.simplefilter("always")
            theirs = plain(program(torch_modules, *args))
        assert any(issubclass(w.category, kind) for w in theirs_caught), "PyTorch did not warn"
        assert_same(ours, theirs, rtol, atol)
    return ours


RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((4, 1, 8, 8)).astype(np.float32)
LABELS = np.array([0, 2, 1, 2])
ROWS = RNG.standard_normal((5, 3))  # float64, as NumPy makes them


# -- a model's shapes -------------------------------------------------------------------------------------


def test_linear_with_the_wrong_in_features():
    def program(m):  # 8x8 images flattened are 64 features, not 63
        model = m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(63, 10))
        return model(m.torch.tensor(IMAGES))

    error = raises_alike(program, "mat1 and mat2 shapes cannot be multiplied", kind=RuntimeError)
    assert "(4, 64)" in str(error) and "(10, 63)" in str(error)


def test_a_conv_output_not_flattened_before_the_linear_layer():
    def program(m):
        conv = m.nn.Conv2d(1, 4, 3)
        return m.nn.Linear(4 * 6 * 6, 3)(conv(m.torch.tensor(IMAGES)))  # forgot x.flatten(1)

    error = raises_alike(program, "mat1 and mat2 shapes cannot be multiplied", kind=RuntimeError)
    assert "(4, 4, 6, 6)" in str(error) and "144" in str(error)


def test_torch_flatten_flattens_the_batch_too():
    def program(m):  # torch.flatten(x) is one vector of 4*64 numbers: nn.Flatten() keeps the batch
        return m.nn.Linear(64, 3)(m.torch.flatten(m.torch.tensor(IMAGES)))

    error = raises_alike(program, "mat1 and mat2 shapes cannot be multiplied", kind=RuntimeError)
    assert "(256,)" in str(error)


def test_images_in_channels_last_layout_given_to_conv2d():
    def program(m):  # a batch of RGB images straight from NumPy/PIL: (N, H, W, C)
        rgb = m.torch.tensor(IMAGES[:2].reshape(2, 8, 8, 1).repeat(3, axis=3))
        return m.nn.Conv2d(3, 4, 3)(rgb)

    error = raises_alike(program, "3 channels", kind=RuntimeError)
    assert "got 8" in str(error) and "[2, 8, 8, 3]" in str(error)


def test_a_five_dim_input_to_conv2d():
    def program(m):
        return m.nn.Conv2d(1, 4, 3)(m.torch.tensor(IMAGES)[None])

    raises_alike(program, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d.*\[1, 4, 1, 8, 8\]",
                 kind=RuntimeError)


def test_an_lstms_output_tuple_given_to_torch_relu():
    def program(m):
        out = m.nn.LSTM(3, 4)(m.torch.ones(5, 2, 3))  # (output, (h_n, c_n)), not output
        return m.torch.relu(out)

    raises_alike(program, "must be .*Tensor, not tuple", kind=TypeError)

    def functional(m):
        return m.F.relu(m.nn.GRU(3, 4)(m.torch.ones(5, 2, 3)))

    raises_alike(functional, "must be .*Tensor, not tuple", kind=TypeError)

def test_text_embeddings_in_batch_length_channels_layout_given_to_conv1d():
    def program(m):  # nn.Embedding gives (N, L, E); Conv1d reads (N, C, L): a permute(0, 2, 1) forgotten
        embedded = m.nn.Embedding(20, 8)(m.torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] * 2))
        return m.nn.Conv1d(8, 4, 3)(embedded)

    error = raises_alike(program, "8 channels", kind=RuntimeError)
    assert "got 10" in str(error) and "[2, 10, 8]" in str(error)


def test_an_lstm_inside_sequential_hands_its_tuple_to_the_next_layer():
    def program(m):
        model = m.nn.Sequential(m.nn.Embedding(20, 8), m.nn.LSTM(8, 16, batch_first=True), m.nn.Linear(16, 2))
        return model(m.torch.tensor([[1, 2, 3]]))

    error = raises_alike(program, "must be .*Tensor, not tuple", kind=TypeError)
    assert "[0]" in str(error)

def test_a_kernel_larger_than_the_image():
    def program(m):
        return m.nn.Conv2d(1, 2, 5)(m.torch.ones(1, 1, 3, 3))

    raises_alike(program, r"Kernel size: \(5 x 5\). Kernel size can't be greater than actual input size",
                 kind=RuntimeError)


def test_one_image_without_its_batch_dim_is_read_as_unbatched():
    weights = weights_of(lambda m: m.nn.Conv2d(1, 2, 3))

    def program(m):  # (C, H, W): PyTorch treats it as one unbatched image, output (2, 6, 6)
        conv = load(m, m.nn.Conv2d(1, 2, 3), weights)
        return conv(m.torch.tensor(IMAGES[0]))

    assert _same(program, rtol=1e-5, atol=1e-5).shape == (2, 6, 6)


# -- the losses' targets ----------------------------------------------------------------------------------


def test_cross_entropy_with_float_class_indices():
    def program(m):  # labels read from a CSV come out float
        return m.F.cross_entropy(m.torch.randn(4, 3), m.torch.tensor(LABELS.astype(np.float32)))

    raises_alike(program, "expected target dtype to be Long", kind=RuntimeError)


def test_cross_entropy_with_one_hot_long_targets():
    def program(m):
        return m.F.cross_entropy(m.torch.randn(4, 3), m.F.one_hot(m.torch.tensor(LABELS), 3))

    error = raises_alike(program, "target", kind=RuntimeError)
    assert "(4, 3)" in str(error)


def test_one_hot_float_targets_are_class_probabilities_and_give_the_same_loss():
    logits = RNG.standard_normal((4, 3)).astype(np.float32)

    def program(m):
        x = m.torch.tensor(logits, requires_grad=True)
        as_probabilities = m.F.cross_entropy(x, m.F.one_hot(m.torch.tensor(LABELS), 3).float())
        as_indices = m.F.cross_entropy(x, m.torch.tensor(LABELS))
        as_probabilities.backward()
        return [as_probabilities, as_indices, x.grad]

    probabilities, indices, _ = _same(program)
    np.testing.assert_allclose(probabilities, indices, rtol=1e-6)


@pytest.mark.parametrize("label", [3, -1])
def test_a_label_out_of_range(label):
    def program(m):  # 3 classes, labelled 1..3 instead of 0..2 (or -1 for "unknown")
        return m.nn.CrossEntropyLoss()(m.torch.zeros(4, 3), m.torch.tensor([0, 1, label, 2]))

    error = raises_alike(program, f"{label} is out of bounds", kind=IndexError)
    assert "3 classes" in str(error)


def test_int32_class_indices():
    def program(m):
        return m.F.cross_entropy(m.torch.zeros(4, 3), m.torch.tensor(LABELS.astype(np.int32)))

    raises_alike(program, "expected target dtype to be Long or Byte, but got Int", kind=RuntimeError)


def test_labels_of_another_batch():
    def program(m):
        return m.F.cross_entropy(m.torch.zeros(4, 3), m.torch.tensor(LABELS[:3]))

    error = raises_alike(program, "target", kind=ValueError)
    assert "(4, 3)" in str(error) and "(3,)" in str(error)


def test_squeezing_a_batch_of_one_leaves_one_prediction_whose_loss_has_no_backward():
    def evaluate(m):  # out.squeeze() of (1, C) scores is (C,); the label stays (1,): PyTorch computes the loss
        scores = m.torch.tensor([[0.2, 0.8, -0.5]], requires_grad=True)
        losses = [m.F.cross_entropy(scores.squeeze(), m.torch.tensor([1]), reduction=r) for r in ("mean", "none")]
        return [*losses, m.F.nll_loss(scores.squeeze().log_softmax(0), m.torch.tensor([1]), reduction="sum")]

    mean, none, nll = _same(evaluate)
    np.testing.assert_allclose([mean, none, nll], np.log(np.exp([0.2, 0.8, -0.5]).sum()) - 0.8, rtol=1e-6)
    assert none.shape == ()

    def train(m, loss):  # ... and refuses at backward
        scores = m.torch.tensor([[0.2, 0.8, -0.5]], requires_grad=True)
        getattr(m.F, loss)(scores.squeeze(), m.torch.tensor([1])).backward()

    for loss in ("cross_entropy", "nll_loss"):
        error = raises_alike(train, r"size mismatch \(got input: \[3\], target: \[1\]\)", loss, kind=RuntimeError)
        assert "squeeze" in str(error)


def test_one_prediction_with_two_labels():
    def program(m):
        return m.F.cross_entropy(m.torch.zeros(3), m.torch.tensor([1, 2]))

    raises_alike(program, "For 1D input, 1D target must have size 1, but got target size: 2", kind=ValueError)


def test_softmax_before_cross_entropy_trains_on_the_same_wrong_loss():
    weights = weights_of(lambda m: m.nn.Linear(64, 3))

    def program(m):  # CrossEntropyLoss applies log_softmax itself: a softmax first squashes the gradients
        model = load(m, m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(64, 3), m.nn.Softmax(dim=1)),
                     {"1." + k: v for k, v in weights.items()})
        optimizer = m.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = m.nn.CrossEntropyLoss()(model(m.torch.tensor(IMAGES)), m.torch.tensor(LABELS))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses, model[1].weight

    losses, _ = _same(program, rtol=1e-5, atol=1e-6)
    # softmax outputs lie in [0, 1]: even one-hot ones leave a loss of log((e + 2) / e) for 3 classes
    assert min(losses) > np.log((np.e + 2) / np.e)


def test_nll_loss_on_probabilities_instead_of_log_probabilities():
    def program(m):  # forgot the log: the "loss" is minus a probability, and goes negative
        scores = m.torch.tensor([[0.2, 0.8], [0.6, 0.4]], requires_grad=True)
        loss = m.F.nll_loss(scores.softmax(1), m.torch.tensor([1, 0]))
        loss.backward()
        return loss, scores.grad

    loss, _ = _same(program)
    assert loss < 0


def test_binary_cross_entropy_on_logits():
    def program(m):
        layer = m.nn.Linear(3, 1)
        with m.torch.no_grad():  # (weights fixed: the logits are 16, outside [0, 1] whatever the generator's state)
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)
        logits = layer(m.torch.ones(2, 3) * 5)
        return m.nn.BCELoss()(logits.squeeze(1), m.torch.tensor([0.0, 1.0]))

    error = raises_alike(program, "between 0 and 1", kind=RuntimeError)
    assert "binary_cross_entropy_with_logits" in str(error)


def test_bce_with_logits_and_integer_labels():
    def program(m):
        return m.F.binary_cross_entropy_with_logits(m.torch.tensor([0.3, -0.6]), m.torch.tensor([0, 1]))

    raises_alike(program, "result type Float can't be cast to the desired output type Long", kind=RuntimeError)


def test_bce_with_logits_of_a_column_against_a_vector_of_labels():
    def program(m):  # a Linear(.., 1) head gives (N, 1); the labels are (N,)
        return m.nn.BCEWithLogitsLoss()(m.torch.zeros(4, 1), m.torch.tensor([0.0, 1.0, 1.0, 0.0]))

    error = raises_alike(program, "target", kind=ValueError)
    assert "(4, 1)" in str(error) and "(4,)" in str(error)


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "NLLLoss"])
def test_a_forward_without_return_gives_the_loss_none(loss):
    class Net:
        def __init__(self, m):
            class Model(m.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = m.nn.Linear(4, 3)

                def forward(self, x):
                    self.fc(x)  # no return

            self.model = Model()

    def program(m):
        model = Net(m).model
        return getattr(m.nn, loss)()(model(m.torch.ones(2, 4)), m.torch.tensor([0, 1]))

    error = raises_alike(program, "must be .*Tensor, not NoneType", kind=TypeError)
    assert "return" in str(error)


def test_size_average_false_warns_and_sums():
    def program(m):
        return m.nn.MSELoss(size_average=False)(m.torch.zeros(3), m.torch.tensor([1.0, 2.0, 3.0]))

    assert warns_alike(program, "size_average and reduce args will be deprecated.*reduction='sum'") == 14


def test_a_reduction_that_does_not_exist():
    def program(m):
        return m.F.cross_entropy(m.torch.zeros(2, 3), m.torch.tensor([0, 1]), reduction="avg")

    raises_alike(program, "avg", kind=ValueError)


# -- autograd ---------------------------------------------------------------------------------------------


def test_an_rnn_hidden_state_carried_over_without_detach():
    def program(m):
        rnn = m.nn.RNN(2, 3)
        hidden = m.torch.zeros(1, 1, 3)
        for _ in range(2):  # the second backward runs into the first chunk's freed graph
            out, hidden = rnn(m.torch.ones(4, 1, 2), hidden)
            out.sum().backward()

    raises_alike(program, "backward through the graph a second time", kind=RuntimeError)


def test_the_same_rnn_loop_with_detach_trains():
    weights = weights_of(lambda m: m.nn.RNN(2, 3))

    def program(m):
        rnn = load(m, m.nn.RNN(2, 3), weights)
        optimizer = m.optim.SGD(rnn.parameters(), lr=0.1)
        hidden = m.torch.zeros(1, 1, 3)
        for step in range(3):
            out, hidden = rnn(m.torch.full((4, 1, 2), float(step)), hidden.detach())
            optimizer.zero_grad()
            (out ** 2).mean().backward()
            optimizer.step()
        return out, rnn.weight_hh_l0

    out, trained = _same(program, rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 1, 3) and not np.allclose(trained, weights["weight_hh_l0"])


def test_backward_of_a_loss_left_unreduced():
    def program(m):
        prediction = m.nn.Linear(3, 1)(m.torch.ones(4, 3))
        (prediction - m.torch.ones(4, 1)).pow(2).backward()  # forgot .mean()

    error = raises_alike(program, "grad can be implicitly created only for scalar outputs", kind=RuntimeError)
    assert "(4, 1)" in str(error)


def test_backward_of_a_loss_computed_under_no_grad():
    def program(m):
        model = m.nn.Linear(3, 1)
        with m.torch.no_grad():  # an evaluation block pasted around the training step
            loss = model(m.torch.ones(4, 3)).mean()
        loss.backward()

    raises_alike(program, "does not require grad", kind=RuntimeError)


def test_forgetting_zero_grad_accumulates_the_gradients():
    weights = weights_of(lambda m: m.nn.Linear(64, 3))

    def program(m):
        model = load(m, m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(64, 3)),
                     {"1." + k: v for k, v in weights.items()})
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        grad_norms = []
        for _ in range(3):
            loss = m.F.cross_entropy(model(m.torch.tensor(IMAGES)), m.torch.tensor(LABELS))
            loss.backward()  # no optimizer.zero_grad()
            grad_norms.append(model[1].weight.grad.norm().item())
            optimizer.step()
        return grad_norms, model[1].weight

    _same(program, rtol=1e-5, atol=1e-6)

    def without_steps(m):
        model = load(m, m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(64, 3)),
                     {"1." + k: v for k, v in weights.items()})
        grads = []
        for _ in range(3):
            m.F.cross_entropy(model(m.torch.tensor(IMAGES)), m.torch.tensor(LABELS)).backward()
            grads.append(model[1].weight.grad.clone())
        return grads

    first, second, third = _same(without_steps)
    np.testing.assert_allclose(second, 2 * first, rtol=1e-6)
    np.testing.assert_allclose(third, 3 * first, rtol=1e-6)


def test_a_weight_scaled_after_requires_grad_is_no_leaf():
    def program(m):  # torch.randn(..., requires_grad=True) * 0.01 is the product's output, not a leaf
        w = m.torch.randn(3, 1, requires_grad=True) * 0.01
        (m.torch.ones(2, 3) @ w).sum().backward()
        return w.is_leaf, w.grad

    assert warns_alike(program, "not a leaf Tensor is being accessed") == (False, None)


def test_a_manual_update_outside_no_grad():
    def program(m):
        w = m.torch.ones(3, requires_grad=True)
        (w * w).sum().backward()
        w -= 0.1 * w.grad

    raises_alike(program, "a leaf Variable that requires grad is being used in an in-place operation",
                 kind=RuntimeError)


def test_a_manual_update_that_rebinds_the_name_loses_the_gradient_next_step():
    def program(m):
        w = m.torch.ones(3, requires_grad=True)
        for _ in range(2):
            (w * w).sum().backward()
            w = w - 0.1 * w.grad  # a new non-leaf tensor: its .grad stays None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the non-leaf .grad warning; the TypeError is what ends the program)
        raises_alike(program, "NoneType", kind=TypeError)


def test_a_manual_update_under_no_grad_with_zeroing():
    def program(m):
        w = m.torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
        for _ in range(3):
            ((w - 1) ** 2).sum().backward()
            with m.torch.no_grad():
                w -= 0.25 * w.grad
                w.grad.zero_()
        return w

    np.testing.assert_allclose(_same(program), [1.0, -2.0 + 3 * 0.875, 0.5 + 0.5 * 0.875], rtol=1e-6)


def test_an_in_place_write_over_an_output_saved_for_backward():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.sigmoid()
        y.mul_(2)  # sigmoid's backward needs its output
        y.sum().backward()

    error = raises_alike(program, "modified by an inplace operation", kind=RuntimeError)
    assert "Sigmoid" in str(error)


def test_an_in_place_relu_after_a_sigmoid_layer():
    def program(m):
        net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Sigmoid(), m.nn.ReLU(inplace=True))
        net(m.torch.ones(1, 2)).sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_an_in_place_relu_after_a_linear_layer_is_fine():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 3), m.nn.ReLU(), m.nn.Linear(3, 1)))

    def program(m):
        grads = []
        for inplace in (True, False):
            net = load(m, m.nn.Sequential(m.nn.Linear(2, 3), m.nn.ReLU(inplace=inplace), m.nn.Linear(3, 1)), weights)
            net(m.torch.tensor([[1.0, -2.0]])).sum().backward()
            grads.append([p.grad for p in net.parameters()])
        return grads

    in_place, out_of_place = _same(program)
    for a, b in zip(in_place, out_of_place):
        np.testing.assert_array_equal(a, b)


def test_a_detached_copy_gets_the_gradient_not_the_original():
    def program(m):
        x = m.torch.ones(2, requires_grad=True)
        y = x.detach().requires_grad_()
        (y * 3).sum().backward()
        return x.grad, y.grad

    x_grad, y_grad = _same(program)
    assert x_grad is None and list(y_grad) == [3, 3]


def test_item_of_per_example_losses():
    def program(m):
        losses = m.F.cross_entropy(m.torch.zeros(4, 3), m.torch.tensor(LABELS), reduction="none")
        return losses.item()

    error = raises_alike(program, "a Tensor with 4 elements cannot be converted to Scalar", kind=RuntimeError)
    assert "(4,)" in str(error)


def test_requires_grad_on_integer_labels():
    def program(m):
        return m.torch.tensor(LABELS, requires_grad=True)

    raises_alike(program, "Only Tensors of floating point and complex dtype can require gradients",
                 kind=RuntimeError)


def test_indexing_a_loss_as_old_tutorials_do():
    def program(m):
        loss = m.F.mse_loss(m.torch.zeros(2), m.torch.ones(2))
        return loss.data[0]  # PyTorch 0.3's loss.data[0]

    raises_alike(program, r"invalid index of a 0-dim tensor. Use `tensor.item\(\)`", kind=IndexError)


def test_torch_tensor_of_a_tensor_warns_and_copies():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = m.torch.tensor(x)
        return y, y.requires_grad

    assert warns_alike(program, "To copy construct from a tensor")[1] is False


# -- optimisers and schedulers ----------------------------------------------------------------------------


def test_a_parameters_generator_consumed_before_the_optimizer():
    def program(m):
        model = m.nn.Linear(4, 2)
        params = model.parameters()
        print_count = sum(p.numel() for p in params)  # counting uses the generator up
        return m.optim.SGD(params, lr=0.1), print_count

    raises_alike(program, "optimizer got an empty parameter list", kind=ValueError)


def test_model_parameters_without_the_call():
    def program(m):
        return m.optim.Adam(m.nn.Linear(4, 2).parameters, lr=1e-3)

    raises_alike(program, "'method' object is not iterable", kind=TypeError)


def test_a_learning_rate_read_from_a_config_as_a_string():
    def program(m):
        config = {"lr": "1e-3"}  # YAML reads 1e-3 as a string
        return m.optim.SGD(m.nn.Linear(4, 2).parameters(), lr=config["lr"])

    error = raises_alike(program, "str", kind=TypeError)
    assert "learning rate" in str(error) and "'1e-3'" in str(error)


def test_a_non_leaf_tensor_given_to_the_optimizer():
    def program(m):
        w = m.torch.randn(3, requires_grad=True) * 0.01
        return m.optim.SGD([w], lr=0.1)

    raises_alike(program, "can't optimize a non-leaf Tensor", kind=ValueError)


def test_scheduler_step_before_optimizer_step_warns_and_skips_the_first_lr():
    def program(m):
        model = m.nn.Linear(2, 1)
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        lrs = []
        for _ in range(3):
            scheduler.step()  # the old order
            optimizer.zero_grad()
            model(m.torch.ones(1, 2)).sum().backward()
            optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        return lrs

    np.testing.assert_allclose(warns_alike(program, r"lr_scheduler.step\(\)` before `optimizer.step\(\)"),
                               [0.05, 0.025, 0.0125])


def test_a_layer_added_after_the_optimizer_is_never_trained():
    def program(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = m.nn.Linear(2, 2)

            def forward(self, x):
                return self.head(self.body(x))

        model = Net()
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        model.head = m.nn.Linear(2, 1)  # added later: not in the optimizer
        before = model.head.weight.detach().clone()
        model(m.torch.ones(3, 2)).sum().backward()
        optimizer.step()
        return bool((model.head.weight == before).all()), model.head.weight.grad is not None

    assert _same(program) == (True, True)


# -- modules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "register"), [
    ("buffer", lambda m, self: self.register_buffer("scale", m.torch.ones(1))),
    ("parameter", lambda m, self: self.register_parameter("w", m.nn.Parameter(m.torch.ones(1)))),
    ("module", lambda m, self: setattr(self, "fc", m.nn.Linear(1, 1))),
])
def test_registering_before_super_init(kind, register):
    def program(m):
        class Net(m.nn.Module):
            def __init__(self):
                register(m, self)
                super().__init__()

        return Net()

    raises_alike(program, f"cannot assign {kind}s? before Module.__init__\\(\\) call", kind=AttributeError)


def test_layers_kept_in_a_plain_list_are_invisible_to_parameters_and_state_dict():
    def program(m):
        class Net(m.nn.Module):
            def __init__(self, container):
                super().__init__()
                self.layers = container([m.nn.Linear(2, 2), m.nn.Linear(2, 1)])

        return [(len(list(Net(c).parameters())), len(Net(c).state_dict())) for c in (list, m.nn.ModuleList)]

    assert _same(program) == [(0, 0), (4, 4)]


def test_a_plain_tensor_attribute_is_no_parameter():
    def program(m):
        class Scale(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.gain = m.torch.ones(3, requires_grad=True)  # not nn.Parameter
                self.fc = m.nn.Linear(3, 1)

        return [name for name, _ in Scale().named_parameters()]

    assert _same(program) == ["fc.weight", "fc.bias"]


def test_a_plain_tensor_assigned_over_a_parameter():
    def program(m):
        layer = m.nn.Linear(2, 2)
        layer.weight = m.torch.eye(2)

    raises_alike(program, r"cannot assign 'torch.FloatTensor' as parameter 'weight' \(torch.nn.Parameter or None",
                 kind=TypeError)


def test_batchnorm_in_training_on_a_batch_of_one():
    def program(m):
        model = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4))
        return model(m.torch.ones(1, 3))  # a single example, model.eval() forgotten

    raises_alike(program, r"Expected more than 1 value per channel when training, got input size .*\[1, 4\]|"
                          r"\(1, 4\)", kind=ValueError)


def test_batchnorm_in_eval_on_a_batch_of_one():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4)))

    def program(m):
        model = load(m, m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4)), weights)
        model(m.torch.tensor(ROWS.astype(np.float32)))  # one training batch
        model.eval()
        return model(m.torch.ones(1, 3)), model[1].running_mean

    out, running_mean = _same(program, rtol=1e-5, atol=1e-6)
    hidden = ROWS.astype(np.float32) @ weights["0.weight"].T + weights["0.bias"]
    np.testing.assert_allclose(running_mean, 0.1 * hidden.mean(0), rtol=1e-5, atol=1e-7)
    assert out.shape == (1, 4)


def test_a_validation_pass_without_eval_moves_the_running_statistics():
    def program(m):  # no_grad() stops gradients, not BatchNorm's training mode; momentum=0.9 as Keras means 0.1
        model = m.nn.Sequential(m.nn.Linear(3, 3, bias=False), m.nn.BatchNorm1d(3, momentum=0.9))
        with m.torch.no_grad():
            model[0].weight.copy_(m.torch.eye(3))
            model(m.torch.tensor(ROWS.astype(np.float32)))  # "validation", model.eval() forgotten
        return model[1].running_mean, model[1].running_var, model[1].num_batches_tracked

    running_mean, running_var, batches = _same(program)
    np.testing.assert_allclose(running_mean, 0.9 * ROWS.mean(0), rtol=1e-5)
    np.testing.assert_allclose(running_var, 0.1 + 0.9 * ROWS.var(0, ddof=1), rtol=1e-5)
    assert batches == 1

def test_softmax_layer_without_dim_warns():
    def program(m):
        return m.nn.Softmax()(m.torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]))

    warns_alike(program, "Implicit dimension choice for softmax has been deprecated")


def test_f_upsample_warns_that_it_is_deprecated():
    def program(m):
        return m.F.upsample(m.torch.arange(4.0).reshape(1, 1, 2, 2), scale_factor=2)

    warns_alike(program, "`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate`")


# -- data -------------------------------------------------------------------------------------------------


def test_float64_numpy_data_into_a_float32_model():
    def program(m):
        class Rows(m.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return ROWS[i], i % 2  # NumPy's default dtype is float64

        features, _ = next(iter(m.data.DataLoader(Rows(), batch_size=2)))
        return m.nn.Linear(3, 2)(features)

    error = raises_alike(program, "same dtype", kind=RuntimeError)
    assert "float64" in str(error) and "float32" in str(error)


def test_a_dataset_of_sequences_of_different_lengths():
    def program(m):
        class Sentences(m.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return m.torch.arange(i + 2)

        return next(iter(m.data.DataLoader(Sentences(), batch_size=2)))

    raises_alike(program, r"stack expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\]",
                 kind=RuntimeError)


# -- checkpoints ------------------------------------------------------------------------------------------


def _two_models(m):
    small = m.nn.Sequential(m.nn.Linear(2, 2))
    large = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.ReLU(), m.nn.Linear(2, 1))
    return small, large


def test_loading_a_checkpoint_of_another_architecture():
    def program(m):
        small, large = _two_models(m)
        large.load_state_dict(small.state_dict())

    error = raises_alike(program, "Error\\(s\\) in loading state_dict for Sequential", kind=RuntimeError)
    assert 'Missing key(s) in state_dict: "2.weight", "2.bias"' in str(error)


def test_strict_false_returns_the_keys_that_did_not_match():
    def program(m):
        small, large = _two_models(m)
        missing = large.load_state_dict(small.state_dict(), strict=False)
        unexpected = small.load_state_dict(large.state_dict(), strict=False)
        return [missing.missing_keys, missing.unexpected_keys, unexpected.unexpected_keys, repr(unexpected),
                str(small.load_state_dict(small.state_dict()))]

    assert _same(program)[:3] == [["2.weight", "2.bias"], [], ["2.weight", "2.bias"]]


def test_a_checkpoint_saved_from_dataparallel():
    def program(m):
        saved = {"module." + k: v for k, v in m.nn.Linear(2, 2).state_dict().items()}
        m.nn.Linear(2, 2).load_state_dict(saved)

    error = raises_alike(program, "Unexpected key\\(s\\) in state_dict: \"module.weight\"", kind=RuntimeError)
    assert 'Missing key(s) in state_dict: "weight", "bias"' in str(error)


def test_a_checkpoint_with_other_sizes_even_with_strict_false():
    def program(m):
        m.nn.Linear(2, 3).load_state_dict(m.nn.Linear(2, 2).state_dict(), strict=False)

    raises_alike(program, r"size mismatch for weight: copying a param with shape .*Size\(\[2, 2\]\) from checkpoint, "
                          r"the shape in current model is .*Size\(\[3, 2\]\)", kind=RuntimeError)


def test_the_best_state_kept_without_a_copy_follows_the_training():
    def program(m):
        model = m.nn.Linear(1, 1, bias=False)
        with m.torch.no_grad():
            model.weight.fill_(1.0)
        best, best_copy = model.state_dict(), copy.deepcopy(model.state_dict())
        optimizer = m.optim.SGD(model.parameters(), lr=0.5)
        model(m.torch.ones(1, 1)).sum().backward()
        optimizer.step()
        return best["weight"], best_copy["weight"]

    kept, copied = _same(program)
    assert kept.item() == 0.5 and copied.item() == 1.0


# -- tensor basics ----------------------------------------------------------------------------------------


def test_cat_of_feature_maps_of_different_sizes():
    def program(m):  # a U-Net skip connection whose sizes differ by the unpadded convolutions
        return m.torch.cat([m.torch.ones(1, 4, 8, 8), m.torch.ones(1, 4, 6, 6)], dim=1)

    raises_alike(program, "Sizes of tensors must match except in dimension 1", kind=RuntimeError)


def test_stack_of_different_sizes():
    def program(m):
        return m.torch.stack([m.torch.ones(3), m.torch.ones(4)])

    raises_alike(program, "stack expects each tensor to be equal size", kind=RuntimeError)


@pytest.mark.parametrize("call", ["squeeze", "unsqueeze"])
def test_squeeze_and_unsqueeze_out_of_range(call):
    def program(m):
        return getattr(m.torch.ones(2, 3), call)(3)

    raises_alike(program, r"Dimension out of range \(expected to be in range of \[-", kind=IndexError)


def test_reshape_with_two_inferred_dims():
    def program(m):
        return m.torch.ones(4, 6).reshape(-1, -1)

    raises_alike(program, "only one dimension can be inferred", kind=RuntimeError)


def test_expand_of_a_dim_that_is_not_one():
    def program(m):
        return m.torch.ones(2, 3).expand(4, 3)

    raises_alike(program, r"The expanded size of the tensor \(4\) must match the existing size \(2\) at "
                          "non-singleton dimension 0", kind=RuntimeError)


def test_a_write_into_an_expanded_tensor_reaches_its_base():
    def program(m):
        base = m.torch.zeros(1, 3)
        grid = base.expand(2, 3)
        grid[0, 0] = 5.0
        return base, grid

    base, grid = _same(program)
    np.testing.assert_array_equal(base, [[5, 0, 0]])  # PyTorch's: every row of grid is base's one row
    np.testing.assert_array_equal(grid, [[5, 0, 0], [5, 0, 0]])


def test_an_embedding_index_past_the_vocabulary():
    def program(m):  # the vocabulary built from the training set; a test word got id 10
        return m.nn.Embedding(10, 4)(m.torch.tensor([[1, 2, 10]]))

    raises_alike(program, "index out of range in self", kind=IndexError)


def test_float_token_ids_into_an_embedding():
    def program(m):
        return m.nn.Embedding(10, 4)(m.torch.tensor([1.0, 2.0]))

    raises_alike(program, "Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                          "Long, Int", kind=RuntimeError)


def test_accuracy_as_the_mean_of_a_bool_tensor():
    def program(m):
        predictions, labels = m.torch.tensor([0, 2, 2, 1]), m.torch.tensor(LABELS)
        return (predictions == labels).mean()

    raises_alike(program, "mean\\(\\): could not infer output dtype.*Bool", kind=RuntimeError)


def test_accuracy_against_a_column_of_labels_broadcasts_to_a_square():
    def program(m):  # labels (N, 1) against predictions (N,): an (N, N) comparison, the same wrong number
        scores = m.torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
        labels = m.torch.tensor([[1], [0], [0]])
        right = scores.argmax(1) == labels
        return right.shape, right.float().mean(), (scores.argmax(1) == labels.squeeze(1)).float().mean()

    shape, wrong, correct = _same(program)
    assert tuple(shape) == (3, 3)
    np.testing.assert_allclose([wrong, correct], [4 / 9, 2 / 3], rtol=1e-6)


def test_an_integer_tensor_updated_in_place_with_a_float():
    def program(m):
        counts = m.torch.tensor([1, 2, 3])
        counts *= 0.5

    raises_alike(program, "result type Float can't be cast to the desired output type Long", kind=RuntimeError)



# -- more of the first week -------------------------------------------------------------------------------


def test_integer_scores_into_cross_entropy():
    def program(m):  # scores written by hand as integers
        return m.F.cross_entropy(m.torch.tensor([[2, 1, 0], [0, 3, 1]]), m.torch.tensor([0, 1]))

    raises_alike(program, "not implemented for 'Long'", kind=NotImplementedError)


def test_integer_scores_into_nll_loss():
    def program(m):
        return m.nn.NLLLoss()(m.torch.tensor([[2, 1, 0], [0, 3, 1]]), m.torch.tensor([0, 1]))

    raises_alike(program, "not implemented for 'Long'", kind=NotImplementedError)


@pytest.mark.parametrize("join", ["stack", "cat"])
def test_joining_numpy_arrays_with_torch(join):
    def program(m):  # frames collected as NumPy arrays, joined as if they were tensors
        frames = [IMAGES[0], IMAGES[1]]
        return getattr(m.torch, join)(frames)

    error = raises_alike(program, "expected Tensor as element 0 in argument 0, but got numpy.ndarray", kind=TypeError)
    assert "(1, 8, 8)" in str(error)


def test_joining_a_tensor_and_a_list():
    def program(m):
        return m.torch.stack([m.torch.ones(2), [1.0, 2.0]])

    raises_alike(program, "expected Tensor as element 1 in argument 0, but got list", kind=TypeError)


def test_a_second_derivative_without_create_graph():
    def program(m):  # a gradient penalty / Newton step: the first grad must be built with create_graph=True
        x = m.torch.tensor(2.0, requires_grad=True)
        (slope,) = m.torch.autograd.grad(x ** 3, x)
        return m.torch.autograd.grad(slope, x)

    raises_alike(program, "does not require grad", kind=RuntimeError)


def test_the_same_second_derivative_with_create_graph():
    def program(m):
        x = m.torch.tensor(2.0, requires_grad=True)
        (slope,) = m.torch.autograd.grad(x ** 3, x, create_graph=True)
        return slope, m.torch.autograd.grad(slope, x)[0]

    np.testing.assert_allclose(_same(program), [12.0, 12.0])


def test_freezing_a_layer_by_setting_requires_grad_on_the_module():
    def program(m):  # module.requires_grad = False is a plain attribute: its parameters still train
        model = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Linear(2, 1))
        model[0].requires_grad = False
        frozen_properly = m.nn.Linear(2, 2).requires_grad_(False)
        return [p.requires_grad for p in model.parameters()], [p.requires_grad for p in frozen_properly.parameters()]

    assert _same(program) == ([True] * 4, [False, False])


def test_one_cycle_stepped_past_its_total_steps():
    def program(m):
        optimizer = m.optim.SGD(m.nn.Linear(2, 1).parameters(), lr=0.1)
        scheduler = m.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, epochs=1, steps_per_epoch=2)
        for _ in range(3):  # one batch more than steps_per_epoch said
            optimizer.step()
            scheduler.step()

    raises_alike(program, "Tried to step 3 times. The specified number of total steps is 2", kind=ValueError)


def test_get_lr_outside_the_scheduler_warns():
    def program(m):
        optimizer = m.optim.SGD(m.nn.Linear(2, 1).parameters(), lr=0.1)
        scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        optimizer.step()
        scheduler.step()
        return scheduler.get_lr(), scheduler.get_last_lr()

    warns_alike(program, "please use `get_last_lr\\(\\)`")


def test_random_split_with_lengths_that_do_not_add_up():
    def program(m):
        data = m.data.TensorDataset(m.torch.arange(10.0))
        return m.data.random_split(data, [8, 3])

    raises_alike(program, "Sum of input lengths does not equal the length of the input dataset", kind=ValueError)


def test_a_dataloader_given_features_and_labels_separately():
    def program(m):
        return m.data.DataLoader(m.torch.ones(4, 2), m.torch.zeros(4))  # TensorDataset(x, y) forgotten

    raises_alike(program, "batch_size should be a positive integer value, but got batch_size=tensor", kind=ValueError)


def test_pack_padded_sequence_of_unsorted_lengths():
    def program(m):
        padded = m.torch.zeros(5, 3, 2)
        return m.nn.utils.rnn.pack_padded_sequence(padded, m.torch.tensor([2, 5, 3]))

    raises_alike(program, "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True",
                 kind=RuntimeError)


def test_a_key_padding_mask_in_the_sequence_first_layout():
    def program(m):
        attention = m.nn.MultiheadAttention(4, 2)
        x = m.torch.ones(5, 2, 4)  # (L, N, E)
        return attention(x, x, x, key_padding_mask=m.torch.zeros(5, 2, dtype=m.torch.bool))  # should be (N, L)

    raises_alike(program, "key_padded_mask.shape\\[0\\] to be 2, but got 5", kind=AssertionError)


def test_a_boolean_mask_of_another_length():
    def program(m):
        values = m.torch.arange(4.0)
        return values[m.torch.tensor([True, False, True])]

    raises_alike(program, r"The shape of the mask \[3\].* does not match the shape of the indexed tensor \[4\]",
                 kind=IndexError)


def test_load_state_dict_of_the_method_itself():
    def program(m):
        model = m.nn.Linear(2, 2)
        model.load_state_dict(m.nn.Linear(2, 2).state_dict)  # the parentheses forgotten

    raises_alike(program, "Expected state_dict to be dict-like, got <class 'method'>", kind=TypeError)


def test_xavier_init_of_a_bias():
    def program(m):
        layer = m.nn.Linear(3, 2)
        for parameter in layer.parameters():  # every parameter, the 1-d bias too
            m.nn.init.xavier_uniform_(parameter)

    raises_alike(program, "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
                 kind=ValueError)


def test_instance_norm_of_one_pixel():
    def program(m):  # after enough poolings the feature map is 1x1
        return m.nn.InstanceNorm2d(3)(m.torch.ones(2, 3, 1, 1))

    raises_alike(program, "Expected more than 1 spatial element when training", kind=ValueError)


def test_std_of_a_single_value_warns_and_is_nan():
    def program(m):
        return m.torch.tensor([[1.0], [2.0]]).std(dim=1)

    assert np.isnan(warns_alike(program, "degrees of freedom is <= 0")).all()



def test_comparing_integer_predictions_with_float_targets_by_allclose():
    def program(m):
        predictions = m.torch.tensor([1, 0, 2])
        return m.torch.allclose(predictions, m.torch.tensor([1.0, 0.0, 2.0]))

    raises_alike(program, "^Long did not match Float", kind=RuntimeError)


def test_the_spread_of_integer_counts():
    def program(m):
        counts = m.torch.tensor([3, 5, 4, 8])
        return counts.std()

    error = raises_alike(program, "std and var only support floating point and complex dtypes", kind=RuntimeError)
    assert "int64" in str(error)


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m.torch.chain_matmul(m.torch.eye(2), m.torch.ones(2, 2)), "torch.chain_matmul is deprecated.*multi_dot"),
    (lambda m: m.torch.qr(m.torch.eye(2) * 2), "torch.qr is deprecated in favor of torch.linalg.qr"),
    (lambda m: m.torch.lu(m.torch.eye(2) * 2), "torch.lu is deprecated in favor of torch.linalg.lu_factor"),
])
def test_linear_algebra_from_old_tutorials_warns_that_it_is_deprecated(call, match):
    # (PyTorch warns once in a process unless warn_always: each call here may be its first)
    torch_modules = pytorch()
    before = torch_modules is not None and torch_modules.torch.is_warn_always_enabled()
    if torch_modules is not None:
        torch_modules.torch.set_warn_always(True)
    try:
        warns_alike(call, match)
    finally:
        if torch_modules is not None:
            torch_modules.torch.set_warn_always(before)

def test_deepcopy_of_a_model_that_kept_an_activation():
    def program(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = m.nn.Linear(2, 2)

            def forward(self, x):
                self.last = self.fc(x)  # kept for plotting
                return self.last

        model = Net()
        model(m.torch.ones(1, 2))
        return copy.deepcopy(model)  # an EMA copy

    raises_alike(program, "Only Tensors created explicitly by the user \\(graph leaves\\)", kind=RuntimeError)


def test_torch_tensor_of_a_list_of_tensors():
    def program(m):
        rows = [m.torch.ones(3), m.torch.zeros(3)]
        return m.torch.tensor(rows)

    raises_alike(program, "only one element tensors can be converted to Python scalars", kind=ValueError)


def test_torch_tensor_of_losses_that_require_grad_warns():
    def program(m):
        w = m.torch.tensor(2.0, requires_grad=True)
        losses = m.torch.tensor([w * 1, w * 2])  # torch.stack keeps the graph; this does not
        return losses, losses.requires_grad

    torch_modules = pytorch()  # (PyTorch warns once in a process unless warn_always: this may not be the first)
    before = torch_modules is not None and torch_modules.torch.is_warn_always_enabled()
    if torch_modules is not None:
        torch_modules.torch.set_warn_always(True)
    try:
        warns_alike(program, "Converting a tensor with requires_grad=True to a scalar")
    finally:
        if torch_modules is not None:
            torch_modules.torch.set_warn_always(before)

# -- focused tests of the fixes, on chainrule and PyTorch ---------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_scores_of_one_prediction_take_a_label_of_shape_1_with_weights_and_ignore_index(T, F, dtype):
    scores = T.tensor([0.5, -1.0, 2.0, 0.0])
    label = T.tensor(np.array([2], dtype=dtype))
    weight = T.tensor([1.0, 2.0, 3.0, 4.0])
    expected = np.log(np.exp([0.5, -1.0, 2.0, 0.0]).sum()) - 2.0
    np.testing.assert_allclose(F.cross_entropy(scores, label).item(), expected, rtol=1e-6)
    np.testing.assert_allclose(F.cross_entropy(scores, label, weight=weight, reduction="sum").item(), 3 * expected,
                               rtol=1e-6)
    np.testing.assert_allclose(F.nll_loss(scores, label, reduction="none").numpy(), -2.0)
    assert np.isnan(F.cross_entropy(scores, T.tensor([-100])).item())  # the one label ignored: a mean of nothing
    with pytest.raises(ValueError, match="For 1D input, 1D target must have size 1, but got target size: 2"):
        F.cross_entropy(scores, T.tensor([2, 1]))
    assert F.cross_entropy(scores, label).requires_grad is False  # (no hook where nothing needs a gradient)


def test_scores_of_one_prediction_with_a_0d_label_keep_their_backward(T, F):
    scores = T.tensor([0.5, -1.0, 2.0], requires_grad=True)
    F.cross_entropy(scores, T.tensor(2)).backward()
    p = np.exp([0.5, -1.0, 2.0]) / np.exp([0.5, -1.0, 2.0]).sum()
    np.testing.assert_allclose(scores.grad.numpy(), p - [0, 0, 1], rtol=1e-6)
    scores.grad = None
    with pytest.raises(RuntimeError, match=r"size mismatch \(got input: \[3\], target: \[1\]\)"):
        T.autograd.grad(F.cross_entropy(scores, T.tensor([2])), scores)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_scores_that_are_no_tensor_are_a_type_error(T, F, loss):
    with pytest.raises(TypeError, match="must be .*Tensor, not (numpy.ndarray|NoneType)"):
        getattr(F, loss)(np.zeros((2, 3), np.float32), T.tensor([0, 1]))
    with pytest.raises(TypeError, match="NoneType"):
        getattr(F, loss)(None, T.tensor([0, 1]))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_a_learning_rate_given_as_a_string_is_a_type_error(nn, name):
    optim = pytest.importorskip("torch.optim") if nn.__name__ == "torch.nn" else __import__("optim")
    with pytest.raises(TypeError):
        getattr(optim, name)(nn.Linear(2, 2).parameters(), lr="1e-3")
    assert getattr(optim, name)(nn.Linear(2, 2).parameters(), lr=1e-3).param_groups[0]["lr"] == 1e-3


def test_registering_none_before_super_init_is_refused_too(nn):
    class Net(nn.Module):
        def __init__(self):
            self.register_parameter("bias", None)
            super().__init__()

    with pytest.raises(AttributeError, match="cannot assign parameter before Module.__init__\\(\\) call"):
        Net()


@pytest.mark.parametrize("join", ["cat", "stack"])
def test_cat_and_stack_join_tensors_only(T, join):
    for other, kind in ((np.ones(2, np.float32), "numpy.ndarray"), ([1.0, 2.0], "list"), (3.0, "float")):
        with pytest.raises(TypeError, match=f"expected Tensor as element 1 in argument 0, but got {kind}"):
            getattr(T, join)([T.ones(2), other])
    np.testing.assert_array_equal(getattr(T, join)([T.ones(2), T.tensor(np.zeros(2, np.float32))]).numpy(),
                                  [1, 1, 0, 0] if join == "cat" else [[1, 1], [0, 0]])


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integer_or_bool_scores_are_refused_by_the_class_losses(T, F, dtype):
    scores = T.tensor(np.array([[1, 0, 1]]).astype(dtype))
    for loss in (F.cross_entropy, F.nll_loss):
        with pytest.raises(NotImplementedError, match="not implemented for '(Long|Bool)'"):
            loss(scores, T.tensor([0]))



@pytest.mark.parametrize("name", ["var", "std", "var_mean", "std_mean"])
def test_spreads_of_integers_are_refused_in_pytorchs_words(T, name):
    words = "std and var" if name in ("var", "std") else name
    with pytest.raises(RuntimeError, match=f"^{words} only support floating point and complex dtypes"):
        getattr(T, name)(T.tensor([1, 2, 4]))
    assert getattr(T, name)(T.tensor([1.0, 2.0, 4.0])) is not None


def test_isclose_names_the_two_dtypes_that_differ(T):
    with pytest.raises(RuntimeError, match="^Long did not match Float"):
        T.isclose(T.tensor([1, 2]), T.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="^Float did not match Double"):
        T.allclose(T.tensor([1.0]), T.tensor([1.0], dtype=T.float64))


@pytest.mark.parametrize("label_shape", [(), (1,)])
def test_multi_margin_loss_of_one_prediction_has_its_labels_shape(T, F, label_shape):
    loss = F.multi_margin_loss(T.tensor([0.2, 0.8, 0.1]), T.tensor(np.ones(label_shape, np.int64)), reduction="none")
    assert tuple(loss.shape) == label_shape
    np.testing.assert_allclose(loss.numpy(), np.full(label_shape, (0.4 + 0.3) / 3), rtol=1e-6)



@pytest.mark.parametrize("value", [(1.0, 2.0), [1.0, 2.0], 3.0])
def test_a_layer_given_a_tuple_list_or_number_is_a_type_error(nn, value):
    with pytest.raises(TypeError, match="must be .*Tensor, not (tuple|list|float)"):
        nn.Linear(2, 2)(value)


def test_a_gru_given_an_lstms_state_tuple_keeps_pytorchs_attribute_error(T, nn):
    with pytest.raises(AttributeError, match="'tuple' object has no attribute"):
        nn.GRU(3, 4)(T.ones(5, 2, 3), (T.zeros(1, 2, 4), T.zeros(1, 2, 4)))


@pytest.mark.parametrize(("name", "value"), [("exp", 1.0), ("sigmoid", [1.0, 2.0]), ("sum", [1.0, 2.0]),
                                             ("relu", (1.0,)), ("argmax", [1, 2])])
def test_a_torch_function_given_a_tuple_list_or_number_is_a_type_error(T, name, value):
    with pytest.raises(TypeError, match=f"must be .*Tensor, not {type(value).__name__}"):
        getattr(T, name)(value)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "hardtanh", "dropout"])
def test_an_activation_given_a_tuple_is_a_type_error(F, name):
    with pytest.raises(TypeError, match="must be .*Tensor, not tuple"):
        getattr(F, name)((np.ones(2, np.float32),))
