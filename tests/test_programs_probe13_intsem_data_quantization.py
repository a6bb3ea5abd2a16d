# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Integer, bool and uint8 programs, run as tests/probe13_intsem_common.py says. Data and quantisation: token
pipelines on int64 (a collate that pads with ``[pad] * (max_len - len(ids))`` where max_len is a 0-d tensor, T5's
relative-position buckets, position ids from an attention mask, causal masks from ``finfo.min``, label masking with
-100, n-gram hashing that wraps int64, floor/trunc division and remainder of negatives,
``unique``/``bincount``/``searchsorted``); int8/uint8/int4 quantisation (absmax, zero points, nibble packing into
uint8 and GPTQ's int32 words, arithmetic right shifts); MNIST's idx files (``frombuffer``, byte flips through uint8
views, NumPy's big-endian dtypes); a mask regressor trained by ``mse_loss``/``smooth_l1_loss`` against bool masks."""

import math
import struct

import numpy as np
import pytest

from .probe13_intsem_common import typed
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Token pipelines on int64
# ----------------------------------------------------------------------------------------------


def token_pipeline(m):
    torch = m.torch
    pad_id = 0
    sequences = [[5, 17, 3], [8, 2, 9, 11, 4], [7], [6, 6, 13, 2]]

    def collate(batch):
        lengths = torch.tensor([len(s) for s in batch])
        max_len = lengths.max()  # a 0-d tensor
        ids = torch.tensor([s + [pad_id] * (max_len - len(s)) for s in batch])
        return ids, lengths

    ids, lengths = collate(sequences)
    out = {"ids": typed(ids), "lengths": typed(lengths)}
    attention_mask = (ids != pad_id).to(torch.long)
    out["attention_mask"] = typed(attention_mask)
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    out["position_ids"] = typed(position_ids)
    out["bool_cumsum"] = typed((ids != pad_id).cumsum(dim=1))
    out["n_tokens"] = typed(attention_mask.sum())
    out["n_tokens_item"] = (ids != pad_id).sum().item()

    # a causal mask and the padding mask, in the model's dtype's most negative value
    dtype = torch.float32
    tgt_len = ids.shape[1]
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    expanded = attention_mask[:, None, None, :].expand(ids.shape[0], 1, tgt_len, tgt_len).to(dtype)
    inverted = 1.0 - expanded
    out["causal"] = typed(mask)
    out["padding"] = typed(inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min))
    out["bool_causal"] = typed(~torch.triu(torch.ones(tgt_len, tgt_len, dtype=torch.bool), diagonal=1))
    out["pair_mask"] = typed(attention_mask.bool().unsqueeze(1) & attention_mask.bool().unsqueeze(2))

    # labels: padding to -100, shifted, counted
    labels = ids.clone()
    labels[labels == pad_id] = -100
    shift_labels = labels[..., 1:].contiguous()
    out["labels"] = typed(shift_labels)
    out["n_labels"] = typed((shift_labels != -100).sum())
    preds = (ids * 7 + 3) % 16
    correct = (preds[..., :-1] == shift_labels).masked_select(shift_labels != -100)
    out["accuracy"] = typed(correct.float().mean())
    out["accuracy_py"] = correct.sum().item() / correct.numel()

    # T5's relative position buckets (bidirectional and causal)
    def _relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
        relative_buckets = 0
        if bidirectional:
            num_buckets //= 2
            relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
            relative_position = torch.abs(relative_position)
        else:
            relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact
        relative_position_if_large = max_exact + (
            torch.log(relative_position.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).to(torch.long)
        relative_position_if_large = torch.min(
            relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1)
        )
        relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
        return relative_buckets

    context_position = torch.arange(40, dtype=torch.long)[:, None]
    memory_position = torch.arange(40, dtype=torch.long)[None, :]
    relative_position = (memory_position - context_position) * 5
    out["t5_bidirectional"] = typed(_relative_position_bucket(relative_position))
    out["t5_causal"] = typed(_relative_position_bucket(relative_position, bidirectional=False, num_buckets=16))

    # n-gram hashing (FNV-1a over int64, wrapping), into buckets
    h = torch.full((ids.shape[0], ids.shape[1] - 1), 14695981039346656037 - 2 ** 64, dtype=torch.int64)
    for token in (ids[:, :-1], ids[:, 1:]):
        h = (h ^ token) * 1099511628211
    out["fnv"] = typed(h)
    out["bucket_remainder"] = typed(h % 1000)
    out["bucket_fmod"] = typed(torch.fmod(h, 1000))
    out["bucket_neg_divisor"] = typed(torch.remainder(h, -1000))
    out["floor_div"] = typed(torch.div(h, 1000, rounding_mode="floor"))
    out["trunc_div"] = typed(torch.div(h, 1000, rounding_mode="trunc"))
    out["floordiv_op"] = typed(h // -7)
    out["shift_right"] = typed(h >> 33)
    out["low_bits"] = typed(h & 0xFFFF)
    out["xor_fold"] = typed((h >> 32) ^ (h & 0xFFFFFFFF))
    out["true_div"] = typed(ids / 4)

    # a vocabulary's statistics
    flat = ids[ids != pad_id]
    uniq, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True)
    out["unique"] = (typed(uniq), typed(inverse), typed(counts))
    order = counts.argsort(descending=True, stable=True)
    out["by_frequency"] = typed(uniq[order])
    out["bincount"] = typed(torch.bincount(flat, minlength=20))
    boundaries = torch.tensor([0, 4, 8, 12])
    out["bucketize"] = typed(torch.bucketize(flat, boundaries))
    out["bucketize_right"] = typed(torch.bucketize(flat, boundaries, right=True, out_int32=True))
    out["searchsorted"] = typed(torch.searchsorted(boundaries, flat, side="right"))
    out["sorted"] = typed(flat.sort(stable=True).values)
    out["argsort"] = typed(flat.argsort(stable=True))
    out["repeat_counts"] = typed(torch.repeat_interleave(counts.int()))
    out["one_hot"] = typed(m.F.one_hot(ids[0], num_classes=20).sum(0))
    return out


def test_token_pipeline_on_int64():
    ours, _ = run_both(token_pipeline, rtol=0, atol=0)
    np.testing.assert_array_equal(ours["ids"][1], [[5, 17, 3, 0, 0], [8, 2, 9, 11, 4], [7, 0, 0, 0, 0],
                                                   [6, 6, 13, 2, 0]])
    np.testing.assert_array_equal(ours["position_ids"][1][0], [0, 1, 2, 1, 1])
    assert ours["bool_cumsum"][0] == "int64" and ours["repeat_counts"][0] == "int32"
    assert ours["bucketize_right"][0] == "int32"
    h = ours["fnv"][1]  # by hand: Python's floored and C's truncated remainders
    np.testing.assert_array_equal(ours["bucket_remainder"][1], np.array([[int(v) % 1000 for v in r] for r in h]))
    np.testing.assert_array_equal(ours["bucket_fmod"][1], np.fmod(h, 1000))
    assert (ours["bucket_neg_divisor"][1] <= 0).all()


# ----------------------------------------------------------------------------------------------
# Quantisation: absmax int8, zero-point uint8, int4 packed in uint8 and in GPTQ's int32 words
# ----------------------------------------------------------------------------------------------


def quantization(m):
    torch = m.torch
    rng = np.random.default_rng(2)
    w = torch.tensor(rng.standard_normal((8, 16)).astype(np.float32))
    a = torch.tensor(rng.standard_normal((4, 16)).astype(np.float32))
    out = {}

    def quantize_absmax(x):
        scale = x.abs().amax(dim=-1, keepdim=True) / 127
        q = torch.round(x / scale).clamp(-128, 127).to(torch.int8)
        return q, scale

    qw, sw = quantize_absmax(w)
    qa, sa = quantize_absmax(a)
    out["qw"] = typed(qw)
    acc = qa.to(torch.int32) @ qw.to(torch.int32).T
    out["int32_matmul"] = typed(acc)
    out["dequant_matmul"] = typed(acc.float() * (sa * sw.T))
    out["int8_sum"] = typed(qw.sum(dim=1))
    out["int8_sum_int8"] = typed(qw.sum(dim=1, dtype=torch.int8))
    out["int8_product"] = typed(qw[:, :3].prod(dim=1))
    out["int8_widen"] = typed(qw * qw)  # int8 * int8 stays int8 and wraps
    out["int8_abs_min"] = typed(torch.tensor([-128, -127, 5], dtype=torch.int8).abs())
    out["int8_neg_min"] = typed(-torch.tensor([-128, 3], dtype=torch.int8))

    # asymmetric uint8 with a zero point
    lo, hi = w.amin(), w.amax()
    scale = (hi - lo) / 255
    zero_point = (-lo / scale).round().clamp(0, 255).to(torch.uint8)
    qu = (w / scale + zero_point).round().clamp(0, 255).to(torch.uint8)
    out["zero_point"] = typed(zero_point)
    out["qu"] = typed(qu)
    out["dequant_right"] = typed((qu.to(torch.int32) - zero_point.to(torch.int32)).float() * scale)
    out["dequant_wrapping"] = typed((qu - zero_point).float() * scale)  # uint8 - uint8 wraps: the classic bug
    out["dequant_promoting"] = typed((qu - zero_point.item()).float())  # a Python int keeps uint8 too

    # int4: two nibbles a byte, low first
    q4 = torch.round(w / (w.abs().amax() / 7)).clamp(-8, 7).to(torch.int8)
    packed = (q4[:, ::2] & 0xF).to(torch.uint8) | ((q4[:, 1::2] & 0xF).to(torch.uint8) << 4)
    out["packed"] = typed(packed)
    low = (packed & 0x0F).to(torch.int8)
    low = torch.where(low > 7, low - 16, low)
    high = (packed >> 4).to(torch.int8)
    high = torch.where(high > 7, high - 16, high)
    out["unpacked"] = typed(torch.stack((low, high), dim=-1).flatten(1))
    out["sign_extended"] = typed((packed.to(torch.int8) << 4) >> 4)  # int8 shifts: arithmetic right shift

    # GPTQ: eight 4-bit values to an int32 word (the top nibble makes it negative), unpacked by shifts
    intweight = (q4.to(torch.int32) + 8)  # 0..15
    qweight = torch.zeros((intweight.shape[0] // 8, intweight.shape[1]), dtype=torch.int32)
    for j in range(8):
        qweight |= intweight[j::8] << (4 * j)
    out["qweight"] = typed(qweight)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32).view(-1, 1, 1)
    unpacked = (qweight.unsqueeze(0) >> shifts) & 0xF
    out["gptq_unpacked"] = typed(unpacked)
    out["gptq_roundtrip"] = bool(torch.equal(unpacked.permute(1, 0, 2).reshape(intweight.shape), intweight))
    out["bitwise_not_int32"] = typed(~qweight)
    out["bitwise_left_shift"] = typed(torch.bitwise_left_shift(qweight, 3))
    out["bool_xor"] = typed(torch.tensor([True, False, True]) ^ torch.tensor([True, True, False]))
    out["bool_or_int"] = typed(torch.tensor([True, False]) | torch.tensor([2, 4]))
    return out


def test_quantization_with_integer_bit_twiddling():
    ours, _ = run_both(quantization, rtol=1e-6, atol=1e-6)
    assert ours["gptq_roundtrip"] is True
    np.testing.assert_array_equal(ours["int8_abs_min"][1], [-128, 127, 5])  # |min| wraps to min, as in C
    np.testing.assert_array_equal(ours["int8_neg_min"][1], [-128, -3])
    assert ours["int32_matmul"][0] == "int32" and ours["int8_sum"][0] == "int64" and ours["int8_product"][0] == "int64"
    assert ours["dequant_wrapping"][0] == "float32" and ours["qweight"][0] == "int32"
    packed, unpacked = ours["packed"][1], ours["unpacked"][1]
    np.testing.assert_array_equal(ours["sign_extended"][1], unpacked[:, ::2])


# ----------------------------------------------------------------------------------------------
# MNIST's idx files (torchvision's read_sn3_pascalvincent_tensor, both of its versions): big-endian payloads
# read by frombuffer and byte-flipped through uint8 views, or by NumPy's '>i2' dtype then astype
# ----------------------------------------------------------------------------------------------


def write_idx_files(folder):
    rng = np.random.default_rng(3)
    files = {}
    payloads = {"images": (0x08, rng.integers(0, 256, (3, 4, 5)).astype(">u1")),
                "labels": (0x08, rng.integers(0, 10, 7).astype(">u1")),
                "shorts": (0x0B, rng.integers(-30000, 30000, (2, 6)).astype(">i2")),
                "ints": (0x0C, rng.integers(-2 ** 31, 2 ** 31, 5).astype(">i4")),
                "floats": (0x0D, rng.standard_normal((2, 3)).astype(">f4")),
                "doubles": (0x0E, rng.standard_normal(4).astype(">f8"))}
    for name, (code, array) in payloads.items():
        header = struct.pack(">I", code * 256 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
        path = folder / f"{name}-idx-ubyte"
        path.write_bytes(header + array.tobytes())
        files[name] = str(path)
    return files, {name: array.astype(array.dtype.newbyteorder("=")) for name, (code, array) in payloads.items()}


def mnist_idx(m, files):
    torch = m.torch
    import codecs
    import sys

    def get_int(b):
        return int(codecs.encode(b, "hex"), 16)

    SN3_PASCALVINCENT_TYPEMAP = {8: torch.uint8, 9: torch.int8, 11: torch.int16, 12: torch.int32, 13: torch.float32,
                                 14: torch.float64}
    SN3_NUMPY = {8: (np.uint8, np.uint8), 9: (np.int8, np.int8), 11: (np.dtype(">i2"), "i2"),
                 12: (np.dtype(">i4"), "i4"), 13: (np.dtype(">f4"), "f4"), 14: (np.dtype(">f8"), "f8")}

    def _flip_byte_order(t):
        return (
            t.contiguous()
            .view(torch.uint8)
            .view(*t.shape, t.element_size())
            .flip(-1)
            .view(*t.shape[:-1], -1)
            .view(t.dtype)
        )

    def read_sn3_pascalvincent_tensor(path, strict=True):
        with open(path, "rb") as f:
            data = f.read()
        magic = get_int(data[0:4])
        nd = magic % 256
        ty = magic // 256
        assert 1 <= nd <= 3
        assert 8 <= ty <= 14
        torch_type = SN3_PASCALVINCENT_TYPEMAP[ty]
        s = [get_int(data[4 * (i + 1): 4 * (i + 2)]) for i in range(nd)]
        parsed = torch.frombuffer(bytearray(data), dtype=torch_type, offset=(4 * (nd + 1)))
        if sys.byteorder == "little" and parsed.element_size() > 1:
            parsed = _flip_byte_order(parsed)
        assert parsed.shape[0] == np.prod(s) or not strict
        return parsed.view(*s)

    def read_sn3_pascalvincent_tensor_numpy(path, strict=True):  # (torchvision before frombuffer)
        with open(path, "rb") as f:
            data = f.read()
        magic = get_int(data[0:4])
        nd = magic % 256
        ty = magic // 256
        m = SN3_NUMPY[ty]
        s = [get_int(data[4 * (i + 1): 4 * (i + 2)]) for i in range(nd)]
        parsed = np.frombuffer(data, dtype=m[0], offset=(4 * (nd + 1)))
        assert parsed.shape[0] == np.prod(s) or not strict
        return torch.from_numpy(parsed.astype(m[1], copy=False)).view(*s)

    out = {}
    for name, path in files.items():
        out[name] = typed(read_sn3_pascalvincent_tensor(path))
        out[name + "_numpy"] = typed(read_sn3_pascalvincent_tensor_numpy(path))
    labels = read_sn3_pascalvincent_tensor(files["labels"], strict=False)
    assert labels.dtype == torch.uint8 and labels.ndimension() == 1
    out["targets"] = typed(labels.long())
    images = read_sn3_pascalvincent_tensor(files["images"])
    out["first"] = (typed(images[0]), int(out["targets"][1][0]))
    out["scaled"] = typed(images.float().div(255).unsqueeze(1))
    return out


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # (uint8's astype copies nothing)
def test_mnist_idx_files(tmp_path):
    files, expected = write_idx_files(tmp_path)
    ours, _ = run_both(mnist_idx, files, rtol=0, atol=0)
    for name, array in expected.items():  # by hand: the payloads written
        assert ours[name][0] == ours[name + "_numpy"][0] == {"u": "uint8"}.get(array.dtype.kind, array.dtype.name)
        np.testing.assert_array_equal(ours[name][1], array)
        np.testing.assert_array_equal(ours[name + "_numpy"][1], array)


# ----------------------------------------------------------------------------------------------
# A mask regressor trained against bool masks (mse_loss and smooth_l1_loss promote the bool target)
# ----------------------------------------------------------------------------------------------


def mask_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


def mask_regression(m, weights, steps=4):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 1, 8, 8)).astype(np.uint8)
    model = load(m, mask_net(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.from_numpy(images).float() / 255
    mask = torch.from_numpy(images) > 127  # bool targets
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        prediction = torch.sigmoid(model(x))
        loss = F.mse_loss(prediction, mask) + 0.5 * F.smooth_l1_loss(prediction, mask, beta=0.5)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        predicted = torch.sigmoid(model(x)) > 0.5
        iou = (predicted & mask).sum(dim=(1, 2, 3)) / (predicted | mask).sum(dim=(1, 2, 3)).clamp(min=1)
        accuracy = (predicted == mask).float().mean()
    return {"losses": losses, "iou": typed(iou), "accuracy": typed(accuracy),
            "grad": model[0].weight.grad, "pixels_on": typed(predicted.sum())}


def test_mask_regression_against_bool_targets():
    weights = weights_of(mask_net)
    ours, _ = run_both(mask_regression, weights, rtol=1e-5, atol=1e-6)
    assert ours["iou"][0] == "float32" and ours["pixels_on"][0] == "int64"
    assert ours["losses"][-1] < ours["losses"][0]
