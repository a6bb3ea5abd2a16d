"""TensorBoard's event files: TFRecord framing of serialized ``Event`` messages, and the writer that
appends them (``EventFileWriter``).

A record is: its length (uint64, little-endian), the masked CRC-32C of those 8 bytes (uint32), the
data, and the data's masked CRC-32C. An event file starts with an Event whose ``file_version`` is
"brain.Event:2" and is named events.out.tfevents.<seconds>.<host>.<pid>.<n><suffix>.
"""

import os
import socket
import struct
import time

from . import protobuf

_CASTAGNOLI = 0x82F63B78  # CRC-32C's polynomial, bit-reversed
_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ _CASTAGNOLI if _crc & 1 else _crc >> 1
    _TABLE.append(_crc)


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    """TFRecord's mask of a CRC (rotated right by 15 bits, plus a constant), so CRCs of CRCs stay apart."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data):
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def event(wall_time, step=None, file_version=None, graph_def=None, summary=None, session_log=None):
    """A serialized ``Event``: wall_time (1), step (2), file_version (3), graph_def (4), summary (5),
    session_log (7)."""
    return (protobuf.double(1, wall_time, always=True) + protobuf.integer(2, step or 0)
            + protobuf.data(3, file_version or b"") + protobuf.data(4, graph_def or b"")
            + protobuf.data(5, summary, always=summary is not None) + protobuf.data(7, session_log or b""))


SESSION_START = protobuf.integer(1, 1)  # SessionLog(status=START)

_files_made = 0  # (a counter in the file name: two writers in one second get two files)


class EventFileWriter:
    """Appends events to a new event file in ``log_dir``: held in memory up to ``max_queue`` events or
    ``flush_secs`` seconds, then written (PyTorch's writes from a thread; here the adding call writes)."""

    def __init__(self, log_dir, max_queue=10, flush_secs=120, filename_suffix=""):
        global _files_made
        self.log_dir = str(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        _files_made += 1
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{_files_made}"
        self.path = os.path.join(self.log_dir, name + filename_suffix)
        self.max_queue, self.flush_secs = max_queue, flush_secs
        self._pending = []
        self._last_flush = time.monotonic()
        self._file = open(self.path, "wb")  # noqa: SIM115  (closed by close())
        self.closed = False
        self.add_event(event(time.time(), file_version=b"brain.Event:2"))
        self.flush()

    def get_logdir(self):
        return self.log_dir

    def add_event(self, serialized_event):
        if self.closed:
            raise RuntimeError(f"the event file {self.path} is closed: SummaryWriter.close() was called")
        self._pending.append(record(serialized_event))
        if len(self._pending) >= self.max_queue or time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def flush(self):
        if self._pending and not self.closed:
            self._file.write(b"".join(self._pending))
            self._pending.clear()
            self._file.flush()
        self._last_flush = time.monotonic()

    def close(self):
        if not self.closed:
            self.flush()
            self._file.close()
            self.closed = True
