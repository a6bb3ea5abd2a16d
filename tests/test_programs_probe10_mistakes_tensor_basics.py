"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. Tensor basics and more: cat/stack/squeeze/unsqueeze/reshape/expand errors, a
write into an expanded tensor, Embedding indices past the vocabulary or of floats, accuracy from bools and against a
column of labels, int tensors updated with floats, integer scores into the class losses, NumPy arrays and lists
joined with tensors, second derivatives with and without ``create_graph``, freezing a layer through the module,
OneCycleLR past its total steps, ``get_lr`` outside the scheduler, ``random_split`` of lengths that do not add up, a
DataLoader given features and labels separately, unsorted lengths to ``pack_padded_sequence``, key padding masks in
the sequence-first layout or of another length, ``load_state_dict`` of the method itself, Xavier init of a bias,
instance norm of one pixel, std of a single value, integer predictions against float targets, spreads of integer
counts, old linear algebra's deprecations, deepcopy of a model that kept an activation, ``torch.tensor`` of a list of
tensors or of losses that require grad."""

import copy

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import pytorch

from .probe10_mistakes_common import IMAGES, LABELS, _same, warns_alike

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
