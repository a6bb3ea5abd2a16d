# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. UvA deep learning tutorials: tutorial 6's
transformer (qkv projection chunked per head, ``expand_mask``, ``PositionalEncoding`` as a non-persistent buffer)
trained on the reverse task under a cosine warm-up ``_LRScheduler`` with clipping, its attention maps with a padding
mask; tutorial 15's ViT (``img_to_patch``, a sequence-first ``nn.MultiheadAttention``, ``average_attn_weights``)."""

import math
from functools import partial

import numpy as np
import pytest

from .probe17_courses_common import shapes_images
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# UvA deep learning tutorials: tutorial 6 (transformers, the reverse task) and 15 (vision transformer)
# ----------------------------------------------------------------------------------------------


def uva_transformer_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    def scaled_dot_product(q, k, v, mask=None):
        d_k = q.size()[-1]
        attn_logits = torch.matmul(q, k.transpose(-2, -1))
        attn_logits = attn_logits / math.sqrt(d_k)
        if mask is not None:
            attn_logits = attn_logits.masked_fill(mask == 0, -9e15)
        attention = F.softmax(attn_logits, dim=-1)
        values = torch.matmul(attention, v)
        return values, attention

    def expand_mask(mask):
        assert mask.ndim >= 2, "Mask must be at least 2-dimensional with seq_length x seq_length"
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
        return mask

    class MultiheadAttention(nn.Module):
        def __init__(self, input_dim, embed_dim, num_heads):
            super().__init__()
            assert embed_dim % num_heads == 0, "Embedding dimension must be 0 modulo number of heads."
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.head_dim = embed_dim // num_heads
            self.qkv_proj = nn.Linear(input_dim, 3 * embed_dim)
            self.o_proj = nn.Linear(embed_dim, embed_dim)
            self._reset_parameters()

        def _reset_parameters(self):
            nn.init.xavier_uniform_(self.qkv_proj.weight)
            self.qkv_proj.bias.data.fill_(0)
            nn.init.xavier_uniform_(self.o_proj.weight)
            self.o_proj.bias.data.fill_(0)

        def forward(self, x, mask=None, return_attention=False):
            batch_size, seq_length, _ = x.size()
            if mask is not None:
                mask = expand_mask(mask)
            qkv = self.qkv_proj(x)
            qkv = qkv.reshape(batch_size, seq_length, self.num_heads, 3 * self.head_dim)
            qkv = qkv.permute(0, 2, 1, 3)
            q, k, v = qkv.chunk(3, dim=-1)
            values, attention = scaled_dot_product(q, k, v, mask=mask)
            values = values.permute(0, 2, 1, 3)
            values = values.reshape(batch_size, seq_length, self.embed_dim)
            o = self.o_proj(values)
            if return_attention:
                return o, attention
            else:
                return o

    class EncoderBlock(nn.Module):
        def __init__(self, input_dim, num_heads, dim_feedforward, dropout=0.0):
            super().__init__()
            self.self_attn = MultiheadAttention(input_dim, input_dim, num_heads)
            self.linear_net = nn.Sequential(
                nn.Linear(input_dim, dim_feedforward),
                nn.Dropout(dropout),
                nn.ReLU(inplace=True),
                nn.Linear(dim_feedforward, input_dim),
            )
            self.norm1 = nn.LayerNorm(input_dim)
            self.norm2 = nn.LayerNorm(input_dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, mask=None):
            attn_out = self.self_attn(x, mask=mask)
            x = x + self.dropout(attn_out)
            x = self.norm1(x)
            linear_out = self.linear_net(x)
            x = x + self.dropout(linear_out)
            x = self.norm2(x)
            return x

    class TransformerEncoder(nn.Module):
        def __init__(self, num_layers, **block_args):
            super().__init__()
            self.layers = nn.ModuleList([EncoderBlock(**block_args) for _ in range(num_layers)])

        def forward(self, x, mask=None):
            for l in self.layers:
                x = l(x, mask=mask)
            return x

        def get_attention_maps(self, x, mask=None):
            attention_maps = []
            for l in self.layers:
                _, attn_map = l.self_attn(x, mask=mask, return_attention=True)
                attention_maps.append(attn_map)
                x = l(x)
            return attention_maps

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=5000):
            super().__init__()
            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0)
            self.register_buffer("pe", pe, persistent=False)

        def forward(self, x):
            x = x + self.pe[:, :x.size(1)]
            return x

    class TransformerPredictor(nn.Module):
        def __init__(self, input_dim, model_dim, num_classes, num_heads, num_layers, dropout=0.0, input_dropout=0.0):
            super().__init__()
            self.input_net = nn.Sequential(nn.Dropout(input_dropout), nn.Linear(input_dim, model_dim))
            self.positional_encoding = PositionalEncoding(d_model=model_dim, max_len=64)
            self.transformer = TransformerEncoder(num_layers=num_layers, input_dim=model_dim,
                                                  dim_feedforward=2 * model_dim, num_heads=num_heads, dropout=dropout)
            self.output_net = nn.Sequential(
                nn.Linear(model_dim, model_dim),
                nn.LayerNorm(model_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(model_dim, num_classes),
            )

        def forward(self, x, mask=None, add_positional_encoding=True):
            x = self.input_net(x)
            if add_positional_encoding:
                x = self.positional_encoding(x)
            x = self.transformer(x, mask=mask)
            x = self.output_net(x)
            return x

        @torch.no_grad()
        def get_attention_maps(self, x, mask=None, add_positional_encoding=True):
            x = self.input_net(x)
            if add_positional_encoding:
                x = self.positional_encoding(x)
            attention_maps = self.transformer.get_attention_maps(x, mask=mask)
            return attention_maps

    return scaled_dot_product, TransformerPredictor


def uva_reverse_task(m):
    """The reverse task trained with Adam, a cosine warm-up ``_LRScheduler``, gradient clipping at 5 (Lightning's
    ``gradient_clip_val``), and the attention maps; the scaled dot product of the tutorial's first cell."""
    torch, F, optim, data = m.torch, m.F, m.optim, m.data
    scaled_dot_product, TransformerPredictor = uva_transformer_modules(m)

    seq_len, d_k = 3, 2
    torch.manual_seed(42)
    q = torch.randn(seq_len, d_k)
    k = torch.randn(seq_len, d_k)
    v = torch.randn(seq_len, d_k)
    values, attention = scaled_dot_product(q, k, v)

    class ReverseDataset(data.Dataset):
        def __init__(self, num_categories, seq_len, size):
            super().__init__()
            self.num_categories = num_categories
            self.seq_len = seq_len
            self.size = size
            self.data = torch.randint(self.num_categories, size=(self.size, self.seq_len))

        def __len__(self):
            return self.size

        def __getitem__(self, idx):
            inp_data = self.data[idx]
            labels = torch.flip(inp_data, dims=(0,))
            return inp_data, labels

    class CosineWarmupScheduler(optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, warmup, max_iters):
            self.warmup = warmup
            self.max_num_iters = max_iters
            super().__init__(optimizer)

        def get_lr(self):
            lr_factor = self.get_lr_factor(epoch=self.last_epoch)
            return [base_lr * lr_factor for base_lr in self.base_lrs]

        def get_lr_factor(self, epoch):
            lr_factor = 0.5 * (1 + np.cos(np.pi * epoch / self.max_num_iters))
            if epoch <= self.warmup:
                lr_factor *= epoch * 1.0 / self.warmup
            return lr_factor

    num_classes = 6
    dataset = partial(ReverseDataset, num_classes, 8)
    train_loader = data.DataLoader(dataset(64), batch_size=16, shuffle=True, drop_last=True)
    val_loader = data.DataLoader(dataset(16), batch_size=16)
    torch.manual_seed(42)
    model = TransformerPredictor(input_dim=num_classes, model_dim=16, num_heads=2, num_classes=num_classes,
                                 num_layers=1, dropout=0.0, input_dropout=0.0)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    lr_scheduler = CosineWarmupScheduler(optimizer, warmup=4, max_iters=40)

    def _calculate_loss(batch):
        inp_data, labels = batch
        inp_data = F.one_hot(inp_data, num_classes=num_classes).float()
        preds = model(inp_data, add_positional_encoding=True)
        loss = F.cross_entropy(preds.view(-1, preds.size(-1)), labels.view(-1))
        acc = (preds.argmax(dim=-1) == labels).float().mean()
        return loss, acc

    losses, lrs, grad_norms = [], [], []
    for epoch in range(10):
        model.train()
        for batch in train_loader:
            loss, acc = _calculate_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0))
            optimizer.step()
            lr_scheduler.step()
            losses.append(loss.item())
            lrs.append(optimizer.param_groups[0]["lr"])
    model.eval()
    with torch.no_grad():
        val_loss, val_acc = _calculate_loss(next(iter(val_loader)))
    inp_data, labels = next(iter(val_loader))
    inp_data = F.one_hot(inp_data, num_classes=num_classes).float()
    attention_maps = model.get_attention_maps(inp_data)
    # a padding mask: the last two positions of each sequence hidden from every query
    mask = torch.ones(16, 8, 8)
    mask[:, :, 6:] = 0
    masked_maps = model.get_attention_maps(inp_data, mask=mask)
    masked_out = model(inp_data, mask=mask)
    return {"values": values, "attention": attention, "losses": losses, "lrs": lrs, "grad_norms": grad_norms,
            "val_loss": val_loss, "val_acc": val_acc, "maps": attention_maps, "masked_maps": masked_maps,
            "masked_out": masked_out}


