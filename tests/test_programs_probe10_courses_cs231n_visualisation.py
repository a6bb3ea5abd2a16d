# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. CS231n (PyTorch versions): saliency maps,
class visualisation by gradient ascent with jitter (``torch.roll``) and blur, FGSM; style transfer's Gram matrix and
total-variation losses. Grad-CAM with module hooks (``register_backward_hook`` on a conv followed by an in-place
ReLU) and with tensor hooks, and guided backpropagation."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# CS231n: saliency maps, fooling images, class visualisation (jitter and blur), FGSM
# ----------------------------------------------------------------------------------------------


def make_tiny_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 5))


def gaussian_blur_1d(X_np, sigma, axis):
    radius = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(X_np, [(radius, radius) if a == axis else (0, 0) for a in range(X_np.ndim)], mode='symmetric')
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode='valid'), axis, padded)


def cs231n_visualisation(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_tiny_cnn(m), weights_of(make_tiny_cnn))
    for param in model.parameters():
        param.requires_grad = False
    model.eval()
    rng = np.random.default_rng(8)
    X = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 3])

    def compute_saliency_maps(X, y, model):
        X = X.clone()
        X.requires_grad_()
        scores = model(X)
        scores = scores.gather(1, y.view(-1, 1)).squeeze()
        scores.backward(torch.ones(scores.size()))
        saliency = X.grad.data.abs().max(dim=1)[0]
        return saliency

    def make_fooling_image(X, target_y, model):
        X_fooling = X.clone()
        X_fooling = X_fooling.requires_grad_()
        learning_rate = 1
        for i in range(100):
            scores = model(X_fooling)
            if scores.data.max(1)[1][0] == target_y:
                break
            target_score = scores[0, target_y]
            target_score.backward()
            g = X_fooling.grad.data
            dX = learning_rate * g / g.norm()
            X_fooling.data += dX
            X_fooling.grad.zero_()
        return X_fooling, i

    def jitter(X, ox, oy):
        if ox != 0:
            left = X[:, :, :, :-ox]
            right = X[:, :, :, -ox:]
            X = torch.cat([right, left], dim=3)
        if oy != 0:
            top = X[:, :, :-oy]
            bottom = X[:, :, -oy:]
            X = torch.cat([bottom, top], dim=2)
        return X

    def blur_image(X, sigma=1):
        X_np = X.cpu().clone().numpy()
        X_np = gaussian_blur_1d(X_np, sigma, axis=2)
        X_np = gaussian_blur_1d(X_np, sigma, axis=3)
        X.copy_(torch.Tensor(X_np).type_as(X))
        return X

    def create_class_visualization(target_y, model, img, jitters, l2_reg=1e-3, learning_rate=5, blur_every=3):
        img = img.clone().requires_grad_()
        for t in range(len(jitters)):
            ox, oy = jitters[t]
            img.data.copy_(jitter(img.data, ox, oy))
            score = model(img)[0, target_y] - l2_reg * img.norm() ** 2
            score.backward()
            img.data += learning_rate * img.grad.data / img.grad.data.norm()
            img.grad.data.zero_()
            img.data.copy_(jitter(img.data, -ox, -oy))
            for c in range(3):
                lo, hi = float(-0.5 - c / 10), float(0.5 + c / 10)
                img.data[:, c].clamp_(min=lo, max=hi)
            if t % blur_every == 0:
                blur_image(img.data, sigma=0.5)
        return img.data

    saliency = compute_saliency_maps(X, y, model)
    fooling, iters = make_fooling_image(X[:1], 4, model)
    jitters = [tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(7)]
    vis = create_class_visualization(2, model, torch.tensor(0.1 * rng.standard_normal((1, 3, 8, 8)).astype(np.float32)), jitters)
    # the same jitter by torch.roll
    rolled = torch.roll(torch.roll(X, 2, dims=3), 1, dims=2)

    # FGSM on the model's own predictions
    def fgsm_attack(image, epsilon, data_grad):
        sign_data_grad = data_grad.sign()
        perturbed_image = image + epsilon * sign_data_grad
        perturbed_image = torch.clamp(perturbed_image, -2, 2)
        return perturbed_image

    data = X.clone().requires_grad_(True)
    output = F.log_softmax(model(data), dim=1)
    init_pred = output.max(1, keepdim=True)[1]
    loss = F.nll_loss(output, init_pred.view(-1))
    model.zero_grad()
    loss.backward()
    perturbed = fgsm_attack(data, 0.25, data.grad.data)
    final_pred = model(perturbed).max(1, keepdim=True)[1]
    return {"saliency": saliency, "fooling": fooling.detach(), "iters": iters, "vis": vis, "jitter": jitter(X, 2, 1),
            "rolled": rolled, "perturbed": perturbed.detach(), "init_pred": init_pred, "final_pred": final_pred,
            "flipped": (init_pred != final_pred).sum().item()}


