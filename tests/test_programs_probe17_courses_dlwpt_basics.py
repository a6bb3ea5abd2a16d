# ruff: noqa: B007, E712, UP008  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. Deep Learning with PyTorch (Stevens et
al.): chapter 3's strides and storage offsets, grayscale by broadcasting and ``einsum('...chw,c->...hw')``, chapter
4's wine and bike-sharing tables (``scatter_`` one-hots, masks); chapter 6's thermometer (a ``randperm`` split, an
``OrderedDict`` Sequential, validation under ``no_grad``); chapter 8's NetWidth/NetBatchNorm/NetResDeep (one ResBlock
repeated, so shared) trained with an L2 penalty by hand; storage indexing (``points.storage()[0] = 2.0`` writes into
points)."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Deep Learning with PyTorch (Stevens, Antiga, Viehmann)
# ----------------------------------------------------------------------------------------------


def cifar2_data(n=48, seed=0):
    """A stand-in for CIFAR-2 (birds against airplanes): 3x32x32 images of two noisy prototypes."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    imgs = protos[labels] + rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    return imgs, labels


def dlwpt_chapter8(m):
    """Chapter 8: the convolutional nets of 8.5 trained by ``training_loop_l2reg``, with NetResDeep's one
    ResBlock repeated (``n_blocks * [ResBlock(...)]``: the same module, its weights shared)."""
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data

    class NetWidth(nn.Module):
        def __init__(self, n_chans1=32):
            super().__init__()
            self.n_chans1 = n_chans1
            self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
            self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
            self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
            self.fc2 = nn.Linear(32, 2)

        def forward(self, x):
            out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
            out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
            out = out.view(-1, 8 * 8 * self.n_chans1 // 2)
            out = torch.tanh(self.fc1(out))
            out = self.fc2(out)
            return out

    class NetBatchNorm(nn.Module):
        def __init__(self, n_chans1=32):
            super().__init__()
            self.n_chans1 = n_chans1
            self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
            self.conv1_batchnorm = nn.BatchNorm2d(num_features=n_chans1)
            self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
            self.conv2_batchnorm = nn.BatchNorm2d(num_features=n_chans1 // 2)
            self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
            self.fc2 = nn.Linear(32, 2)

        def forward(self, x):
            out = self.conv1_batchnorm(self.conv1(x))
            out = F.max_pool2d(torch.tanh(out), 2)
            out = self.conv2_batchnorm(self.conv2(out))
            out = F.max_pool2d(torch.tanh(out), 2)
            out = out.view(-1, 8 * 8 * self.n_chans1 // 2)
            out = torch.tanh(self.fc1(out))
            out = self.fc2(out)
            return out

    class ResBlock(nn.Module):
        def __init__(self, n_chans):
            super(ResBlock, self).__init__()
            self.conv = nn.Conv2d(n_chans, n_chans, kernel_size=3, padding=1, bias=False)
            self.batch_norm = nn.BatchNorm2d(num_features=n_chans)
            torch.nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
            torch.nn.init.constant_(self.batch_norm.weight, 0.5)
            torch.nn.init.zeros_(self.batch_norm.bias)

        def forward(self, x):
            out = self.conv(x)
            out = self.batch_norm(out)
            out = torch.relu(out)
            return out + x

    class NetResDeep(nn.Module):
        def __init__(self, n_chans1=32, n_blocks=10):
            super().__init__()
            self.n_chans1 = n_chans1
            self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
            self.resblocks = nn.Sequential(*(n_blocks * [ResBlock(n_chans=n_chans1)]))
            self.fc1 = nn.Linear(8 * 8 * n_chans1, 32)
            self.fc2 = nn.Linear(32, 2)

        def forward(self, x):
            out = F.max_pool2d(torch.relu(self.conv1(x)), 2)
            out = self.resblocks(out)
            out = F.max_pool2d(out, 2)
            out = out.view(-1, 8 * 8 * self.n_chans1)
            out = torch.relu(self.fc1(out))
            out = self.fc2(out)
            return out

    def training_loop_l2reg(n_epochs, optimizer, model, loss_fn, train_loader):
        losses = []
        for epoch in range(1, n_epochs + 1):
            loss_train = 0.0
            for imgs, labels in train_loader:
                outputs = model(imgs)
                loss = loss_fn(outputs, labels)
                l2_lambda = 0.001
                l2_norm = sum(p.pow(2.0).sum() for p in model.parameters())
                loss = loss + l2_lambda * l2_norm
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_train += loss.item()
            losses.append(loss_train / len(train_loader))
        return losses

    def validate(model, loader):
        correct = 0
        total = 0
        with torch.no_grad():
            for imgs, labels in loader:
                outputs = model(imgs)
                _, predicted = torch.max(outputs, dim=1)
                total += labels.shape[0]
                correct += int((predicted == labels).sum())
        return correct / total

    imgs, labels = cifar2_data()
    cifar2 = [(torch.from_numpy(img), int(label)) for img, label in zip(imgs, labels)]
    results = {}
    for name, make in [("width", lambda: NetWidth(n_chans1=8)), ("batchnorm", lambda: NetBatchNorm(n_chans1=8)),
                       ("resdeep", lambda: NetResDeep(n_chans1=4, n_blocks=3))]:
        torch.manual_seed(0)
        model = make()
        train_loader = data.DataLoader(cifar2, batch_size=16, shuffle=True)
        optimizer = optim.SGD(model.parameters(), lr=1e-2)
        losses = training_loop_l2reg(2, optimizer, model, nn.CrossEntropyLoss(), train_loader)
        model.eval()
        acc = validate(model, data.DataLoader(cifar2, batch_size=64, shuffle=False))
        numel_list = [p.numel() for p in model.parameters()]
        results[name] = {"losses": losses, "acc": acc, "numel": numel_list,
                         "state": dict(model.state_dict())}
    return results


def test_dlwpt_chapter8_nets_l2reg_shared_resblocks():
    ours, _ = run_both(dlwpt_chapter8, rtol=2e-4, atol=2e-5)
    resdeep = ours["resdeep"]
    # one ResBlock repeated three times: its parameters are listed once, its state dict keys thrice
    assert resdeep["numel"] == [4 * 3 * 9, 4, 4 * 4 * 9, 4, 4, 32 * 8 * 8 * 4, 32, 2 * 32, 2]
    assert {k for k in resdeep["state"] if k.startswith("resblocks.2.")} == {
        "resblocks.2.conv.weight", "resblocks.2.batch_norm.weight", "resblocks.2.batch_norm.bias",
        "resblocks.2.batch_norm.running_mean", "resblocks.2.batch_norm.running_var",
        "resblocks.2.batch_norm.num_batches_tracked"}
    np.testing.assert_array_equal(resdeep["state"]["resblocks.0.conv.weight"],
                                  resdeep["state"]["resblocks.2.conv.weight"])
    assert resdeep["state"]["resblocks.1.batch_norm.num_batches_tracked"] == 3 * 2 * 3  # 3 calls a batch


# ----------------------------------------------------------------------------------------------
# Deep Learning with PyTorch, chapters 3 and 4: tensors, their storage and real-world data
# ----------------------------------------------------------------------------------------------


def dlwpt_tensors_and_data(m):
    """Chapter 3's strides, offsets, transposes and the grayscale of a batch by broadcasting and by ``einsum``
    ('...chw,c->...hw'); chapter 4's wine table (``le``/``gt`` masks, normalisation, one-hot by ``scatter_``) and
    the bike-sharing hours (``view(-1, 24, C)``, ``transpose(1, 2)``, a one-hot weather column by ``scatter_``
    with ``value=``, rescaling a column in place)."""
    torch = m.torch
    points = torch.tensor([[4.0, 1.0], [5.0, 3.0], [2.0, 1.0]])
    second_point = points[1]
    layout = [second_point.storage_offset(), tuple(second_point.size()), second_point.stride(), points.stride()]
    second_point = points[1].clone()
    second_point[0] = 10.0
    points_t = points.t()
    shares = points.untyped_storage().data_ptr() == points_t.untyped_storage().data_ptr()
    layout += [points_t.stride(), points_t.is_contiguous(), shares]
    some_t = torch.ones(3, 4, 5)
    transpose_t = some_t.transpose(0, 2)
    layout += [tuple(transpose_t.shape), some_t.stride(), transpose_t.stride()]
    points_t_cont = points_t.contiguous()
    layout += [points_t_cont.stride(), points_t_cont.is_contiguous()]

    torch.manual_seed(0)
    img_t = torch.randn(3, 5, 5)
    weights = torch.tensor([0.2126, 0.7152, 0.0722])
    batch_t = torch.randn(2, 3, 5, 5)
    img_gray_naive = img_t.mean(-3)
    batch_gray_naive = batch_t.mean(-3)
    unsqueezed_weights = weights.unsqueeze(-1).unsqueeze_(-1)
    img_weights = (img_t * unsqueezed_weights)
    batch_weights = (batch_t * unsqueezed_weights)
    img_gray_weighted = img_weights.sum(-3)
    batch_gray_weighted = batch_weights.sum(-3)
    img_gray_weighted_fancy = torch.einsum("...chw,c->...hw", img_t, weights)
    batch_gray_weighted_fancy = torch.einsum("...chw,c->...hw", batch_t, weights)
    double_points = torch.zeros(10, 2).to(torch.double)
    short_points = torch.ones(10, 2).to(dtype=torch.short)
    points_64 = torch.rand(5, dtype=torch.double)
    points_short = points_64.to(torch.short)
    mixed = (points_64 * points_short).dtype

    rng = np.random.default_rng(4)
    wineq_numpy = np.concatenate([rng.uniform(0, 15, (40, 11)), rng.integers(3, 10, (40, 1))], axis=1)
    wineq = torch.from_numpy(wineq_numpy).float()
    data = wineq[:, :-1]
    target = wineq[:, -1].long()
    target_onehot = torch.zeros(target.shape[0], 10)
    target_onehot.scatter_(1, target.unsqueeze(1), 1.0)
    data_mean = torch.mean(data, dim=0)
    data_var = torch.var(data, dim=0)
    data_normalized = (data - data_mean) / torch.sqrt(data_var)
    bad_indexes = target <= 3
    bad_data = data[bad_indexes]
    mid_data = data[(target > 3) & (target < 7)]
    good_data = data[target >= 7]
    bad_mean = torch.mean(bad_data, dim=0)
    mid_mean = torch.mean(mid_data, dim=0)
    good_mean = torch.mean(good_data, dim=0)
    total_sulfur_threshold = 8.0
    total_sulfur_data = data[:, 6]
    predicted_indexes = torch.lt(total_sulfur_data, total_sulfur_threshold)
    actual_indexes = target > 5
    n_matches = torch.sum(actual_indexes & predicted_indexes).item()
    n_predicted = torch.sum(predicted_indexes).item()
    n_actual = torch.sum(actual_indexes).item()

    hours = 24 * 3
    bikes_numpy = np.column_stack([np.arange(hours) + 1.0, np.repeat([1.0, 1.0, 2.0], 24), rng.integers(0, 2, hours),
                                   np.arange(hours) % 24, rng.integers(1, 5, hours), rng.uniform(0, 1, hours),
                                   rng.integers(0, 300, hours)]).astype(np.float32)
    bikes = torch.from_numpy(bikes_numpy)
    daily_bikes = bikes.view(-1, 24, bikes.shape[1])
    daily_shape = [tuple(daily_bikes.shape), daily_bikes.stride()]
    daily_bikes = daily_bikes.transpose(1, 2)
    first_day = bikes[:24].long()
    weather_onehot = torch.zeros(first_day.shape[0], 4)
    weather_onehot.scatter_(dim=1, index=first_day[:, 4].unsqueeze(1) - 1, value=1.0)
    first_day_features = torch.cat((bikes[:24], weather_onehot), 1)
    daily_weather_onehot = torch.zeros(daily_bikes.shape[0], 4, daily_bikes.shape[2])
    daily_weather_onehot.scatter_(1, daily_bikes[:, 4, :].long().unsqueeze(1) - 1, 1.0)
    daily_bikes = torch.cat((daily_bikes, daily_weather_onehot), dim=1)
    daily_bikes[:, 4, :] = (daily_bikes[:, 4, :] - 1.0) / 3.0
    temp = daily_bikes[:, 5, :]
    temp_min = torch.min(temp)
    temp_max = torch.max(temp)
    daily_bikes[:, 5, :] = ((daily_bikes[:, 5, :] - temp_min) / (temp_max - temp_min))
    return {"layout": layout, "img_gray_naive": img_gray_naive, "batch_gray_naive": batch_gray_naive,
            "weighted": [img_gray_weighted, batch_gray_weighted], "fancy": [img_gray_weighted_fancy,
                                                                        batch_gray_weighted_fancy],
            "dtypes": [double_points.dtype == torch.float64, short_points.dtype == torch.int16,
                       points_short.dtype == torch.short, mixed == torch.double],  # (str(dtype): README)
            "target_onehot": target_onehot, "data_normalized": data_normalized,
            "means": [bad_mean, mid_mean, good_mean], "matches": [n_matches, n_predicted, n_actual],
            "daily_shape": daily_shape, "first_day_features": first_day_features, "daily_bikes": daily_bikes}


def test_dlwpt_tensors_and_real_world_data():
    ours, _ = run_both(dlwpt_tensors_and_data)
    assert ours["layout"] == [2, (2,), (1,), (2, 1), (1, 2), False, True, (5, 4, 3), (20, 5, 1), (1, 5, 20), (3, 1),
                              True]
    np.testing.assert_allclose(ours["fancy"][0], ours["weighted"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fancy"][1], ours["weighted"][1], rtol=1e-5, atol=1e-6)
    assert ours["dtypes"] == [True, True, True, True]
    assert ours["daily_shape"] == [(3, 24, 7), (168, 7, 1)]
    assert ours["daily_bikes"].shape == (3, 11, 24)
    np.testing.assert_array_equal(ours["target_onehot"].sum(1), 1)


def dlwpt_storage_indexing(m):
    """Chapter 3's storage, indexed and written through: ``points.storage()[0] = 2.0`` changes points."""
    torch = m.torch
    points = torch.tensor([[4.0, 1.0], [5.0, 3.0], [2.0, 1.0]])
    points_storage = points.storage()
    first = [points_storage[0], points.storage()[1]]
    points_storage[0] = 2.0
    return {"first": first, "points": points, "listed": list(points_storage)}


