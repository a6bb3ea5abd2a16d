"""Random generators: autograd.Generator, the default generator's seed and state, generator= on every
random op, and the sampling ops (normal, bernoulli, multinomial, poisson, the in-place initialisers)."""

import numpy as np
import pytest

import autograd
import nn
from autograd import Generator, Tensor
from tests.pytorch_programs import same_dropout_masks


def draws(generator=None):
    """One of every kind of draw, as NumPy arrays."""
    return [
        autograd.rand(3, generator=generator).numpy(),
        autograd.randn(2, 2, generator=generator).numpy(),
        autograd.randint(0, 10, (4,), generator=generator).numpy(),
        autograd.randperm(6, generator=generator).numpy(),
        autograd.normal(0.0, 1.0, (3,), generator=generator).numpy(),
        autograd.bernoulli(autograd.full((5,), 0.5), generator=generator).numpy(),
        autograd.multinomial(autograd.tensor([1.0, 2.0, 3.0]), 4, True, generator=generator).numpy(),
        autograd.zeros(3).uniform_(-1, 1, generator=generator).numpy(),
        autograd.zeros(3).normal_(2, 3, generator=generator).numpy(),
    ]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_seeded_generator_repeats_and_leaves_the_default_alone():
    autograd.manual_seed(5)
    default_next = autograd.rand(4).numpy()
    autograd.manual_seed(5)
    first = draws(Generator().manual_seed(0))
    assert same(first, draws(Generator().manual_seed(0)))
    assert not same(first, draws(Generator().manual_seed(1)))
    assert np.array_equal(autograd.rand(4).numpy(), default_next)  # the seeded generator drew, not the default


def test_the_same_seed_gives_pytorchs_numbers():
    """PyTorch's Mersenne twister seeded with 0, its words made numbers as PyTorch's CPU kernels make them:
    these values are torch.manual_seed(0)'s, on every machine."""
    g = Generator().manual_seed(0)
    words = np.random.MT19937()
    words._legacy_seeding(0)  # (mt19937's init_genrand)
    expected = ((words.random_raw(3) & (2**24 - 1)) * 2.0**-24).astype(np.float32)
    np.testing.assert_array_equal(autograd.rand(3, generator=g).numpy(), expected)
    assert autograd.rand(3, generator=Generator().manual_seed(0)).tolist() == [
        0.49625658988952637, 0.7682217955589294, 0.08847743272781372]  # torch.manual_seed(0); torch.rand(3)


def test_manual_seed_seed_and_initial_seed():
    assert autograd.manual_seed(3) is autograd.default_generator
    assert autograd.initial_seed() == 3
    a = autograd.randn(5).numpy()
    autograd.manual_seed(3)
    assert np.array_equal(autograd.randn(5).numpy(), a)
    seed = autograd.seed()
    assert isinstance(seed, int) and autograd.initial_seed() == seed
    g = Generator()
    assert g.initial_seed() == 67280421310721  # PyTorch's default
    assert g.manual_seed(-1).initial_seed() == 2**64 - 1  # wraps as PyTorch's
    assert g.seed() == g.initial_seed()
    with pytest.raises(TypeError):
        g.manual_seed("zero")


def test_state_round_trips():
    g = Generator().manual_seed(11)
    autograd.rand(1, generator=g)
    autograd.randn(1, generator=g)
    state = g.get_state()
    assert state.dtype == np.uint8 and state.shape == (5056,)  # PyTorch's CPUGeneratorImplState
    after = draws(g)
    g.manual_seed(0)
    g.set_state(state)
    assert same(draws(g), after) and g.initial_seed() == 11
    other = Generator().set_state(state)
    assert same(draws(other), after)

    autograd.manual_seed(2)
    saved = autograd.get_rng_state()
    x = autograd.rand(3).numpy()
    autograd.set_rng_state(saved)
    assert np.array_equal(autograd.rand(3).numpy(), x)
    with pytest.raises(RuntimeError, match="uint8 tensor of 5056 bytes"):
        g.set_state(autograd.zeros(45))
    with pytest.raises(RuntimeError, match="uint8"):
        g.set_state([0] * 45)


