"""nn.functional beyond activations and losses: pad, one_hot, embedding (and the Embedding
layer), normalize, cosine_similarity, pdist, interpolate, bilinear; the parameter
containers, Unflatten. Gradcheck in float64 and PyTorch's values and gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from autograd import Tensor, tensor
from tests.test_ops import leaf

# (EmbeddingLookup moved to autograd/ops/embedding.py: its case is in tests/test_ops_top_level.py)
# (ConstantPad moved to autograd/ops/constant_padding.py: its case is in tests/test_ops_constant_padding.py)
PRIMITIVES_GRADCHECKED = {}
RNG = np.random.default_rng(0)


def compare_with_torch(ours, theirs, inputs, constants=(), rtol=1e-12):
    """Values and gradients (under random output weights) of ours(*leaves) and theirs(*tensors)."""
    import torch

    leaves = [leaf(v) for v in inputs]
    y = ours(*leaves, *constants)
    weights = RNG.standard_normal(y.shape)
    (y * Tensor(weights)).sum().backward()
    tensors = [torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for v in inputs]
    expected = theirs(*tensors, *constants)
    (expected * torch.tensor(weights)).sum().backward()
    assert y.shape == tuple(expected.shape)
    np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=rtol, atol=1e-13)
    for ours_leaf, theirs_leaf in zip(leaves, tensors):
        np.testing.assert_allclose(ours_leaf.grad.numpy(), theirs_leaf.grad.numpy(), rtol=1e-10, atol=1e-12)


# -- pad --------------------------------------------------------------------------------------

PADS = [((1, 2), "constant"), ((2, 0, -1, 1), "constant"), ((0, 0, 0, 0, 1, 1), "constant"),
        ((2, 3), "reflect"), ((1, 1, 2, 0), "reflect"), ((3, 1), "replicate"), ((1, 0, 0, 2), "replicate"),
        ((2, 3), "circular"), ((1, 2, 2, 1), "circular"), ((-1, 2), "circular"), ((-1, 3), "replicate")]


@pytest.mark.torch
@pytest.mark.parametrize("pad, mode", PADS)
def test_pad_matches_pytorch(pad, mode):
    import torch

    x = RNG.standard_normal((2, 3, 4, 5))
    x = x if len(pad) > 2 or mode == "constant" else x[0]
    value = 1.5 if mode == "constant" else None
    kwargs = {"value": value} if value is not None else {}
    compare_with_torch(lambda t: F.pad(t, pad, mode, **kwargs),
                       lambda t: torch.nn.functional.pad(t, pad, mode, **kwargs), [x])


@pytest.mark.parametrize("pad, mode", PADS)
def test_pad_gradients_match_finite_differences(pad, mode):
    x = RNG.standard_normal((1, 2, 4, 5)) if len(pad) > 2 or mode == "constant" else RNG.standard_normal((2, 3, 5))
    assert autograd.gradcheck(lambda t: F.pad(t, pad, mode) * 1.0, [leaf(x)])


def test_zero_padding_differentiates_complex_inputs():
    """F.pad with zeros moves the gradient (crops it back), so a complex input differentiates (it was refused)."""
    z = Tensor(np.arange(6.0).reshape(2, 3) * (1 + 2j), requires_grad=True)
    assert autograd.gradcheck(lambda t: F.pad(t, (1, 2, 0, 1), value=0.0), (z,))
    y = F.pad(z, (1, 2))
    (y * (1 - 1j)).real.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), np.full((2, 3), 1 + 1j))  # ∂/∂a + i ∂/∂b of Re((a + ib)(1 - i)) = a + b


@pytest.mark.torch
def test_pad_errors_are_pytorchs():
    import torch

    x = np.zeros((1, 1, 3))
    for pad, mode, error in [((3, 3), "reflect", RuntimeError), ((4, 0), "circular", RuntimeError),
                             ((1,), "constant", RuntimeError), ((-4, 0), "constant", RuntimeError),
                             ((1, 1), "bogus", NotImplementedError)]:
        with pytest.raises(error) as ours:
            F.pad(Tensor(x), pad, mode)
        with pytest.raises(error) as theirs:
            torch.nn.functional.pad(torch.tensor(x), pad, mode)
        if mode != "constant":
            assert str(ours.value) == str(theirs.value)
    with pytest.raises(NotImplementedError, match="not supported for 1D input"):
        F.pad(Tensor(np.zeros(3)), (1, 1), "reflect")
    for shape in [(1, 0, 2, 2), (0, 2, 2), (1, 3, 2, 0)]:  # replicate: only a batch dim may be empty
        with pytest.raises(RuntimeError) as ours:
            F.pad(Tensor(np.zeros(shape)), (1, 1, 1, 1), "replicate")
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.functional.pad(torch.zeros(shape), (1, 1, 1, 1), "replicate")
        assert str(ours.value) == str(theirs.value)
    assert F.pad(Tensor(np.zeros((0, 3, 2, 2))), (1, 1, 1, 1), "replicate").shape == (0, 3, 4, 4)


@pytest.mark.torch
def test_padding_layers_match_pytorch():
    import torch

    for name, args in [("ZeroPad2d", ((1, 2, 0, 1),)), ("ConstantPad2d", (1, -2.0)), ("ReflectionPad2d", (2,)),
                       ("ReplicationPad2d", ((0, 3, 1, 1),)), ("CircularPad2d", (1,)), ("ReflectionPad1d", (1,)),
                       ("ConstantPad3d", (1, 0.5)), ("ReplicationPad1d", ((2, 1),))]:
        x = RNG.standard_normal((1, 2, 3, 4)[:3 if name.endswith("1d") else 4])
        ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
        assert repr(ours) == repr(theirs)
        np.testing.assert_array_equal(ours(Tensor(x)).numpy(), theirs(torch.tensor(x)).numpy())


# -- one_hot ------------------------------------------------------------------------------------


@pytest.mark.torch
def test_one_hot_matches_pytorch():
    import torch

    labels = np.array([[0, 3], [2, 1]])
    for classes in (-1, 6):
        y = F.one_hot(tensor(labels), classes)
        expected = torch.nn.functional.one_hot(torch.tensor(labels), classes)
        assert y.dtype == np.int64 and y.shape == tuple(expected.shape)
        np.testing.assert_array_equal(y.numpy(), expected.numpy())
    for bad, classes, message in [(np.array([1.0]), -1, "LongTensor"), (np.array([-1]), 3, "non-negative"),
                                  (np.array([3]), 3, "smaller than num_classes"),
                                  (np.zeros(0, np.int64), -1, "empty tensor")]:
        with pytest.raises(RuntimeError, match=message):
            F.one_hot(tensor(bad), classes)
        with pytest.raises(RuntimeError, match=message):
            torch.nn.functional.one_hot(torch.tensor(bad), classes)


# -- embedding --------------------------------------------------------------------------------------

INDICES = np.array([[1, 0, 4], [4, 4, 2]])


@pytest.mark.torch
@pytest.mark.parametrize("options", [{}, {"padding_idx": 4}, {"scale_grad_by_freq": True},
                                     {"padding_idx": 0, "scale_grad_by_freq": True}, {"padding_idx": -1}])
def test_embedding_values_and_gradients_match_pytorch(options):
    import torch

    weight = RNG.standard_normal((5, 3))
    compare_with_torch(lambda w: F.embedding(tensor(INDICES), w, **options),
                       lambda w: torch.nn.functional.embedding(torch.tensor(INDICES), w, **options), [weight])
    if not options:  # padding_idx and scale_grad_by_freq change the gradient on purpose (as PyTorch)
        assert autograd.gradcheck(lambda w: F.embedding(tensor(INDICES), w), [leaf(weight)])


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_embedding_max_norm_renormalises_looked_up_rows_in_place_as_pytorch(norm_type):
    import torch

    weight = RNG.standard_normal((5, 3)) * 2
    ours = nn.Embedding.from_pretrained(Tensor(weight.copy()), freeze=False, max_norm=1.5, norm_type=norm_type)
    theirs = torch.nn.Embedding.from_pretrained(torch.tensor(weight.copy()), freeze=False, max_norm=1.5,
                                                norm_type=norm_type)
    y = ours(tensor(INDICES))
    expected = theirs(torch.tensor(INDICES))
    (y * y).sum().backward()
    (expected * expected).sum().backward()
    np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours.weight.numpy()[3], weight[3])  # not looked up: unchanged


def test_embedding_layer_init_padding_and_from_pretrained():
    autograd.manual_seed(0)
    layer = nn.Embedding(1000, 20, padding_idx=3)
    weight = layer.weight.numpy()
    assert weight.dtype == np.float32 and not weight[3].any()
    assert abs(weight.mean()) < 0.02 and abs(weight.std() - 1) < 0.02  # N(0, 1), as PyTorch
    out = layer(tensor(np.array([3, 5, 3])))
    out.sum().backward()
    assert not layer.weight.grad.numpy()[3].any() and layer.weight.grad.numpy()[5].tolist() == [1.0] * 20
    pretrained = Tensor(np.arange(6.0).reshape(3, 2))
    frozen = nn.Embedding.from_pretrained(pretrained)
    assert not frozen.weight.requires_grad and frozen(tensor(np.array([2]))).tolist() == [[4.0, 5.0]]
    assert nn.Embedding.from_pretrained(pretrained, freeze=False).weight.requires_grad
    with pytest.raises(RuntimeError, match="Long, Int"):
        layer(Tensor(np.array([1.0])))
    with pytest.raises(IndexError, match="index out of range"):
        layer(tensor(np.array([1000])))
    with pytest.raises(AssertionError, match="Padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)


def test_indexing_a_weight_with_an_int_tensor_is_an_embedding():
    """makemore's C[X]: rows of C picked by an integer tensor; repeated rows add gradients."""
    table = leaf(RNG.standard_normal((27, 2)))
    X = tensor(np.array([[0, 5, 5], [13, 0, 26]]))
    emb = table[X]
    assert emb.shape == (2, 3, 2)
    np.testing.assert_array_equal(emb.numpy(), table.numpy()[X.numpy()])
    emb.sum().backward()
    counts = np.bincount(X.numpy().ravel(), minlength=27)
    np.testing.assert_array_equal(table.grad.numpy(), np.repeat(counts[:, None], 2, 1))
    assert autograd.gradcheck(lambda t: (t[X] ** 2).sum(), [leaf(RNG.standard_normal((27, 2)))])


