# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: recurrent networks: HyperLSTM, RWKV (``ZeroPad2d`` with a negative pad, the
``L2Wrap`` Function), recurrent highway networks with the samplers."""

from types import SimpleNamespace

import numpy as np

from .probe21_papers_common import train_few
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/hypernetworks: HyperLSTM (a small LSTM generating the main LSTM's weight scalings)
# ----------------------------------------------------------------------------------------------


def make_hyper_lstm(m):
    torch, nn = m.torch, m.nn

    class LSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size, layer_norm=False):
            super().__init__()
            self.hidden_lin = nn.Linear(hidden_size, 4 * hidden_size)
            self.input_lin = nn.Linear(input_size, 4 * hidden_size, bias=False)
            if layer_norm:
                self.layer_norm = nn.ModuleList([nn.LayerNorm(hidden_size) for _ in range(4)])
                self.layer_norm_c = nn.LayerNorm(hidden_size)
            else:
                self.layer_norm = nn.ModuleList([nn.Identity() for _ in range(4)])
                self.layer_norm_c = nn.Identity()

        def forward(self, x, h, c):
            ifgo = self.hidden_lin(h) + self.input_lin(x)
            ifgo = ifgo.chunk(4, dim=-1)
            ifgo = [self.layer_norm[i](ifgo[i]) for i in range(4)]
            i, f, g, o = ifgo
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(o) * torch.tanh(self.layer_norm_c(c_next))
            return h_next, c_next

    class HyperLSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size, hyper_size, n_z):
            super().__init__()
            self.hyper = LSTMCell(hidden_size + input_size, hyper_size, layer_norm=True)
            self.z_h = nn.Linear(hyper_size, 4 * n_z)
            self.z_x = nn.Linear(hyper_size, 4 * n_z)
            self.z_b = nn.Linear(hyper_size, 4 * n_z, bias=False)
            d_h = [nn.Linear(n_z, hidden_size, bias=False) for _ in range(4)]
            self.d_h = nn.ModuleList(d_h)
            d_x = [nn.Linear(n_z, hidden_size, bias=False) for _ in range(4)]
            self.d_x = nn.ModuleList(d_x)
            d_b = [nn.Linear(n_z, hidden_size) for _ in range(4)]
            self.d_b = nn.ModuleList(d_b)
            self.w_h = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size, hidden_size)) for _ in range(4)])
            self.w_x = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size, input_size)) for _ in range(4)])
            self.layer_norm = nn.ModuleList([nn.LayerNorm(hidden_size) for _ in range(4)])
            self.layer_norm_c = nn.LayerNorm(hidden_size)

        def forward(self, x, h, c, h_hat, c_hat):
            x_hat = torch.cat((h, x), dim=-1)
            h_hat, c_hat = self.hyper(x_hat, h_hat, c_hat)
            z_h = self.z_h(h_hat).chunk(4, dim=-1)
            z_x = self.z_x(h_hat).chunk(4, dim=-1)
            z_b = self.z_b(h_hat).chunk(4, dim=-1)
            ifgo = []
            for i in range(4):
                d_h = self.d_h[i](z_h[i])
                d_x = self.d_x[i](z_x[i])
                y = d_h * torch.einsum('ij,bj->bi', self.w_h[i], h) + \
                    d_x * torch.einsum('ij,bj->bi', self.w_x[i], x) + \
                    self.d_b[i](z_b[i])
                ifgo.append(self.layer_norm[i](y))
            i, f, g, o = ifgo
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(o) * torch.tanh(self.layer_norm_c(c_next))
            return h_next, c_next, h_hat, c_hat

    class HyperLSTM(nn.Module):
        def __init__(self, input_size, hidden_size, hyper_size, n_z, n_layers):
            super().__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.hyper_size = hyper_size
            self.cells = nn.ModuleList([HyperLSTMCell(input_size, hidden_size, hyper_size, n_z)] +
                                       [HyperLSTMCell(hidden_size, hidden_size, hyper_size, n_z) for _ in
                                        range(n_layers - 1)])

        def forward(self, x, state=None):
            n_steps, batch_size = x.shape[:2]
            if state is None:
                h = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
                c = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
                h_hat = [x.new_zeros(batch_size, self.hyper_size) for _ in range(self.n_layers)]
                c_hat = [x.new_zeros(batch_size, self.hyper_size) for _ in range(self.n_layers)]
            else:
                (h, c, h_hat, c_hat) = state
                h, c = list(torch.unbind(h)), list(torch.unbind(c))
                h_hat, c_hat = list(torch.unbind(h_hat)), list(torch.unbind(c_hat))
            out = []
            for t in range(n_steps):
                inp = x[t]
                for layer in range(self.n_layers):
                    h[layer], c[layer], h_hat[layer], c_hat[layer] = \
                        self.cells[layer](inp, h[layer], c[layer], h_hat[layer], c_hat[layer])
                    inp = h[layer]
                out.append(h[-1])
            out = torch.stack(out)
            h = torch.stack(h)
            c = torch.stack(c)
            h_hat = torch.stack(h_hat)
            c_hat = torch.stack(c_hat)
            return out, (h, c, h_hat, c_hat)

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab=7, d_model=6, hidden=8):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.lstm = HyperLSTM(d_model, hidden, 5, 3, 2)
            self.generator = nn.Linear(hidden, n_vocab)

        def forward(self, x, state=None):
            x = self.src_embed(x)
            res, state = self.lstm(x, state)
            return self.generator(res), state

    model = AutoregressiveModel().double()
    with torch.no_grad():  # their w_h, w_x start at zero
        for i, p in enumerate(model.parameters()):
            if p.dim() == 2 and p.abs().sum() == 0:
                nn.init.orthogonal_(p)
    return model


def hyper_lstm_program(m, weights):
    torch = m.torch
    model = load(m, make_hyper_lstm(m), weights)
    rng = np.random.default_rng(5)
    tokens = torch.tensor(rng.integers(0, 7, (8, 3)))
    target = torch.tensor(rng.integers(0, 7, (8, 3)))

    def loss_fn(model, x, y):
        first, state = model(x[:4])
        # truncated backpropagation through time: the second half starts from the detached state
        second, _ = model(x[4:], tuple(s.detach() for s in state))
        out = torch.cat([first, second])
        return m.F.cross_entropy(out.view(-1, 7), y.view(-1))

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=3)
    with torch.no_grad():
        _, state = model(tokens)
    return {"losses": losses, "grads": grads, "state": state, "n_params": len(list(model.parameters()))}


def test_hyper_lstm():
    weights = weights_of(make_hyper_lstm)
    ours, _ = run_both(hyper_lstm_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert [s.shape for s in ours["state"]] == [(2, 3, 8), (2, 3, 8), (2, 3, 5), (2, 3, 5)]
    assert np.abs(ours["grads"]["lstm.cells.1.w_h.2"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/rwkv: RWKV's time and channel mixing (ZeroPad2d with a negative pad, the L2Wrap Function)
# ----------------------------------------------------------------------------------------------


def make_rwkv(m):
    torch, nn, F = m.torch, m.nn, m.F
    config = SimpleNamespace(n_embd=8, intermediate_size=None, n_layer=2, vocab_size=11, block_size=12, bias=True)

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class ChannelMixing(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.layer_id = layer_id
            n_embd = config.n_embd
            intermediate_size = (config.intermediate_size if config.intermediate_size is not None else 4 * n_embd)
            self.key_proj = nn.Linear(n_embd, intermediate_size, bias=False)
            self.value_proj = nn.Linear(intermediate_size, n_embd, bias=False)
            self.receptance_proj = nn.Linear(n_embd, n_embd, bias=False)
            self.time_mix_key = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, n_embd))

        def forward(self, x, state=None):
            prev_x = self.time_shift(x)
            receptance = x * self.time_mix_receptance + prev_x * (1 - self.time_mix_receptance)
            receptance = self.receptance_proj(receptance)
            key = x * self.time_mix_key + prev_x * (1 - self.time_mix_key)
            key = self.key_proj(key)
            value = self.value_proj(torch.square(torch.relu(key)))
            out = F.sigmoid(receptance) * value
            return out, state

    class TimeMixing(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.config = config
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.layer_id = layer_id
            n_embd = config.n_embd
            attn_sz = n_embd
            self.key_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.value_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.receptance_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.output_proj = nn.Linear(attn_sz, n_embd, bias=False)
            self.time_decay = nn.Parameter(torch.empty(attn_sz))
            self.time_first = nn.Parameter(torch.empty(attn_sz))
            self.time_mix_key = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_value = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, n_embd))

        def forward(self, x, state=None):
            prev_x = self.time_shift(x)
            receptance = x * self.time_mix_receptance + prev_x * (1 - self.time_mix_receptance)
            receptance = self.receptance_proj(receptance)
            key = x * self.time_mix_key + prev_x * (1 - self.time_mix_key)
            key = self.key_proj(key)
            value = x * self.time_mix_value + prev_x * (1 - self.time_mix_value)
            value = self.value_proj(value)
            # the recurrent wkv, as their loop writes it (the state is the four running quantities)
            _, seq_length, _ = key.size()
            output = torch.zeros_like(key)
            num_state = torch.zeros_like(key[:, 0], dtype=torch.float32)
            den_state = torch.zeros_like(key[:, 0], dtype=torch.float32)
            max_state = torch.zeros_like(key[:, 0], dtype=torch.float32) - 1e38
            time_decay = -torch.exp(self.time_decay)
            for current_index in range(seq_length):
                current_key = key[:, current_index].float()
                current_value = value[:, current_index]
                max_for_output = torch.maximum(max_state, current_key + self.time_first)
                e1 = torch.exp(max_state - max_for_output)
                e2 = torch.exp(current_key + self.time_first - max_for_output)
                numerator = e1 * num_state + e2 * current_value
                denominator = e1 * den_state + e2
                output[:, current_index] = (numerator / denominator).to(output.dtype)
                max_for_state = torch.maximum(max_state + time_decay, current_key)
                e1 = torch.exp(max_state + time_decay - max_for_state)
                e2 = torch.exp(current_key - max_for_state)
                num_state = e1 * num_state + e2 * current_value
                den_state = e1 * den_state + e2
                max_state = max_for_state
            rwkv = F.sigmoid(receptance) * output
            rwkv = self.output_proj(rwkv)
            return rwkv, state

    class Block(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = TimeMixing(config, layer_id)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.ffn = ChannelMixing(config, layer_id)

        def forward(self, x, state=None):
            residual = x
            x, state = self.attn(self.ln_1(x), state=state)
            x = x + residual
            residual = x
            x, state = self.ffn(self.ln_2(x), state=state)
            x = x + residual
            return x, state

    class L2Wrap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, loss, y):
            ctx.save_for_backward(y)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            y = ctx.saved_tensors[0]
            factor = 1e-4 / (y.shape[0] * y.shape[1])
            maxx, ids = torch.max(y, -1, keepdim=True)
            gy = torch.zeros_like(y)
            gy.scatter_(-1, ids, maxx * factor)
            return grad_output, gy

    class RWKV(nn.Module):
        def __init__(self, config, lr_init=0.0008):
            super().__init__()
            self.config = config
            self.lr_init = lr_init
            self.n_layer = config.n_layer
            self.n_embd = config.n_embd
            self.rwkv = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                ln_p=LayerNorm(config.n_embd, bias=config.bias),
                h=nn.ModuleList([Block(config, layer_id) for layer_id in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            with torch.no_grad():  # labml's configs initialise these; here a fixed ramp per layer
                for block in self.rwkv.h:
                    for name, p in block.named_parameters():
                        if "time_" in name:
                            p.copy_(torch.linspace(0.1, 0.9, p.numel()).view(p.shape))

        def forward(self, idx, targets=None, state=None, return_state=False):
            b, t = idx.size()
            assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
            x = self.rwkv.wte(idx)
            x = self.rwkv.ln_p(x)
            for block_idx, block in enumerate(self.rwkv.h):
                x, state = block(x, state)
            x = self.rwkv.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
                if self.training:
                    loss = L2Wrap.apply(loss, logits)
            else:
                logits = self.lm_head(x[:, [-1], :])
                loss = None
            if return_state:
                return logits, loss, state
            else:
                return logits, loss

    return RWKV(config)


def rwkv_program(m, weights):
    torch = m.torch
    model = load(m, make_rwkv(m), weights)
    rng = np.random.default_rng(12)
    idx = torch.tensor(rng.integers(0, 11, (3, 9)))
    targets = torch.tensor(rng.integers(0, 11, (3, 9)))
    targets[0, :2] = -1  # ignored positions
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.99))
    losses, first = [], None
    for step in range(4):
        logits, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        if first is None:
            first = {n: p.grad.clone() for n, p in model.named_parameters()}
            logits_grad = torch.autograd.grad(model(idx, targets)[1], model.lm_head.weight)[0]
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        last_logits, none = model(idx)
    shift = model.rwkv.h[0].ffn.time_shift(torch.arange(12.).view(1, 4, 3))
    return {"losses": losses, "grads": first, "last": last_logits, "none": none, "shift": shift,
            "logits_grad": logits_grad}


def test_rwkv():
    weights = weights_of(make_rwkv)
    ours, _ = run_both(rwkv_program, weights, rtol=1e-5, atol=1e-7)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["last"].shape == (3, 1, 11) and ours["none"] is None
    # ZeroPad2d((0, 0, 1, -1)): shifted one step down the time axis, the last step cut
    np.testing.assert_array_equal(ours["shift"][0], [[0, 0, 0], [0, 1, 2], [3, 4, 5], [6, 7, 8]])


# ----------------------------------------------------------------------------------------------
# labml_nn/recurrent_highway_networks and labml_nn/sampling
# ----------------------------------------------------------------------------------------------


def make_rhn(m):
    torch, nn = m.torch, m.nn

    class RHNCell(nn.Module):
        def __init__(self, input_size, hidden_size, depth):
            super().__init__()
            self.hidden_size = hidden_size
            self.depth = depth
            self.hidden_lin = nn.ModuleList([nn.Linear(hidden_size, 2 * hidden_size) for _ in range(depth)])
            self.input_lin = nn.Linear(input_size, 2 * hidden_size, bias=False)

        def forward(self, x, s):
            for d in range(self.depth):
                if d == 0:
                    hg = self.input_lin(x) + self.hidden_lin[d](s)
                else:
                    hg = self.hidden_lin[d](s)
                h = torch.tanh(hg[:, :self.hidden_size])
                g = torch.sigmoid(hg[:, self.hidden_size:])
                s = h * g + s * (1 - g)
            return s

    class RHN(nn.Module):
        def __init__(self, input_size, hidden_size, depth, n_layers):
            super().__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.cells = nn.ModuleList([RHNCell(input_size, hidden_size, depth)] +
                                       [RHNCell(hidden_size, hidden_size, depth) for _ in range(n_layers - 1)])

        def forward(self, x, state=None):
            time_steps, batch_size = x.shape[:2]
            if state is None:
                s = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
            else:
                s = list(torch.unbind(state))
            out = []
            for t in range(time_steps):
                inp = x[t]
                for layer in range(self.n_layers):
                    s[layer] = self.cells[layer](inp, s[layer])
                    inp = s[layer]
                out.append(s[-1])
            out = torch.stack(out)
            s = torch.stack(s)
            return out, s

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(12, 6)
            self.rhn = RHN(6, 10, 3, 2)
            self.generator = nn.Linear(10, 12)

        def forward(self, x, state=None):
            out, state = self.rhn(self.embed(x), state)
            return self.generator(out), state

    return LanguageModel().double()


def rhn_and_sampling_program(m, weights):
    torch, nn = m.torch, m.nn

    class TemperatureSampler:
        def __init__(self, temperature=1.0):
            self.temperature = temperature

        def __call__(self, logits):
            dist = torch.distributions.Categorical(logits=logits / self.temperature)
            return dist.sample()

    class GreedySampler:
        def __call__(self, logits):
            return logits.argmax(dim=-1)

    class TopKSampler:
        def __init__(self, k, sampler):
            self.k = k
            self.sampler = sampler

        def __call__(self, logits):
            zeros = logits.new_ones(logits.shape) * float('-inf')
            values, indices = torch.topk(logits, self.k, dim=-1)
            zeros.scatter_(-1, indices, values)
            return self.sampler(zeros)

    class NucleusSampler:
        def __init__(self, p, sampler):
            self.p = p
            self.sampler = sampler
            self.softmax = nn.Softmax(dim=-1)

        def __call__(self, logits):
            probs = self.softmax(logits)
            sorted_probs, indices = torch.sort(probs, dim=-1, descending=True)
            cum_sum_probs = torch.cumsum(sorted_probs, dim=-1)
            nucleus = cum_sum_probs < self.p
            nucleus = torch.cat([nucleus.new_ones(nucleus.shape[:-1] + (1,)), nucleus[..., :-1]], dim=-1)
            sorted_log_probs = torch.log(sorted_probs)
            sorted_log_probs[~nucleus] = float('-inf')
            sampled_sorted_indexes = self.sampler(sorted_log_probs)
            res = indices.gather(-1, sampled_sorted_indexes.unsqueeze(-1))
            return res.squeeze(-1)

    model = load(m, make_rhn(m), weights)
    rng = np.random.default_rng(13)
    text = torch.tensor(rng.integers(0, 12, (10, 4)))
    losses, grads = train_few(m, model, (text[:-1], text[1:]),
                              lambda model, x, y: m.F.cross_entropy(model(x)[0].reshape(-1, 12), y.reshape(-1)),
                              steps=4, lr=2e-2)
    # generate with each sampler from the trained model, one token at a time carrying the state
    samplers = {"greedy": GreedySampler(), "temperature": TemperatureSampler(0.7),
                "top_k": TopKSampler(3, TemperatureSampler(1.)), "nucleus": NucleusSampler(0.6, TemperatureSampler(1.))}
    generated = {}
    with torch.no_grad():
        for name, sampler in samplers.items():
            torch.manual_seed(42)
            x = text[:3]
            logits, state = model(x)
            tokens = []
            for _ in range(6):
                token = sampler(logits[-1])
                tokens.append(token)
                logits, state = model(token[None, :], state)
            generated[name] = torch.stack(tokens)
    last = logits[-1]
    topk_zeros = last.new_ones(last.shape) * float('-inf')
    values, indices = torch.topk(last, 3, dim=-1)
    topk_zeros.scatter_(-1, indices, values)
    return {"losses": losses, "grads": grads, "generated": generated, "last": last, "topk": topk_zeros}


def test_rhn_and_samplers():
    weights = weights_of(make_rhn)
    ours, _ = run_both(rhn_and_sampling_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert (np.isfinite(ours["topk"]).sum(-1) == 3).all()
    g = ours["generated"]
    assert all(v.shape == (6, 4) for v in g.values())
