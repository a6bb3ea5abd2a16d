# ruff: noqa: B007, UP004, UP008  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says. ResNets:
``siamese_network`` (a ResNet cut by ``children()[:-1]``, ``apply(init_weights)``, ``BCELoss`` on a sigmoid head,
Adadelta with StepLR, ``torch.where(outputs > 0.5, 1, 0)``); ``imagenet`` (top-k ``accuracy``, ``AverageMeter`` over
tensors, SGD with momentum and weight decay, StepLR, resuming model, optimizer and scheduler from a ``torch.save``d
checkpoint: the same numbers as not stopping; ``import torch.backends.cudnn as cudnn``)."""

import importlib
import io
from enum import Enum

import numpy as np
import pytest

from .probe9_examples_common import numbers_parsed
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# siamese_network: a ResNet feature extractor shared by two images, a BCE-trained similarity head
# ----------------------------------------------------------------------------------------------


def tiny_resnet(m, num_classes=10):
    """torchvision's resnet18 with its module names, cut to one BasicBlock in each of two stages."""
    torch, nn = m.torch, m.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = nn.Sequential(BasicBlock(4, 4))
            self.layer2 = nn.Sequential(BasicBlock(4, 8, 2, nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False),
                                                                          nn.BatchNorm2d(8))))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet()


def siamese_net(m):
    torch, nn = m.torch, m.nn

    class SiameseNetwork(nn.Module):
        def __init__(self):
            super(SiameseNetwork, self).__init__()
            # get resnet model
            self.resnet = tiny_resnet(m)
            # over-write the first conv layer to be able to read MNIST images
            self.resnet.conv1 = nn.Conv2d(1, 4, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
            self.fc_in_features = self.resnet.fc.in_features
            # remove the last layer of resnet18 (linear layer which is before avgpool layer)
            self.resnet = nn.Sequential(*(list(self.resnet.children())[:-1]))
            # add linear layers to compare between the features of the two images
            self.fc = nn.Sequential(
                nn.Linear(self.fc_in_features * 2, 16),
                nn.ReLU(inplace=True),
                nn.Linear(16, 1),
            )
            self.sigmoid = nn.Sigmoid()
            # initialize the weights
            self.resnet.apply(self.init_weights)
            self.fc.apply(self.init_weights)

        def init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                m.bias.data.fill_(0.01)

        def forward_once(self, x):
            output = self.resnet(x)
            output = output.view(output.size()[0], -1)
            return output

        def forward(self, input1, input2):
            output1 = self.forward_once(input1)
            output2 = self.forward_once(input2)
            output = torch.cat((output1, output2), 1)
            output = self.fc(output)
            output = self.sigmoid(output)
            return output

    return SiameseNetwork()


def siamese_pairs(m, n=12):
    """APP_MATCHER: even indices a pair of one class (target 1), odd ones of two classes (target 0)."""
    torch = m.torch
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 1, 12, 12)).astype(np.float32)
    pairs = []
    for index in range(n):
        c1 = index % 3
        c2 = c1 if index % 2 == 0 else (c1 + 1) % 3
        image_1 = prototypes[c1] + 0.3 * rng.standard_normal((1, 12, 12)).astype(np.float32)
        image_2 = prototypes[c2] + 0.3 * rng.standard_normal((1, 12, 12)).astype(np.float32)
        target = torch.tensor(1 if c1 == c2 else 0, dtype=torch.float)
        pairs.append((torch.from_numpy(image_1), torch.from_numpy(image_2), target))
    return pairs