def test_dlwpt_storage_indexing():
    ours, _ = run_both(dlwpt_storage_indexing)
    assert ours["first"] == [4.0, 1.0]
    np.testing.assert_array_equal(ours["points"], [[2.0, 1.0], [5.0, 3.0], [2.0, 1.0]])
    assert ours["listed"] == [2.0, 1.0, 5.0, 3.0, 2.0, 1.0]


def dlwpt_chapter6_thermometer(m):
    """Chapter 6: the thermometer data split by ``randperm``, ``nn.Linear`` then an ``OrderedDict`` Sequential
    (its named submodules reached as attributes), ``training_loop`` with a validation loss under ``no_grad``."""
    from collections import OrderedDict

    torch, nn, optim = m.torch, m.nn, m.optim
    t_c = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
    t_u = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
    t_c = torch.tensor(t_c).unsqueeze(1)
    t_u = torch.tensor(t_u).unsqueeze(1)
    torch.manual_seed(0)
    n_samples = t_u.shape[0]
    n_val = int(0.2 * n_samples)
    shuffled_indices = torch.randperm(n_samples)
    train_indices = shuffled_indices[:-n_val]
    val_indices = shuffled_indices[-n_val:]
    t_u_train, t_c_train = t_u[train_indices], t_c[train_indices]
    t_u_val, t_c_val = t_u[val_indices], t_c[val_indices]
    t_un_train = 0.1 * t_u_train
    t_un_val = 0.1 * t_u_val

    def training_loop(n_epochs, optimizer, model, loss_fn, t_u_train, t_u_val, t_c_train, t_c_val):
        history = []
        for epoch in range(1, n_epochs + 1):
            t_p_train = model(t_u_train)
            loss_train = loss_fn(t_p_train, t_c_train)
            with torch.no_grad():
                t_p_val = model(t_u_val)
                loss_val = loss_fn(t_p_val, t_c_val)
                assert loss_val.requires_grad == False
            optimizer.zero_grad()
            loss_train.backward()
            optimizer.step()
            if epoch == 1 or epoch % 100 == 0:
                history.append((loss_train.item(), loss_val.item()))
        return history

    linear_model = nn.Linear(1, 1)
    optimizer = optim.SGD(linear_model.parameters(), lr=1e-2)
    linear_history = training_loop(300, optimizer, linear_model, nn.MSELoss(), t_un_train, t_un_val, t_c_train,
                                   t_c_val)
    seq_model = nn.Sequential(OrderedDict([
        ("hidden_linear", nn.Linear(1, 8)),
        ("hidden_activation", nn.Tanh()),
        ("output_linear", nn.Linear(8, 1))]))
    names = [(name, tuple(param.shape)) for name, param in seq_model.named_parameters()]
    optimizer = optim.SGD(seq_model.parameters(), lr=1e-3)
    seq_history = training_loop(300, optimizer, seq_model, nn.MSELoss(), t_un_train, t_un_val, t_c_train, t_c_val)
    return {"indices": shuffled_indices, "linear": linear_history, "weight": linear_model.weight,
            "bias": linear_model.bias, "names": names, "seq": seq_history,
            "hidden_grad": seq_model.hidden_linear.weight.grad, "output_bias": seq_model.output_linear.bias,
            "prediction": seq_model(0.1 * torch.tensor([[60.0]]))}


def test_dlwpt_chapter6_thermometer():
    # (float32 training by SGD at lr 1e-2 through tanh: a unit of tanh's last place, NumPy's vectorised one on an
    # AVX-512 processor against PyTorch's, grows to 4e-4 relative in the hidden layer's gradient)
    ours, _ = run_both(dlwpt_chapter6_thermometer, rtol=1e-3, atol=1e-5)
    assert ours["names"] == [("hidden_linear.weight", (8, 1)), ("hidden_linear.bias", (8,)),
                             ("output_linear.weight", (1, 8)), ("output_linear.bias", (1,))]
    assert ours["linear"][-1][0] < ours["linear"][0][0]
