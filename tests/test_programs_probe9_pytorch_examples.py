# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, E501, E702  (the programs are kept as their authors wrote them)
"""Three more of pytorch/examples (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights, comparing losses, outputs and parameters:

- time_sequence_prediction: two nn.LSTMCell in float64 unrolled over input.split(1, dim=1), predicting the future
  from their own outputs, trained by optim.LBFGS through a closure;
- super_resolution: a Conv2d stack ending in nn.PixelShuffle, its weights from nn.init.orthogonal_ with
  calculate_gain('relu'), trained by Adam on MSE (and the PSNR the example reports);
- fast_neural_style's TransformerNet: Conv2d with padding_mode='reflect', InstanceNorm2d(affine=True), a residual
  block, nearest interpolate before a conv, and the Gram-matrix style loss by view/transpose/bmm;
- siamese_network: one CNN (BatchNorm2d, in-place ReLU, MaxPool2d, Flatten) on both images, cat, a sigmoid head,
  BCELoss, Adadelta with StepLR, and the evaluation's torch.where(out > 0.5, 1, 0).eq(...);
- mnist_forward_forward: nn.Linear subclassed with an optimiser of its own per layer, trained layer by layer on the
  goodness of positive and negative data (labels overlaid by x_[range(n), y] = x.max()), then the goodness per
  label summed with Python's sum;
- the translation tutorial's Seq2SeqTransformer: nn.Transformer with a float causal tgt_mask (masked_fill of -inf),
  bool src masks and key-padding masks (padding ignored by CrossEntropyLoss(ignore_index)), then greedy decoding
  through transformer.encoder / .decoder, torch.max(prob, dim=1) and type_as;
- vision_transformer: patches by x.unfold(2, p, p).unfold(3, p, p).permute(...).contiguous().view(...), a class
  token expanded and cat, positional embeddings added in place, pre-norm encoder blocks of nn.MultiheadAttention
  (batch_first) and a GELU MLP, trained by AdamW with LinearLR."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of


def seq_models(m):
    torch, nn = m.torch, m.nn
    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, 8)
            self.lstm2 = nn.LSTMCell(8, 8)
            self.linear = nn.Linear(8, 1)
        def forward(self, input, future=0):
            outputs = []
            h_t = torch.zeros(input.size(0), 8, dtype=torch.double)
            c_t = torch.zeros(input.size(0), 8, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), 8, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), 8, dtype=torch.double)
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for i in range(future):
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            outputs = torch.cat(outputs, dim=1)
            return outputs
    return Sequence

def time_seq(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    T, L, N = 20, 30, 6
    x = np.empty((N, L), np.int64)
    x[:] = np.array(range(L)) + np.random.default_rng(2).integers(-4 * T, 4 * T, N).reshape(N, 1)
    data = np.sin(x / 1.0 / T).astype('float64')
    input = torch.from_numpy(data[2:, :-1]); target = torch.from_numpy(data[2:, 1:])
    test_input = torch.from_numpy(data[:2, :-1]); test_target = torch.from_numpy(data[:2, 1:])
    seq = seq_models(m)()
    seq.double()
    load(m, seq, weights)
    criterion = nn.MSELoss()
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    losses = []
    for i in range(3):
        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            loss.backward()
            return loss
        optimizer.step(closure)
        with torch.no_grad():
            future = 5
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            losses.append(loss.item())
            y = pred.detach().numpy()
    return losses, y

def sr_model(m):
    nn, torch = m.nn, m.torch
    class Net(nn.Module):
        def __init__(self, upscale_factor):
            super().__init__()
            self.relu = nn.ReLU()
            self.conv1 = nn.Conv2d(1, 8, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(8, 8, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(8, 4, (3, 3), (1, 1), (1, 1))
            self.conv4 = nn.Conv2d(4, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
            self._initialize_weights()
        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.relu(self.conv2(x))
            x = self.relu(self.conv3(x))
            x = self.pixel_shuffle(self.conv4(x))
            return x
        def _initialize_weights(self):
            nn.init.orthogonal_(self.conv1.weight, nn.init.calculate_gain('relu'))
            nn.init.orthogonal_(self.conv2.weight, nn.init.calculate_gain('relu'))
            nn.init.orthogonal_(self.conv3.weight, nn.init.calculate_gain('relu'))
            nn.init.orthogonal_(self.conv4.weight)
    return Net

def super_res(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = sr_model(m)(2)
    load(m, model, weights)
    rng = np.random.default_rng(0)
    lr_img = torch.tensor(rng.random((4, 1, 8, 8)).astype(np.float32))
    hr_img = torch.tensor(rng.random((4, 1, 16, 16)).astype(np.float32))
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = criterion(model(lr_img), hr_img)
        loss.backward(); optimizer.step(); losses.append(loss.item())
    psnr = 10 * math.log10(1 / losses[-1])
    return losses, psnr, [p.detach() for p in model.parameters()]

def style_model(m):
    torch, nn = m.torch, m.nn
    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super().__init__()
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, padding_mode='reflect')
        def forward(self, x):
            return self.conv2d(x)
    class ResidualBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()
        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            return out + residual
    class UpsampleConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
            super().__init__()
            self.upsample = upsample
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, padding_mode='reflect')
        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = nn.functional.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
            return self.conv2d(x_in)
    class TransformerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ConvLayer(3, 8, kernel_size=9, stride=1)
            self.in1 = nn.InstanceNorm2d(8, affine=True)
            self.conv2 = ConvLayer(8, 16, kernel_size=3, stride=2)
            self.in2 = nn.InstanceNorm2d(16, affine=True)
            self.res1 = ResidualBlock(16)
            self.deconv1 = UpsampleConvLayer(16, 8, kernel_size=3, stride=1, upsample=2)
            self.in4 = nn.InstanceNorm2d(8, affine=True)
            self.deconv3 = ConvLayer(8, 3, kernel_size=9, stride=1)
            self.relu = nn.ReLU()
        def forward(self, X):
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.res1(y)
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.deconv3(y)
            return y
    return TransformerNet

def gram_matrix(y):
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    gram = features.bmm(features_t) / (ch * h * w)
    return gram

def style(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    net = style_model(m)()
    load(m, net, weights)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.random((2, 3, 16, 16)).astype(np.float32)) * 255
    style_t = torch.tensor(rng.random((1, 3, 16, 16)).astype(np.float32))
    opt = optim.Adam(net.parameters(), 1e-3)
    mse = nn.MSELoss()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        y = net(x)
        content = mse(y, x) * 1e-5
        gm_y = gram_matrix(y); gm_s = gram_matrix(style_t).expand(2, 3, 3)
        style_loss = mse(gm_y, gm_s) * 1e-2
        total = content + style_loss
        total.backward(); opt.step(); losses.append(total.item())
    return losses, [p.detach() for p in net.parameters()]


def siamese_model(m):
    torch, nn = m.torch, m.nn
    class SiameseNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                     nn.Flatten())
            self.fc = nn.Sequential(nn.Linear(4 * 3 * 3 * 2, 16), nn.ReLU(inplace=True), nn.Linear(16, 1))
            self.sigmoid = nn.Sigmoid()
            self.cnn.apply(self.init_weights); self.fc.apply(self.init_weights)
        def init_weights(self, m_):
            if isinstance(m_, nn.Linear):
                torch.nn.init.xavier_uniform_(m_.weight) if hasattr(torch, "nn") else nn.init.xavier_uniform_(m_.weight)
                m_.bias.data.fill_(0.01)
        def forward_once(self, x):
            return self.cnn(x)
        def forward(self, input1, input2):
            output1 = self.forward_once(input1)
            output2 = self.forward_once(input2)
            output = torch.cat((output1, output2), 1)
            output = self.fc(output)
            output = self.sigmoid(output)
            return output
    return SiameseNetwork

def siamese(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = siamese_model(m)(); load(m, model, weights)
    rng = np.random.default_rng(3)
    a = torch.tensor(rng.random((6, 1, 8, 8)).astype(np.float32)); b = torch.tensor(rng.random((6, 1, 8, 8)).astype(np.float32))
    targets = torch.tensor(rng.integers(0, 2, 6).astype(np.float32))
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    criterion = nn.BCELoss()
    losses = []
    for epoch in range(3):
        model.train()
        optimizer.zero_grad()
        outputs = model(a, b).squeeze()
        loss = criterion(outputs, targets)
        loss.backward(); optimizer.step(); scheduler.step(); losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(a, b).squeeze()
        pred = torch.where(out > 0.5, 1, 0)
        correct = pred.eq(targets.view_as(pred)).sum().item()
    return losses, correct, [p.detach() for p in model.parameters()], [b_.detach() for b_ in model.buffers()]

def ff(m, seed_w):
    torch, nn, optim = m.torch, m.nn, m.optim
    F = m.F
    class Layer(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features, bias, device, dtype)
            self.relu = torch.nn.ReLU() if hasattr(torch, "nn") else nn.ReLU()
            self.opt = optim.Adam(self.parameters(), lr=0.03)
            self.threshold = 2.0
            self.num_epochs = 5
        def forward(self, x):
            x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            return self.relu(torch.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))
        def train_layer(self, x_pos, x_neg):
            losses = []
            for i in range(self.num_epochs):
                g_pos = self.forward(x_pos).pow(2).mean(1)
                g_neg = self.forward(x_neg).pow(2).mean(1)
                loss = torch.log(1 + torch.exp(torch.cat([-g_pos + self.threshold, g_neg - self.threshold]))).mean()
                self.opt.zero_grad(); loss.backward(); self.opt.step(); losses.append(loss.item())
            return self.forward(x_pos).detach(), self.forward(x_neg).detach(), losses
    def overlay_y_on_x(x, y):
        x_ = x.clone()
        x_[:, :4] *= 0.0
        x_[range(x.shape[0]), y] = x.max()
        return x_
    layers = [Layer(12, 10), Layer(10, 10)]
    for layer, w in zip(layers, seed_w):
        layer.load_state_dict({k: torch.tensor(v) for k, v in w.items()})
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.random((8, 12)).astype(np.float32)); y = torch.tensor(rng.integers(0, 4, 8))
    x_pos = overlay_y_on_x(x, y)
    rnd = torch.tensor(np.random.default_rng(5).permutation(8))
    x_neg = overlay_y_on_x(x, y[rnd])
    h_pos, h_neg = x_pos, x_neg
    all_losses = []
    for layer in layers:
        h_pos, h_neg, losses = layer.train_layer(h_pos, h_neg)
        all_losses += losses
    goodness_per_label = []
    for label in range(4):
        h = overlay_y_on_x(x, label)
        goodness = []
        for layer in layers:
            h = layer(h)
            goodness += [h.pow(2).mean(1)]
        goodness_per_label += [sum(goodness).unsqueeze(1)]
    goodness_per_label = torch.cat(goodness_per_label, 1)
    return all_losses, goodness_per_label.detach(), goodness_per_label.argmax(1)


def translation_model(m):
    torch, nn = m.torch, m.nn
    class PositionalEncoding(nn.Module):
        def __init__(self, emb_size, dropout, maxlen=50):
            super().__init__()
            den = torch.exp(- torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
            pos = torch.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = torch.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = torch.sin(pos * den)
            pos_embedding[:, 1::2] = torch.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer('pos_embedding', pos_embedding)
        def forward(self, token_embedding):
            return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(0), :])
    class TokenEmbedding(nn.Module):
        def __init__(self, vocab_size, emb_size):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, emb_size)
            self.emb_size = emb_size
        def forward(self, tokens):
            return self.embedding(tokens.long()) * math.sqrt(self.emb_size)
    class Seq2SeqTransformer(nn.Module):
        def __init__(self, num_encoder_layers, num_decoder_layers, emb_size, nhead, src_vocab_size, tgt_vocab_size,
                     dim_feedforward=32, dropout=0.0):
            super().__init__()
            self.transformer = nn.Transformer(d_model=emb_size, nhead=nhead, num_encoder_layers=num_encoder_layers,
                                           num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                                           dropout=dropout)
            self.generator = nn.Linear(emb_size, tgt_vocab_size)
            self.src_tok_emb = TokenEmbedding(src_vocab_size, emb_size)
            self.tgt_tok_emb = TokenEmbedding(tgt_vocab_size, emb_size)
            self.positional_encoding = PositionalEncoding(emb_size, dropout=dropout)
        def forward(self, src, trg, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, memory_key_padding_mask):
            src_emb = self.positional_encoding(self.src_tok_emb(src))
            tgt_emb = self.positional_encoding(self.tgt_tok_emb(trg))
            outs = self.transformer(src_emb, tgt_emb, src_mask, tgt_mask, None, src_padding_mask, tgt_padding_mask,
                                    memory_key_padding_mask)
            return self.generator(outs)
        def encode(self, src, src_mask):
            return self.transformer.encoder(self.positional_encoding(self.src_tok_emb(src)), src_mask)
        def decode(self, tgt, memory, tgt_mask):
            return self.transformer.decoder(self.positional_encoding(self.tgt_tok_emb(tgt)), memory, tgt_mask)
    return Seq2SeqTransformer

PAD_IDX, BOS_IDX, EOS_IDX = 1, 2, 3

def translate(m, weights):
    torch, nn = m.torch, m.nn
    def generate_square_subsequent_mask(sz):
        mask = (torch.triu(torch.ones((sz, sz))) == 1).transpose(0, 1)
        mask = mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, 0.0)
        return mask
    def create_mask(src, tgt):
        src_seq_len = src.shape[0]; tgt_seq_len = tgt.shape[0]
        tgt_mask = generate_square_subsequent_mask(tgt_seq_len)
        src_mask = torch.zeros((src_seq_len, src_seq_len)).type(torch.bool)
        src_padding_mask = (src == PAD_IDX).transpose(0, 1)
        tgt_padding_mask = (tgt == PAD_IDX).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask
    model = translation_model(m)(2, 2, 16, 2, 12, 12)
    load(m, model, weights)
    optimizer = m.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.98), eps=1e-9)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_IDX)
    rng = np.random.default_rng(7)
    src = torch.tensor(rng.integers(4, 12, (7, 3))); tgt = torch.tensor(rng.integers(4, 12, (6, 3)))
    src[5:, 0] = PAD_IDX; tgt[4:, 1] = PAD_IDX
    losses = []
    model.train()
    for _ in range(3):
        tgt_input = tgt[:-1, :]
        src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input)
        logits = model(src, tgt_input, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, src_padding_mask)
        optimizer.zero_grad()
        tgt_out = tgt[1:, :]
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
        loss.backward(); optimizer.step(); losses.append(loss.item())
    model.eval()
    src1 = src[:, :1]
    num_tokens = src1.shape[0]
    src_mask = (torch.zeros(num_tokens, num_tokens)).type(torch.bool)
    memory = model.encode(src1, src_mask)
    ys = torch.ones(1, 1).fill_(BOS_IDX).type(torch.long)
    for i in range(5):
        tgt_mask = (generate_square_subsequent_mask(ys.size(0)).type(torch.bool))
        out = model.decode(ys, memory, tgt_mask)
        out = out.transpose(0, 1)
        prob = model.generator(out[:, -1])
        _, next_word = torch.max(prob, dim=1)
        next_word = next_word.item()
        ys = torch.cat([ys, torch.ones(1, 1).type_as(src1.data).fill_(next_word)], dim=0)
    return losses, ys


def vit_model(m):
    torch, nn, F = m.torch, m.nn, m.F
    class PatchExtractor(nn.Module):
        def __init__(self, patch_size=4):
            super().__init__()
            self.patch_size = patch_size
        def forward(self, input_data):
            batch_size, channels, height, width = input_data.size()
            num_patches_h = height // self.patch_size
            num_patches_w = width // self.patch_size
            num_patches = num_patches_h * num_patches_w
            patches = input_data.unfold(2, self.patch_size, self.patch_size).unfold(3, self.patch_size, self.patch_size). \
                permute(0, 2, 3, 1, 4, 5). \
                contiguous(). \
                view(batch_size, num_patches, -1)
            return patches
    class InputEmbedding(nn.Module):
        def __init__(self, patch_size, n_channels, latent_size, num_patches, batch_size=2):
            super().__init__()
            self.patchify = PatchExtractor(patch_size=patch_size)
            self.input_size = patch_size * patch_size * n_channels
            self.LinearProjection = nn.Linear(self.input_size, latent_size)
            self.class_token = nn.Parameter(torch.randn(1, 1, latent_size))
            self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, latent_size))
        def forward(self, input_data):
            patches = self.patchify(input_data)
            linear_projection = self.LinearProjection(patches)
            b, n, _ = linear_projection.shape
            linear_projection = torch.cat((self.class_token.expand(b, -1, -1), linear_projection), dim=1)
            pos_embed = self.pos_embedding[:, :n + 1, :]
            linear_projection += pos_embed
            return linear_projection
    class EncoderBlock(nn.Module):
        def __init__(self, latent_size, num_heads, dropout=0.0):
            super().__init__()
            self.norm = nn.LayerNorm(latent_size)
            self.attention = nn.MultiheadAttention(latent_size, num_heads, dropout=dropout, batch_first=True)
            self.enc_MLP = nn.Sequential(nn.Linear(latent_size, latent_size * 4), nn.GELU(), nn.Dropout(dropout),
                                         nn.Linear(latent_size * 4, latent_size), nn.Dropout(dropout))
        def forward(self, emb_patches):
            first_norm = self.norm(emb_patches)
            attention_out = self.attention(first_norm, first_norm, first_norm)[0]
            first_added = attention_out + emb_patches
            second_norm = self.norm(first_added)
            mlp_out = self.enc_MLP(second_norm)
            output = mlp_out + first_added
            return output
    class ViT(nn.Module):
        def __init__(self, num_encoders=2, latent_size=16, num_classes=3, dropout=0.0):
            super().__init__()
            self.embedding = InputEmbedding(4, 3, latent_size, 4)
            self.encoders = nn.ModuleList([EncoderBlock(latent_size, 2, dropout) for _ in range(num_encoders)])
            self.MLPHead = nn.Sequential(nn.LayerNorm(latent_size), nn.Linear(latent_size, latent_size), nn.Linear(latent_size, num_classes))
        def forward(self, test_input):
            enc_output = self.embedding(test_input)
            for enc_layer in self.encoders:
                enc_output = enc_layer(enc_output)
            class_token_embed = enc_output[:, 0]
            return self.MLPHead(class_token_embed)
    return ViT

def vit(m, weights):
    torch, nn = m.torch, m.nn
    model = vit_model(m)(); load(m, model, weights)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((4, 3, 8, 8)).astype(np.float32)); y = torch.tensor(rng.integers(0, 3, 4))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.03)
    scheduler = m.optim.lr_scheduler.LinearLR(optimizer)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward(); optimizer.step(); scheduler.step(); losses.append(loss.item())
    # (the key part of in_proj_bias has a gradient of 0 up to rounding, softmax being blind to a constant shift:
    # Adam turns either library's rounding noise into a step of ±lr, so that parameter is left out)
    return losses, [p.detach() for name, p in model.named_parameters() if not name.endswith("in_proj_bias")]


def test_time_sequence_prediction():
    (losses, prediction), theirs = run_both(time_seq, weights_of(lambda m: seq_models(m)().double()), rtol=1e-6,
                                            atol=1e-8)
    assert losses[-1] < losses[0] and prediction.shape == (2, 34)


def test_super_resolution():
    (losses, psnr, parameters), theirs = run_both(super_res, weights_of(lambda m: sr_model(m)(2)), rtol=1e-4,
                                                  atol=1e-5)
    assert losses[-1] < losses[0] and psnr > 0


def test_fast_neural_style():
    (losses, parameters), theirs = run_both(style, weights_of(lambda m: style_model(m)()), rtol=2e-4, atol=2e-5)
    assert losses[-1] < losses[0]


def test_siamese_network():
    (losses, correct, parameters, buffers), theirs = run_both(siamese, weights_of(lambda m: siamese_model(m)()),
                                                              rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and 0 <= correct <= 6


def test_mnist_forward_forward():
    import autograd
    import nn

    autograd.manual_seed(0)
    weights = [{k: v.numpy().copy() for k, v in nn.Linear(n_in, 10).state_dict().items()} for n_in in (12, 10)]
    (losses, goodness, predicted), theirs = run_both(ff, weights, rtol=1e-4, atol=1e-5)
    assert len(losses) == 10 and goodness.shape == (8, 4) and predicted.shape == (8,)


def test_translation_transformer():
    (losses, tokens), theirs = run_both(translate, weights_of(lambda m: translation_model(m)(2, 2, 16, 2, 12, 12)),
                                        rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and tokens.shape == (6, 1) and tokens[0, 0] == BOS_IDX


def test_vision_transformer():
    (losses, parameters), theirs = run_both(vit, weights_of(lambda m: vit_model(m)()), rtol=2e-4, atol=2e-5)
    assert losses[-1] < losses[0]
