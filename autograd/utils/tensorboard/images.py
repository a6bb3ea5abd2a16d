"""Images and sounds as TensorBoard stores them: PNG and WAV bytes, from arrays laid out as PyTorch's
``add_image`` takes them (CHW, HWC, HW, or a batch NCHW laid out as a grid)."""

import io
import struct
import wave
import zlib

import numpy


def to_hwc(array, dataformats):
    """An image array in ``dataformats`` (letters of N, C, H, W) as height × width × channels, one channel
    made three; a batch (N) laid out as a grid of up to 8 columns."""
    dataformats = dataformats.upper()
    if len(set(dataformats)) != len(dataformats):
        raise ValueError(f"You can not use the same dimension shorthand twice. input_format: {dataformats}")
    if array.ndim != len(dataformats):
        raise ValueError(f"size of input tensor and input format are different. tensor shape: {tuple(array.shape)}, "
                         f"input_format: {dataformats}")
    if len(dataformats) == 4:
        return grid(array.transpose([dataformats.find(c) for c in "NCHW"])).transpose(1, 2, 0)
    if len(dataformats) == 3:
        hwc = array.transpose([dataformats.find(c) for c in "HWC"])
        return numpy.concatenate([hwc] * 3, 2) if hwc.shape[2] == 1 else hwc
    hw = array.transpose([dataformats.find(c) for c in "HW"])
    return numpy.stack([hw] * 3, 2)


def grid(images, columns=8):
    """N images (N × C × H × W, C 1 or 3) on one canvas, row by row, up to ``columns`` in a row."""
    if images.shape[1] == 1:
        images = numpy.concatenate([images] * 3, 1)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"a batch of images needs shape (N, 3 or 1, H, W), got {tuple(images.shape)}")
    count, _, height, width = images.shape
    columns = min(count, columns)
    rows = -(-count // columns)
    canvas = numpy.zeros((3, height * rows, width * columns), dtype=images.dtype)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        canvas[:, row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return canvas


def to_bytes_range(array):
    """Pixel values as uint8: floats are taken to lie in [0, 1] and scaled by 255, uint8 as they are;
    out-of-range values clipped (PyTorch's rule)."""
    scale = 1 if array.dtype == numpy.uint8 else 255
    return (array.astype(numpy.float32) * scale).clip(0, 255).astype(numpy.uint8)


def png(hwc):
    """PNG bytes of an H × W × C uint8 image (C = 1 grey, 3 RGB, 4 RGBA): each row behind a 0 (no
    filter) byte, deflated, in IHDR, IDAT and IEND chunks."""
    height, width, channels = hwc.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = numpy.concatenate([numpy.zeros((height, 1), numpy.uint8), hwc.reshape(height, width * channels)], 1)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + chunk(b"IEND", b""))


def wav(samples, sample_rate):
    """WAV bytes of mono samples in [-1, 1], as 16-bit integers."""
    pcm = (samples * numpy.iinfo(numpy.int16).max).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm.tobytes())
    return out.getvalue()


def figure_to_chw(figure, close=True):
    """A matplotlib figure rendered to an RGB array, channels first (needs matplotlib)."""
    import matplotlib.pyplot as pyplot
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    width, height = canvas.get_width_height()
    rgba = numpy.frombuffer(canvas.buffer_rgba(), dtype=numpy.uint8).reshape(height, width, 4)
    if close:
        pyplot.close(figure)
    return numpy.moveaxis(rgba[:, :, :3], 2, 0)