@pytest.mark.parametrize("call", [
    lambda g: autograd.rand(2, generator=g), lambda g: autograd.randn(2, generator=g),
    lambda g: autograd.randint(3, (2,), generator=g), lambda g: autograd.randperm(3, generator=g),
    lambda g: autograd.normal(0.0, 1.0, (2,), generator=g), lambda g: autograd.bernoulli(autograd.ones(2), generator=g),
    lambda g: autograd.multinomial(autograd.ones(2), 1, generator=g), lambda g: autograd.zeros(2).uniform_(generator=g),
    lambda g: autograd.zeros(2).normal_(generator=g), lambda g: nn.init.normal_(autograd.zeros(2), generator=g),
    lambda g: autograd.rand_like(autograd.ones(2), generator=g),
])
def test_a_generator_of_the_wrong_type_is_a_type_error(call):
    for wrong in ("0", 0, np.random.default_rng(0)):
        with pytest.raises(TypeError, match="autograd.Generator"):
            call(wrong)


def test_normal_has_pytorchs_four_forms():
    g = Generator().manual_seed(0)
    mean, std = autograd.tensor([0.0, 10.0, 100.0]), autograd.tensor([1e-3, 1e-3, 1e-3])
    both = autograd.normal(mean, std, generator=g)
    assert both.shape == (3,) and np.allclose(both.numpy(), [0, 10, 100], atol=0.01)
    assert np.allclose(autograd.normal(mean, 1e-3).numpy(), [0, 10, 100], atol=0.01)
    assert np.allclose(autograd.normal(5.0, std).numpy(), 5, atol=0.01)
    floats = autograd.normal(2.0, 3.0, size=(20000,), generator=g)
    assert floats.dtype == np.float32 and abs(floats.mean().item() - 2) < 0.1 and abs(floats.std().item() - 3) < 0.1
    assert autograd.normal(mean.double(), 1.0).dtype == np.float64
    with pytest.raises(TypeError, match="size"):
        autograd.normal(0.0, 1.0)
    with pytest.raises(RuntimeError, match="std >= 0"):
        autograd.normal(mean, -1.0)


def test_bernoulli_and_its_in_place_forms():
    g = Generator().manual_seed(0)
    p = autograd.tensor([0.0, 1.0, 0.0, 1.0])
    assert autograd.bernoulli(p, generator=g).tolist() == [0, 1, 0, 1]
    assert p.bernoulli().dtype == np.float32
    draws = autograd.zeros(20000).bernoulli_(0.3, generator=g)
    assert abs(draws.mean().item() - 0.3) < 0.02 and set(np.unique(draws.numpy())) == {0.0, 1.0}
    per_element = autograd.zeros(4).bernoulli_(p)
    assert per_element.tolist() == [0, 1, 0, 1]
    with pytest.raises(RuntimeError, match="0 <= p <= 1"):
        autograd.bernoulli(autograd.tensor([1.5]))


def test_in_place_initialisers_fill_with_their_distributions():
    g = Generator().manual_seed(1)
    n = 20000
    x = autograd.empty(n)
    assert x.uniform_(2, 4, generator=g) is x and 2 <= x.min().item() and x.max().item() < 4
    assert abs(x.normal_(1, 2, generator=g).mean().item() - 1) < 0.05
    assert abs(x.exponential_(4.0, generator=g).mean().item() - 0.25) < 0.01
    assert abs(np.median(x.log_normal_(0.0, 1.0, generator=g).numpy()) - 1.0) < 0.05
    assert abs(np.median(x.cauchy_(3.0, 1.0, generator=g).numpy()) - 3.0) < 0.05
    assert abs(x.geometric_(0.5, generator=g).mean().item() - 2.0) < 0.05 and x.min().item() == 1
    ints = autograd.zeros(n, dtype=autograd.int64)
    assert set(np.unique(ints.random_(3, generator=g).numpy())) == {0, 1, 2}
    assert set(np.unique(ints.random_(5, 7, generator=g).numpy())) == {5, 6}
    assert ints.random_(generator=g).min().item() >= 0
    floats = autograd.zeros(n).random_(generator=g)
    assert floats.max().item() <= 2**24 and (floats.numpy() == np.round(floats.numpy())).all()
    with pytest.raises(RuntimeError, match="from"):
        ints.random_(4, 2)


def test_in_place_draws_on_a_leaf_that_requires_grad_raise_outside_no_grad():
    w = autograd.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w.uniform_()
    with autograd.no_grad():
        w.normal_()
    assert w.requires_grad and w.grad_fn is None


