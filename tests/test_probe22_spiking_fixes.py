"""The library bugs tests/test_programs_probe22_spiking_*.py found, each tested alone, against PyTorch where it is
installed (the ``T`` fixture runs each test on chainrule, then on PyTorch) and against literals always.

- ``super().__new__(cls, data)`` in a Tensor subclass's own ``__new__`` (snnTorch's old ``_SpikeTensor``, PyTorch's
  documented subclassing pattern) raised object.__new__'s TypeError; a ``super().__init__()`` after it kept nothing.
- Attributes a program sets on the ``grad_fn`` of a Function with several outputs stayed on that output's slot, so
  backward did not find them on its ctx (PyTorch's grad_fn is the ctx).
- ``bernoulli`` drew from integer and bool probabilities, which PyTorch's kernel refuses.
- ``Tensor(t)`` of a tensor gave a new tensor on its memory with its own version counter, cut from its graph;
  PyTorch's legacy constructor aliases it (AliasBackward0, its writes t's).
- ``heaviside`` of a tensor that requires grad gave a result cut from the graph, so a loss through it backpropagated
  without that share (a spike function with no surrogate trained silently); PyTorch records it with no derivative
  and its backward raises. Its ``values`` given as a number raised a dtype error, PyTorch's TypeError.
"""

import numpy as np
import pytest


def test_subclass_new_makes_the_tensor_from_its_arguments(T):
    class SpikeTensor(T.Tensor):  # snnTorch 0.5's _SpikeTensor
        def __new__(cls, *args, init_flag=False):
            return super().__new__(cls, *args)

        def __init__(self, *args, init_flag=False):
            super().__init__()
            self.init_flag = init_flag

    empty = SpikeTensor(init_flag=False)
    assert type(empty) is SpikeTensor and tuple(empty.shape) == (0,) and empty.init_flag is False
    values = SpikeTensor([1.0, 2.0], init_flag=True)
    assert values.init_flag is True and values.dtype == T.float32 and type(values * 2) is SpikeTensor
    np.testing.assert_array_equal((values * 2).numpy(), [2.0, 4.0])
    sizes = SpikeTensor(2, 3)  # (legacy sizes: PyTorch leaves the values unset)
    assert tuple(sizes.shape) == (2, 3) and sizes.dtype == T.float32

    class Tagged(T.Tensor):  # the pattern of PyTorch's subclassing notes: extra arguments kept by __init__
        @staticmethod
        def __new__(cls, x, tag, *args, **kwargs):
            return super().__new__(cls, x, *args, **kwargs)

        def __init__(self, x, tag):
            self.tag = tag

    tagged = Tagged([[1, 2]], "spikes")
    assert tagged.tag == "spikes" and tagged.dtype == T.float32 and tuple(tagged.shape) == (1, 2)
    assert Tagged(T.tensor([3, 4]), "counts").dtype == T.int64  # a tensor keeps its dtype
    np.testing.assert_array_equal(tagged.numpy(), [[1.0, 2.0]])


def test_a_plain_tensor_subclass_is_still_made_by_init(T):
    class Plain(T.Tensor):
        pass

    made = Plain([1.0, 2.0])
    assert type(made) is Plain and made.tolist() == [1.0, 2.0]
    assert T.Tensor(2, 3).shape == (2, 3) and T.Tensor([1, 2]).dtype == T.float32 and T.Tensor().shape == (0,)


def test_attributes_set_on_a_multi_output_grad_fn_reach_backward(T):
    class LIFStep(T.autograd.Function):
        @staticmethod
        def forward(ctx, mem):
            spk = (mem > 1.0).to(mem.dtype)
            ctx.mark_non_differentiable(spk)
            return mem - spk, spk

        @staticmethod
        def backward(ctx, grad_mem, grad_spk):
            ctx.seen.append(grad_mem.sum().item())
            return grad_mem * ctx.scale

    x = T.tensor([0.5, 1.5], requires_grad=True)
    mem, spk = LIFStep.apply(x * 1.0)
    mem.grad_fn.seen = []
    mem.grad_fn.scale = 3.0
    assert mem.grad_fn.scale == 3.0 and not spk.requires_grad
    mem.sum().backward()
    assert mem.grad_fn.seen == [2.0]
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_bernoulli_refuses_integer_and_bool_probabilities(T):
    for probabilities in (T.tensor([0, 1]), T.tensor([True, False]), T.tensor([0, 255], dtype=T.uint8)):
        with pytest.raises(NotImplementedError, match="bernoulli_tensor_cpu_p_. not implemented for"):
            T.bernoulli(probabilities)
        with pytest.raises(RuntimeError, match="not implemented for"):
            T.ones(2).bernoulli_(probabilities)
    # a number p, or floating probabilities, fill a tensor of any dtype
    T.manual_seed(0)
    draws = T.bernoulli(T.tensor([0, 1]), 1.0)
    assert draws.dtype == T.int64 and draws.tolist() == [1, 1]
    filled = T.zeros(3, dtype=T.int64).bernoulli_(T.tensor([0.0, 1.0, 1.0]))
    assert filled.dtype == T.int64 and filled.tolist() == [0, 1, 1]
    assert T.bernoulli(T.tensor([0.0, 1.0], dtype=T.float16)).tolist() == [0.0, 1.0]


def test_heaviside_is_recorded_without_a_derivative(T):
    mem = T.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    spikes = T.heaviside(mem - 0.5, T.tensor(0.0))
    assert spikes.requires_grad and spikes.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(RuntimeError, match="derivative for aten::heaviside is not implemented"):
        (spikes * 2 + mem).sum().backward()  # (mem's own share would flow: PyTorch refuses the whole pass)
    values = T.tensor(0.5, requires_grad=True)
    assert T.heaviside(T.tensor([0.0, 1.0]), values).requires_grad
    assert not T.heaviside(mem.detach(), T.tensor(0.5)).requires_grad
    with T.no_grad():
        assert not T.heaviside(mem, T.tensor(0.5)).requires_grad
    np.testing.assert_array_equal(T.heaviside(mem, T.tensor([[0.5], [0.25]])).detach().numpy(),
                                  [[0.0, 0.5, 1.0], [0.0, 0.25, 1.0]])
    with pytest.raises(TypeError, match="argument 'values' \\(position 2\\) must be Tensor, not float"):
        T.heaviside(mem, 0.5)


def test_legacy_constructor_of_a_tensor_is_an_alias_in_its_graph(T):
    t = T.tensor([1.0, 2.0], requires_grad=True)
    alias = T.Tensor(t)
    assert alias.requires_grad and not alias.is_leaf and alias._base is t
    assert alias.grad_fn.name() == "AliasBackward0" and T.ones(2).new(t).grad_fn.name() == "AliasBackward0"
    (alias * T.tensor([3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [3.0, 4.0])
    plain = T.tensor([1.0, 2.0])
    shared = T.Tensor(plain)
    shared.add_(1)  # (its memory and its version counter are the tensor's)
    assert plain.tolist() == [2.0, 3.0] and plain._version == 1 and shared._base is plain
    assert T.Tensor(T.tensor([1, 2])).dtype == T.int64 and T.Tensor(T.tensor([1.0], dtype=T.float64)).dtype == T.float64
