"""PyTorch's ``test/test_utils.py``, ported: the parts that are not ``torch.utils.checkpoint`` (that is
``tests/test_ported_checkpoint.py``), not C++ extensions, hipify, JIT, CUDA, multi-GPU or worker processes:
``torch._assert``, the device context and ``torch.utils._device.set_device`` (as a decorator, on a generator
too), the default device, and a DataLoader over a tensor. Each runs on chainrule's ``autograd`` and on torch."""

import importlib

import pytest


def test_assert_takes_a_bool_or_a_one_element_tensor(T):
    T._assert(True, "foo")
    with pytest.raises(AssertionError, match="bar"):
        T._assert(False, "bar")
    T._assert(T.tensor([True], dtype=T.bool), "foo")
    with pytest.raises(AssertionError, match="bar"):
        T._assert(T.tensor([False], dtype=T.bool), "bar")


def test_the_device_context_gives_factories_and_layers_its_device(T):
    nn = importlib.import_module(f"{T.__name__}.nn" if T.__name__ == "torch" else "nn")
    with T.device("meta") as dev:
        x = T.empty(3, 3)
        m = nn.Linear(40, 50)
    assert (x.device.type, tuple(x.shape), dev) == ("meta", (3, 3), T.device("meta"))
    assert m.weight.device.type == "meta" and tuple(m.weight.shape) == (50, 40)
    assert T.empty(1).device.type == "cpu"


def test_set_device_as_a_decorator_of_a_function_and_of_a_generator(T):
    set_device = importlib.import_module(f"{T.__name__}.utils._device").set_device

    @set_device("meta")
    def make():
        return T.empty(3, 3)

    @set_device("meta")
    def make_two():
        yield T.empty(3, 3)
        yield T.empty(2)

    assert make().device.type == "meta" and T.empty(1).device.type == "cpu"
    steps = make_two()
    first = next(steps)
    between = T.empty(1).device.type  # (the caller, between the generator's steps, is on its own device)
    second = next(steps)
    assert (first.device.type, between, second.device.type, tuple(second.shape)) == ("meta", "cpu", "meta", (2,))


def test_set_and_get_the_default_device(T):
    try:
        T.set_default_device("meta")
        r = T.empty(2, 2)
        assert T.get_default_device().type == "meta"
    finally:
        T.set_default_device(None)
    assert r.device.type == "meta" and T.get_default_device() == T.device("cpu")


@pytest.mark.parametrize("drop_last, batches", [(False, [3, 2]), (True, [3])])
def test_a_dataloader_over_a_tensor_keeps_or_drops_the_last_batch(T, drop_last, batches):
    data = importlib.import_module(f"{T.__name__}.utils.data")
    T.manual_seed(0)
    samples = T.rand(5, 3, 3, 2)
    got = list(data.DataLoader(samples, batch_size=3, num_workers=0, drop_last=drop_last))
    assert [len(batch) for batch in got] == batches
    assert all(tuple(batch.shape[1:]) == (3, 3, 2) for batch in got)
    assert T.equal(T.cat(got), samples[:sum(batches)])


def test_tree_all_only_looks_at_the_leaves_of_one_type(T):
    pytree = importlib.import_module(f"{T.__name__}.utils._pytree")
    with T.device("meta"):
        result = (T.empty(2), [T.zeros(1)], "s", 3)
    assert pytree.tree_all_only(T.Tensor, lambda t: t.device.type == "meta", result)
    assert not pytree.tree_any(lambda x: isinstance(x, T.Tensor) and x.device.type == "cpu", result)
