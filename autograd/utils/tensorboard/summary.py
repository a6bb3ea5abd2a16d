"""Serialized ``Summary`` messages, one per kind of record TensorBoard shows.

Summary: value (1, repeated Value). Value: tag (1), simple_value (2, float), image (4), histo (5),
audio (6), tensor (8), metadata (9: SummaryMetadata, whose plugin_data (1) names the plugin (1) and
carries its content (2)). The layouts are TensorFlow's summary.proto, tensor.proto and the plugins'.
"""

import numpy

from . import images
from .protobuf import data, double, integer, packed_doubles, packed_integers, packed_singles, single

# TensorProto's dtypes (types.proto), and the field each keeps its values in
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BOOL = 1, 2, 3, 7, 9, 10


def summary(*values):
    return b"".join(data(1, value) for value in values)


def value(tag, metadata=b"", **field):
    """One Summary.Value: its tag, then the field that holds the record (none for the hparams plugin's, whose
    metadata is all), then its metadata."""
    content = b""
    for name, body in field.items():
        number = {"simple_value": 2, "image": 4, "histo": 5, "audio": 6, "tensor": 8}[name]
        content = single(2, body, always=True) if name == "simple_value" else data(number, body, always=True)
    return data(1, tag) + content + data(9, metadata)


def plugin_metadata(plugin_name, content=b""):
    return data(1, data(1, plugin_name) + data(2, content))


def tensor_proto(dtype, shape, values):
    """A TensorProto: dtype (1), tensor_shape (2: a Dim (2) of size (1) per dim; left out for ``shape``
    None, as PyTorch's new-style scalar leaves it), then the values in the dtype's field."""
    shape_proto = b"" if shape is None else b"".join(data(2, integer(1, size)) for size in shape)
    if dtype == DT_STRING:
        body = b"".join(data(8, v, always=True) for v in values)
    elif dtype == DT_FLOAT:
        body = packed_singles(5, values)
    elif dtype == DT_DOUBLE:
        body = packed_doubles(6, values)
    elif dtype == DT_INT64:
        body = packed_integers(10, values)
    elif dtype == DT_BOOL:
        body = packed_integers(11, values)
    else:
        body = packed_integers(7, values)
    return integer(1, dtype) + data(2, shape_proto, always=shape is not None) + body


def scalar(tag, number, new_style=False, double_precision=False):
    if new_style:  # a tensor of one value, for the scalars plugin (quicker for TensorBoard to load)
        proto = tensor_proto(DT_DOUBLE if double_precision else DT_FLOAT, None, [number])
        return summary(value(tag, plugin_metadata("scalars"), tensor=proto))
    return summary(value(tag, simple_value=number))


TENSOR_DTYPES = {"float32": DT_FLOAT, "float16": DT_FLOAT, "float64": DT_DOUBLE, "int64": DT_INT64,
                 "int32": DT_INT32, "int16": DT_INT32, "int8": DT_INT32, "uint8": DT_INT32, "bool": DT_BOOL}


def tensor(tag, array):
    if array.dtype.name not in TENSOR_DTYPES:
        raise ValueError(f"{tag} has unsupported tensor dtype {array.dtype}")
    proto = tensor_proto(TENSOR_DTYPES[array.dtype.name], array.shape, array.reshape(-1).tolist())
    return summary(value(tag, plugin_metadata("tensor"), tensor=proto))


def histogram_proto(low, high, count, total, sum_squares, bucket_limits, bucket_counts):
    """HistogramProto: min (1), max (2), num (3), sum (4), sum_squares (5), bucket_limit (6), bucket (7)."""
    return (double(1, low) + double(2, high) + double(3, count) + double(4, total) + double(5, sum_squares)
            + packed_doubles(6, bucket_limits) + packed_doubles(7, bucket_counts))


def histogram(tag, values, bins, max_bins=None):
    """The histogram of ``values`` over ``bins`` (NumPy's: a count, edges or a rule), merged down to
    ``max_bins``, then cut to the buckets from the first to the last that hold something; TensorBoard
    reads each bucket's right edge only, so an empty bucket stands on the left."""
    values = values.astype(float).reshape(-1)
    if values.size == 0:
        raise ValueError("The input has no element.")
    counts, limits = numpy.histogram(values, bins=bins)
    if max_bins is not None and len(counts) > max_bins:
        merged = len(counts) // max_bins
        counts = numpy.pad(counts, (0, -len(counts) % merged)).reshape(-1, merged).sum(axis=-1)
        limits = numpy.concatenate([limits[:-1:merged], limits[-1:]])
    filled = numpy.nonzero(counts)[0]
    first, last = (filled[0], filled[-1] + 1) if filled.size else (0, 1)
    counts = counts[first - 1:last] if first > 0 else numpy.concatenate([[0], counts[:last]])
    limits = limits[first:last + 1]
    proto = histogram_proto(values.min(), values.max(), len(values), values.sum(), values.dot(values),
                            limits.tolist(), counts.tolist())
    return summary(value(tag, histo=proto))


def image(tag, array, dataformats="CHW"):
    hwc = images.to_bytes_range(images.to_hwc(array, dataformats))
    height, width, channels = hwc.shape
    proto = integer(1, height) + integer(2, width) + integer(3, channels) + data(4, images.png(hwc))
    return summary(value(tag, image=proto))


