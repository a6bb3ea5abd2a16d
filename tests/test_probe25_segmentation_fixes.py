"""The library fixes of the segmentation probe (tests/test_programs_probe25_segmentation_*.py): what PyTorch does
with the dtypes masks come in. A uint8 mask of class indices is refused by a spatial ``cross_entropy``/``nll_loss``
(PyTorch's nll_loss2d reads int64 only; its 1-d kernel takes uint8); ``x[m] = 0`` with a uint8 ``m`` (and
``index_put_`` of one number) is masked_fill_'s refusal; ``max_pool2d``/``max_pool3d`` refuse bool masks; adaptive
pooling refuses integers and bools in its kernels' words; fractional max pooling refuses integer inputs and
samples of another dtype; ``max_unpool2d`` names the last invalid index its loop meets. Each is checked against
PyTorch where it is installed, and against literals always."""

import warnings

import numpy as np

import autograd
import nn
import nn.functional as F


def outcome(f):
    """f()'s result as an array, or (the error's class name, the start of its message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (uint8 indexing's deprecation)
            result = f()
    except Exception as error:  # noqa: BLE001  (the outcome compared is the error itself)
        return type(error).__name__, str(error).split(" (")[0][:80]
    return np.asarray(result.detach().numpy() if hasattr(result, "detach") else result)


def both(program):
    """program(torch-like module, F) on chainrule, and on PyTorch where installed (else None): dicts of outcomes."""
    ours = program(autograd, F)
    try:
        import torch
    except ImportError:
        return ours, None
    torch.set_num_threads(1)  # (max_unpool's message names the last bad index of one thread's loop)
    return ours, program(torch, torch.nn.functional)


def same(ours, theirs):
    if theirs is None:
        return
    assert ours.keys() == theirs.keys()
    for key in ours:
        a, b = ours[key], theirs[key]
        if isinstance(a, tuple) or isinstance(b, tuple):
            assert a == b, key
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_uint8_target_of_a_spatial_cross_entropy_is_refused():
    def program(torch, F):
        torch.manual_seed(0)
        logits, labels = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
        return dict(
            ce2d=outcome(lambda: F.cross_entropy(logits, labels.to(torch.uint8))),
            ce1d=outcome(lambda: F.cross_entropy(logits[:, :, 0, 0], labels[:, 0, 0].to(torch.uint8))),
            ce3d=outcome(lambda: F.cross_entropy(logits[..., 0], labels[..., 0].to(torch.uint8), ignore_index=255)),
            nll=outcome(lambda: F.nll_loss(logits, labels.to(torch.uint8))),
            nll5d=outcome(lambda: F.nll_loss(logits[..., None], labels[..., None].to(torch.uint8))),
            shape_first=outcome(lambda: F.cross_entropy(logits, labels[:, 0].to(torch.uint8))),
            long=outcome(lambda: F.cross_entropy(logits, labels)),
        )
    ours, theirs = both(program)
    refusal = ("DtypeError", "expected scalar type Long but found Byte")
    assert ours["ce2d"] == ours["ce3d"] == ours["nll"] == ours["nll5d"] == refusal
    assert ours["shape_first"][0] == "ShapeError"
    assert ours["ce1d"].shape == () and np.isfinite(ours["ce1d"])  # (the 1-d kernel takes uint8 labels)
    if theirs is not None:
        for key in ("ce2d", "ce3d", "nll", "nll5d"):
            assert theirs[key] == ("RuntimeError", refusal[1])
        assert theirs["shape_first"][0] == "RuntimeError"
        np.testing.assert_allclose(ours["ce1d"], theirs["ce1d"], rtol=1e-6)
        np.testing.assert_allclose(ours["long"], theirs["long"], rtol=1e-6)


def test_writing_one_number_through_a_uint8_mask_is_refused():
    def program(torch, F):
        mask = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.uint8)

        def write(index, value):
            def f():
                y = torch.zeros(2, 3)
                y[index] = value
                return y
            return outcome(f)

        def put(value, accumulate=False):
            return outcome(lambda: torch.zeros(2, 3).index_put_((mask,), value, accumulate=accumulate))
        return dict(
            scalar=write(mask, 5.0), one=write(mask, torch.tensor([5.0])),
            several=write(mask, torch.tensor([1., 2, 3])),
            bool_mask=write(mask.bool(), 5.0), row_mask=write((slice(None), mask[0]), 3.0),
            int_then_mask=write((0, mask[0]), 3.0), zero_d=write(torch.tensor(1, dtype=torch.uint8), 5.0),
            put=put(torch.tensor(5.0)), put_several=put(torch.tensor([1., 2, 3])),
            put_accumulate=put(torch.tensor(5.0), accumulate=True),
        )
    ours, theirs = both(program)
    refusal = ("RuntimeError", "masked_fill_ only supports boolean masks, but got mask with dtype unsigned char")
    for key in ("scalar", "one", "row_mask", "int_then_mask", "put"):
        assert ours[key] == refusal, key
    np.testing.assert_array_equal(ours["several"], [[1, 0, 2], [0, 0, 3]])
    np.testing.assert_array_equal(ours["put_several"], [[1, 0, 2], [0, 0, 3]])
    np.testing.assert_array_equal(ours["bool_mask"], [[5, 0, 5], [0, 0, 5]])
    np.testing.assert_array_equal(ours["put_accumulate"], [[5, 0, 5], [0, 0, 5]])
    np.testing.assert_array_equal(ours["zero_d"], np.full((2, 3), 5.0))  # (a 0-d uint8 index is a bool)
    same(ours, theirs)


def test_max_pooling_refuses_bool_masks():
    def program(torch, F):
        mask = torch.tensor([[[[True, False, False, True], [False, False, False, False]]]])
        return dict(
            pool2d=outcome(lambda: F.max_pool2d(mask, 2)),
            indices1d=outcome(lambda: F.max_pool1d(mask[0], 2, return_indices=True)[0]),
            pool3d=outcome(lambda: F.max_pool3d(mask[None], (1, 2, 2))),
            uint8=outcome(lambda: F.max_pool2d(mask.to(torch.uint8), 2)),
            values1d=outcome(lambda: F.max_pool1d(mask[0].float(), 2)),
        )
    ours, theirs = both(program)
    assert ours["pool2d"] == ours["indices1d"] == ("NotImplementedError", "\"max_pool2d\" not implemented for 'Bool'")
    assert ours["pool3d"] == ("NotImplementedError", "\"max_pool3d\" not implemented for 'Bool'")
    np.testing.assert_array_equal(ours["uint8"], [[[[1, 1]]]])
    np.testing.assert_array_equal(ours["values1d"], [[[1, 1], [0, 0]]])
    same(ours, theirs)


def test_adaptive_pooling_of_integers_in_its_kernels_words():
    def program(torch, F):
        labels = torch.ones(1, 1, 4, 4, dtype=torch.long)
        return dict(
            avg2d=outcome(lambda: F.adaptive_avg_pool2d(labels, 2)),
            avg2d_one=outcome(lambda: F.adaptive_avg_pool2d(labels, 1)),
            avg2d_none=outcome(lambda: F.adaptive_avg_pool2d(labels, 0).shape),
            avg1d_none=outcome(lambda: F.adaptive_avg_pool1d(labels[0], 0).shape),
            max1d=outcome(lambda: F.adaptive_max_pool1d(labels[0], 0)),
            avg3d=outcome(lambda: F.adaptive_avg_pool3d(labels[None].to(torch.uint8), 2)),
            avg3d_one=outcome(lambda: F.adaptive_avg_pool3d(labels[None].int(), 1)),
            avg3d_none=outcome(lambda: F.adaptive_avg_pool3d(labels[None], 0)),
            max3d=outcome(lambda: F.adaptive_max_pool3d(labels[None].bool(), 1)),
            complex_one=outcome(lambda: F.adaptive_avg_pool2d(labels.to(torch.complex64), 1)),
            complex_two=outcome(lambda: F.adaptive_avg_pool2d(labels.to(torch.complex64), 2)),
        )
    ours, theirs = both(program)
    assert ours["avg2d"] == ("NotImplementedError", "\"adaptive_avg_pool2d\" not implemented for 'Long'")
    assert ours["avg2d_one"] == ("RuntimeError", "mean(): could not infer output dtype. Input dtype must be either a "
                                                 "floating poin")
    assert ours["avg3d_one"] == ours["avg2d_one"]
    np.testing.assert_array_equal(ours["avg2d_none"], [1, 1, 0, 0])
    np.testing.assert_array_equal(ours["avg1d_none"], [1, 4, 0])
    assert ours["max1d"] == ("NotImplementedError", "\"adaptive_max_pool2d\" not implemented for 'Long'")
    assert ours["avg3d"] == ("NotImplementedError", "\"adaptive_avg_pool3d_cpu\" not implemented for 'Byte'")
    assert ours["avg3d_none"] == ("NotImplementedError", "\"adaptive_avg_pool3d_cpu\" not implemented for 'Long'")
    assert ours["max3d"] == ("NotImplementedError", "\"adaptive_max_pool3d_cpu\" not implemented for 'Bool'")
    np.testing.assert_array_equal(ours["complex_one"], [[[[1 + 0j]]]])
    assert ours["complex_two"][0] == "NotImplementedError"
    same(ours, theirs)


def test_fractional_max_pooling_refuses_integers_and_samples_of_another_dtype():
    def program(torch, F):
        torch.manual_seed(0)
        x = torch.randn(1, 1, 5, 5)
        samples = torch.rand(1, 1, 2)
        return dict(
            drawn_long=outcome(lambda: F.fractional_max_pool2d(x.long(), 2, output_size=2)),
            drawn_uint8_3d=outcome(lambda: F.fractional_max_pool3d(x[0].expand(3, 5, 5)[None, None].to(torch.uint8), 1,
                                                                   output_size=2)),
            given_long=outcome(lambda: F.fractional_max_pool2d(x.long(), 2, output_size=2,
                                                               _random_samples=samples.long())),
            given_double=outcome(lambda: F.fractional_max_pool2d(x, 2, output_size=2,
                                                                 _random_samples=samples.double())),
            given_double_bad_shape=outcome(lambda: F.fractional_max_pool2d(x, 2, output_size=2,
                                                                           _random_samples=samples[:, :, :1].double())),
            given=outcome(lambda: F.fractional_max_pool2d(x, 2, output_size=2, _random_samples=samples)),
            after_refusals=torch.rand(2),  # (a refused draw consumes nothing of the generator)
        )
    ours, theirs = both(program)
    assert ours["drawn_long"] == ("NotImplementedError", "\"check_uniform_bounds\" not implemented for 'Long'")
    assert ours["drawn_uint8_3d"] == ("NotImplementedError", "\"check_uniform_bounds\" not implemented for 'Byte'")
    assert ours["given_long"] == ("NotImplementedError",
                                  "\"fractional_max_pool2d_out_frame\" not implemented for 'Long'")
    assert ours["given_double"] == ours["given_double_bad_shape"] == (
        "RuntimeError", "Expect _random_samples to have the same dtype as input")
    autograd.manual_seed(0)
    x = autograd.randn(1, 1, 5, 5).numpy()
    autograd.rand(1, 1, 2)
    np.testing.assert_array_equal(ours["after_refusals"], autograd.rand(2).numpy())
    assert ours["given"].shape == (1, 1, 2, 2) and set(ours["given"].ravel()) <= set(x.ravel())
    same(ours, theirs)


def test_max_unpool_names_the_last_invalid_index():
    def program(torch, F):
        torch.manual_seed(0)
        h = torch.randn(1, 3, 5, 7)  # pooled to 2 x 3, whose default unpooled size, 4 x 6, misses row 4
        pooled, indices = F.max_pool2d(h, 2, 2, return_indices=True)
        return dict(
            indices=indices,
            default=outcome(lambda: F.max_unpool2d(pooled, indices, 2)),
            sized=outcome(lambda: nn.MaxUnpool2d(2)(pooled, indices, output_size=(5, 7)) if torch is autograd
                          else torch.nn.MaxUnpool2d(2)(pooled, indices, output_size=(5, 7))),
        )
    ours, theirs = both(program)
    flat = ours["indices"].ravel()
    last_bad = int(flat[flat >= 24][-1])
    assert ours["default"] == ("RuntimeError", f"Found an invalid max index: {last_bad}")
    assert ours["sized"].shape == (1, 3, 5, 7)
    same(ours, theirs)


def test_uint8_images_resize_in_fixed_point():
    def program(torch, F):
        rng = np.random.default_rng(0)
        out = {}
        for mode, antialias, align_corners, size in [("bilinear", False, False, (13, 31)),
                                                     ("bilinear", False, True, (5, 9)),
                                                     ("bilinear", True, False, (4, 6)),
                                                     ("bicubic", False, False, (20, 7)),
                                                     ("bicubic", False, True, (9, 25)),
                                                     ("bicubic", True, False, (3, 11))]:
            image = torch.tensor(rng.integers(0, 256, (2, 3, 8, 15)).astype(np.uint8))
            image[:, :, ::3] = 255  # (a bicubic overshoot past 255 is clamped)
            key = f"{mode}-{antialias}-{align_corners}"
            out[key] = outcome(lambda image=image, size=size, mode=mode, antialias=antialias, corners=align_corners:
                               F.interpolate(image, size=size, mode=mode, antialias=antialias, align_corners=corners))
        out["scale_factor"] = outcome(lambda: F.interpolate(image, scale_factor=(1.7, 0.45), mode="bilinear"))
        out["kept_rows"] = outcome(lambda: F.interpolate(image, size=(8, 4), mode="bilinear"))
        out["linear_refused"] = outcome(lambda: F.interpolate(image[0], size=4, mode="linear"))
        return out
    ours, theirs = both(program)
    for key, value in ours.items():
        if key != "linear_refused":
            assert value.dtype == np.uint8, key
    assert ours["linear_refused"] == ("NotImplementedError",
                                      "\"compute_indices_weights_linear\" not implemented for 'Byte'")
    image = autograd.tensor([[[[0, 100, 200], [50, 150, 250]]]], dtype=autograd.uint8)
    np.testing.assert_array_equal(F.interpolate(image, size=(2, 5), mode="bilinear").numpy(),
                                  [[[[0, 40, 100, 160, 200], [50, 90, 150, 210, 250]]]])
    np.testing.assert_array_equal(F.interpolate(image, size=(1, 2), mode="bilinear", antialias=True).numpy(),
                                  [[[[63, 188]]]])
    if theirs is not None:
        for key in ours:
            if isinstance(ours[key], tuple):
                assert ours[key] == theirs[key], key
            else:
                np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
