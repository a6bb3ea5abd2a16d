"""Protocol-buffer encoding, the little of it TensorBoard's files need, so that writing them needs no
``tensorboard`` or ``protobuf`` package.

A message is the concatenation of its fields, in field-number order; a field is its key (number · 8 +
wire type) as a varint, then its value: a varint (wire type 0: integers, enums, bools), 8 bytes (1:
double), a length and bytes (2: strings, bytes, nested messages, packed repeated numbers) or 4 bytes
(5: float). proto3 leaves out a field that holds its default (0, "", empty), as these helpers do where
``always`` is not given.
"""

import struct

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


def varint(value):
    """An unsigned varint: 7 bits per byte, least significant first (a negative int64 as its 64-bit two's
    complement, ten bytes, as protobuf writes it)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(number, wire_type):
    return varint(number << 3 | wire_type)


def integer(number, value, always=False):
    """An int32/int64/uint/enum/bool field."""
    return key(number, VARINT) + varint(int(value)) if value or always else b""


def double(number, value, always=False):
    return key(number, FIXED64) + struct.pack("<d", value) if value or always else b""


def single(number, value, always=False):
    """A float (32-bit) field."""
    return key(number, FIXED32) + struct.pack("<f", value) if value or always else b""


def data(number, value, always=False):
    """A bytes, string (encoded as UTF-8) or embedded-message field."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return key(number, BYTES) + varint(len(value)) + value if value or always else b""


def packed_doubles(number, values):
    return data(number, struct.pack(f"<{len(values)}d", *values))


def packed_singles(number, values):
    return data(number, struct.pack(f"<{len(values)}f", *values))


def packed_integers(number, values):
    return data(number, b"".join(varint(int(v)) for v in values))