def siamese_network(m, weights, epochs=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    train_loader = torch.utils.data.DataLoader(siamese_pairs(m), batch_size=4)
    model = load(m, siamese_net(m), weights)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log, lrs = [], []
    for epoch in range(1, epochs + 1):
        model.train()
        criterion = nn.BCELoss()
        for batch_idx, (images_1, images_2, targets) in enumerate(train_loader):
            optimizer.zero_grad()
            outputs = model(images_1, images_2).squeeze()
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            log.append(loss.item())
        model.eval()  # test()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for (images_1, images_2, targets) in train_loader:
                outputs = model(images_1, images_2).squeeze()
                test_loss += criterion(outputs, targets).sum().item()  # sum up batch loss
                pred = torch.where(outputs > 0.5, 1, 0)
                correct += pred.eq(targets.view_as(pred)).sum().item()
        log.append((test_loss / len(train_loader.dataset), correct))
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, lrs, dict(model.state_dict()), grads, pred, pred.dtype == torch.int64, outputs


def test_siamese_network():
    weights = weights_of(siamese_net)
    assert "resnet.5.0.conv1.weight" in weights and not any(k.startswith("resnet.7") for k in weights)  # fc cut off
    ours, _ = run_both(siamese_network, weights, rtol=1e-4, atol=1e-5)
    log, lrs, state, grads, pred, is_long, outputs = ours
    assert lrs == pytest.approx([0.7, 0.49]) and is_long
    np.testing.assert_array_equal(pred, (outputs > 0.5).astype(np.int64))
    assert len(log) == 8 and all(0 <= correct <= 12 for _, correct in (log[3], log[7]))
    assert state["resnet.1.num_batches_tracked"] == 2 * 3 * 2  # both images of 3 batches for 2 epochs


# ----------------------------------------------------------------------------------------------
# imagenet/main.py: top-k accuracy, AverageMeter over tensors, SGD with momentum and weight decay,
# StepLR, and resuming from a checkpoint of model, optimizer and scheduler state
# ----------------------------------------------------------------------------------------------

class Summary(Enum):
    NONE = 0
    AVERAGE = 1
    SUM = 2
    COUNT = 3

class AverageMeter(object):
    """Computes and stores the average and current value"""
    def __init__(self, name, fmt=':f', summary_type=Summary.AVERAGE):
        self.name = name
        self.fmt = fmt
        self.summary_type = summary_type
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count

    def __str__(self):
        fmtstr = '{name} {val' + self.fmt + '} ({avg' + self.fmt + '})'
        return fmtstr.format(**self.__dict__)

def imagenet(m, weights, images, labels, resume_at=None, epochs=3):
    torch, nn = m.torch, m.nn
    StepLR = m.optim.lr_scheduler.StepLR

    def accuracy(output, target, topk=(1,)):
        """Computes the accuracy over the k top predictions for the specified values of k"""
        with torch.no_grad():
            maxk = max(topk)
            batch_size = target.size(0)

            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))

            res = []
            for k in topk:
                correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
                res.append(correct_k.mul_(100.0 / batch_size))
            return res

    def make():
        model = load(m, tiny_resnet(m), weights)
        criterion = nn.CrossEntropyLoss()
        optimizer = m.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
        scheduler = StepLR(optimizer, step_size=2, gamma=0.1)
        return model, criterion, optimizer, scheduler

    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    val_loader = torch.utils.data.DataLoader(dataset, batch_size=12, shuffle=False)

    def train(train_loader, model, criterion, optimizer, epoch):
        losses = AverageMeter('Loss', ':.4e', Summary.NONE)
        top1 = AverageMeter('Acc@1', ':6.2f', Summary.NONE)
        top5 = AverageMeter('Acc@5', ':6.2f', Summary.NONE)
        model.train()
        for i, (images, target) in enumerate(train_loader):
            output = model(images)
            loss = criterion(output, target)
            acc1, acc5 = accuracy(output, target, topk=(1, 5))
            losses.update(loss.item(), images.size(0))
            top1.update(acc1[0], images.size(0))
            top5.update(acc5[0], images.size(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return str(losses), top1.avg, top5.avg

    def validate(val_loader, model, criterion):
        top1 = AverageMeter('Acc@1', ':6.2f', Summary.AVERAGE)
        losses = AverageMeter('Loss', ':.4e', Summary.NONE)
        model.eval()
        with torch.no_grad():
            for i, (images, target) in enumerate(val_loader):
                output = model(images)
                loss = criterion(output, target)
                acc1, acc5 = accuracy(output, target, topk=(1, 5))
                losses.update(loss.item(), images.size(0))
                top1.update(acc1[0], images.size(0))
        return top1.avg

    model, criterion, optimizer, scheduler = make()
    best_acc1 = 0
    buffer = None
    log = []
    start_epoch = 0
    for epoch in range(start_epoch, epochs):
        if epoch == resume_at:  # args.resume: everything from the checkpoint into fresh objects
            buffer.seek(0)
            checkpoint = torch.load(buffer)
            model, criterion, optimizer, scheduler = make()
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            start_epoch = checkpoint['epoch']
            best_acc1 = checkpoint['best_acc1']
            model.load_state_dict(checkpoint['state_dict'])
            optimizer.load_state_dict(checkpoint['optimizer'])
            scheduler.load_state_dict(checkpoint['scheduler'])
            assert start_epoch == epoch
        log.append(train(train_loader, model, criterion, optimizer, epoch))
        acc1 = validate(val_loader, model, criterion)
        scheduler.step()
        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        log.append((acc1, bool(is_best), scheduler.get_last_lr()))
        buffer = io.BytesIO()  # save_checkpoint
        torch.save({
            'epoch': epoch + 1,
            'arch': 'resnet',
            'state_dict': model.state_dict(),
            'best_acc1': best_acc1,
            'optimizer' : optimizer.state_dict(),
            'scheduler' : scheduler.state_dict()
        }, buffer)
    return log, dict(model.state_dict()), optimizer.state_dict()['state'][0]['momentum_buffer']


def test_imagenet_training_and_resume():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((10, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 24)
    images = prototypes[labels] + 0.5 * rng.standard_normal((24, 3, 16, 16)).astype(np.float32)
    weights = weights_of(tiny_resnet)
    straight, theirs = run_both(imagenet, weights, images, labels, compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(straight), numbers_parsed(theirs), 1e-4, 1e-5)
    log, state, momentum = straight
    assert log[0][0].startswith("Loss ") and log[1][1] is True  # the first epoch is the best so far
    assert [lr for _, _, (lr,) in log[1::2]] == pytest.approx([0.1, 0.01, 0.01])
    assert all(0 <= float(acc) <= 100 for _, acc, _ in log[1::2])
    resumed, _ = run_both(imagenet, weights, images, labels, resume_at=2, compare=False)
    assert_same(resumed, straight, 1e-6, 1e-7)  # resuming changes nothing


def imagenet_seeded(m, weights, images, labels, seed=0):
    """main_worker's start: `import torch.backends.cudnn as cudnn` (imagenet/main.py and dcgan/main.py),
    then deterministic kernels where a seed is given."""
    import random
    cudnn = importlib.import_module(m.torch.__name__ + ".backends.cudnn")
    if seed is not None:
        random.seed(seed)
        m.torch.manual_seed(seed)
        cudnn.deterministic = True
        cudnn.benchmark = False
    return imagenet(m, weights, images, labels, epochs=1)


def test_imagenet_imports_backends_cudnn():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    run_both(imagenet_seeded, weights_of(tiny_resnet), images, labels, compare=False)
