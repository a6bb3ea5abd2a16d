"""``fuse_modules`` and ``fuse_modules_qat``: layers that run one after another merged into one, as PyTorch's.

For each list of submodule names the first becomes the fused module and the rest ``nn.Identity``; for d = 1, 2, 3:

    (Convdd, BatchNormdd)          eval: the conv with the norm folded in;  QAT: nn.intrinsic.ConvBndd (d = 2)
    (Convdd, BatchNormdd, ReLU)    eval: ConvReLUdd of the folded conv;     QAT: ConvBnReLUdd (d = 2)
    (Convdd, ReLU)                 ConvReLUdd (QAT: d = 2)
    (ConvTransposedd, BatchNormdd) eval: the transposed conv with the norm folded in (not for QAT)
    (BatchNormdd, ReLU)            BNReLUdd (d = 2, 3)
    (Linear, BatchNorm1d)          eval: the linear layer with the norm folded in
    (Linear, ReLU)                 LinearReLU

(only the 2-d fused layers have ``nn.intrinsic.qat`` forms for ``prepare_qat``, so fusing a 1-d or 3-d
convolution for QAT is refused)."""

import copy

import nn
import nn.intrinsic as nni
from nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval


def _same_mode(*modules):
    if len({m.training for m in modules}) != 1:
        raise AssertionError("Conv and BN both must be in the same mode (train or eval).")


def _check_norm(conv, bn):
    if bn.num_features != conv.out_channels:
        raise AssertionError("Output channel of Conv2d must match num_features of BatchNorm2d.")
    if not bn.affine:
        raise AssertionError("Only support fusing BatchNorm2d with affine set to True")
    if not bn.track_running_stats:
        raise AssertionError("Only support fusing BatchNorm2d with tracking_running_stats set to True")


def _qat_built(fused):
    """Only the 2-d fused layers have nn.intrinsic.qat forms here: fusing a 1-d or 3-d one for QAT would leave
    prepare_qat nothing to swap it for (its convolution would train unquantized), so it is refused."""
    if not fused.endswith("2d"):
        raise NotImplementedError(f"fusing for QAT into {fused} (nn.intrinsic.qat.{fused}) is not built in chainrule; "
                                  "fuse_modules (for inference) fuses it")
    return getattr(nni, fused)


def fuse_conv_bn(is_qat, conv, bn):
    _same_mode(conv, bn)
    if is_qat:
        _check_norm(conv, bn)
        return _qat_built(f"ConvBn{len(conv.kernel_size)}d")(conv, bn)
    return fuse_conv_bn_eval(conv, bn)


def fuse_conv_bn_relu(is_qat, conv, bn, relu):
    _same_mode(conv, bn, relu)
    if is_qat:
        _check_norm(conv, bn)
        return _qat_built(f"ConvBnReLU{len(conv.kernel_size)}d")(conv, bn, relu)
    return getattr(nni, f"ConvReLU{len(conv.kernel_size)}d")(fuse_conv_bn_eval(conv, bn), relu)


def fuse_conv_relu(is_qat, conv, relu):
    name = f"ConvReLU{len(conv.kernel_size)}d"
    return (_qat_built(name) if is_qat else getattr(nni, name))(conv, relu)


def fuse_convtranspose_bn(is_qat, convt, bn):
    _same_mode(convt, bn)
    if is_qat:
        raise Exception("Fusing ConvTranspose+BatchNorm not yet supported in QAT.")  # (PyTorch's plain Exception)
    return fuse_conv_bn_eval(convt, bn, transpose=True)


def fuse_linear_bn(is_qat, linear, bn):
    _same_mode(linear, bn)
    if is_qat:
        raise NotImplementedError("fusing Linear and BatchNorm1d for QAT (LinearBn1d) is not built in chainrule")
    return fuse_linear_bn_eval(linear, bn)


def _fuser_methods():
    methods = {(nn.Linear, nn.BatchNorm1d): fuse_linear_bn,
               (nn.Linear, nn.ReLU): lambda is_qat, linear, relu: nni.LinearReLU(linear, relu),
               (nn.BatchNorm2d, nn.ReLU): lambda is_qat, bn, relu: nni.BNReLU2d(bn, relu),
               (nn.BatchNorm3d, nn.ReLU): lambda is_qat, bn, relu: nni.BNReLU3d(bn, relu)}
    for dims in (1, 2, 3):
        conv, norm = getattr(nn, f"Conv{dims}d"), getattr(nn, f"BatchNorm{dims}d")
        methods[(conv, norm)] = fuse_conv_bn
        methods[(conv, norm, nn.ReLU)] = fuse_conv_bn_relu
        methods[(conv, nn.ReLU)] = fuse_conv_relu
        methods[(getattr(nn, f"ConvTranspose{dims}d"), norm)] = fuse_convtranspose_bn
    return methods


def get_fuser_method(op_list, additional_fuser_method_mapping=None):
    """The function that fuses modules of these types (in this order)."""
    fuser_method = {**_fuser_methods(), **(additional_fuser_method_mapping or {})}.get(op_list)
    if fuser_method is None:
        raise AssertionError(f"did not find fuser method for: {op_list} ")
    return fuser_method


def fuse_known_modules(mod_list, is_qat, additional_fuser_method_mapping=None):
    """The fused module and Identities for ``mod_list`` (the first's pre-hooks and the last's hooks move to the
    fused module)."""
    types = tuple(type(m) for m in mod_list)
    fused = get_fuser_method(types, additional_fuser_method_mapping)(is_qat, *mod_list)
    for hook in mod_list[0]._forward_pre_hooks.values():
        fused.register_forward_pre_hook(hook)
    mod_list[0]._forward_pre_hooks.clear()
    for hook in mod_list[-1]._forward_hooks.values():
        fused.register_forward_hook(hook)
    mod_list[-1]._forward_hooks.clear()
    identities = []
    for _ in mod_list[1:]:
        identity = nn.Identity()
        identity.training = mod_list[0].training
        identities.append(identity)
    return [fused, *identities]


def _get_module(model, name):
    for token in name.split("."):
        model = getattr(model, token)
    return model


def _set_module(model, name, module):
    *path, last = name.split(".")
    setattr(_get_module(model, ".".join(path)) if path else model, last, module)


def _fuse_modules(model, modules_to_fuse, is_qat, inplace, fuser_func, fuse_custom_config_dict):
    if not inplace:
        model = copy.deepcopy(model)
    additional = (fuse_custom_config_dict or {}).get("additional_fuser_method_mapping", {})
    groups = [modules_to_fuse] if all(isinstance(name, str) for name in modules_to_fuse) else modules_to_fuse
    for names in groups:
        fused = fuser_func([_get_module(model, name) for name in names], is_qat, additional)
        for name, module in zip(names, fused):
            _set_module(model, name, module)
    return model


def fuse_modules(model, modules_to_fuse, inplace=False, fuser_func=fuse_known_modules, fuse_custom_config_dict=None):
    """Fuse each list of submodules (names) for inference: batch norms folded into the layer before them."""
    return _fuse_modules(model, modules_to_fuse, False, inplace, fuser_func, fuse_custom_config_dict)


def fuse_modules_qat(model, modules_to_fuse, inplace=False, fuser_func=fuse_known_modules,
                     fuse_custom_config_dict=None):
    """Fuse each list of submodules (names) for QAT: into nn.intrinsic modules that prepare_qat swaps."""
    return _fuse_modules(model, modules_to_fuse, True, inplace, fuser_func, fuse_custom_config_dict)


__all__ = ["fuse_known_modules", "fuse_modules", "fuse_modules_qat", "get_fuser_method"]