def test_multinomial_frequencies():
    g = Generator().manual_seed(0)
    weights = autograd.tensor([1.0, 0.0, 3.0, 6.0])  # unnormalised
    samples = autograd.multinomial(weights, 20000, replacement=True, generator=g)
    assert samples.dtype == np.int64 and samples.shape == (20000,)
    frequencies = np.bincount(samples.numpy(), minlength=4) / 20000
    np.testing.assert_allclose(frequencies, [0.1, 0.0, 0.3, 0.6], atol=0.015)
    rows = autograd.multinomial(autograd.tensor([[1.0, 0.0], [0.0, 1.0]]), 3, replacement=True, generator=g)
    assert rows.tolist() == [[0, 0, 0], [1, 1, 1]]


def test_multinomial_without_replacement_draws_each_index_at_most_once():
    g = Generator().manual_seed(0)
    weights = autograd.tensor([5.0, 1.0, 1.0, 1.0, 0.0])
    firsts = []
    for _ in range(2000):
        sample = autograd.multinomial(weights, 4, generator=g).tolist()
        assert sorted(sample) == [0, 1, 2, 3]  # the zero weight is never drawn while others remain
        firsts.append(sample[0])
    assert abs(np.mean(np.array(firsts) == 0) - 5 / 8) < 0.04
    everything = autograd.multinomial(weights, 5, generator=g).tolist()
    assert sorted(everything) == [0, 1, 2, 3, 4] and everything[-1] == 4


@pytest.mark.parametrize("weights, n, replacement, message", [
    ([-1.0, 1.0], 1, True, "element < 0"),
    ([1.0, float("nan")], 1, True, "element < 0"),
    ([1.0, float("inf")], 1, False, "element < 0"),
    ([0.0, 0.0], 1, True, r"sum of probabilities <= 0"),
    ([1.0, 1.0], 3, False, "cannot sample n_sample > prob_dist.size"),
])
def test_multinomial_errors_as_pytorch(weights, n, replacement, message):
    with pytest.raises(RuntimeError, match=message):
        autograd.multinomial(autograd.tensor(weights), n, replacement)


@pytest.mark.torch
@pytest.mark.parametrize("weights, n, replacement", [
    ([-1.0, 1.0], 1, True), ([1.0, float("nan")], 1, True), ([0.0, 0.0], 1, True), ([1.0, 1.0], 3, False),
])
def test_multinomial_error_messages_match_pytorch(weights, n, replacement):
    import torch
    with pytest.raises(RuntimeError) as theirs:
        torch.multinomial(torch.tensor(weights), n, replacement)
    with pytest.raises(RuntimeError) as ours:
        autograd.multinomial(autograd.tensor(weights), n, replacement)
    assert str(ours.value).startswith(str(theirs.value))


def test_poisson():
    g = Generator().manual_seed(0)
    rates = autograd.tensor([[0.0, 2.0, 50.0]]).expand(5000, 3)
    counts = autograd.poisson(rates, generator=g)
    assert counts.dtype == np.float32 and counts.shape == (5000, 3)
    np.testing.assert_allclose(counts.mean(0).numpy(), [0.0, 2.0, 50.0], atol=0.3)


def test_random_like_factories():
    x = autograd.zeros(2, 3, dtype=autograd.float64)
    g = Generator().manual_seed(0)
    assert autograd.rand_like(x, generator=g).dtype == np.float64
    assert autograd.randn_like(x).shape == (2, 3)
    ints = autograd.randint_like(x, 3, 6)
    assert ints.dtype == np.float64 and set(np.unique(ints.numpy())) <= {3.0, 4.0, 5.0}
    assert autograd.randint_like(x, 2).max().item() <= 1


def test_nn_init_takes_a_generator():
    shapes = [(4, 3)]
    for init in (nn.init.uniform_, nn.init.normal_, nn.init.xavier_uniform_, nn.init.xavier_normal_,
                 nn.init.kaiming_uniform_, nn.init.kaiming_normal_, nn.init.trunc_normal_, nn.init.orthogonal_):
        a = init(autograd.empty(*shapes[0]), generator=Generator().manual_seed(4)).numpy()
        b = init(autograd.empty(*shapes[0]), generator=Generator().manual_seed(4)).numpy()
        c = init(autograd.empty(*shapes[0]), generator=Generator().manual_seed(5)).numpy()
        assert np.array_equal(a, b) and not np.array_equal(a, c), init.__name__


