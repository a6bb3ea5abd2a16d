# ruff: noqa: B007, UP008, UP031, UP032  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says. Two examples
since removed from the repository: ``vision_transformer`` (patches by ``unfold().unfold()``, ``MultiheadAttention``
given batch-major input without ``batch_first``) and ``swin_transformer`` (window partition, shifted windows by
``torch.roll``, ``q, k, v`` unpacked by iterating a tensor); the vision transformer's ``from torch.hub import tqdm``."""

import importlib
import io
from types import SimpleNamespace

import numpy as np

from .probe9_examples_common import assert_key_bias_gradients_vanish, assert_same_but_key_biases, numbers_parsed
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# vision_transformer (removed from pytorch/examples in 2024): patches by unfold().unfold().permute(),
# a class token and position embedding per batch row, nn.MultiheadAttention fed (batch, seq, emb)
# without batch_first, one LayerNorm used twice, an in-place += on a cat
# ----------------------------------------------------------------------------------------------

VIT = SimpleNamespace(patch_size=4, n_channels=3, latent_size=8, batch_size=4, no_cuda=True, num_heads=2, dropout=0.0,
                      num_encoders=2, num_classes=3, epochs=2, dry_run=False)

def vit(m, args=VIT):
    torch, nn = m.torch, m.nn

    class PatchExtractor(nn.Module):
        def __init__(self, patch_size=16):
            super().__init__()
            self.patch_size = patch_size

        def forward(self, input_data):
            batch_size, channels, height, width = input_data.size()
            assert height % self.patch_size == 0 and width % self.patch_size == 0, \
                f"Input height ({height}) and width ({width}) must be divisible by patch size ({self.patch_size})"

            num_patches_h = height // self.patch_size
            num_patches_w = width // self.patch_size
            num_patches = num_patches_h * num_patches_w

            patches = input_data.unfold(2, self.patch_size, self.patch_size). \
                unfold(3, self.patch_size, self.patch_size). \
                permute(0, 2, 3, 1, 4, 5). \
                contiguous(). \
                view(batch_size, num_patches, -1)
            return patches

    class InputEmbedding(nn.Module):
        def __init__(self, args):
            super(InputEmbedding, self).__init__()
            self.patch_size = args.patch_size
            self.n_channels = args.n_channels
            self.latent_size = args.latent_size
            use_cuda = not args.no_cuda and torch.cuda.is_available()
            self.device = torch.device("cuda" if use_cuda else "cpu")
            self.batch_size = args.batch_size
            self.input_size = self.patch_size * self.patch_size * self.n_channels
            self.LinearProjection = nn.Linear(self.input_size, self.latent_size)
            self.class_token = nn.Parameter(torch.randn(self.batch_size, 1, self.latent_size).to(self.device))
            self.pos_embedding = nn.Parameter(torch.randn(self.batch_size, 1, self.latent_size).to(self.device))

        def forward(self, input_data):
            input_data = input_data.to(self.device)
            patchify = PatchExtractor(patch_size=self.patch_size)
            patches = patchify(input_data)
            linear_projection = self.LinearProjection(patches).to(self.device)
            b, n, _ = linear_projection.shape
            linear_projection = torch.cat((self.class_token, linear_projection), dim=1)
            pos_embed = self.pos_embedding[:, :n + 1, :]
            linear_projection += pos_embed
            return linear_projection

    class EncoderBlock(nn.Module):
        def __init__(self, args):
            super(EncoderBlock, self).__init__()
            self.latent_size = args.latent_size
            self.num_heads = args.num_heads
            self.dropout = args.dropout
            self.norm = nn.LayerNorm(self.latent_size)
            self.attention = nn.MultiheadAttention(self.latent_size, self.num_heads, dropout=self.dropout)
            self.enc_MLP = nn.Sequential(
                nn.Linear(self.latent_size, self.latent_size * 4),
                nn.GELU(),
                nn.Dropout(self.dropout),
                nn.Linear(self.latent_size * 4, self.latent_size),
                nn.Dropout(self.dropout)
            )

        def forward(self, emb_patches):
            first_norm = self.norm(emb_patches)
            attention_out = self.attention(first_norm, first_norm, first_norm)[0]
            first_added = attention_out + emb_patches
            second_norm = self.norm(first_added)
            mlp_out = self.enc_MLP(second_norm)
            output = mlp_out + first_added
            return output

    class ViT(nn.Module):
        def __init__(self, args):
            super(ViT, self).__init__()
            self.num_encoders = args.num_encoders
            self.latent_size = args.latent_size
            self.num_classes = args.num_classes
            self.dropout = args.dropout
            self.embedding = InputEmbedding(args)
            self.encoders = nn.ModuleList([EncoderBlock(args) for _ in range(self.num_encoders)])
            self.MLPHead = nn.Sequential(
                nn.LayerNorm(self.latent_size),
                nn.Linear(self.latent_size, self.latent_size),
                nn.Linear(self.latent_size, self.num_classes),
            )

        def forward(self, test_input):
            enc_output = self.embedding(test_input)
            for enc_layer in self.encoders:
                enc_output = enc_layer(enc_output)
            class_token_embed = enc_output[:, 0]
            return self.MLPHead(class_token_embed)

    return ViT(args)


