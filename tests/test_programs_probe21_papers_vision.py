# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: image models and their feed-forwards: capsule networks, ConvMixer, Switch/GLU
variants/MLP-Mixer/ViT."""

import copy

import numpy as np

from .probe21_papers_common import labml_transformers, sequence_data, train_few
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/capsule_networks: dynamic routing between capsules with the margin loss
# ----------------------------------------------------------------------------------------------


def make_capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Squash(nn.Module):
        def __init__(self, epsilon=1e-8):
            super().__init__()
            self.epsilon = epsilon

        def forward(self, s):
            s2 = (s ** 2).sum(dim=-1, keepdims=True)
            return (s2 / (1 + s2)) * (s / torch.sqrt(s2 + self.epsilon))

    class Router(nn.Module):
        def __init__(self, in_caps, out_caps, in_d, out_d, iterations):
            super().__init__()
            self.in_caps = in_caps
            self.out_caps = out_caps
            self.iterations = iterations
            self.softmax = nn.Softmax(dim=1)
            self.squash = Squash()
            self.weight = nn.Parameter(torch.randn(in_caps, out_caps, in_d, out_d), requires_grad=True)

        def forward(self, u):
            u_hat = torch.einsum('ijnm,bin->bijm', self.weight, u)
            b = u.new_zeros(u.shape[0], self.in_caps, self.out_caps)
            v = None
            for i in range(self.iterations):
                c = self.softmax(b)
                s = torch.einsum('bij,bijm->bjm', c, u_hat)
                v = self.squash(s)
                a = torch.einsum('bjm,bijm->bij', v, u_hat)
                b = b + a
            return v

    class MNISTCapsuleNetworkModel(nn.Module):  # labml_nn/capsule_networks/mnist.py, on 12x12 images
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=3, stride=1)
            self.conv2 = nn.Conv2d(in_channels=16, out_channels=4 * 4, kernel_size=3, stride=2, padding=0)
            self.squash = Squash()
            self.digit_capsules = Router(4 * 4 * 4, 3, 4, 8, 3)
            self.decoder = nn.Sequential(
                nn.Linear(8 * 3, 32), nn.ReLU(),
                nn.Linear(32, 144), nn.Sigmoid()
            )

        def forward(self, data):
            x = F.relu(self.conv1(data))
            caps = self.conv2(x).view(x.shape[0], 4, 4, -1).permute(0, 1, 3, 2)
            caps = self.squash(caps)
            caps = caps.reshape(caps.shape[0], -1, 4)
            caps = self.digit_capsules(caps)
            with torch.no_grad():
                pred = (caps ** 2).sum(-1).argmax(-1)
                mask = torch.eye(3, device=data.device)[pred]
            reconstructions = self.decoder((caps * mask[:, :, None]).view(x.shape[0], -1))
            reconstructions = reconstructions.view(-1, 1, 12, 12)
            return caps, reconstructions, pred

    return MNISTCapsuleNetworkModel().double()


def capsnet_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class MarginLoss(nn.Module):
        def __init__(self, *, n_labels, lambda_=0.5, m_positive=0.9, m_negative=0.1):
            super().__init__()
            self.m_negative = m_negative
            self.m_positive = m_positive
            self.lambda_ = lambda_
            self.n_labels = n_labels

        def forward(self, v, labels):
            v_norm = torch.sqrt((v ** 2).sum(dim=-1))
            labels = torch.eye(self.n_labels, device=labels.device)[labels]
            loss = labels * F.relu(self.m_positive - v_norm) + \
                self.lambda_ * (1.0 - labels) * F.relu(v_norm - self.m_negative)
            return loss.sum(dim=-1).mean()

    model = load(m, make_capsnet(m), weights)
    rng = np.random.default_rng(4)
    images = torch.tensor(rng.uniform(0, 1, (6, 1, 12, 12)))
    labels = torch.tensor(rng.integers(0, 3, 6))
    margin_loss = MarginLoss(n_labels=3)

    def loss_fn(model, data, target):
        output, reconstructions, pred = model(data)
        return margin_loss(output, target) + 0.0005 * F.mse_loss(reconstructions, data)

    losses, grads = train_few(m, model, (images, labels), loss_fn, steps=4, lr=1e-3)
    caps, rec, pred = model(images)
    return {"losses": losses, "grads": grads, "caps": caps, "pred": pred, "rec": rec}


def test_capsule_network():
    weights = weights_of(make_capsnet)
    ours, _ = run_both(capsnet_program, weights, rtol=1e-7, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    norms = np.sqrt((ours["caps"] ** 2).sum(-1))
    assert np.all(norms < 1)  # squashed
    np.testing.assert_array_equal(ours["pred"], norms.argmax(-1))


# ----------------------------------------------------------------------------------------------
# labml_nn/conv_mixer: ConvMixer (depth-wise and point-wise convolutions, x += residual after batch norm)
# ----------------------------------------------------------------------------------------------


def make_conv_mixer(m):
    torch, nn = m.torch, m.nn

    class ConvMixerLayer(nn.Module):
        def __init__(self, d_model, kernel_size):
            super().__init__()
            self.depth_wise_conv = nn.Conv2d(d_model, d_model, kernel_size=kernel_size, groups=d_model,
                                             padding=(kernel_size - 1) // 2)
            self.act1 = nn.GELU()
            self.norm1 = nn.BatchNorm2d(d_model)
            self.point_wise_conv = nn.Conv2d(d_model, d_model, kernel_size=1)
            self.act2 = nn.GELU()
            self.norm2 = nn.BatchNorm2d(d_model)

        def forward(self, x):
            residual = x
            x = self.depth_wise_conv(x)
            x = self.act1(x)
            x = self.norm1(x)
            x += residual
            x = self.point_wise_conv(x)
            x = self.act2(x)
            x = self.norm2(x)
            return x

    class PatchEmbeddings(nn.Module):
        def __init__(self, d_model, patch_size, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
            self.act = nn.GELU()
            self.norm = nn.BatchNorm2d(d_model)

        def forward(self, x):
            x = self.conv(x)
            x = self.act(x)
            x = self.norm(x)
            return x

    class ClassificationHead(nn.Module):
        def __init__(self, d_model, n_classes):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(d_model, n_classes)

        def forward(self, x):
            x = self.pool(x)
            x = x[:, :, 0, 0]
            x = self.linear(x)
            return x

    class ConvMixer(nn.Module):
        def __init__(self, conv_mixer_layer, n_layers, patch_emb, classification):
            super().__init__()
            self.patch_emb = patch_emb
            self.classification = classification
            self.conv_mixer_layers = nn.ModuleList([copy.deepcopy(conv_mixer_layer) for _ in range(n_layers)])

        def forward(self, x):
            x = self.patch_emb(x)
            for layer in self.conv_mixer_layers:
                x = layer(x)
            x = self.classification(x)
            return x

    return ConvMixer(ConvMixerLayer(16, 5), 2, PatchEmbeddings(16, 2, 3), ClassificationHead(16, 4)).double()


def conv_mixer_program(m, weights):
    torch = m.torch
    model = load(m, make_conv_mixer(m), weights)
    rng = np.random.default_rng(9)
    images = torch.tensor(rng.standard_normal((6, 3, 12, 12)))
    labels = torch.tensor(rng.integers(0, 4, 6))
    losses, grads = train_few(m, model, (images, labels),
                              lambda model, x, y: m.F.cross_entropy(model(x), y), steps=3, lr=0.05, optimizer="SGD")
    model.eval()
    with torch.no_grad():
        logits = model(images)
    return {"losses": losses, "grads": grads, "logits": logits,
            "running": model.conv_mixer_layers[1].norm1.running_var,
            "tracked": model.conv_mixer_layers[0].norm2.num_batches_tracked}


def test_conv_mixer():
    weights = weights_of(make_conv_mixer)
    ours, _ = run_both(conv_mixer_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0] and ours["tracked"] == 3


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{switch,glu_variants,vit,mlp_mixer}: routing, gated feed-forwards, patches
# ----------------------------------------------------------------------------------------------


def make_switch_glu_vit(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class SwitchFeedForward(nn.Module):
        def __init__(self, *, capacity_factor, drop_tokens, is_scale_prob, n_experts, expert, d_model):
            super().__init__()
            self.capacity_factor = capacity_factor
            self.is_scale_prob = is_scale_prob
            self.n_experts = n_experts
            self.drop_tokens = drop_tokens
            self.experts = t.clone_module_list(expert, n_experts)
            self.switch = nn.Linear(d_model, n_experts)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            seq_len, batch_size, d_model = x.shape
            x = x.view(-1, d_model)
            route_prob = self.softmax(self.switch(x))
            route_prob_max, routes = torch.max(route_prob, dim=-1)
            indexes_list = [torch.eq(routes, i).nonzero(as_tuple=True)[0] for i in range(self.n_experts)]
            final_output = x.new_zeros(x.shape)
            capacity = int(self.capacity_factor * len(x) / self.n_experts)
            counts = x.new_tensor([len(indexes_list[i]) for i in range(self.n_experts)])
            dropped = []
            if self.drop_tokens:
                for i in range(self.n_experts):
                    if len(indexes_list[i]) <= capacity:
                        continue
                    indexes_list[i] = indexes_list[i][torch.randperm(len(indexes_list[i]))]
                    dropped.append(indexes_list[i][capacity:])
                    indexes_list[i] = indexes_list[i][:capacity]
            expert_output = [self.experts[i](x[indexes_list[i], :]) for i in range(self.n_experts)]
            for i in range(self.n_experts):
                final_output[indexes_list[i], :] = expert_output[i]
            if dropped:
                dropped = torch.cat(dropped)
                final_output[dropped, :] = x[dropped, :]
            if self.is_scale_prob:
                final_output = final_output * route_prob_max.view(-1, 1)
            else:
                final_output = final_output * (route_prob_max / route_prob_max.detach()).view(-1, 1)
            final_output = final_output.view(seq_len, batch_size, d_model)
            return final_output, counts, route_prob.sum(0), len(dropped), route_prob_max

    class MLPMixer(nn.Module):
        def __init__(self, mlp):
            super().__init__()
            self.mlp = mlp

        def forward(self, query, key, value, mask=None):
            assert query is key and key is value
            assert mask is None
            x = query
            x = x.transpose(0, 2)
            x = self.mlp(x)
            x = x.transpose(0, 2)
            return x

    class PatchEmbeddings(nn.Module):
        def __init__(self, d_model, patch_size, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)

        def forward(self, x):
            x = self.conv(x)
            bs, c, h, w = x.shape
            x = x.permute(2, 3, 0, 1)
            x = x.view(h * w, bs, c)
            return x

    class LearnedPositionalEmbeddings(nn.Module):
        def __init__(self, d_model, max_len=5_000):
            super().__init__()
            self.positional_encodings = nn.Parameter(torch.zeros(max_len, 1, d_model), requires_grad=True)

        def forward(self, x):
            pe = self.positional_encodings[:x.shape[0]]
            return x + pe

    class ClassificationHead(nn.Module):
        def __init__(self, d_model, n_hidden, n_classes):
            super().__init__()
            self.linear1 = nn.Linear(d_model, n_hidden)
            self.act = nn.ReLU()
            self.linear2 = nn.Linear(n_hidden, n_classes)

        def forward(self, x):
            x = self.act(self.linear1(x))
            x = self.linear2(x)
            return x

    class VisionTransformer(nn.Module):
        def __init__(self, transformer_layer, n_layers, patch_emb, pos_emb, classification):
            super().__init__()
            self.patch_emb = patch_emb
            self.pos_emb = pos_emb
            self.classification = classification
            self.transformer_layers = t.clone_module_list(transformer_layer, n_layers)
            self.cls_token_emb = nn.Parameter(torch.randn(1, 1, transformer_layer.size), requires_grad=True)
            self.ln = nn.LayerNorm([transformer_layer.size])

        def forward(self, x):
            x = self.patch_emb(x)
            cls_token_emb = self.cls_token_emb.expand(-1, x.shape[1], -1)
            x = torch.cat([cls_token_emb, x])
            x = self.pos_emb(x)
            for layer in self.transformer_layers:
                x = layer(x=x, mask=None)
            x = x[0]
            x = self.ln(x)
            x = self.classification(x)
            return x

    class Models(nn.Module):
        def __init__(self, d_model=8):
            super().__init__()
            self.switch = SwitchFeedForward(capacity_factor=1.0, drop_tokens=True, is_scale_prob=False, n_experts=3,
                                            expert=t.FeedForward(d_model, 16, 0.), d_model=d_model)
            self.glu = nn.ModuleDict({
                'GLU': t.FeedForward(d_model, 12, 0., nn.Sigmoid(), True, False, False, False),
                'Bilinear': t.FeedForward(d_model, 12, 0., nn.Identity(), True, False, False, False),
                'GEGLU': t.FeedForward(d_model, 12, 0., nn.GELU(), True, False, False, False),
                'SwiGLU': t.FeedForward(d_model, 12, 0., nn.SiLU(), True, False, False, False),
            })
            mixer_layer = t.TransformerLayer(d_model=d_model, self_attn=MLPMixer(t.FeedForward(7, 14, 0., nn.GELU())),
                                             feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
            self.mixer = t.clone_module_list(mixer_layer, 2)
            vit_layer = t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(2, d_model, 0.),
                                           feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
            self.vit = VisionTransformer(vit_layer, 2, PatchEmbeddings(d_model, 4, 3),
                                         LearnedPositionalEmbeddings(d_model, 20), ClassificationHead(d_model, 12, 5))

    return Models().double()


def switch_glu_vit_program(m, weights):
    torch = m.torch
    model = load(m, make_switch_glu_vit(m), weights)
    with torch.no_grad():
        model.vit.pos_emb.positional_encodings.copy_(torch.linspace(-1, 1, 160, dtype=torch.float64).view(20, 1, 8))
    x, y = (torch.tensor(a) for a in sequence_data())
    torch.manual_seed(3)  # the dropped tokens are drawn by randperm
    out = {}
    sw, counts, route_prob, n_dropped, route_prob_max = model.switch(x)
    load_balancing = 3 * ((counts / counts.sum()) * (route_prob / 21)).sum()
    ((sw - y) ** 2).mean().add(0.01 * load_balancing).backward()
    out["switch"] = [sw, counts, route_prob, n_dropped, route_prob_max]
    out["switch_grads"] = {n: p.grad for n, p in model.switch.named_parameters()}
    for name, ffn in model.glu.items():
        x_ = x.clone().requires_grad_()
        value = ffn(x_)
        out["glu_" + name] = [value, torch.autograd.grad(value.pow(2).sum(), [x_, ffn.layer1.weight, ffn.linear_v.weight])]
    h = x
    for layer in model.mixer:
        h = layer(x=h, mask=None)
    out["mixer"] = h
    out["mixer_grad"] = torch.autograd.grad(h.sum(), model.mixer[0].self_attn.mlp.layer1.weight)[0]
    rng = np.random.default_rng(15)
    images = torch.tensor(rng.standard_normal((5, 3, 12, 12)))
    labels = torch.tensor(rng.integers(0, 5, 5))
    out["vit_losses"], out["vit_grads"] = train_few(m, model.vit, (images, labels),
                                                    lambda model, x, y: m.F.cross_entropy(model(x), y), steps=4)
    return out


def test_switch_glu_mixer_vit():
    weights = weights_of(make_switch_glu_vit)
    ours, _ = run_both(switch_glu_vit_program, weights, rtol=1e-8, atol=1e-10)
    sw, counts, route_prob, n_dropped, route_prob_max = ours["switch"]
    # the experts over their capacity of 7 tokens send their extras through unchanged
    assert counts.sum() == 21 and n_dropped == np.maximum(counts - 7, 0).sum() > 0
    np.testing.assert_allclose(route_prob.sum(), 21, rtol=1e-12)
    assert ours["vit_losses"][-1] < ours["vit_losses"][0]