@pytest.mark.torch
def test_generator_interface_matches_pytorch():
    import torch
    ours, theirs = Generator(), torch.Generator()
    assert ours.initial_seed() == theirs.initial_seed()
    assert isinstance(ours.manual_seed(3), Generator) and isinstance(theirs.manual_seed(3), torch.Generator)
    assert ours.initial_seed() == theirs.initial_seed() == 3
    assert ours.device == "cpu" and theirs.device.type == "cpu"
    assert ours.get_state().dtype == np.uint8 and theirs.get_state().dtype == torch.uint8
    assert type(autograd.manual_seed(0)) is Generator and type(torch.manual_seed(0)) is torch.Generator


def test_a_seeded_program_repeats():
    def run():
        autograd.manual_seed(0)
        model = nn.Linear(3, 2)
        x = autograd.randn(4, 3)
        return model(x).detach().numpy()

    assert np.array_equal(run(), run())
    assert Tensor(run()).shape == (4, 2)


def test_fork_rng_restores_the_default_generator():
    autograd.manual_seed(0)
    expected = autograd.rand(3).tolist()
    autograd.manual_seed(0)
    with autograd.random.fork_rng():
        autograd.randn(10)
    assert autograd.rand(3).tolist() == expected


def test_draws_are_pytorchs_after_manual_seed():
    """torch.manual_seed(0) and then each op: PyTorch 2.13's values (the generator's contract; the same on any
    machine, PyTorch installed or not)."""
    autograd.manual_seed(0)
    np.testing.assert_allclose(autograd.randn(3).numpy(), [1.5409960746765137, -0.293428897857666,
                                                           -2.1787893772125244], rtol=0, atol=1e-7)
    assert autograd.randint(0, 100, (5,)).tolist() == [97, 83, 1, 66, 56]
    assert autograd.randperm(6).tolist() == [3, 4, 2, 0, 1, 5]
    assert autograd.rand(3, generator=Generator(), dtype=autograd.float64).tolist() == [
        0.13836205913224875, 0.6823109470364002, 0.2969577693522062]  # PyTorch's default seed, 67280421310721


@pytest.mark.parametrize("seed", [0, 5, 2**40 + 3])
def test_initial_weights_and_draws_match_pytorch(seed):
    torch = pytest.importorskip("torch")
    import nn

    def draws(T, size, dtype):
        dtype = getattr(T, dtype)
        return [T.rand(size, dtype=dtype), T.randn(size, dtype=dtype), T.randn(3, dtype=dtype),
                T.empty(size, dtype=dtype).uniform_(-0.7, 0.3), T.empty(size, dtype=dtype).normal_(2.0, 3.0),
                T.randint(-4, 9, (size,)), T.randperm(size)]

    for size in (1, 5, 16, 17, 40):
        for dtype in ("float32", "float64"):
            autograd.manual_seed(seed)
            torch.manual_seed(seed)
            # (an ulp apart at most: PyTorch's vectorised float32 sin, cos and log, glibc's float64 ones)
            tolerance = {"rtol": 2e-7, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-15, "atol": 1e-15}
            for a, t in zip(draws(autograd, size, dtype), draws(torch, size, dtype)):
                np.testing.assert_allclose(a.numpy(), t.numpy(), **tolerance)
    autograd.manual_seed(seed)
    torch.manual_seed(seed)
    for ours, theirs in ((nn.Linear(20, 30), torch.nn.Linear(20, 30)), (nn.Conv2d(3, 8, 3), torch.nn.Conv2d(3, 8, 3)),
                         (nn.LSTM(4, 5), torch.nn.LSTM(4, 5))):
        for a, t in zip(ours.parameters(), theirs.parameters()):
            np.testing.assert_array_equal(a.detach().numpy(), t.detach().numpy())  # to the bit


POISSON_SEED_0 = [2.0, 4.0, 13.0, 298.0]  # torch.manual_seed(0); torch.poisson(tensor([0.5, 3.0, 12.0, 300.0]))
BINOMIAL_SEED_0 = [3.0, 21.0, 15.0, 6.0]  # then torch.binomial(tensor([5., 40., 1000., 7.]), tensor([.3, .5, .02, .9]))


