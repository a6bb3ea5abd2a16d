# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. MIT 6.5940: pruning and linear/k-means
quantisation with integer-only layers."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MIT 6.5940 (TinyML and efficient deep learning), labs 1 and 2: fine-grained and channel pruning,
# k-means and linear quantisation, integer-only linear and convolution layers
# ----------------------------------------------------------------------------------------------


def make_small_convnet(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def efficient_ml_labs(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_small_convnet(m), weights_of(make_small_convnet))
    x = torch.tensor(np.random.default_rng(21).standard_normal((4, 1, 6, 6)).astype(np.float32))
    model.eval()
    with torch.no_grad():
        dense_out = model(x)

    def get_num_parameters(model, count_nonzero_only=False):
        num_counted_elements = 0
        for param in model.parameters():
            if count_nonzero_only:
                num_counted_elements += param.count_nonzero()
            else:
                num_counted_elements += param.numel()
        return num_counted_elements

    def fine_grained_prune(tensor, sparsity):
        sparsity = min(max(0.0, sparsity), 1.0)
        if sparsity == 1.0:
            tensor.zero_()
            return torch.zeros_like(tensor)
        elif sparsity == 0.0:
            return torch.ones_like(tensor)
        num_elements = tensor.numel()
        num_zeros = round(num_elements * sparsity)
        importance = tensor.abs()
        threshold = importance.view(-1).kthvalue(num_zeros).values
        mask = torch.gt(importance, threshold)
        tensor.mul_(mask)
        return mask

    class FineGrainedPruner:
        def __init__(self, model, sparsity_dict):
            self.masks = FineGrainedPruner.prune(model, sparsity_dict)

        @torch.no_grad()
        def apply(self, model):
            for name, param in model.named_parameters():
                if name in self.masks:
                    param *= self.masks[name]

        @staticmethod
        @torch.no_grad()
        def prune(model, sparsity_dict):
            masks = dict()
            for name, param in model.named_parameters():
                if param.dim() > 1:
                    masks[name] = fine_grained_prune(param, sparsity_dict[name])
            return masks

    dense_params = get_num_parameters(model)
    pruner = FineGrainedPruner(model, {'0.weight': 0.5, '3.weight': 0.7, '8.weight': 0.3})
    sparse_params = get_num_parameters(model, count_nonzero_only=True)
    with torch.no_grad():
        sparse_out = model(x)
    # a fine-tuning step keeps the zeros by re-applying the masks
    model.train()
    opt = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    pruner.apply(model)
    zeros_kept = all(bool((p[~pruner.masks[n]] == 0).all()) for n, p in model.named_parameters() if n in pruner.masks)
    model.eval()

    # channel pruning: keep the output channels of the first conv by the norm of the next conv's input slices
    def get_input_channel_importance(weight):
        in_channels = weight.shape[1]
        importances = []
        for i_c in range(weight.shape[1]):
            channel_weight = weight.detach()[:, i_c]
            importance = torch.norm(channel_weight)
            importances.append(importance.view(1))
        return torch.cat(importances)

    @torch.no_grad()
    def channel_prune(model, n_keep):
        conv, bn, next_conv = model[0], model[1], model[3]
        importance = get_input_channel_importance(next_conv.weight)
        sort_idx = torch.argsort(importance, descending=True)
        next_conv.weight.copy_(torch.index_select(next_conv.weight.detach(), 1, sort_idx))
        conv.weight.copy_(torch.index_select(conv.weight.detach(), 0, sort_idx))
        for tensor_name in ['weight', 'bias', 'running_mean', 'running_var']:
            tensor_to_apply = getattr(bn, tensor_name)
            tensor_to_apply.copy_(torch.index_select(tensor_to_apply.detach(), 0, sort_idx))
        conv.bias.copy_(torch.index_select(conv.bias.detach(), 0, sort_idx))
        conv.weight = nn.Parameter(conv.weight.detach()[:n_keep])
        conv.bias = nn.Parameter(conv.bias.detach()[:n_keep])
        conv.out_channels = n_keep
        bn.weight = nn.Parameter(bn.weight.detach()[:n_keep])
        bn.bias = nn.Parameter(bn.bias.detach()[:n_keep])
        bn.running_mean = bn.running_mean.detach()[:n_keep]
        bn.running_var = bn.running_var.detach()[:n_keep]
        bn.num_features = n_keep
        next_conv.weight = nn.Parameter(next_conv.weight.detach()[:, :n_keep])
        next_conv.in_channels = n_keep
        return sort_idx

    with torch.no_grad():
        before_channel = model(x)
    sort_idx = channel_prune(model, 3)
    with torch.no_grad():
        after_channel = model(x)

    # k-means quantisation of the last layer's weights (a few Lloyd steps from fixed centroids)
    def k_means_quantize(fp32_tensor, bitwidth=2, n_iter=5):
        n_clusters = 1 << bitwidth
        flat = fp32_tensor.view(-1, 1)
        centroids = torch.linspace(flat.min().item(), flat.max().item(), n_clusters).view(-1, 1)
        for _ in range(n_iter):
            labels = torch.cdist(flat, centroids).argmin(dim=1)
            for k in range(n_clusters):
                members = flat[labels == k]
                if members.numel() > 0:
                    centroids[k] = members.mean(dim=0)
        labels = torch.cdist(flat, centroids).argmin(dim=1)
        fp32_tensor.copy_(centroids[labels].view_as(fp32_tensor))
        return centroids.view(-1), labels

    with torch.no_grad():
        centroids, labels = k_means_quantize(model[8].weight)

    # linear quantisation
    def get_quantized_range(bitwidth):
        quantized_max = (1 << (bitwidth - 1)) - 1
        quantized_min = -(1 << (bitwidth - 1))
        return quantized_min, quantized_max

    def linear_quantize(fp_tensor, bitwidth, scale, zero_point, dtype=torch.int8):
        rounded_tensor = torch.round(fp_tensor / scale)
        rounded_tensor = rounded_tensor.to(dtype)
        shifted_tensor = rounded_tensor + zero_point
        quantized_min, quantized_max = get_quantized_range(bitwidth)
        quantized_tensor = shifted_tensor.clamp_(quantized_min, quantized_max)
        return quantized_tensor

    def get_quantization_scale_and_zero_point(fp_tensor, bitwidth):
        quantized_min, quantized_max = get_quantized_range(bitwidth)
        r_max = fp_tensor.max().item()
        r_min = fp_tensor.min().item()
        scale = (r_max - r_min) / (quantized_max - quantized_min)
        zero_point = quantized_min - r_min / scale
        if zero_point < quantized_min:
            zero_point = quantized_min
        elif zero_point > quantized_max:
            zero_point = quantized_max
        else:
            zero_point = round(zero_point)
        return scale, int(zero_point)

    def get_quantization_scale_for_weight(weight, bitwidth):
        fp_max = max(weight.abs().max().item(), 5e-7)
        _, quantized_max = get_quantized_range(bitwidth)
        return fp_max / quantized_max

    def linear_quantize_weight_per_channel(tensor, bitwidth):
        dim_output_channels = 0
        num_output_channels = tensor.shape[dim_output_channels]
        scale = torch.zeros(num_output_channels, dtype=tensor.dtype)
        for oc in range(num_output_channels):
            _subtensor = tensor.select(dim_output_channels, oc)
            _scale = get_quantization_scale_for_weight(_subtensor, bitwidth)
            scale[oc] = _scale
        scale_shape = [1] * tensor.dim()
        scale_shape[dim_output_channels] = -1
        scale = scale.view(scale_shape)
        quantized_tensor = linear_quantize(tensor, bitwidth, scale, zero_point=0)
        return quantized_tensor, scale, 0

    def quantized_linear(input, weight, bias, feature_bitwidth, weight_bitwidth, input_zero_point, output_zero_point,
                         input_scale, weight_scale, output_scale):
        output = F.linear(input.to(torch.int32), weight.to(torch.int32), None)
        if bias is not None:
            output = output + bias.view(1, -1)
        output = output.float() * (input_scale * weight_scale.view(1, -1) / output_scale)
        output = output + output_zero_point
        output = output.round().clamp(*get_quantized_range(feature_bitwidth)).to(torch.int8)
        return output

    def quantized_conv2d(input, weight, bias, feature_bitwidth, weight_bitwidth, input_zero_point, output_zero_point,
                         input_scale, weight_scale, output_scale, stride, padding, dilation, groups):
        input = F.pad(input, padding, 'constant', input_zero_point)
        output = F.conv2d(input.to(torch.int32), weight.to(torch.int32), None, stride, 0, dilation, groups)
        output = output.to(torch.int32) - input_zero_point * torch.sum(weight.to(torch.int32), dim=(1, 2, 3)).view(1, -1, 1, 1)
        if bias is not None:
            output = output + bias.view(1, -1, 1, 1)
        output = output.float() * (input_scale * weight_scale.view(1, -1, 1, 1) / output_scale)
        output = output + output_zero_point
        output = output.round().clamp(*get_quantized_range(feature_bitwidth)).to(torch.int8)
        return output

    feat = model[0](x).detach()
    in_scale, in_zp = get_quantization_scale_and_zero_point(x, 8)
    q_x = linear_quantize(x, 8, in_scale, in_zp)
    out_scale, out_zp = get_quantization_scale_and_zero_point(feat, 8)
    q_w, w_scale, _ = linear_quantize_weight_per_channel(model[0].weight.detach(), 8)
    q_bias = linear_quantize(model[0].bias.detach(), 32, in_scale * w_scale.view(-1), 0, torch.int32)
    q_conv = quantized_conv2d(q_x, q_w, q_bias, 8, 8, in_zp, out_zp, in_scale, w_scale.view(-1), out_scale,
                              1, (1, 1, 1, 1), 1, 1)
    dequant_conv = (q_conv.float() - out_zp) * out_scale
    fc_in = torch.tensor(np.random.default_rng(22).integers(-128, 128, (2, 6)), dtype=torch.int8)
    q_wfc, wfc_scale, _ = linear_quantize_weight_per_channel(model[8].weight.detach(), 8)
    q_fc = quantized_linear(fc_in, q_wfc, None, 8, 8, 0, 3, 0.05, wfc_scale.view(-1), 0.1)
    return {"dense_out": dense_out, "sparse_out": sparse_out, "dense_params": dense_params,
            "sparse_params": int(sparse_params), "masks": {k: v for k, v in pruner.masks.items()},
            "zeros_kept": zeros_kept,
            "sort_idx": sort_idx, "before_channel": before_channel, "after_channel": after_channel,
            "centroids": centroids, "labels": labels, "q_x": q_x, "q_w": q_w, "q_bias": q_bias, "q_conv": q_conv,
            "dequant_conv": dequant_conv, "feat": feat, "q_fc": q_fc,
            "dtypes": [str(t.dtype).replace("torch.", "") for t in (q_x, q_w, q_bias, q_conv, q_fc)]}


def test_mit_efficient_ml_pruning_and_quantisation():
    ours, _ = run_both(efficient_ml_labs, rtol=1e-4, atol=1e-5)
    assert ours["dtypes"] == ["int8", "int8", "int32", "int8", "int8"]
    assert ours["sparse_params"] < ours["dense_params"]
    assert ours["zeros_kept"] is True
    assert len(np.unique(ours["labels"])) <= 4
    scale = (ours["feat"].max() - ours["feat"].min()) / 255
    assert np.abs(ours["dequant_conv"] - ours["feat"]).max() <= 3 * scale  # the integer conv matches the float one
