# ruff: noqa: B007, E501, F841, UP008  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on chainrule and
on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters. Applications: BERT's MaskLM
gather, word2vec's masked BCE, textCNN, FCN's bilinear ``ConvTranspose2d``, anchor assignment; and the GAN chapter (a
2-D Gaussian GAN, a DCGAN)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# NLP pretraining and applications: BERT's MaskLM gather, word2vec skip-gram with the masked
# SigmoidBCELoss, textCNN; computer vision: FCN's bilinear transposed convolution, anchor IoUs
# ----------------------------------------------------------------------------------------------


def nlp_and_vision(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class MaskLM(nn.Module):
        def __init__(self, vocab_size, num_hiddens, **kwargs):
            super(MaskLM, self).__init__(**kwargs)
            self.mlp = nn.Sequential(nn.LazyLinear(num_hiddens), nn.ReLU(), nn.LayerNorm(num_hiddens),
                                     nn.LazyLinear(vocab_size))

        def forward(self, X, pred_positions):
            num_pred_positions = pred_positions.shape[1]
            pred_positions = pred_positions.reshape(-1)
            batch_size = X.shape[0]
            batch_idx = torch.arange(0, batch_size)
            batch_idx = torch.repeat_interleave(batch_idx, num_pred_positions)
            masked_X = X[batch_idx, pred_positions]
            masked_X = masked_X.reshape((batch_size, num_pred_positions, -1))
            mlm_Y_hat = self.mlp(masked_X)
            return mlm_Y_hat

    encoded_X = torch.randn(2, 8, 12, requires_grad=True)
    mlm = MaskLM(20, 12)
    mlm_positions = torch.tensor([[1, 5, 2], [6, 1, 5]])
    mlm_Y_hat = mlm(encoded_X, mlm_positions)
    mlm_Y = torch.tensor([[7, 8, 9], [10, 20 - 1, 11]])
    loss = nn.CrossEntropyLoss(reduction='none')
    mlm_l = loss(mlm_Y_hat.reshape((-1, 20)), mlm_Y.reshape(-1))
    mlm_l.sum().backward()

    # word2vec skip-gram
    def skip_gram(center, contexts_and_negatives, embed_v, embed_u):
        v = embed_v(center)
        u = embed_u(contexts_and_negatives)
        pred = torch.bmm(v, u.permute(0, 2, 1))
        return pred

    class SigmoidBCELoss(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, inputs, target, mask=None):
            out = nn.functional.binary_cross_entropy_with_logits(inputs, target, weight=mask, reduction="none")
            return out.mean(dim=1)

    embed_size = 6
    net = nn.Sequential(nn.Embedding(num_embeddings=15, embedding_dim=embed_size),
                        nn.Embedding(num_embeddings=15, embedding_dim=embed_size))
    center = torch.tensor([[1], [4], [7]])
    context_negative = torch.tensor([[2, 3, 5, 0], [6, 9, 11, 13], [8, 1, 0, 0]])
    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    labels = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    optimizer = m.optim.Adam(net.parameters(), lr=0.01)
    w2v_losses = []
    lossfn = SigmoidBCELoss()
    for step in range(3):
        optimizer.zero_grad()
        pred = skip_gram(center, context_negative, net[0], net[1])
        l = (lossfn(pred.reshape(labels.shape).float(), labels.float(), masks) / masks.sum(axis=1) * masks.shape[1])
        l.sum().backward()
        optimizer.step()
        w2v_losses.append(l.sum().item())
    W = net[0].weight.data
    x = W[torch.tensor(3)]
    cos = torch.mv(W, x) / torch.sqrt(torch.sum(W * W, dim=1) * torch.sum(x * x) + 1e-9)
    topk = torch.topk(cos, k=4)[1].cpu().numpy().astype('int32')

    # textCNN
    class TextCNN(nn.Module):
        def __init__(self, vocab_size, embed_size, kernel_sizes, num_channels, **kwargs):
            super(TextCNN, self).__init__(**kwargs)
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.constant_embedding = nn.Embedding(vocab_size, embed_size)
            self.dropout = nn.Dropout(0.0)
            self.decoder = nn.Linear(sum(num_channels), 2)
            self.pool = nn.AdaptiveAvgPool1d(1)
            self.relu = nn.ReLU()
            self.convs = nn.ModuleList()
            for c, k in zip(num_channels, kernel_sizes):
                self.convs.append(nn.Conv1d(2 * embed_size, c, k))

        def forward(self, inputs):
            embeddings = torch.cat((self.embedding(inputs), self.constant_embedding(inputs)), dim=2)
            embeddings = embeddings.permute(0, 2, 1)
            encoding = torch.cat([torch.squeeze(self.relu(self.pool(conv(embeddings))), dim=-1)
                                  for conv in self.convs], dim=1)
            outputs = self.decoder(self.dropout(encoding))
            return outputs

    textcnn = TextCNN(15, 4, [2, 3, 4], [3, 3, 2])

    def init_weights(module):
        if type(module) in (nn.Linear, nn.Conv1d):
            nn.init.xavier_uniform_(module.weight)

    textcnn.apply(init_weights)
    textcnn.constant_embedding.weight.data.copy_(torch.arange(60, dtype=torch.float32).reshape(15, 4) / 60)
    textcnn.constant_embedding.weight.requires_grad = False
    tokens = torch.tensor([[1, 2, 3, 4, 5, 0, 0], [7, 8, 9, 10, 11, 12, 13]])
    trainer = m.optim.Adam(filter(lambda p: p.requires_grad, textcnn.parameters()), lr=0.01)
    tl = F.cross_entropy(textcnn(tokens), torch.tensor([0, 1]), reduction='none')
    trainer.zero_grad()
    tl.sum().backward()
    trainer.step()
    textcnn_out = textcnn(tokens)

    # FCN: a transposed convolution initialised by bilinear interpolation
    def bilinear_kernel(in_channels, out_channels, kernel_size):
        factor = (kernel_size + 1) // 2
        if kernel_size % 2 == 1:
            center = factor - 1
        else:
            center = factor - 0.5
        og = (torch.arange(kernel_size).reshape(-1, 1), torch.arange(kernel_size).reshape(1, -1))
        filt = (1 - torch.abs(og[0] - center) / factor) * (1 - torch.abs(og[1] - center) / factor)
        weight = torch.zeros((in_channels, out_channels, kernel_size, kernel_size))
        weight[range(in_channels), range(out_channels), :, :] = filt
        return weight

    conv_trans = nn.ConvTranspose2d(3, 3, kernel_size=4, padding=1, stride=2, bias=False)
    conv_trans.weight.data.copy_(bilinear_kernel(3, 3, 4))
    img = torch.arange(48, dtype=torch.float32).reshape(1, 3, 4, 4) / 48
    upsampled = conv_trans(img)
    upsampled.pow(2).sum().backward()

    # anchor boxes: IoU and assignment
    def box_area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def box_iou(boxes1, boxes2):
        areas1 = box_area(boxes1)
        areas2 = box_area(boxes2)
        inter_upperlefts = torch.max(boxes1[:, None, :2], boxes2[:, :2])
        inter_lowerrights = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
        inters = (inter_lowerrights - inter_upperlefts).clamp(min=0)
        inter_areas = inters[:, :, 0] * inters[:, :, 1]
        union_areas = areas1[:, None] + areas2 - inter_areas
        return inter_areas / union_areas

    def assign_anchor_to_bbox(ground_truth, anchors, device, iou_threshold=0.5):
        num_anchors, num_gt_boxes = anchors.shape[0], ground_truth.shape[0]
        jaccard = box_iou(anchors, ground_truth)
        anchors_bbox_map = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
        max_ious, indices = torch.max(jaccard, dim=1)
        anc_i = torch.nonzero(max_ious >= iou_threshold).reshape(-1)
        box_j = indices[max_ious >= iou_threshold]
        anchors_bbox_map[anc_i] = box_j
        col_discard = torch.full((num_anchors,), -1)
        row_discard = torch.full((num_gt_boxes,), -1)
        for _ in range(num_gt_boxes):
            max_idx = torch.argmax(jaccard)
            box_idx = (max_idx % num_gt_boxes).long()
            anc_idx = (max_idx / num_gt_boxes).long()
            anchors_bbox_map[anc_idx] = box_idx
            jaccard[:, box_idx] = col_discard
            jaccard[anc_idx, :] = row_discard
        return anchors_bbox_map

    ground_truth = torch.tensor([[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]])
    anchors = torch.tensor([[0, 0.1, 0.2, 0.3], [0.15, 0.2, 0.4, 0.4], [0.63, 0.05, 0.88, 0.98],
                            [0.66, 0.45, 0.8, 0.8], [0.57, 0.3, 0.92, 0.9]])
    iou = box_iou(anchors, ground_truth[:, 1:])
    assignment = assign_anchor_to_bbox(ground_truth[:, 1:], anchors, None)
    return dict(mlm_Y_hat=mlm_Y_hat, mlm_l=mlm_l, X_grad=encoded_X.grad, w2v=w2v_losses, topk=topk,
                textcnn=textcnn_out, const=textcnn.constant_embedding.weight, upsampled=upsampled,
                ct_grad=conv_trans.weight.grad, iou=iou, assignment=assignment)


def test_nlp_and_vision():
    ours, _ = run_both(nlp_and_vision, rtol=1e-4, atol=1e-5)
    assert (ours["X_grad"][0, [0, 3, 4, 6, 7]] == 0).all()
    np.testing.assert_array_equal(ours["assignment"], [-1, 0, 1, -1, 1])
    np.testing.assert_allclose(ours["const"], np.arange(60).reshape(15, 4) / 60, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# GANs: the book's 2-D Gaussian GAN and a small DCGAN, everything from the seed
# ----------------------------------------------------------------------------------------------


def gans(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.normal(0.0, 1, (64, 2))
    A = torch.tensor([[1, 2], [-0.1, 0.5]])
    b = torch.tensor([1, 2])
    data = torch.matmul(X, A) + b

    def update_D(X, Z, net_D, net_G, loss, trainer_D):
        batch_size = X.shape[0]
        ones = torch.ones((batch_size,), device=X.device)
        zeros = torch.zeros((batch_size,), device=X.device)
        trainer_D.zero_grad()
        real_Y = net_D(X)
        fake_X = net_G(Z)
        fake_Y = net_D(fake_X.detach())
        loss_D = (loss(real_Y, ones.reshape(real_Y.shape)) + loss(fake_Y, zeros.reshape(fake_Y.shape))) / 2
        loss_D.backward()
        trainer_D.step()
        return loss_D

    def update_G(Z, net_D, net_G, loss, trainer_G):
        batch_size = Z.shape[0]
        ones = torch.ones((batch_size,), device=Z.device)
        trainer_G.zero_grad()
        fake_X = net_G(Z)
        fake_Y = net_D(fake_X)
        loss_G = loss(fake_Y, ones.reshape(fake_Y.shape))
        loss_G.backward()
        trainer_G.step()
        return loss_G

    def train(net_D, net_G, batches, num_epochs, lr_D, lr_G, latent_dim):
        loss = nn.BCEWithLogitsLoss(reduction='sum')
        for w in net_D.parameters():
            nn.init.normal_(w, 0, 0.02)
        for w in net_G.parameters():
            nn.init.normal_(w, 0, 0.02)
        trainer_D = m.optim.Adam(net_D.parameters(), lr=lr_D, betas=(0.5, 0.999))
        trainer_G = m.optim.Adam(net_G.parameters(), lr=lr_G, betas=(0.5, 0.999))
        history = []
        for epoch in range(num_epochs):
            for X in batches:
                batch_size = X.shape[0]
                Z = torch.normal(0, 1, size=(batch_size, latent_dim))
                history.append((update_D(X, Z, net_D, net_G, loss, trainer_D).item(),
                                update_G(Z, net_D, net_G, loss, trainer_G).item()))
        return history

    net_G = nn.Sequential(nn.Linear(2, 2))
    net_D = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))
    batches = [data[i:i + 16] for i in range(0, 64, 16)]
    simple = train(net_D, net_G, batches, 2, 0.05, 0.005, 2)

    class G_block(nn.Module):
        def __init__(self, out_channels, in_channels=3, kernel_size=4, strides=2, padding=1, **kwargs):
            super(G_block, self).__init__(**kwargs)
            self.conv2d_trans = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, strides, padding, bias=False)
            self.batch_norm = nn.BatchNorm2d(out_channels)
            self.activation = nn.ReLU()

        def forward(self, X):
            return self.activation(self.batch_norm(self.conv2d_trans(X)))

    class D_block(nn.Module):
        def __init__(self, out_channels, in_channels=3, kernel_size=4, strides=2, padding=1, alpha=0.2, **kwargs):
            super(D_block, self).__init__(**kwargs)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding, bias=False)
            self.batch_norm = nn.BatchNorm2d(out_channels)
            self.activation = nn.LeakyReLU(alpha, inplace=True)

        def forward(self, X):
            return self.activation(self.batch_norm(self.conv2d(X)))

    n_G, n_D, latent = 8, 8, 10
    dc_G = nn.Sequential(
        G_block(in_channels=latent, out_channels=n_G * 2, strides=1, padding=0),  # 4x4
        G_block(in_channels=n_G * 2, out_channels=n_G),  # 8x8
        nn.ConvTranspose2d(in_channels=n_G, out_channels=3, kernel_size=4, stride=2, padding=1, bias=False),
        nn.Tanh())  # 16x16
    dc_D = nn.Sequential(
        D_block(n_D), D_block(in_channels=n_D, out_channels=n_D * 2),
        nn.Conv2d(in_channels=n_D * 2, out_channels=1, kernel_size=4, bias=False))
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    dc_batches = [images[:4], images[4:]]
    loss = nn.BCEWithLogitsLoss(reduction='sum')
    trainer_D = m.optim.Adam(dc_D.parameters(), lr=0.005, betas=(0.5, 0.999))
    trainer_G = m.optim.Adam(dc_G.parameters(), lr=0.005, betas=(0.5, 0.999))
    dc = []
    for Xb in dc_batches:
        Z = torch.normal(0, 1, size=(Xb.shape[0], latent, 1, 1))
        dc.append((update_D(Xb, Z, dc_D, dc_G, loss, trainer_D).item(), update_G(Z, dc_D, dc_G, loss, trainer_G).item()))
    with torch.no_grad():
        fake = dc_G(torch.normal(0, 1, size=(2, latent, 1, 1)))
    return dict(simple=simple, G=net_G[0].weight, dc=dc, fake=fake, running=dc_G[0].batch_norm.running_var)


def test_gans():
    ours, _ = run_both(gans, rtol=1e-4, atol=1e-5)
    assert ours["fake"].shape == (2, 3, 16, 16)
    # weights drawn from N(0, 0.02) give logits near 0: the discriminator's first loss is about 16 ln 2
    np.testing.assert_allclose(ours["simple"][0][0], 16 * math.log(2), rtol=0.05)
