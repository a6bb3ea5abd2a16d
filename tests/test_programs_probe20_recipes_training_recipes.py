# ruff: noqa: UP008, UP031  (the programs are kept as their authors wrote them)
"""Programs from PyTorch's recipes and intermediate tutorials (see tests/pytorch_programs.py) that the other program
tests do not already hold, each run on chainrule and on PyTorch from the same weights and data, comparing values,
gradients, trajectories and printed text. Writing custom datasets, transforms and loaders (dict samples,
``random_split``); attribution by gradients without captum (saliency, input x gradient, integrated gradients,
SmoothGrad); the recipes defining a neural network (Dropout2d in train mode, log_softmax) and zeroing out gradients
(a small conv net trained with its running-loss printout)."""

import numpy as np

from .probe20_recipes_common import make_net, net_data
from .pytorch_programs import load, run_both, same_dropout_masks, weights_of

# ----------------------------------------------------------------------------------------------
# writing custom datasets, dataloaders and transforms
# ----------------------------------------------------------------------------------------------

def landmarks_dataset(m):
    torch, data = m.torch, m.data
    np.random.seed(0)
    rng = np.random.default_rng(3)
    images = [rng.uniform(0, 1, (h, w, 3)) for h, w in [(20, 16), (18, 24), (16, 16), (30, 20), (22, 22),
                                                         (17, 19), (25, 18), (16, 28)]]
    landmarks = [rng.uniform(0, 15, (4, 2)) for _ in images]

    class FaceLandmarksDataset(data.Dataset):
        def __init__(self, transform=None):
            self.transform = transform

        def __len__(self):
            return len(images)

        def __getitem__(self, idx):
            if torch.is_tensor(idx):
                idx = idx.tolist()
            sample = {"image": images[idx], "landmarks": landmarks[idx].astype("float").reshape(-1, 2)}
            if self.transform:
                sample = self.transform(sample)
            return sample

    class Rescale:
        def __init__(self, output_size):
            assert isinstance(output_size, (int, tuple))
            self.output_size = output_size

        def __call__(self, sample):
            image, landmarks = sample["image"], sample["landmarks"]
            h, w = image.shape[:2]
            if isinstance(self.output_size, int):
                if h > w:
                    new_h, new_w = self.output_size * h / w, self.output_size
                else:
                    new_h, new_w = self.output_size, self.output_size * w / h
            else:
                new_h, new_w = self.output_size
            new_h, new_w = int(new_h), int(new_w)
            rows = (np.arange(new_h) * h / new_h).astype(int)  # nearest neighbour in place of skimage's resize
            cols = (np.arange(new_w) * w / new_w).astype(int)
            img = image[rows][:, cols]
            landmarks = landmarks * [new_w / w, new_h / h]
            return {"image": img, "landmarks": landmarks}

    class RandomCrop:
        def __init__(self, output_size):
            self.output_size = (output_size, output_size) if isinstance(output_size, int) else output_size

        def __call__(self, sample):
            image, landmarks = sample["image"], sample["landmarks"]
            h, w = image.shape[:2]
            new_h, new_w = self.output_size
            top = np.random.randint(0, h - new_h + 1)
            left = np.random.randint(0, w - new_w + 1)
            image = image[top: top + new_h, left: left + new_w]
            landmarks = landmarks - [left, top]
            return {"image": image, "landmarks": landmarks}

    class ToTensor:
        def __call__(self, sample):
            image, landmarks = sample["image"], sample["landmarks"]
            image = image.transpose((2, 0, 1))
            return {"image": torch.from_numpy(image), "landmarks": torch.from_numpy(landmarks)}

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, sample):
            for t in self.transforms:
                sample = t(sample)
            return sample

    transformed_dataset = FaceLandmarksDataset(transform=Compose([Rescale(16), RandomCrop(12), ToTensor()]))
    sizes = [(tuple(s["image"].size()), tuple(s["landmarks"].size())) for s in
             (transformed_dataset[i] for i in range(3))]
    g = torch.Generator()
    g.manual_seed(0)
    dataloader = data.DataLoader(transformed_dataset, batch_size=3, shuffle=True, num_workers=0, generator=g)
    batches = []
    for i_batch, sample_batched in enumerate(dataloader):
        batches.append((i_batch, sample_batched["image"], sample_batched["landmarks"],
                        sample_batched["image"].dtype == torch.float64))
    train, val = data.random_split(transformed_dataset, [6, 2], generator=torch.Generator().manual_seed(42))
    return sizes, batches, list(train.indices), list(val.indices), torch.is_tensor(np.zeros(1))


