# ruff: noqa: B007, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. Monodepth2 (tuple-keyed
``OrderedDict`` decoder, backprojection by inverse intrinsics, projection and ``grid_sample(border)``, axis-angle
poses written element by element, SSIM by ``AvgPool2d(3, 1)``, auto-masking with seeded noise, edge-aware
smoothness)."""

import numpy as np

from .probe15_dense_common import F32, images
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Monodepth2 (self-supervised monocular depth): a depth decoder keyed by tuples in an OrderedDict
# (ReflectionPad2d convs, ELU, nearest x2 upsampling, multi-scale sigmoid disparities), a pose decoder,
# backprojection by matmul with inverse intrinsics over a meshgrid held in a frozen nn.Parameter,
# projection and grid_sample(padding_mode="border"), axis-angle rotations written element by element,
# SSIM by AvgPool2d(3, 1), auto-masking by torch.min over stacked losses with seeded noise, and the
# edge-aware smoothness of mean-normalised disparity
# ----------------------------------------------------------------------------------------------


def monodepth(m, num_ch_enc=(4, 8, 8)):
    nn, torch, F = m.nn, m.torch, m.F
    from collections import OrderedDict

    class Conv3x3(nn.Module):
        def __init__(self, in_channels, out_channels, use_refl=True):
            super(Conv3x3, self).__init__()
            if use_refl:
                self.pad = nn.ReflectionPad2d(1)
            else:
                self.pad = nn.ZeroPad2d(1)
            self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

        def forward(self, x):
            out = self.pad(x)
            out = self.conv(out)
            return out

    class ConvBlock(nn.Module):
        def __init__(self, in_channels, out_channels):
            super(ConvBlock, self).__init__()
            self.conv = Conv3x3(in_channels, out_channels)
            self.nonlin = nn.ELU(inplace=True)

        def forward(self, x):
            out = self.conv(x)
            out = self.nonlin(out)
            return out

    def upsample(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    class Encoder(nn.Module):
        def __init__(self, num_input_images=1):
            super().__init__()
            self.num_ch_enc = np.array(num_ch_enc)
            chans = [3 * num_input_images] + list(num_ch_enc)
            self.layers = nn.ModuleList([
                nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                              nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True))
                for i in range(len(num_ch_enc))])

        def forward(self, input_image):
            self.features = []
            x = (input_image - 0.45) / 0.225
            for layer in self.layers:
                x = layer(x)
                self.features.append(x)
            return self.features

    class DepthDecoder(nn.Module):
        def __init__(self, num_ch_enc, scales=range(3), num_output_channels=1, use_skips=True):
            super(DepthDecoder, self).__init__()
            self.num_output_channels = num_output_channels
            self.use_skips = use_skips
            self.upsample_mode = 'nearest'
            self.scales = scales
            self.num_ch_enc = num_ch_enc
            self.num_ch_dec = np.array([4, 4, 8])
            self.convs = OrderedDict()
            for i in range(2, -1, -1):
                num_ch_in = self.num_ch_enc[-1] if i == 2 else self.num_ch_dec[i + 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 0)] = ConvBlock(num_ch_in, num_ch_out)
                num_ch_in = self.num_ch_dec[i]
                if self.use_skips and i > 0:
                    num_ch_in += self.num_ch_enc[i - 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 1)] = ConvBlock(num_ch_in, num_ch_out)
            for s in self.scales:
                self.convs[("dispconv", s)] = Conv3x3(self.num_ch_dec[s], self.num_output_channels)
            self.decoder = nn.ModuleList(list(self.convs.values()))
            self.sigmoid = nn.Sigmoid()

        def forward(self, input_features):
            self.outputs = {}
            x = input_features[-1]
            for i in range(2, -1, -1):
                x = self.convs[("upconv", i, 0)](x)
                x = [upsample(x)]
                if self.use_skips and i > 0:
                    x += [input_features[i - 1]]
                x = torch.cat(x, 1)
                x = self.convs[("upconv", i, 1)](x)
                if i in self.scales:
                    self.outputs[("disp", i)] = self.sigmoid(self.convs[("dispconv", i)](x))
            return self.outputs

    class PoseDecoder(nn.Module):
        def __init__(self, num_ch_enc, num_input_features, num_frames_to_predict_for=None, stride=1):
            super(PoseDecoder, self).__init__()
            self.num_ch_enc = num_ch_enc
            self.num_input_features = num_input_features
            if num_frames_to_predict_for is None:
                num_frames_to_predict_for = num_input_features - 1
            self.num_frames_to_predict_for = num_frames_to_predict_for
            self.convs = OrderedDict()
            self.convs[("squeeze")] = nn.Conv2d(self.num_ch_enc[-1], 8, 1)
            self.convs[("pose", 0)] = nn.Conv2d(num_input_features * 8, 8, 3, stride, 1)
            self.convs[("pose", 1)] = nn.Conv2d(8, 8, 3, stride, 1)
            self.convs[("pose", 2)] = nn.Conv2d(8, 6 * num_frames_to_predict_for, 1)
            self.relu = nn.ReLU()
            self.net = nn.ModuleList(list(self.convs.values()))

        def forward(self, input_features):
            last_features = [f[-1] for f in input_features]
            cat_features = [self.relu(self.convs["squeeze"](f)) for f in last_features]
            cat_features = torch.cat(cat_features, 1)
            out = cat_features
            for i in range(3):
                out = self.convs[("pose", i)](out)
                if i != 2:
                    out = self.relu(out)
            out = out.mean(3).mean(2)
            out = 0.01 * out.view(-1, self.num_frames_to_predict_for, 1, 6)
            axisangle = out[..., :3]
            translation = out[..., 3:]
            return axisangle, translation

    class BackprojectDepth(nn.Module):
        def __init__(self, batch_size, height, width):
            super(BackprojectDepth, self).__init__()
            self.batch_size = batch_size
            self.height = height
            self.width = width
            meshgrid = np.meshgrid(range(self.width), range(self.height), indexing='xy')
            self.id_coords = np.stack(meshgrid, axis=0).astype(np.float32)
            self.id_coords = nn.Parameter(torch.from_numpy(self.id_coords), requires_grad=False)
            self.ones = nn.Parameter(torch.ones(self.batch_size, 1, self.height * self.width), requires_grad=False)
            self.pix_coords = torch.unsqueeze(torch.stack(
                [self.id_coords[0].view(-1), self.id_coords[1].view(-1)], 0), 0)
            self.pix_coords = self.pix_coords.repeat(batch_size, 1, 1)
            self.pix_coords = nn.Parameter(torch.cat([self.pix_coords, self.ones], 1), requires_grad=False)

        def forward(self, depth, inv_K):
            cam_points = torch.matmul(inv_K[:, :3, :3], self.pix_coords)
            cam_points = depth.view(self.batch_size, 1, -1) * cam_points
            cam_points = torch.cat([cam_points, self.ones], 1)
            return cam_points

    class Project3D(nn.Module):
        def __init__(self, batch_size, height, width, eps=1e-7):
            super(Project3D, self).__init__()
            self.batch_size = batch_size
            self.height = height
            self.width = width
            self.eps = eps

        def forward(self, points, K, T):
            P = torch.matmul(K, T)[:, :3, :]
            cam_points = torch.matmul(P, points)
            pix_coords = cam_points[:, :2, :] / (cam_points[:, 2, :].unsqueeze(1) + self.eps)
            pix_coords = pix_coords.view(self.batch_size, 2, self.height, self.width)
            pix_coords = pix_coords.permute(0, 2, 3, 1)
            pix_coords[..., 0] /= self.width - 1
            pix_coords[..., 1] /= self.height - 1
            pix_coords = (pix_coords - 0.5) * 2
            return pix_coords

    class SSIM(nn.Module):
        def __init__(self):
            super(SSIM, self).__init__()
            self.mu_x_pool = nn.AvgPool2d(3, 1)
            self.mu_y_pool = nn.AvgPool2d(3, 1)
            self.sig_x_pool = nn.AvgPool2d(3, 1)
            self.sig_y_pool = nn.AvgPool2d(3, 1)
            self.sig_xy_pool = nn.AvgPool2d(3, 1)
            self.refl = nn.ReflectionPad2d(1)
            self.C1 = 0.01 ** 2
            self.C2 = 0.03 ** 2

        def forward(self, x, y):
            x = self.refl(x)
            y = self.refl(y)
            mu_x = self.mu_x_pool(x)
            mu_y = self.mu_y_pool(y)
            sigma_x = self.sig_x_pool(x ** 2) - mu_x ** 2
            sigma_y = self.sig_y_pool(y ** 2) - mu_y ** 2
            sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y
            SSIM_n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
            SSIM_d = (mu_x ** 2 + mu_y ** 2 + self.C1) * (sigma_x + sigma_y + self.C2)
            return torch.clamp((1 - SSIM_n / SSIM_d) / 2, 0, 1)

    models = nn.ModuleDict({
        "encoder": Encoder(), "depth": DepthDecoder(np.array(num_ch_enc)),
        "pose_encoder": Encoder(num_input_images=2), "pose": PoseDecoder(np.array(num_ch_enc), 1, 2)})
    return models, dict(BackprojectDepth=BackprojectDepth, Project3D=Project3D, SSIM=SSIM)


def monodepth_parts(m):
    return monodepth(m)[0]


def rot_from_axisangle(torch, vec):
    angle = torch.norm(vec, 2, 2, True)
    axis = vec / (angle + 1e-7)
    ca = torch.cos(angle)
    sa = torch.sin(angle)
    C = 1 - ca
    x = axis[..., 0].unsqueeze(1)
    y = axis[..., 1].unsqueeze(1)
    z = axis[..., 2].unsqueeze(1)
    xs = x * sa
    ys = y * sa
    zs = z * sa
    xC = x * C
    yC = y * C
    zC = z * C
    xyC = x * yC
    yzC = y * zC
    zxC = z * xC
    rot = torch.zeros((vec.shape[0], 4, 4), device=vec.device)
    rot[:, 0, 0] = torch.squeeze(x * xC + ca)
    rot[:, 0, 1] = torch.squeeze(xyC - zs)
    rot[:, 0, 2] = torch.squeeze(zxC + ys)
    rot[:, 1, 0] = torch.squeeze(xyC + zs)
    rot[:, 1, 1] = torch.squeeze(y * yC + ca)
    rot[:, 1, 2] = torch.squeeze(yzC - xs)
    rot[:, 2, 0] = torch.squeeze(zxC - ys)
    rot[:, 2, 1] = torch.squeeze(yzC + xs)
    rot[:, 2, 2] = torch.squeeze(z * zC + ca)
    rot[:, 3, 3] = 1
    return rot


def get_translation_matrix(torch, translation_vector):
    T = torch.zeros(translation_vector.shape[0], 4, 4).to(device=translation_vector.device)
    t = translation_vector.contiguous().view(-1, 3, 1)
    T[:, 0, 0] = 1
    T[:, 1, 1] = 1
    T[:, 2, 2] = 1
    T[:, 3, 3] = 1
    T[:, :3, 3, None] = t
    return T


def transformation_from_parameters(torch, axisangle, translation, invert=False):
    R = rot_from_axisangle(torch, axisangle)
    t = translation.clone()
    if invert:
        R = R.transpose(1, 2)
        t *= -1
    T = get_translation_matrix(torch, t)
    if invert:
        M = torch.matmul(R, T)
    else:
        M = torch.matmul(T, R)
    return M


def monodepth_training(m, weights, steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    models, layers = monodepth(m)
    models = load(m, models, weights)
    B, H, W = 2, 16, 24
    scales = [0, 1, 2]
    frame_ids = [0, -1, 1]
    backproject_depth = layers["BackprojectDepth"](B, H, W)
    project_3d = layers["Project3D"](B, H, W)
    ssim = layers["SSIM"]()
    K = np.array([[0.58 * W, 0, 0.5 * W, 0], [0, 1.92 * H, 0.5 * H, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    inputs = {("K", 0): torch.from_numpy(K).unsqueeze(0).repeat(B, 1, 1),
              ("inv_K", 0): torch.from_numpy(np.linalg.pinv(K)).unsqueeze(0).repeat(B, 1, 1)}
    for seed, f_i in enumerate(frame_ids):
        inputs[("color", f_i, 0)] = torch.tensor(images((B, 3, H, W), seed=10 + seed))
    parameters_to_train = list(models["encoder"].parameters()) + list(models["depth"].parameters()) \
        + list(models["pose_encoder"].parameters()) + list(models["pose"].parameters())
    model_optimizer = optim.Adam(parameters_to_train, 1e-3)
    model_lr_scheduler = optim.lr_scheduler.StepLR(model_optimizer, 1, 0.1)

    def disp_to_depth(disp, min_depth, max_depth):
        min_disp = 1 / max_depth
        max_disp = 1 / min_depth
        scaled_disp = min_disp + (max_disp - min_disp) * disp
        depth = 1 / scaled_disp
        return scaled_disp, depth

    def compute_reprojection_loss(pred, target):
        abs_diff = torch.abs(target - pred)
        l1_loss = abs_diff.mean(1, True)
        ssim_loss = ssim(pred, target).mean(1, True)
        return 0.85 * ssim_loss + 0.15 * l1_loss

    def get_smooth_loss(disp, img):
        grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
        grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
        grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
        grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
        grad_disp_x *= torch.exp(-grad_img_x)
        grad_disp_y *= torch.exp(-grad_img_y)
        return grad_disp_x.mean() + grad_disp_y.mean()

    history = []
    torch.manual_seed(0)
    for step in range(steps):
        features = models["encoder"](inputs[("color", 0, 0)])
        outputs = models["depth"](features)
        for f_i in frame_ids[1:]:
            if f_i < 0:
                pose_inputs = [inputs[("color", f_i, 0)], inputs[("color", 0, 0)]]
            else:
                pose_inputs = [inputs[("color", 0, 0)], inputs[("color", f_i, 0)]]
            pose_inputs = [models["pose_encoder"](torch.cat(pose_inputs, 1))]
            axisangle, translation = models["pose"](pose_inputs)
            outputs[("axisangle", 0, f_i)] = axisangle
            outputs[("translation", 0, f_i)] = translation
            outputs[("cam_T_cam", 0, f_i)] = transformation_from_parameters(
                torch, axisangle[:, 0], translation[:, 0], invert=(f_i < 0))
        for scale in scales:
            disp = outputs[("disp", scale)]
            disp = F.interpolate(disp, [H, W], mode="bilinear", align_corners=False)
            _, depth = disp_to_depth(disp, 0.1, 100.0)
            outputs[("depth", 0, scale)] = depth
            for i, frame_id in enumerate(frame_ids[1:]):
                T = outputs[("cam_T_cam", 0, frame_id)]
                cam_points = backproject_depth(depth, inputs[("inv_K", 0)])
                pix_coords = project_3d(cam_points, inputs[("K", 0)], T)
                outputs[("sample", frame_id, scale)] = pix_coords
                outputs[("color", frame_id, scale)] = F.grid_sample(
                    inputs[("color", frame_id, 0)], outputs[("sample", frame_id, scale)],
                    padding_mode="border", align_corners=True)
        losses = {}
        total_loss = 0
        for scale in scales:
            loss = 0
            reprojection_losses = []
            disp = outputs[("disp", scale)]
            color = inputs[("color", 0, 0)]
            color = F.interpolate(color, disp.shape[-2:], mode="area") if scale else color
            target = inputs[("color", 0, 0)]
            for frame_id in frame_ids[1:]:
                pred = outputs[("color", frame_id, scale)]
                reprojection_losses.append(compute_reprojection_loss(pred, target))
            reprojection_losses = torch.cat(reprojection_losses, 1)
            identity_reprojection_losses = []
            for frame_id in frame_ids[1:]:
                pred = inputs[("color", frame_id, 0)]
                identity_reprojection_losses.append(compute_reprojection_loss(pred, target))
            identity_reprojection_losses = torch.cat(identity_reprojection_losses, 1)
            identity_reprojection_loss = identity_reprojection_losses
            reprojection_loss = reprojection_losses
            identity_reprojection_loss += torch.randn(identity_reprojection_loss.shape) * 0.00001
            combined = torch.cat((identity_reprojection_loss, reprojection_loss), dim=1)
            if combined.shape[1] == 1:
                to_optimise = combined
            else:
                to_optimise, idxs = torch.min(combined, dim=1)
            outputs["identity_selection/{}".format(scale)] = (idxs > identity_reprojection_loss.shape[1] - 1).float()
            loss += to_optimise.mean()
            mean_disp = disp.mean(2, True).mean(3, True)
            norm_disp = disp / (mean_disp + 1e-7)
            smooth_loss = get_smooth_loss(norm_disp, color)
            loss += 1e-3 * smooth_loss / (2 ** scale)
            total_loss += loss
            losses["loss/{}".format(scale)] = loss
        total_loss /= len(scales)
        losses["loss"] = total_loss
        model_optimizer.zero_grad()
        losses["loss"].backward()
        model_optimizer.step()
        model_lr_scheduler.step()
        history.append({k: v.item() for k, v in losses.items()})
    grads = {name: p.grad for name, p in models.named_parameters()}
    return (history, outputs[("depth", 0, 0)], outputs[("cam_T_cam", 0, -1)], outputs[("sample", 1, 0)],
            outputs["identity_selection/0"], grads, models.state_dict())


def test_monodepth2_self_supervised_depth():
    weights = weights_of(monodepth_parts)
    ours, _ = run_both(monodepth_training, weights, **F32)
    history, depth, T, sample, selection, grads, state = ours
    assert depth.shape == (2, 1, 16, 24) and 0.1 <= depth.min() and depth.max() <= 100.0
    # a rigid motion: the rotation block orthonormal, the bottom row (0, 0, 0, 1)
    R = T[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(T[:, 3], [[0, 0, 0, 1]] * 2)
    assert set(np.unique(selection)) <= {0.0, 1.0}