def test_masks_exponentials_and_shuffles_are_pytorchs():
    """PyTorch 2.13's values after torch.manual_seed(0) (dropout's as its own kernel draws them, where it does:
    pytorch_programs.same_dropout_masks; some Intel processors draw Bernoulli masks of a number p through MKL)."""
    import nn

    autograd.manual_seed(0)
    assert nn.functional.dropout(autograd.ones(12), 0.5).tolist() == [0, 0, 2, 0, 0, 0, 2, 2, 0, 2, 2, 2]
    autograd.manual_seed(0)
    np.testing.assert_allclose(autograd.empty(4, dtype=autograd.float64).exponential_(2.0).numpy(),
                               [1.754163093353821, 0.6151923820898384, 0.30752204694700574, 1.2675593221079409],
                               rtol=1e-15)
    autograd.manual_seed(0)
    loader = autograd.utils.data.DataLoader(autograd.utils.data.TensorDataset(autograd.arange(8)), batch_size=4,
                                            shuffle=True)
    assert [batch[0].tolist() for batch in loader] == [[2, 0, 5, 3], [1, 4, 7, 6]]
    autograd.manual_seed(0)
    assert autograd.bernoulli(autograd.full((8,), 0.5)).tolist() == [1, 0, 1, 1, 1, 0, 1, 0]
    autograd.manual_seed(0)  # (products of uniforms below rate 10, Hörmann's rejection from 10)
    assert autograd.poisson(autograd.tensor([0.5, 3.0, 12.0, 300.0])).tolist() == POISSON_SEED_0
    autograd.manual_seed(0)  # (inversion by waiting times where count · p < 10, Hörmann's BTRS from 10)
    assert autograd.binomial(autograd.tensor([5.0, 40.0, 1000.0, 7.0]),
                             autograd.tensor([0.3, 0.5, 0.02, 0.9])).tolist() == BINOMIAL_SEED_0


@pytest.mark.parametrize("seed", [0, 9])
def test_random_programs_draw_as_pytorch(seed):
    torch = pytest.importorskip("torch")
    import nn

    def draws(T, N):
        loader = T.utils.data.DataLoader(T.utils.data.TensorDataset(T.arange(30)), batch_size=7, shuffle=True)
        values = [T.cat([b[0] for b in loader]).double(), T.multinomial(T.tensor([0.2, 0.3, 0.5, 0.1]), 3).double(),
                  T.poisson(T.tensor([0.5, 4.0, 10.0, 37.5, 2000.0] * 3)),
                  T.binomial(T.tensor([5.0, 20.0, 100.0, 1000.0, 3.0] * 3), T.tensor([0.3, 0.6, 0.05, 0.5, 0.9] * 3)),
                  T.empty(9).exponential_(), T.distributions.Categorical(logits=T.zeros(5)).sample((6,)).double(),
                  T.bernoulli(T.full((10,), 0.3))]
        if same_dropout_masks():  # (PyTorch's Bernoulli of a number: its own kernel's, or MKL's on some processors)
            values += [N.functional.dropout(T.ones(40), 0.3), N.Dropout2d(0.5)(T.ones(2, 6, 2, 2)),
                       T.empty(20).bernoulli_(0.4)]
        return values

    autograd.manual_seed(seed)
    ours = draws(autograd, nn)
    torch.manual_seed(seed)
    theirs = draws(torch, torch.nn)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), t.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 4])
def test_initialisers_draw_as_pytorch(seed):
    torch = pytest.importorskip("torch")
    import nn

    def inits(T, init):
        return [init.trunc_normal_(T.empty(40), std=0.02),
                init.trunc_normal_(T.empty(30, dtype=T.float64), a=2.0, b=3.0),
                init.orthogonal_(T.empty(6, 4)), init.orthogonal_(T.empty(3, 8), gain=2.0),
                init.sparse_(T.empty(6, 4), 0.5), init.xavier_normal_(T.empty(6, 40)),
                init.kaiming_uniform_(T.empty(5, 7), a=1.0)]

    autograd.manual_seed(seed)
    ours = inits(autograd, nn.init)
    torch.manual_seed(seed)
    theirs = inits(torch, torch.nn.init)
    for a, t in zip(ours, theirs):  # (QR and float32 normals: an ulp or two)
        np.testing.assert_allclose(a.numpy(), t.numpy(), rtol=1e-6, atol=1e-6)
