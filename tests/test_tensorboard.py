"""autograd.utils.tensorboard.SummaryWriter as torch.utils.tensorboard's: event files TensorBoard reads.

The files are read back here by a small TFRecord and protobuf reader of the test's own (so the checks run
where neither PyTorch nor TensorBoard is installed); where PyTorch and the tensorboard package are both
installed, every record is compared byte for byte with what PyTorch's writer writes for the same calls, and
TensorBoard's own reader loads the images and the graph."""

import glob
import io
import math
import os
import struct
import zlib

import numpy as np
import pytest

import autograd
import nn
from autograd.utils.tensorboard import SummaryWriter
from autograd.utils.tensorboard.records import crc32c, masked_crc

# -- reading the files back ------------------------------------------------------------------------------------

def read_records(path):
    raw, out, i = open(path, "rb").read(), [], 0
    while i < len(raw):
        header = raw[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[i + 8:i + 12])[0] == masked_crc(header)
        payload = raw[i + 12:i + 12 + length]
        assert struct.unpack("<I", raw[i + 12 + length:i + 16 + length])[0] == masked_crc(payload)
        out.append(payload)
        i += 16 + length
    return out


def fields(message):
    """{field number: [values]} of a serialized message: ints for varints, bytes for length-delimited
    fields, (kind, raw bytes) for fixed-width ones."""
    out, i = {}, 0
    while i < len(message):
        tag, i = _varint(message, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(message, i)
        elif wire == 1:
            value, i = struct.unpack("<d", message[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", message[i:i + 4])[0], i + 4
        else:
            length, i = _varint(message, i)
            value, i = message[i:i + length], i + length
        out.setdefault(number, []).append(value)
    return out


def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        shift += 7
        if byte < 0x80:
            return value, i


def events(log_dir):
    (path,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    return [fields(r) for r in read_records(path)]


def summary_value(event):
    """(tag, the Value's fields) of an event holding one summary value."""
    value = fields(fields(event[5][0])[1][0])
    return value[1][0].decode(), value


def png_pixels(png):
    """(height, width, rows of RGB bytes) of a PNG with unfiltered rows (what the writer makes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = {}, 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i:i + 4])
        kind = png[i + 4:i + 8]
        chunks[kind] = chunks.get(kind, b"") + png[i + 8:i + 8 + length]
        i += 12 + length
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    rows = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + width * 3
    return height, width, np.frombuffer(rows, np.uint8).reshape(height, stride)[:, 1:].reshape(height, width, 3)


# -- the records ---------------------------------------------------------------------------------------------

def test_crc32c_is_castagnolis():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0


def test_scalars_steps_and_wall_times(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("loss/train", autograd.tensor(0.25), 3, walltime=1.5)
        writer.add_scalar("loss/train", 2, global_step=4, walltime=2.5)
    first, *records = events(tmp_path)
    assert first[3] == [b"brain.Event:2"]
    assert [(r[1][0], r[2][0]) for r in records] == [(1.5, 3), (2.5, 4)]
    assert [summary_value(r)[0] for r in records] == ["loss/train"] * 2
    assert [summary_value(r)[1][2][0] for r in records] == [0.25, 2.0]
    with pytest.raises(ValueError, match="one element"):
        SummaryWriter(tmp_path / "x").add_scalar("bad", autograd.ones(2), 0)


def test_add_scalars_writes_one_run_per_curve(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.add_scalars("run", {"a": 1.0, "b": 2.0}, 1)
    writer.add_scalars("run", {"a": 3.0, "b": 4.0}, 2)
    writer.close()
    for curve, values in (("a", [1.0, 3.0]), ("b", [2.0, 4.0])):
        records = events(tmp_path / f"run_{curve}")[1:]
        assert [summary_value(r)[0] for r in records] == ["run", "run"]
        assert [summary_value(r)[1][2][0] for r in records] == values


def test_histogram_counts_and_statistics(tmp_path):
    values = np.array([0.5, 1.5, 1.5, 2.5, -1.0])
    with SummaryWriter(tmp_path) as writer:
        writer.add_histogram("h", autograd.tensor(values), 0, bins=[-2.0, 0.0, 1.0, 2.0, 3.0])
        writer.add_histogram("default", autograd.tensor(values), 1)
    histogram = fields(summary_value(events(tmp_path)[1])[1][5][0])
    assert [histogram[k][0] for k in (1, 2, 3, 4, 5)] == [-1.0, 2.5, 5.0, 5.0, float(values @ values)]
    limits = struct.unpack("<5d", histogram[6][0])
    counts = struct.unpack("<5d", histogram[7][0])
    assert limits == (-2.0, 0.0, 1.0, 2.0, 3.0) and counts == (0.0, 1.0, 1.0, 2.0, 1.0)  # (an empty bucket first)
    default = fields(summary_value(events(tmp_path)[2])[1][5][0])
    assert sum(struct.unpack(f"<{len(default[7][0]) // 8}d", default[7][0])) == 5.0


def test_images_are_pngs_of_the_pixels(tmp_path):
    image = np.zeros((3, 4, 5), np.float32)
    image[0, 1, 2] = 1.0
    image[2] = 0.5
    with SummaryWriter(tmp_path) as writer:
        writer.add_image("chw", autograd.tensor(image), 1)
        writer.add_images("grid", autograd.tensor(np.stack([image, image * 0.2])), 2)
        writer.add_image("hw", np.arange(12, dtype=np.uint8).reshape(3, 4), 3, dataformats="HW")
    records = events(tmp_path)[1:]
    decoded = {}
    for record in records:
        tag, value = summary_value(record)
        proto = fields(value[4][0])
        decoded[tag] = (proto[1][0], proto[2][0], proto[3][0], png_pixels(proto[4][0]))
    height, width, channels, (h, w, pixels) = decoded["chw"]
    assert (height, width, channels, h, w) == (4, 5, 3, 4, 5)
    assert pixels[1, 2].tolist() == [255, 0, 127] and pixels[0, 0].tolist() == [0, 0, 127]
    assert decoded["grid"][:2] == (4, 10)  # two images side by side
    assert decoded["grid"][3][2][1, 7].tolist() == [51, 0, 25]  # the second image, scaled by 0.2
    assert decoded["hw"][3][2][..., 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_text_audio_and_a_tensor(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_text("note", "hello **world**", 7)
        writer.add_audio("tone", autograd.tensor(np.sin(np.arange(100) / 5.0)), 8, sample_rate=8000)
        writer.add_tensor("t", autograd.tensor([[1.0, 2.0]]), 9)
    text, audio, tensor = events(tmp_path)[1:]
    tag, value = summary_value(text)
    assert tag == "note/text_summary"
    assert fields(value[8][0])[8] == [b"hello **world**"]
    assert fields(fields(value[9][0])[1][0])[1] == [b"text"]
    proto = fields(summary_value(audio)[1][6][0])
    assert (proto[1][0], proto[2][0], proto[3][0], proto[5][0]) == (8000.0, 1, 100, b"audio/wav")
    assert proto[4][0][:4] == b"RIFF"
    proto = fields(summary_value(tensor)[1][8][0])
    assert struct.unpack("<2f", proto[5][0]) == (1.0, 2.0)


def test_pr_curve_table(tmp_path):
    labels, predictions = np.array([1, 0, 1, 1]), np.array([0.9, 0.8, 0.3, 0.6])
    with SummaryWriter(tmp_path) as writer:
        writer.add_pr_curve("pr", labels, predictions, 0, num_thresholds=3)
    proto = fields(summary_value(events(tmp_path)[1])[1][8][0])
    table = np.array(struct.unpack("<18f", proto[5][0])).reshape(6, 3)
    # thresholds 0, 0.5, 1: buckets floor(p * 2) = 1, 1, 0, 1
    np.testing.assert_allclose(table[0], [3, 2, 0])  # true positives
    np.testing.assert_allclose(table[1], [1, 1, 0])  # false positives
    np.testing.assert_allclose(table[5], [1, 2 / 3, 0])  # recall


def test_hparams_go_to_a_run_of_their_own(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_hparams({"lr": 0.1, "optimizer": "adam"}, {"hparam/accuracy": 0.9}, run_name="trial")
    records = events(tmp_path / "trial")[1:]
    assert [summary_value(r)[0] for r in records] == ["_hparams_/experiment", "_hparams_/session_start_info",
                                                      "_hparams_/session_end_info", "hparam/accuracy"]
    assert math.isclose(summary_value(records[3])[1][2][0], 0.9, rel_tol=1e-7)
    with pytest.raises(TypeError, match="should be dictionary"):
        SummaryWriter(tmp_path / "x").add_hparams([("lr", 0.1)], {})


def test_graph_of_the_model(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with SummaryWriter(tmp_path) as writer:
        writer.add_graph(model, autograd.randn(5, 3))
    (graph_event,) = [e for e in events(tmp_path) if 4 in e]
    nodes = [fields(n) for n in fields(graph_event[4][0])[1]]
    described = [(n[1][0].decode(), n[2][0].decode(), [i.decode() for i in n.get(3, [])]) for n in nodes]
    assert described[-1] == ("output/0", "IO Node", ["AddmmBackward0/1"])
    assert ("ReluBackward0/0", "ReluBackward0", ["AddmmBackward0/0"]) in described
    assert ("AddmmBackward0/0", "AddmmBackward0", ["input/0", "0.weight", "0.bias"]) in described
    assert {name for name, op, _ in described if op == "Parameter"} == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_default_log_dir_purge_step_flush_and_close(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = SummaryWriter(comment="_lr0.1")
    assert writer.get_logdir().startswith("runs" + os.sep) and writer.get_logdir().endswith("_lr0.1")
    writer.add_scalar("x", 1.0, 0)
    writer.flush()
    assert len(events(writer.get_logdir())) == 2  # written by flush(), before close()
    writer.close()
    purged = SummaryWriter(tmp_path / "p", purge_step=5)
    purged.close()
    first, version, start = events(tmp_path / "p")
    assert version[2] == [5] and start[2] == [5] and fields(start[7][0])[1] == [1]  # SessionLog START
    with pytest.raises(NotImplementedError, match="add_embedding"):
        purged.add_embedding(autograd.ones(2, 2))


# -- against PyTorch's writer ------------------------------------------------------------------------------------

def same_calls(torch, writer_class, log_dir):
    rng = np.random.default_rng(0)
    writer = writer_class(log_dir)
    writer.add_scalar("loss", 0.25, 3, walltime=1.5)
    writer.add_scalar("loss", torch.tensor(2.0), 4, walltime=2.5)
    writer.add_scalar("new", 1.5, 4, walltime=2.5, new_style=True)
    writer.add_scalar("double", 1.5, 4, walltime=2.5, new_style=True, double_precision=True)
    writer.add_histogram("w", torch.tensor(rng.standard_normal(100)), 5, walltime=3.0)
    writer.add_histogram("w2", rng.standard_normal(50), 5, walltime=3.0, bins=10)
    writer.add_histogram("w3", rng.standard_normal(500), 5, walltime=3.0, bins="auto", max_bins=7)
    writer.add_histogram_raw("raw", 0.0, 2.0, 3, 3.0, 5.0, [1.0, 2.0], [1, 2], 6, walltime=3.0)
    writer.add_text("note", "hello **world**", 7, walltime=4.0)
    writer.add_tensor("t", torch.tensor([[1.0, 2.0]]), 7, walltime=4.0)
    writer.add_audio("a", torch.tensor(np.sin(np.arange(100) / 5.0)), 8, sample_rate=8000, walltime=5.0)
    writer.add_pr_curve("pr", rng.integers(0, 2, 40), rng.random(40), 9, walltime=6.0, num_thresholds=11)
    writer.add_scalars("multi", {"a": 1.0, "b": 2.0}, 10, walltime=7.0)
    writer.close()


def test_every_record_is_pytorchs(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter as TheirWriter

    same_calls(autograd, SummaryWriter, str(tmp_path / "ours"))
    same_calls(torch, TheirWriter, str(tmp_path / "theirs"))
    for ours in sorted(glob.glob(str(tmp_path / "ours" / "**" / "events.*"), recursive=True)):
        relative = os.path.relpath(os.path.dirname(ours), tmp_path / "ours")
        (theirs,) = glob.glob(str(tmp_path / "theirs" / relative / "events.*"))
        assert read_records(ours)[1:] == read_records(theirs)[1:], relative  # (after each file's own first)


def test_tensorboard_reads_images_and_the_graph(tmp_path):
    pytest.importorskip("tensorboard")
    image_module = pytest.importorskip("PIL.Image")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with SummaryWriter(tmp_path) as writer:
        writer.add_image("img", np.full((3, 2, 2), 0.5, np.float32), 0)
        writer.add_graph(nn.Linear(2, 1), autograd.ones(1, 2))
    reader = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    reader.Reload()
    (image,) = reader.Images("img")
    pixels = np.asarray(image_module.open(io.BytesIO(image.encoded_image_string)))
    assert pixels.shape == (2, 2, 3) and (pixels == 127).all()
    assert [node.op for node in reader.Graph().node][-1] == "IO Node"
