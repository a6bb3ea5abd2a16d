"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. A model's shapes (in_features, a conv output not flattened, the batch
flattened too, NHWC images, 5-d input, an LSTM's output tuple, text embeddings in the wrong layout, a kernel larger
than the image, one image without its batch dim) and the losses' targets (float, one-hot, out of range, int32, of
another batch, a batch of one squeezed away, two labels for one prediction, a softmax before cross_entropy, log
forgotten before nll_loss, logits into BCELoss, integer labels and a column against a vector for BCEWithLogitsLoss,
None from a forward without return, ``size_average=False``, a reduction that does not exist)."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import load, weights_of

from .probe10_mistakes_common import IMAGES, LABELS, RNG, _same, warns_alike

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
