"""The bytes of the tensor-carrying messages, encoded and decoded around protobuf.

Protobuf's Python runtime would copy a tensor twice on the way out (into the message's bytes
field, then into the serialised string) and once more on the way in (ScanResponse.result.data is
a new bytes object on every access). grpcio needs one `bytes` object per message anyway, so the
request is built as exactly that: protobuf serialises every small field, and the tensor bytes are
copied once, by bytes.join, from the caller's buffer into the message. Responses are walked here
to find the result's bytes inside grpcio's message and copy them once, into the output array.
The bytes are the ones protobuf itself writes (fields in order, canonical varints), which
tests/python/test_wire.py checks against protobuf; the server's codec (wire/codec.cc) does the
same in C++.
"""
from ._errors import ScanError
from ._proto import scan_pb2 as pb

import grpc

# Tags (field number << 3 | wire type) of the length-delimited fields written by hand.
_LEN = 2
_TAG_REQUEST_GAMMA = bytes([1 << 3 | _LEN])        # ScanRequest.gamma
_TAG_TENSOR_DATA = bytes([3 << 3 | _LEN])          # Tensor.data
_TAG_STREAM_REQUEST_CHUNK = bytes([2 << 3 | _LEN])  # ScanStreamRequest.chunk
_STREAM_RESPONSE_CHUNK = 3                          # ScanStreamResponse.chunk


def varint(value):
    """Base-128 varint of a non-negative integer (lengths; protobuf writes the rest)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _broken(what):
    return ScanError(f"malformed message from the server: {what}", grpc.StatusCode.INTERNAL)


def _read_varint(buf, pos, end):
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _broken("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf, start=0, end=None):
    """Yields (number, wire_type, value, start, end) for each field of a message in buf[start:end].

    `value` is the integer of a varint field; length-delimited fields give their payload's span
    as start, end (without copying it). Unknown fields are skipped, as protobuf does.
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos, end)
            yield number, wire_type, value, pos, pos
        elif wire_type == _LEN:
            size, pos = _read_varint(buf, pos, end)
            if size > end - pos:
                raise _broken(f"field {number} runs past the end of its message")
            yield number, wire_type, None, pos, pos + size
            pos += size
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            if pos > end:
                raise _broken(f"field {number} runs past the end of its message")
        else:
            raise _broken(f"unsupported wire type {wire_type}")


def scan_request(dtype, shape, data, nbytes, dim, backend):
    """A serialised ScanRequest whose gamma holds `data` (a buffer of nbytes), one copy of it."""
    head = pb.Tensor(dtype=dtype, shape=shape).SerializeToString()
    # proto3 writes no empty bytes field: an empty tensor has no data field at all.
    data_field = [_TAG_TENSOR_DATA, varint(nbytes), data] if nbytes else []
    tensor_size = len(head) + sum(len(part) for part in data_field[:2]) + nbytes
    tail = pb.ScanRequest(dim=dim, backend=backend).SerializeToString()  # fields 2 and up
    return b"".join([_TAG_REQUEST_GAMMA, varint(tensor_size), head, *data_field, tail])


def stream_header(dtype, shape, dim, backend):
    """ScanStream's first message: the request without the tensor's bytes."""
    request = pb.ScanRequest(gamma=pb.Tensor(dtype=dtype, shape=shape), dim=dim, backend=backend)
    return pb.ScanStreamRequest(header=request).SerializeToString()


def stream_chunk(data):
    """A ScanStreamRequest.chunk message carrying `data` (a buffer slice), one copy of it."""
    return b"".join([_TAG_STREAM_REQUEST_CHUNK, varint(len(data)), data])


class DecodedResponse:
    """A ScanResponse with the result's bytes left where they arrived (`data`, a memoryview)."""

    __slots__ = ("dtype", "shape", "data", "backend", "timing")

    def __init__(self):
        self.dtype = pb.DATA_TYPE_UNSPECIFIED
        self.shape = []
        self.data = memoryview(b"")
        self.backend = ""
        self.timing = pb.Timing()

    @classmethod
    def from_message(cls, message):
        """From a parsed ScanResponse without tensor bytes (ScanStream's header)."""
        out = cls()
        out.dtype = message.result.dtype
        out.shape = list(message.result.shape)
        out.backend = message.backend
        out.timing = message.timing
        return out


def scan_response(message):
    """Decodes a serialised ScanResponse (or ScanStream's header) without copying the result."""
    view = memoryview(message)
    out = DecodedResponse()
    for number, wire_type, _, start, end in fields(view):
        if number == 1 and wire_type == _LEN:
            _decode_tensor(view, start, end, out)
        elif number == 2 and wire_type == _LEN:
            out.backend = str(view[start:end], "utf-8")
        elif number == 3 and wire_type == _LEN:
            out.timing = pb.Timing.FromString(view[start:end].tobytes())
    return out


def _decode_tensor(view, start, end, out):
    for number, wire_type, value, field_start, field_end in fields(view, start, end):
        if number == 1 and wire_type == 0:
            out.dtype = value
        elif number == 2 and wire_type == _LEN:  # packed, as proto3 writes it
            pos = field_start
            while pos < field_end:
                size, pos = _read_varint(view, pos, field_end)
                out.shape.append(size)
        elif number == 2 and wire_type == 0:  # unpacked, which parsers must accept too
            out.shape.append(value)
        elif number == 3 and wire_type == _LEN:
            out.data = view[field_start:field_end]


def stream_chunk_payload(message):
    """The payload of a ScanStreamResponse.chunk message (a memoryview), or None if not one."""
    view = memoryview(message)
    for number, wire_type, _, start, end in fields(view):
        # A chunk message is exactly one field, so its first field decides.
        if number == _STREAM_RESPONSE_CHUNK and wire_type == _LEN and end == len(view):
            return view[start:end]
        break
    return None