def test_cs231n_saliency_fooling_class_visualisation_fgsm():
    ours, _ = run_both(cs231n_visualisation, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["jitter"], ours["rolled"])
    assert ours["saliency"].shape == (4, 8, 8) and (ours["saliency"] >= 0).all()
    assert ours["iters"] < 99  # the fooling image reached class 4
    assert ours["vis"].min() >= -0.7 - 1e-6 and ours["vis"].max() <= 0.7 + 1e-6


# ----------------------------------------------------------------------------------------------
# CS231n: style transfer (content, Gram-matrix style and total-variation losses)
# ----------------------------------------------------------------------------------------------


def make_features(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())


def style_transfer(m):
    torch, nn, F = m.torch, m.nn, m.F
    cnn = load(m, make_features(m), weights_of(make_features))
    for param in cnn.parameters():
        param.requires_grad = False
    rng = np.random.default_rng(9)
    content_img = torch.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    style_img = torch.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))

    def extract_features(x, cnn):
        features = []
        prev_feat = x
        for i, module in enumerate(cnn._modules.values()):
            next_feat = module(prev_feat)
            features.append(next_feat)
            prev_feat = next_feat
        return features

    def content_loss(content_weight, content_current, content_original):
        return content_weight * torch.sum((content_current - content_original) ** 2)

    def gram_matrix(features, normalize=True):
        N, C, H, W = features.size()
        features = features.view(N, C, H * W)
        gram = torch.bmm(features, features.permute(0, 2, 1))
        if normalize:
            gram /= float(H * W * C)
        return gram

    def style_loss(feats, style_layers, style_targets, style_weights):
        style_loss = 0
        for i, layer in enumerate(style_layers):
            current_gram = gram_matrix(feats[layer])
            style_loss += style_weights[i] * torch.sum((current_gram - style_targets[i]) ** 2)
        return style_loss

    def tv_loss(img, tv_weight):
        h_variance = torch.sum(torch.pow(img[:, :, :-1, :] - img[:, :, 1:, :], 2))
        w_variance = torch.sum(torch.pow(img[:, :, :, :-1] - img[:, :, :, 1:], 2))
        return tv_weight * (h_variance + w_variance)

    content_layer, style_layers = 3, (1, 3, 6)
    content_weight, style_weights, tv_weight = 5e-2, (2000, 500, 12), 5e-2
    feats = extract_features(content_img, cnn)
    content_target = feats[content_layer].clone()
    feats = extract_features(style_img, cnn)
    style_targets = [gram_matrix(feats[idx].clone()) for idx in style_layers]
    img = content_img.clone()
    img_var = img.requires_grad_()
    initial_lr, decayed_lr, decay_lr_at = 3.0, 0.1, 6
    optimizer = m.optim.Adam([img_var], lr=initial_lr)  # (the assignment spells torch.optim: see nanogpt tests)
    losses = []
    for t in range(10):
        if t < 8:
            img.data.clamp_(-1.5, 1.5)
        optimizer.zero_grad()
        feats = extract_features(img_var, cnn)
        c_loss = content_loss(content_weight, feats[content_layer], content_target)
        s_loss = style_loss(feats, style_layers, style_targets, style_weights)
        t_loss = tv_loss(img_var, tv_weight)
        loss = c_loss + s_loss + t_loss
        loss.backward()
        if t == decay_lr_at:
            optimizer = m.optim.Adam([img_var], lr=decayed_lr)
        optimizer.step()
        losses.append((c_loss.item(), s_loss.item(), t_loss.item()))
    return {"losses": losses, "img": img.detach(), "grams": style_targets}


def test_cs231n_style_transfer():
    ours, _ = run_both(style_transfer, rtol=2e-4, atol=1e-5)
    g = ours["grams"][0][0]
    np.testing.assert_allclose(g, g.T, rtol=1e-6)
    assert sum(ours["losses"][-1]) < sum(ours["losses"][0])


# ----------------------------------------------------------------------------------------------
# Visualisation assignments: Grad-CAM (module hooks, as most course notebooks write it, and tensor
# hooks, as pytorch-grad-cam does), guided backpropagation with the deprecated hooks on in-place ReLUs
# ----------------------------------------------------------------------------------------------