# -- distances, normalize ------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("p, dim", [(2.0, 1), (1.0, 0), (3.0, -1), (float("inf"), 1)])
def test_normalize_matches_pytorch_including_a_zero_vector(p, dim):
    import torch

    x = RNG.standard_normal((3, 4))
    x[1] = 0.0
    x[:, 2] = 0.0
    compare_with_torch(lambda t: F.normalize(t, p, dim), lambda t: torch.nn.functional.normalize(t, p, dim), [x])


@pytest.mark.torch
def test_cosine_similarity_matches_pytorch_with_a_zero_vector_and_broadcasting():
    import torch

    x1 = RNG.standard_normal((4, 3))
    x1[2] = 0.0
    x2 = RNG.standard_normal((1, 3))
    compare_with_torch(lambda a, b: F.cosine_similarity(a, b), lambda a, b: torch.nn.functional.cosine_similarity(a, b),
                       [x1, x2])
    x = RNG.standard_normal((2, 5))
    compare_with_torch(lambda a, b: F.cosine_similarity(a, b, dim=0, eps=0.5),
                       lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=0, eps=0.5), [x, x[::-1] * 1e-3])


@pytest.mark.torch
@pytest.mark.parametrize("p", [2.0, 1.0, 0.5, float("inf")])
def test_pdist_matches_pytorch(p):
    import torch

    x = RNG.standard_normal((5, 3))
    compare_with_torch(lambda t: F.pdist(t, p), lambda t: torch.nn.functional.pdist(t, p), [x])
    assert autograd.gradcheck(lambda t: F.pdist(t, p), [leaf(x)])


