"""``autograd.autograd.anomaly_mode``: PyTorch's module of the anomaly switches (``autograd.graph``
owns the mode; these are its names there)."""

from ..graph import detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: F401

__all__ = ["detect_anomaly", "set_detect_anomaly"]