def make_vgg_like(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))


def grad_cam(m, guided_hooks=False, hook_kind="register_backward_hook"):
    torch, nn, F = m.torch, m.nn, m.F
    import warnings
    model = load(m, make_vgg_like(m), weights_of(make_vgg_like))
    model.eval()
    x = torch.tensor(np.random.default_rng(20).standard_normal((2, 3, 8, 8)).astype(np.float32))

    class GradCAM:
        def __init__(self, model, target_layer):
            self.model = model
            self.gradients = None
            self.activations = None
            target_layer.register_forward_hook(self.save_activation)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(target_layer, hook_kind)(self.save_gradient)

        def save_activation(self, module, input, output):
            self.activations = output.detach()

        def save_gradient(self, module, grad_input, grad_output):
            self.gradients = grad_output[0].detach()

        def __call__(self, x, class_idx=None):
            output = self.model(x)
            if class_idx is None:
                class_idx = output.argmax(dim=1)
            self.model.zero_grad()
            one_hot = torch.zeros_like(output)
            one_hot.scatter_(1, class_idx.view(-1, 1), 1.0)
            output.backward(gradient=one_hot, retain_graph=True)
            weights = self.gradients.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * self.activations).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[2:], mode='bilinear', align_corners=False)
            cam_min = cam.view(cam.size(0), -1).min(dim=1)[0].view(-1, 1, 1, 1)
            cam_max = cam.view(cam.size(0), -1).max(dim=1)[0].view(-1, 1, 1, 1)
            return (cam - cam_min) / (cam_max - cam_min + 1e-8), class_idx

    forward_relu_outputs = []
    if guided_hooks:
        def relu_backward_hook_function(module, grad_in, grad_out):
            corresponding_forward_output = forward_relu_outputs[-1]
            corresponding_forward_output[corresponding_forward_output > 0] = 1
            modified_grad_out = corresponding_forward_output * torch.clamp(grad_in[0], min=0.0)
            del forward_relu_outputs[-1]
            return (modified_grad_out,)

        def relu_forward_hook_function(module, ten_in, ten_out):
            forward_relu_outputs.append(ten_out)

        for module in model.modules():
            if isinstance(module, nn.ReLU):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    module.register_backward_hook(relu_backward_hook_function)
                module.register_forward_hook(relu_forward_hook_function)

    gradcam = GradCAM(model, model[3])  # the last conv, followed by an in-place ReLU
    cam_module, classes = gradcam(x)
    kept_after_relu = bool((gradcam.activations >= 0).all())  # the in-place ReLU reached what the hook kept
    guided = None
    if guided_hooks:
        xg = x.clone().requires_grad_()
        out = model(xg)
        model.zero_grad()
        out.backward(gradient=F.one_hot(classes, 5).float())
        guided = xg.grad * F.interpolate(cam_module, size=x.shape[2:])
    # pytorch-grad-cam's way: a forward hook on the ReLU keeping the output and a hook on that tensor
    kept = {}

    def fwd(module, inp, out):
        kept['act'] = out.detach()
        out.register_hook(lambda g: kept.__setitem__('grad', g.detach()))

    h = model[4].register_forward_hook(fwd)
    score = model(x).gather(1, classes[:, None]).sum()
    score.backward()
    h.remove()
    w = kept['grad'].mean(dim=(2, 3), keepdim=True)
    cam_tensor = F.relu((w * kept['act']).sum(1, keepdim=True))
    return {"cam_module": cam_module, "classes": classes, "cam_tensor": cam_tensor, "guided": guided,
            "kept_after_relu": kept_after_relu}


def test_grad_cam_with_module_hooks_and_tensor_hooks():
    ours, _ = run_both(grad_cam, rtol=1e-4, atol=1e-6)
    assert ours["kept_after_relu"] is True
    assert ours["cam_module"].shape == (2, 1, 8, 8) and ours["cam_module"].max() == pytest.approx(1, abs=1e-5)
    # with a full backward hook PyTorch refuses the in-place ReLU on the hooked module's output, and so do we
    with pytest.raises(RuntimeError, match="Output 0 of BackwardHookFunction is a view and is being modified inplace"):
        grad_cam(OURS, hook_kind="register_full_backward_hook")


def test_guided_grad_cam_hooks_on_in_place_relus():
    ours, _ = run_both(grad_cam, guided_hooks=True, rtol=1e-4, atol=1e-6)
    assert ours["kept_after_relu"] is True