def audio(tag, samples, sample_rate=44100):
    samples = samples.squeeze()
    if abs(samples).max() > 1:
        print("warning: audio amplitude out of range, auto clipped.")
        samples = samples.clip(-1, 1)
    if samples.ndim != 1:
        raise ValueError(f"input tensor should be 1 dimensional, got shape {tuple(samples.shape)}")
    proto = (single(1, sample_rate) + integer(2, 1) + integer(3, samples.shape[-1])
             + data(4, images.wav(samples, sample_rate)) + data(5, "audio/wav"))
    return summary(value(tag, audio=proto))


def text(tag, string):
    proto = tensor_proto(DT_STRING, (1,), [string.encode("utf-8")])
    return summary(value(tag + "/text_summary", plugin_metadata("text"), tensor=proto))


def pr_curve_data(labels, predictions, num_thresholds, weights=None):
    """(6, num_thresholds): true and false positives, true and false negatives, precision and recall at
    each threshold i / (num_thresholds - 1)."""
    weights = 1.0 if weights is None else weights
    buckets = numpy.floor(predictions * (num_thresholds - 1)).astype(numpy.int32)
    labels = labels.astype(numpy.float64)
    span = (0, num_thresholds - 1)
    true_counts, _ = numpy.histogram(buckets, bins=num_thresholds, range=span, weights=labels * weights)
    false_counts, _ = numpy.histogram(buckets, bins=num_thresholds, range=span, weights=(1.0 - labels) * weights)
    tp = numpy.cumsum(true_counts[::-1])[::-1]
    fp = numpy.cumsum(false_counts[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / numpy.maximum(1e-7, tp + fp)
    recall = tp / numpy.maximum(1e-7, tp + fn)
    return numpy.stack((tp, fp, tn, fn, precision, recall))


def pr_curve(tag, table, num_thresholds):
    content = integer(2, num_thresholds)  # PrCurvePluginData: version (1) 0, num_thresholds (2)
    proto = tensor_proto(DT_FLOAT, table.shape, table.reshape(-1).tolist())
    return summary(value(tag, plugin_metadata("pr_curves", content), tensor=proto))


# -- hparams: three summaries, each carrying HParamsPluginData (version 0) in its metadata ---------------------

def _struct_value(setting):
    """A google.protobuf.Value: number_value (2) or string_value (3)."""
    if isinstance(setting, str):
        return data(3, setting, always=True)
    return double(2, float(setting), always=True)


def _hparams_summary(tag, plugin_content):
    return summary(value(tag, plugin_metadata("hparams", plugin_content)))


def hparams(hparam_dict, metric_dict, hparam_domain_discrete=None):
    """(experiment, session start, session end) summaries of the hparams plugin, as PyTorch's."""
    hparam_domain_discrete = hparam_domain_discrete or {}
    if not isinstance(hparam_domain_discrete, dict):
        raise TypeError("parameter: hparam_domain_discrete should be a dictionary, nothing logged.")
    for name, domain in hparam_domain_discrete.items():
        if name not in hparam_dict or not isinstance(domain, list) or \
                not all(isinstance(d, type(hparam_dict[name])) for d in domain):
            raise TypeError(f"parameter: hparam_domain_discrete[{name}] should be a list of same type as "
                            f"hparam_dict[{name}].")
    infos, started = [], []
    for name, setting in hparam_dict.items():
        if setting is None:
            continue
        if isinstance(setting, (int, float)):  # (a bool too, a number 0 or 1, as PyTorch's tests it first)
            setting, kind = float(setting), 3  # DATA_TYPE_FLOAT64
        elif isinstance(setting, str):
            kind = 1  # DATA_TYPE_STRING
        elif hasattr(setting, "numel") and setting.numel() == 1:  # a one-element tensor: its number
            setting, kind = float(setting.item()), 3
        else:
            raise ValueError("value should be one of int, float, str, bool, or torch.Tensor")
        domain = b""
        if name in hparam_domain_discrete:
            domain = data(5, b"".join(data(1, _struct_value(d), always=True) for d in hparam_domain_discrete[name]),
                          always=True)
        infos.append(data(4, data(1, name) + integer(4, kind) + domain, always=True))  # HParamInfo
        started.append(data(1, data(1, name) + data(2, _struct_value(setting), always=True), always=True))
    metrics = b"".join(data(5, data(1, data(2, tag)), always=True) for tag in metric_dict)  # MetricInfo(name=tag)
    experiment = _hparams_summary("_hparams_/experiment", data(2, b"".join(infos) + metrics, always=True))
    start = _hparams_summary("_hparams_/session_start_info", data(3, b"".join(started), always=True))
    end = _hparams_summary("_hparams_/session_end_info", data(4, integer(1, 1), always=True))  # STATUS_SUCCESS
    return experiment, start, end


# -- graphs -------------------------------------------------------------------------------------------------

def graph_def(nodes):
    """A serialized GraphDef of (name, op, input names) nodes: node (1: NodeDef name (1), op (2), input (3)),
    versions (4: producer (1) 22)."""
    body = b"".join(data(1, data(1, name) + data(2, op) + b"".join(data(3, i) for i in inputs), always=True)
                    for name, op, inputs in nodes)
    return body + data(4, integer(1, 22))