def test_uva_transformer_reverse_task():
    ours, _ = run_both(uva_reverse_task, rtol=5e-4, atol=5e-5)
    assert ours["lrs"][3] == pytest.approx(5e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 40)))
    assert ours["lrs"][0] == pytest.approx(5e-3 * 0.5 * (1 + math.cos(math.pi / 40)) / 4)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["maps"][0].shape == (16, 2, 8, 8)
    np.testing.assert_allclose(ours["maps"][0].sum(-1), 1, rtol=1e-5)
    assert np.all(ours["masked_maps"][0][..., 6:] == 0)


def uva_vision_transformer(m):
    """Tutorial 15: ``img_to_patch`` by reshape/permute/flatten, pre-LN blocks over a sequence-first
    ``nn.MultiheadAttention`` (its averaged weights returned and dropped), a repeated cls token, AdamW under
    MultiStepLR."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def img_to_patch(x, patch_size, flatten_channels=True):
        B, C, H, W = x.shape
        x = x.reshape(B, C, H // patch_size, patch_size, W // patch_size, patch_size)
        x = x.permute(0, 2, 4, 1, 3, 5)
        x = x.flatten(1, 2)
        if flatten_channels:
            x = x.flatten(2, 4)
        return x

    class AttentionBlock(nn.Module):
        def __init__(self, embed_dim, hidden_dim, num_heads, dropout=0.0):
            super().__init__()
            self.layer_norm_1 = nn.LayerNorm(embed_dim)
            self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout)
            self.layer_norm_2 = nn.LayerNorm(embed_dim)
            self.linear = nn.Sequential(
                nn.Linear(embed_dim, hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, embed_dim),
                nn.Dropout(dropout),
            )

        def forward(self, x):
            inp_x = self.layer_norm_1(x)
            x = x + self.attn(inp_x, inp_x, inp_x)[0]
            x = x + self.linear(self.layer_norm_2(x))
            return x

    class VisionTransformer(nn.Module):
        def __init__(self, embed_dim, hidden_dim, num_channels, num_heads, num_layers, num_classes, patch_size,
                     num_patches, dropout=0.0):
            super().__init__()
            self.patch_size = patch_size
            self.input_layer = nn.Linear(num_channels * (patch_size ** 2), embed_dim)
            self.transformer = nn.Sequential(
                *(AttentionBlock(embed_dim, hidden_dim, num_heads, dropout=dropout) for _ in range(num_layers)))
            self.mlp_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
            self.dropout = nn.Dropout(dropout)
            self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
            self.pos_embedding = nn.Parameter(torch.randn(1, 1 + num_patches, embed_dim))

        def forward(self, x):
            x = img_to_patch(x, self.patch_size)
            B, T, _ = x.shape
            x = self.input_layer(x)
            cls_token = self.cls_token.repeat(B, 1, 1)
            x = torch.cat([cls_token, x], dim=1)
            x = x + self.pos_embedding[:, :T + 1]
            x = self.dropout(x)
            x = x.transpose(0, 1)
            x = self.transformer(x)
            cls = x[0]
            out = self.mlp_head(cls)
            return out

    imgs, labels = shapes_images()
    imgs, labels = torch.from_numpy(imgs), torch.from_numpy(labels)
    patches = img_to_patch(imgs[:2], patch_size=4, flatten_channels=False)
    torch.manual_seed(42)
    model = VisionTransformer(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=2, patch_size=4, num_channels=3,
                              num_patches=16, num_classes=4, dropout=0.0)
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    lr_scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=[4, 6], gamma=0.1)
    losses, accs = [], []
    model.train()
    for step in range(8):
        batch = slice((step % 4) * 8, (step % 4) * 8 + 8)
        preds = model(imgs[batch])
        loss = F.cross_entropy(preds, labels[batch])
        acc = (preds.argmax(dim=-1) == labels[batch]).float().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        losses.append(loss.item())
        accs.append(acc.item())
    block = model.transformer[0]
    with torch.no_grad():
        seq = torch.randn(17, 3, 16)
        _, attn_avg = block.attn(seq, seq, seq)
        _, attn_heads = block.attn(seq, seq, seq, average_attn_weights=False)
    return {"patches": patches, "losses": losses, "accs": accs, "lr": optimizer.param_groups[0]["lr"],
            "cls_token": model.cls_token, "in_proj": block.attn.in_proj_weight, "attn_avg": attn_avg,
            "attn_heads": attn_heads}


def test_uva_vision_transformer():
    ours, _ = run_both(uva_vision_transformer, rtol=2e-4, atol=2e-5)
    imgs, _ = shapes_images()
    np.testing.assert_array_equal(ours["patches"][1, 5], imgs[1, :, 4:8, 4:8])  # row 1, column 1 of a 4x4 grid
    assert ours["lr"] == pytest.approx(3e-3 * 0.01)
    assert ours["attn_avg"].shape == (3, 17, 17) and ours["attn_heads"].shape == (3, 2, 17, 17)
    np.testing.assert_allclose(ours["attn_heads"].mean(1), ours["attn_avg"], rtol=1e-5, atol=1e-7)
