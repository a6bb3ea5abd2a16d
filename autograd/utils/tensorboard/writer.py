"""``SummaryWriter``: PyTorch's ``torch.utils.tensorboard`` writer, with no ``tensorboard`` package needed
to write (TensorBoard itself reads the files: ``tensorboard --logdir runs``).

    writer = SummaryWriter()                    # runs/<Mon DD_HH-MM-SS>_<host>
    writer.add_scalar("loss/train", loss, step)
    writer.add_histogram("fc1.weight", model.fc1.weight, step)
    writer.close()

Records are appended to an event file per writer (records.py), each a serialized Summary (summary.py).
"""

import os
import socket
import time
from datetime import datetime

import numpy

from . import images, records
from . import summary as summaries


def as_array(value):
    """A tensor (detached, on the host), an array or a number, as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach()
        value = value.cpu() if hasattr(value, "cpu") else value
        return numpy.asarray(value.numpy())
    return numpy.asarray(value)


def _default_bins():
    """TensorFlow's default histogram edges: ±1e-12 growing by 10% to ±1e20, and 0."""
    edges, v = [], 1e-12
    while v < 1e20:
        edges.append(v)
        v *= 1.1
    return [-e for e in reversed(edges)] + [0] + edges


class FileWriter:
    """Writes Events (serialized) to one event file in ``log_dir``."""

    def __init__(self, log_dir, max_queue=10, flush_secs=120, filename_suffix=""):
        self.event_writer = records.EventFileWriter(str(log_dir), max_queue, flush_secs, filename_suffix)

    def get_logdir(self):
        return self.event_writer.get_logdir()

    def add_event(self, event, step=None, walltime=None):
        """``event``: a serialized Event's fields after wall_time and step (see records.event), or a function
        of (wall_time, step) giving the whole serialized Event."""
        self.event_writer.add_event(event(time.time() if walltime is None else walltime,
                                          None if step is None else int(step)))

    def add_summary(self, summary, global_step=None, walltime=None):
        self.add_event(lambda wall_time, step: records.event(wall_time, step, summary=summary), global_step,
                       walltime)

    def flush(self):
        self.event_writer.flush()

    def close(self):
        self.event_writer.close()

    def reopen(self):
        """After close(): a new event file in the same directory."""
        if self.event_writer.closed:
            old = self.event_writer
            self.event_writer = records.EventFileWriter(old.log_dir, old.max_queue, old.flush_secs)