def test_pdist_gradient_at_equal_rows_is_zero_as_pytorch():
    x = leaf(np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]]))
    F.pdist(x).sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


@given(st.integers(2, 4), st.integers(1, 3))
def test_normalize_and_cosine_gradients_match_finite_differences(rows, cols):
    x = leaf(np.random.default_rng(rows * 10 + cols).standard_normal((rows, cols)))
    assert autograd.gradcheck(lambda t: F.normalize(t, dim=0), [x])
    assert autograd.gradcheck(lambda t: F.cosine_similarity(t, t.flip(0) * 2.0 + 1.0, dim=1), [x])


# -- interpolate ----------------------------------------------------------------------------------------

INTERPOLATIONS = [
    ((1, 2, 5), {"size": 8, "mode": "nearest"}),
    ((1, 2, 5), {"scale_factor": 1.7, "mode": "nearest"}),
    ((1, 2, 7), {"size": 3, "mode": "nearest-exact"}),
    ((2, 1, 5), {"size": 9, "mode": "linear"}),
    ((2, 1, 5), {"size": 3, "mode": "linear", "align_corners": True}),
    ((2, 1, 4), {"scale_factor": 2.5, "mode": "linear"}),
    ((2, 1, 4), {"scale_factor": 2.5, "mode": "linear", "recompute_scale_factor": True}),
    ((1, 2, 3, 4), {"size": (5, 3), "mode": "nearest"}),
    ((1, 2, 3, 4), {"scale_factor": 2, "mode": "bilinear"}),
    ((1, 1, 3, 4), {"size": (4, 6), "mode": "bilinear", "align_corners": True}),
]