class PlainProgress:
    """What the tests use in place of a tqdm progress bar: the iterable, and set_postfix remembered."""

    def __init__(self, iterable, desc=None, file=None):
        self.iterable, self.desc, self.postfixes = iterable, desc, []

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, postfix):
        self.postfixes.append(postfix)


def vision_transformer(m, weights, images, labels, args=VIT, progress_bar=False):
    if progress_bar:  # from torch.hub import tqdm
        tqdm = importlib.import_module(m.torch.__name__ + ".hub").tqdm
    else:
        tqdm = PlainProgress
    torch, nn, optim = m.torch, m.nn, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=True)
    val_dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=True)
    device = torch.device("cpu")
    model = load(m, vit(m), weights).to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()

    class TrainEval:
        def __init__(self, args, model, train_dataloader, val_dataloader, optimizer, criterion, device):
            self.model = model
            self.train_dataloader = train_dataloader
            self.val_dataloader = val_dataloader
            self.optimizer = optimizer
            self.criterion = criterion
            self.epoch = args.epochs
            self.device = device
            self.args = args
            self.log = []

        def train_fn(self, current_epoch):
            self.model.train()
            total_loss = 0.0
            tk = tqdm(self.train_dataloader, desc="EPOCH" + "[TRAIN]" + str(current_epoch + 1) + "/" + str(self.epoch),
                      file=io.StringIO())  # (the original draws on stderr)

            for t, data in enumerate(tk):
                images, labels = data
                images, labels = images.to(self.device), labels.to(self.device)
                self.optimizer.zero_grad()
                logits = self.model(images)
                loss = self.criterion(logits, labels)
                loss.backward()
                self.optimizer.step()

                total_loss += loss.item()
                tk.set_postfix({"Loss": "%6f" % float(total_loss / (t + 1))})
                self.log.append({"Loss": "%6f" % float(total_loss / (t + 1))})
            return total_loss / len(self.train_dataloader)

        def eval_fn(self, current_epoch):
            self.model.eval()
            total_loss = 0.0
            for t, data in enumerate(self.val_dataloader):
                images, labels = data
                logits = self.model(images)
                loss = self.criterion(logits, labels)
                total_loss += loss.item()
            return total_loss / len(self.val_dataloader)

        def train(self):
            best_valid_loss = np.inf
            best_train_loss = np.inf
            for i in range(self.epoch):
                train_loss = self.train_fn(i)
                val_loss = self.eval_fn(i)
                if val_loss < best_valid_loss:
                    best_valid_loss = val_loss
                    best_train_loss = train_loss
            return best_train_loss, best_valid_loss

    trainer = TrainEval(args, model, train_dataloader, val_dataloader, optimizer, criterion, device)
    best = trainer.train()
    return trainer.log, best, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}


