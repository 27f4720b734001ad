"""The hand-framed messages of scan_service._wire are byte for byte what protobuf writes/reads."""
import numpy as np
import pytest

from scan_service import _wire, pb

DTYPES = [pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_FLOAT64, pb.DATA_TYPE_FLOAT16, pb.DATA_TYPE_BFLOAT16]


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (2, 0, 7), (1,) * 16, (300, 2)])
@pytest.mark.parametrize("dim", [0, -1, 1, -16])
@pytest.mark.parametrize("backend", [pb.BACKEND_PREFERENCE_AUTO, pb.BACKEND_PREFERENCE_GPU])
def test_scan_request_matches_protobuf(rng, shape, dim, backend):
    dtype = DTYPES[rng.integers(len(DTYPES))]
    data = rng.bytes(int(np.prod(shape)) * 4)
    ours = _wire.scan_request(dtype, shape, memoryview(data), len(data), dim, backend)
    theirs = pb.ScanRequest(gamma=pb.Tensor(dtype=dtype, shape=shape, data=data), dim=dim,
                            backend=backend).SerializeToString()
    assert ours == theirs


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16384, 300000])
def test_stream_chunk_matches_protobuf(rng, size):
    data = rng.bytes(size)
    expected = pb.ScanStreamRequest(chunk=data).SerializeToString()
    assert _wire.stream_chunk(memoryview(data)) == expected
    reply = pb.ScanStreamResponse(chunk=data).SerializeToString()
    assert bytes(_wire.stream_chunk_payload(reply)) == data


def test_stream_chunk_payload_is_none_for_other_parts():
    accepted = pb.ScanStreamResponse(accepted=pb.ScanStreamAccepted(max_chunk_bytes=5))
    header = pb.ScanStreamResponse(header=pb.ScanResponse(backend="cpu-native"))
    for message in (accepted, header, pb.ScanStreamResponse()):
        assert _wire.stream_chunk_payload(message.SerializeToString()) is None


@pytest.mark.parametrize("shape", [(0,), (4,), (2, 3, 129)])
def test_scan_response_decodes_as_protobuf(rng, shape):
    data = rng.bytes(int(np.prod(shape)) * 2)
    message = pb.ScanResponse(result=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT16, shape=shape, data=data),
                              backend="cuda:0",
                              timing=pb.Timing(queue_us=1, compute_us=2**40, total_us=3))
    decoded = _wire.scan_response(message.SerializeToString())
    assert decoded.dtype == pb.DATA_TYPE_FLOAT16 and tuple(decoded.shape) == shape
    assert bytes(decoded.data) == data and isinstance(decoded.data, memoryview)
    assert decoded.backend == "cuda:0" and decoded.timing == message.timing


def test_scan_response_accepts_unpacked_shape_and_unknown_fields():
    # A shape written unpacked (one varint per element) and fields this client does not know
    # (as a newer server might send) parse as protobuf parses them.
    tensor = (b"\x08\x01" + b"\x10\x02" + b"\x10\x03"  # dtype FLOAT32, shape 2, 3 unpacked
              + b"\x1a\x18" + bytes(24)                 # data: 24 bytes
              + b"\x20\x07" + b"\x2a\x01x")             # unknown fields 4 (varint), 5 (bytes)
    message = b"\x0a" + _wire.varint(len(tensor)) + tensor + b"\x12\x03cpu" + b"\x3d" + bytes(4)
    decoded = _wire.scan_response(message)
    reference = pb.ScanResponse.FromString(message)
    assert list(decoded.shape) == list(reference.result.shape) == [2, 3]
    assert bytes(decoded.data) == reference.result.data and decoded.backend == "cpu"


@pytest.mark.parametrize("message", [b"\x0a\x05\x08", b"\x0a", b"\x08\xff", b"\x0b"])
def test_truncated_or_malformed_responses_raise(message):
    from scan_service import ScanError
    with pytest.raises(ScanError, match="malformed message"):
        _wire.scan_response(message)


def test_varint():
    for value in (0, 1, 127, 128, 300, 2**31 - 1, 2**63):
        encoded = _wire.varint(value)
        decoded = pb.Timing.FromString(b"\x08" + encoded).queue_us if value < 2**63 else None
        assert decoded in (value, None)
        assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