def test_custom_dataset_transforms_and_loader():
    ours, _ = run_both(landmarks_dataset)
    assert ours[0][0] == ((3, 12, 12), (4, 2))
    assert [b[0] for b in ours[1]] == [0, 1, 2] and ours[1][2][1].shape == (2, 3, 12, 12) and ours[1][0][3]
    assert sorted(ours[2] + ours[3]) == list(range(8)) and ours[4] is False


# ----------------------------------------------------------------------------------------------
# attribution by gradients, without captum: saliency, input x gradient, integrated gradients, SmoothGrad
# ----------------------------------------------------------------------------------------------

def attributions(m, weights):
    torch, F = m.torch, m.F
    model = load(m, make_net(m), weights).eval()
    images = torch.tensor(net_data()[0][:4])
    target = model(images).argmax(dim=1)

    x = images.clone().requires_grad_(True)
    scores = model(x).gather(1, target.unsqueeze(1)).squeeze()
    scores.sum().backward()
    saliency, _ = x.grad.data.abs().max(dim=1)
    input_x_gradient = (x * x.grad).detach()

    baseline = torch.zeros_like(images[0])
    steps = 16
    alphas = torch.linspace(0, 1, steps + 1).view(-1, 1, 1, 1)
    integrated = []
    for i in range(images.shape[0]):
        path = (baseline + alphas * (images[i] - baseline)).requires_grad_()
        out = F.softmax(model(path), dim=1)[:, target[i]]
        grads, = torch.autograd.grad(out.sum(), path)
        avg = (grads[:-1] + grads[1:]).mean(dim=0) / 2
        integrated.append((images[i] - baseline) * avg)
    integrated = torch.stack(integrated)
    completeness = integrated.sum(dim=(1, 2, 3))

    noise = torch.tensor(np.random.default_rng(5).standard_normal((8, 1, 8, 8)).astype(np.float32))
    smooth = torch.zeros_like(images[:1])
    for k in range(8):
        noisy = (images[:1] + 0.15 * noise[k:k + 1]).requires_grad_()
        model(noisy)[0, target[0]].backward()
        smooth += noisy.grad
    smooth /= 8
    return target, saliency, input_x_gradient, integrated, completeness, smooth


def test_attribution_by_gradients():
    ours, _ = run_both(attributions, weights_of(make_net), rtol=1e-4, atol=1e-6)
    assert ours[1].shape == (4, 8, 8) and np.all(ours[1] >= 0)


# ----------------------------------------------------------------------------------------------
# defining a neural network, and zeroing out gradients (the recipes as written: their own random data)
# ----------------------------------------------------------------------------------------------

def defining_and_zeroing(m, same_masks):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout2d(0.25)
            self.dropout2 = nn.Dropout2d(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    random_data = torch.rand((1, 1, 28, 28))
    my_nn = Net()
    if not same_masks:  # PyTorch's dropout masks are not chainrule's on this machine: the recipe's train-mode
        my_nn.eval()    # pass is compared where the masks are the same
    result = my_nn(random_data)

    # zeroing out gradients: a small conv net on a few random batches
    class SmallNet(nn.Module):
        def __init__(self):
            super(SmallNet, self).__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 5 * 5)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    net = SmallNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    trainloader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(5)]
    history = []
    for epoch in range(2):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 2 == 1:
                history.append('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / 2))
                running_loss = 0.0
    return random_data, result, history, net.fc3.weight


def test_defining_a_network_and_zeroing_gradients():
    ours, _ = run_both(defining_and_zeroing, same_dropout_masks(), rtol=1e-4, atol=1e-5)
    assert ours[1].shape == (1, 10) and len(ours[2]) == 4 and ours[2][0].startswith("[1,     2] loss: ")