class SummaryWriter:
    """Writes records for TensorBoard to event files in ``log_dir`` (by default runs/<date>_<host><comment>)."""

    def __init__(self, log_dir=None, comment="", purge_step=None, max_queue=10, flush_secs=120,
                 filename_suffix=""):
        if not log_dir:
            log_dir = os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname()
                                   + comment)
        self.log_dir = log_dir
        self.purge_step, self.max_queue, self.flush_secs = purge_step, max_queue, flush_secs
        self.filename_suffix = filename_suffix
        self.file_writer = self.all_writers = None
        self._get_file_writer()
        self.default_bins = _default_bins()

    def _get_file_writer(self):
        """The writer of the main event file (made again after close())."""
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = FileWriter(self.log_dir, self.max_queue, self.flush_secs, self.filename_suffix)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            if self.purge_step is not None:  # TensorBoard hides what an earlier run wrote from this step on
                step = self.purge_step
                self.file_writer.add_event(lambda t, _: records.event(t, step, file_version=b"brain.Event:2"))
                self.file_writer.add_event(lambda t, _: records.event(t, step, session_log=records.SESSION_START))
                self.purge_step = None
        return self.file_writer

    def get_logdir(self):
        return self.log_dir

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False):
        number = as_array(scalar_value).squeeze()
        if number.ndim != 0:
            raise ValueError(f"add_scalar: tensor should contain one element (0 dimensions), was given size "
                             f"{number.size} and {number.ndim} dimensions")
        self._get_file_writer().add_summary(summaries.scalar(tag, float(number), new_style, double_precision),
                                            global_step, walltime)

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        """Several curves on one chart: each in its own run, <log_dir>/<main_tag>_<tag>, tagged main_tag."""
        walltime = time.time() if walltime is None else walltime
        logdir = self._get_file_writer().get_logdir()
        for tag, scalar_value in tag_scalar_dict.items():
            path = logdir + "/" + main_tag.replace("/", "_") + "_" + tag
            if path not in self.all_writers:
                self.all_writers[path] = FileWriter(path, self.max_queue, self.flush_secs, self.filename_suffix)
            number = float(as_array(scalar_value).squeeze())
            self.all_writers[path].add_summary(summaries.scalar(main_tag, number), global_step, walltime)

    def add_tensor(self, tag, tensor, global_step=None, walltime=None):
        self._get_file_writer().add_summary(summaries.tensor(tag, as_array(tensor)), global_step, walltime)

    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None, max_bins=None):
        if isinstance(bins, str) and bins == "tensorflow":
            bins = self.default_bins
        self._get_file_writer().add_summary(summaries.histogram(tag, as_array(values), bins, max_bins),
                                            global_step, walltime)

    def add_histogram_raw(self, tag, min, max, num, sum, sum_squares, bucket_limits, bucket_counts,  # noqa: A002
                          global_step=None, walltime=None):
        if len(bucket_limits) != len(bucket_counts):
            raise ValueError("len(bucket_limits) != len(bucket_counts), see the document.")
        proto = summaries.histogram_proto(min, max, num, sum, sum_squares, list(bucket_limits), list(bucket_counts))
        self._get_file_writer().add_summary(summaries.summary(summaries.value(tag, histo=proto)), global_step,
                                            walltime)

    def add_image(self, tag, img_tensor, global_step=None, walltime=None, dataformats="CHW"):
        self._get_file_writer().add_summary(summaries.image(tag, as_array(img_tensor), dataformats), global_step,
                                            walltime)

    def add_images(self, tag, img_tensor, global_step=None, walltime=None, dataformats="NCHW"):
        self.add_image(tag, img_tensor, global_step, walltime, dataformats)

    def add_figure(self, tag, figure, global_step=None, close=True, walltime=None):
        """A matplotlib figure (or a list of them, as a grid), rendered (needs matplotlib)."""
        if isinstance(figure, list):
            self.add_image(tag, numpy.stack([images.figure_to_chw(f, close) for f in figure]), global_step, walltime,
                           dataformats="NCHW")
        else:
            self.add_image(tag, images.figure_to_chw(figure, close), global_step, walltime, dataformats="CHW")

    def add_video(self, tag, vid_tensor, global_step=None, fps=4, walltime=None):
        """PyTorch writes videos through the moviepy package, and says so and writes nothing without it; the
        same here, where it is never used."""
        print("add_video needs package moviepy")

    def add_audio(self, tag, snd_tensor, global_step=None, sample_rate=44100, walltime=None):
        self._get_file_writer().add_summary(summaries.audio(tag, as_array(snd_tensor), sample_rate), global_step,
                                            walltime)

    def add_text(self, tag, text_string, global_step=None, walltime=None):
        self._get_file_writer().add_summary(summaries.text(tag, text_string), global_step, walltime)

    def add_pr_curve(self, tag, labels, predictions, global_step=None, num_thresholds=127, weights=None,
                     walltime=None):
        num_thresholds = min(num_thresholds, 127)  # (as PyTorch's)
        table = summaries.pr_curve_data(as_array(labels), as_array(predictions), num_thresholds,
                                        None if weights is None else as_array(weights))
        self._get_file_writer().add_summary(summaries.pr_curve(tag, table, num_thresholds), global_step, walltime)

    def add_pr_curve_raw(self, tag, true_positive_counts, false_positive_counts, true_negative_counts,
                         false_negative_counts, precision, recall, global_step=None, num_thresholds=127,
                         weights=None, walltime=None):
        num_thresholds = min(num_thresholds, 127)
        table = numpy.stack([as_array(v) for v in (true_positive_counts, false_positive_counts, true_negative_counts,
                                                   false_negative_counts, precision, recall)])
        self._get_file_writer().add_summary(summaries.pr_curve(tag, table, num_thresholds), global_step, walltime)

    def add_hparams(self, hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None, global_step=None):
        """The hyperparameters and final metrics of a run, for TensorBoard's HPARAMS tab: written to a
        run of their own, <log_dir>/<run_name> (the time by default), with each metric as a scalar."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        experiment, start, end = summaries.hparams(hparam_dict, metric_dict, hparam_domain_discrete)
        run_name = run_name or str(time.time())
        with SummaryWriter(log_dir=os.path.join(self._get_file_writer().get_logdir(), run_name)) as run:
            for record in (experiment, start, end):
                run.file_writer.add_summary(record, global_step)
            for tag, number in metric_dict.items():
                run.add_scalar(tag, number, global_step)

    def add_graph(self, model, input_to_model=None, verbose=False, use_strict_trace=True):
        """The graph that computing ``model(input_to_model)`` records: a node per operation (its PyTorch
        name, such as AddmmBackward0), a node per parameter (named as in ``named_parameters``) and for the
        inputs and the output, each listing the nodes it was computed from."""
        from .graphs import graph_nodes  # (it runs the model: autograd's graph, read through grad_fn)

        nodes = graph_nodes(model, input_to_model)
        if verbose:
            for name, op, inputs in nodes:
                print(f"{name} = {op}({', '.join(inputs)})")
        serialized = summaries.graph_def(nodes)
        self._get_file_writer().add_event(lambda t, _: records.event(t, graph_def=serialized))

    def add_embedding(self, mat, metadata=None, label_img=None, global_step=None, tag="default",
                      metadata_header=None):
        raise NotImplementedError("SummaryWriter.add_embedding (the projector's files) is not available in "
                                  "chainrule; log the vectors with add_tensor, or save them with autograd.save")

    def add_mesh(self, tag, vertices, colors=None, faces=None, config_dict=None, global_step=None, walltime=None):
        raise NotImplementedError("SummaryWriter.add_mesh is not available in chainrule")

    def add_custom_scalars(self, layout):
        raise NotImplementedError("SummaryWriter.add_custom_scalars is not available in chainrule; add_scalars "
                                  "puts several curves on one chart")

    def flush(self):
        for writer in (self.all_writers or {}).values():
            writer.flush()

    def close(self):
        for writer in (self.all_writers or {}).values():
            writer.flush()
            writer.close()
        self.file_writer = self.all_writers = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