def test_vision_transformer():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    images = prototypes[labels] + 0.5 * rng.standard_normal((12, 3, 8, 8)).astype(np.float32)
    ours, theirs = run_both(vision_transformer, weights_of(vit), images, labels, compare=False)
    log, (best_train, best_valid), state, grads = ours
    assert len(log) == 6 and best_valid < 1.0986  # better than chance among 3 classes (ln 3)
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(numbers_parsed(ours[:2]), numbers_parsed(theirs[:2]), 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[2], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[3], 1e-4, 1e-5)


def test_vision_transformer_with_torch_hub_progress_bar():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    ours, _ = run_both(vision_transformer, weights_of(vit), images, labels, progress_bar=True, compare=False)
    assert len(ours[0]) == 4


# ----------------------------------------------------------------------------------------------
# swin_transformer (removed from pytorch/examples in 2025): window partition by view/permute, shifted
# windows by torch.roll, q, k, v unpacked by iterating a permuted tensor
# ----------------------------------------------------------------------------------------------

def swin_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=32, patch_size=4, in_chans=3, embed_dim=48):
            super().__init__()
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.norm = nn.LayerNorm(embed_dim)

        def forward(self, x):
            x = self.proj(x)
            x = x.flatten(2).transpose(1, 2)
            x = self.norm(x)
            return x

    def window_partition(x, window_size):
        B, H, W, C = x.shape
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
        return windows

    def window_reverse(windows, window_size, H, W):
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)
        return x

    class WindowAttention(nn.Module):
        def __init__(self, dim, window_size, num_heads):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            return self.proj(out)

    class SwinTransformerBlock(nn.Module):
        def __init__(self, dim, input_resolution, num_heads, window_size=4, shift_size=0):
            super().__init__()
            self.dim = dim
            self.input_resolution = input_resolution
            self.window_size = window_size
            self.shift_size = shift_size
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, window_size, num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(
                nn.Linear(dim, dim * 4),
                nn.GELU(),
                nn.Linear(dim * 4, dim)
            )

        def forward(self, x):
            H, W = self.input_resolution
            B, L, C = x.shape
            x = x.view(B, H, W, C)
            if self.shift_size > 0:
                shifted_x = torch.roll(x, (-self.shift_size, -self.shift_size), (1, 2))
            else:
                shifted_x = x
            windows = window_partition(shifted_x, self.window_size)
            windows = windows.view(-1, self.window_size * self.window_size, C)
            attn_windows = self.attn(self.norm1(windows))
            attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
            shifted_x = window_reverse(attn_windows, self.window_size, H, W)
            if self.shift_size > 0:
                x = torch.roll(shifted_x, (self.shift_size, self.shift_size), (1, 2))
            else:
                x = shifted_x
            x = x.view(B, H * W, C)
            x = x + self.mlp(self.norm2(x))
            return x

    class SwinTinyNet(nn.Module):  # 32x32 images, 48 channels in the original
        def __init__(self, num_classes=4):
            super(SwinTinyNet, self).__init__()
            self.patch_embed = PatchEmbed(img_size=16, patch_size=2, in_chans=3, embed_dim=12)
            self.block1 = SwinTransformerBlock(dim=12, input_resolution=(8, 8), num_heads=3, window_size=4,
                                               shift_size=0)
            self.block2 = SwinTransformerBlock(dim=12, input_resolution=(8, 8), num_heads=3, window_size=4,
                                               shift_size=2)
            self.norm = nn.LayerNorm(12)
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            x = self.patch_embed(x)
            x = self.block1(x)
            x = self.block2(x)
            x = self.norm(x)
            x = x.mean(dim=1)
            x = self.fc(x)
            return F.log_softmax(x, dim=1)

    return SwinTinyNet()


def swin_transformer(m, weights, images, labels, epochs=2):
    torch, F, optim = m.torch, m.F, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    test_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    model = load(m, swin_net(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log = []
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        log.append((test_loss, correct))
        scheduler.step()
    return log, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}


def test_swin_transformer():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    images = prototypes[labels] + 0.5 * rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    ours, theirs = run_both(swin_transformer, weights_of(swin_net), images, labels, compare=False)
    log, state, grads = ours
    assert log[0].startswith("Train Epoch: 1 [0/16 (0%)]\tLoss: ") and log[9][0] < log[4][0]
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(numbers_parsed(log), numbers_parsed(theirs[0]), 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)