@pytest.mark.torch
@pytest.mark.parametrize("shape, options", INTERPOLATIONS)
def test_interpolate_matches_pytorch(shape, options):
    import torch

    compare_with_torch(lambda t: F.interpolate(t, **options), lambda t: torch.nn.functional.interpolate(t, **options),
                       [RNG.standard_normal(shape)])


@pytest.mark.parametrize("shape, options", INTERPOLATIONS[:6])
def test_interpolate_gradients_match_finite_differences(shape, options):
    assert autograd.gradcheck(lambda t: F.interpolate(t, **options), [leaf(RNG.standard_normal(shape))])


def test_interpolate_errors():
    x = Tensor(np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(NotImplementedError, match="bilinear mode needs 4D input"):
        F.interpolate(x, size=3, mode="bilinear")


# -- bilinear, containers, Unflatten ---------------------------------------------------------------------


@pytest.mark.torch
def test_bilinear_matches_pytorch():
    import torch

    x1, x2 = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 3, 5))
    weight, bias = RNG.standard_normal((6, 4, 5)), RNG.standard_normal(6)
    compare_with_torch(F.bilinear, torch.nn.functional.bilinear, [x1, x2, weight, bias])
    layer = nn.Bilinear(4, 5, 6)
    assert layer(Tensor(x1, dtype=np.float32), Tensor(x2, dtype=np.float32)).shape == (2, 3, 6)
    bound = 1 / np.sqrt(4)
    assert np.abs(layer.weight.numpy()).max() <= bound and layer.weight.shape == (6, 4, 5)


def test_bilinear_gradients_match_finite_differences():
    assert autograd.gradcheck(F.bilinear, [leaf(RNG.standard_normal((3, 2))), leaf(RNG.standard_normal((3, 4))),
                                           leaf(RNG.standard_normal((2, 2, 4))), leaf(RNG.standard_normal(2))])


def test_parameter_list_and_dict_register_their_parameters():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scales = nn.ParameterList([nn.Parameter(autograd.ones(2)) for _ in range(3)])
            self.named = nn.ParameterDict({"a": nn.Parameter(autograd.zeros(1)), "b": autograd.ones(3)})

    model = Model()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scales.0", "scales.1", "scales.2", "named.a", "named.b"]
    assert isinstance(model.named["b"], nn.Parameter)  # a plain tensor becomes a Parameter
    model.scales.append(autograd.zeros(4))
    assert len(model.scales) == 4 and model.scales[-1].shape == (4,)
    model.named["c"] = nn.Parameter(autograd.zeros(2))
    assert list(model.named.keys()) == ["a", "b", "c"] and "c" in model.named
    del model.named["a"]
    assert list(model.named) == ["b", "c"] and len(list(model.parameters())) == 6
    assert [p.shape for p in model.scales[1:3]] == [(2,), (2,)]
    assert list(model.state_dict()) == ["scales.0", "scales.1", "scales.2", "scales.3", "named.b", "named.c"]


@pytest.mark.torch
def test_unflatten_and_identity_match_pytorch():
    import torch

    x = RNG.standard_normal((2, 12, 3))
    for dim, sizes in [(1, (3, 4)), (-2, (2, -1)), (0, [1, 2])]:
        ours = nn.Unflatten(dim, sizes)(Tensor(x))
        np.testing.assert_array_equal(ours.numpy(), torch.nn.Unflatten(dim, sizes)(torch.tensor(x)).numpy())
    assert nn.Identity(54, unused="argument")(Tensor(x)).shape == x.shape


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["2d", "offsets", "last_offset", "padding"])
def test_embedding_bag_matches_pytorch(mode, layout):
    import torch

    weight = RNG.standard_normal((6, 3))
    flat = np.array([1, 2, 2, 5, 0, 3, 1])
    options = {"mode": mode}
    if layout == "2d":
        inputs = (flat[:6].reshape(2, 3),)
    elif layout == "offsets":
        inputs = (flat, np.array([0, 2, 2, 5]))  # with an empty bag
    else:
        inputs = (flat, np.array([0, 3, 4, 7]))
        options["include_last_offset"] = True
        if layout == "padding":
            options["padding_idx"] = 2
    ours_args = [tensor(i) for i in inputs]
    theirs_args = [torch.tensor(i) for i in inputs]
    compare_with_torch(lambda w: F.embedding_bag(ours_args[0], w, *ours_args[1:], **options),
                       lambda w: torch.nn.functional.embedding_bag(theirs_args[0], w, *theirs_args[1:], **options),
                       [weight])
    if mode == "sum":
        sample_weights = RNG.standard_normal(inputs[0].shape)
        compare_with_torch(
            lambda w, s: F.embedding_bag(ours_args[0], w, *ours_args[1:], per_sample_weights=s, **options),
            lambda w, s: torch.nn.functional.embedding_bag(theirs_args[0], w, *theirs_args[1:],
                                                           per_sample_weights=s, **options),
            [weight, sample_weights])


def test_embedding_bag_layer_and_gradients():
    autograd.manual_seed(0)
    bag = nn.EmbeddingBag(10, 4, mode="sum")
    assert bag(tensor(np.array([[1, 2], [3, 3]]))).shape == (2, 4)
    assert repr(bag) == "EmbeddingBag(10, 4, mode='sum')"
    weight = leaf(RNG.standard_normal((6, 3)))
    for mode in ("sum", "mean", "max"):
        assert autograd.gradcheck(lambda w, mode=mode: F.embedding_bag(tensor(np.array([1, 2, 2, 5, 0])), w,
                                                            tensor(np.array([0, 2, 2])), mode=mode), [weight])


def test_second_derivatives_of_pad_embedding_and_interpolate():
    x = leaf(RNG.standard_normal((1, 2, 4)))
    assert autograd.gradgradcheck(lambda t: (F.pad(t, (2, -1), value=0.5) ** 2).sum(), [x])
    assert autograd.gradgradcheck(lambda t: (F.pad(t, (2, 1), "reflect") ** 3).sum(), [x])
    assert autograd.gradgradcheck(lambda t: (F.interpolate(t, size=7, mode="linear") ** 2).sum(), [x])
    weight = leaf(RNG.standard_normal((5, 3)))
    assert autograd.gradgradcheck(lambda w: (F.embedding(tensor(INDICES), w, padding_idx=4) ** 2).sum(), [weight])
    assert autograd.gradgradcheck(lambda w: F.normalize(w).tanh().sum(), [weight])
