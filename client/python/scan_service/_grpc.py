"""The gRPC side: one channel tuned as the C++ client's, and the Scan / ScanStream conversations.

Mirrors client/scan_client.cc and wire/transport.cc: message limits at gRPC's maximum, a fixed
64 MiB stream window instead of BDP probing, round_robin over every address of the target, and
the same retry policy (gRPC's retryPolicy for UNAVAILABLE, RESOURCE_EXHAUSTED with backoff and
CANCELLED; then up to `max_attempts` resends of a call that still ends UNAVAILABLE, within its
deadline). A scan is a pure function of its request, so resending is always safe.
"""
import json
import threading
import time

import grpc
import numpy as np

from . import _wire
from ._errors import ScanError, from_rpc_error
from ._proto import scan_pb2 as pb

SERVICE = "scan.v1.ScanService"
_SCAN = f"/{SERVICE}/Scan"
_SCAN_STREAM = f"/{SERVICE}/ScanStream"
_GET_SERVER_INFO = f"/{SERVICE}/GetServerInfo"
_REGISTER_SHARED_MEMORY = f"/{SERVICE}/RegisterSharedMemory"
_UNREGISTER_SHARED_MEMORY = f"/{SERVICE}/UnregisterSharedMemory"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"

_INT_MAX = 2**31 - 1

# The C++ client's service config (client/scan_client.cc, make_channel), word for word.
_SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": SERVICE}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"],
        },
    }],
}

CHANNEL_OPTIONS = (
    # Tensors are large by nature; the server's own limits are what count.
    ("grpc.max_send_message_length", _INT_MAX),
    ("grpc.max_receive_message_length", _INT_MAX),
    # wire/transport.cc: a fixed 64 MiB window opens at once on a new connection.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 64 << 20),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    # Retries resend from a buffer that references the request's slices; let it cover every
    # request size instead of gRPC's default 256 KiB, or large scans would not be retried.
    ("grpc.per_rpc_retry_buffer_size", _INT_MAX),
)

# A chunk size for ScanStream that keeps messages small without costing throughput (as the C++
# client's kDefaultStreamChunkBytes); the server's accepted.max_chunk_bytes may lower it.
DEFAULT_STREAM_CHUNK_BYTES = 4 << 20

_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def make_channel(target, credentials=None, options=()):
    """A channel with the options above, then `options` (later ones win)."""
    merged = dict(CHANNEL_OPTIONS)
    merged.update(dict(options))
    if credentials is None:
        return grpc.insecure_channel(target, options=list(merged.items()))
    return grpc.secure_channel(target, credentials, options=list(merged.items()))


class Deadline:
    """An overall deadline shared by a call's attempts; None means none."""

    def __init__(self, timeout):
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self):
        """Seconds left (at least a tiny positive amount, so gRPC reports the expiry), or None."""
        return None if self._end is None else max(self._end - time.monotonic(), 1e-6)

    def expired(self):
        return self._end is not None and time.monotonic() >= self._end


class GrpcCalls:
    """The service's methods on one channel, with raw-bytes (de)serialisers for the tensors."""

    def __init__(self, channel, metadata, max_attempts):
        self._metadata = metadata
        self._max_attempts = max_attempts
        # No serialisers: requests are the bytes _wire builds, responses grpcio's bytes.
        self._scan = channel.unary_unary(_SCAN)
        self._scan_stream = channel.stream_stream(_SCAN_STREAM)
        self._server_info = channel.unary_unary(
            _GET_SERVER_INFO, request_serializer=pb.GetServerInfoRequest.SerializeToString,
            response_deserializer=pb.GetServerInfoResponse.FromString)
        self._health = channel.unary_unary(_HEALTH_CHECK)
        self._register = channel.unary_unary(
            _REGISTER_SHARED_MEMORY,
            request_serializer=pb.RegisterSharedMemoryRequest.SerializeToString,
            response_deserializer=pb.RegisterSharedMemoryResponse.FromString)
        self._unregister = channel.unary_unary(
            _UNREGISTER_SHARED_MEMORY,
            request_serializer=pb.UnregisterSharedMemoryRequest.SerializeToString,
            response_deserializer=pb.UnregisterSharedMemoryResponse.FromString)

    def _resending(self, attempt, deadline):
        """Runs attempt(timeout) again while it ends UNAVAILABLE, as the C++ client does.

        gRPC's own retries stop once a server has started answering; a replica that goes away
        mid-answer leaves UNAVAILABLE, which is worth a few more tries within the deadline.
        """
        for number in range(self._max_attempts):
            try:
                return attempt(deadline.remaining())
            except grpc.RpcError as error:
                last_try = number + 1 == self._max_attempts or deadline.expired()
                if error.code() != grpc.StatusCode.UNAVAILABLE or last_try:
                    raise from_rpc_error(error) from None

    def scan(self, host, dim, backend, deadline):
        """Scan: the tensor and result in one message each. Returns (DecodedResponse, out array)."""
        request = _wire.scan_request(host.wire_dtype, host.array.shape, host.data(), host.nbytes,
                                     dim, backend)
        message = self._resending(
            lambda timeout: self._scan(request, timeout=timeout, metadata=self._metadata),
            deadline)
        response = _wire.scan_response(message)
        _check_result(host, response, len(response.data))
        # The one copy of the result: out of grpcio's immutable bytes, into a writable array of
        # the caller's dtype (what torch.cumprod returns too).
        out = np.empty(host.array.shape, dtype=host.array.dtype)
        memoryview(out.reshape(-1)).cast("B")[:] = response.data
        return response, out

    def scan_message(self, request, deadline):
        """Scan of an already serialised request whose tensors are in shared memory: the
        DecodedResponse (no result bytes: they are in the output region)."""
        message = self._resending(
            lambda timeout: self._scan(request, timeout=timeout, metadata=self._metadata),
            deadline)
        return _wire.scan_response(message)

    def register_shared_memory(self, request, timeout):
        try:
            self._register(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def unregister_shared_memory(self, name, timeout):
        try:
            self._unregister(pb.UnregisterSharedMemoryRequest(name=name), timeout=timeout,
                             metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def scan_stream(self, host, dim, backend, deadline, chunk_bytes):
        """ScanStream: the tensor and result in chunks (tensors larger than a message)."""
        header = _wire.stream_header(host.wire_dtype, host.array.shape, dim, backend)
        data = host.data()
        out = np.empty(host.array.shape, dtype=host.array.dtype)
        out_bytes = memoryview(out.reshape(-1)).cast("B")
        response = self._resending(
            lambda timeout: self._stream_once(header, data, out_bytes, chunk_bytes, timeout),
            deadline)
        _check_result(host, response, host.nbytes)
        return response, out

    def _stream_once(self, header, data, out_bytes, chunk_bytes, timeout):
        # The conversation (scan.proto): header; wait for `accepted`; chunks; read the result.
        # grpcio sends from this iterator on its own thread, one message at a time, so the
        # iterator waits for `accepted` (or the call's end) before it sends any tensor byte.
        accepted = threading.Event()
        granted = {"chunk_bytes": 0}

        def requests():
            yield header
            accepted.wait()
            size = granted["chunk_bytes"]
            if size:  # still 0 if the call ended before `accepted`: send nothing
                for offset in range(0, len(data), size):
                    yield _wire.stream_chunk(data[offset:offset + size])

        call = self._scan_stream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            responses = iter(call)
            first = pb.ScanStreamResponse.FromString(_next(responses, "no answer to the header"))
            if first.WhichOneof("part") != "accepted":
                raise _stream_broken(call, "the server's first message is not `accepted`")
            limit = first.accepted.max_chunk_bytes
            granted["chunk_bytes"] = min(chunk_bytes, limit) if limit > 0 else chunk_bytes
            accepted.set()

            head = pb.ScanStreamResponse.FromString(_next(responses, "no result"))
            if head.WhichOneof("part") != "header":
                raise _stream_broken(call, "expected the result's header")
            response = _wire.DecodedResponse.from_message(head.header)
            filled = 0
            for message in responses:
                payload = _wire.stream_chunk_payload(message)
                if payload is None:
                    raise _stream_broken(call, "expected a chunk of the result")
                if len(payload) > len(out_bytes) - filled:
                    raise _stream_broken(call, "the result is larger than the tensor sent")
                out_bytes[filled:filled + len(payload)] = payload
                filled += len(payload)
            if filled != len(out_bytes):
                raise ScanError(f"ScanStream: the result has {filled} bytes, expected "
                                f"{len(out_bytes)}", grpc.StatusCode.INTERNAL)
            return response
        finally:
            # Never leave grpcio's sending thread waiting on a call that ended early.
            accepted.set()
            call.cancel()  # a no-op once the call has finished

    def server_info(self, timeout):
        try:
            return self._server_info(pb.GetServerInfoRequest(), timeout=timeout,
                                     metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def health(self, service, timeout):
        """grpc.health.v1 Check; the status name. Encoded by hand: two one-field messages, and
        importing a second health_pb2 would clash with grpcio-health-checking's in protobuf's
        default descriptor pool."""
        encoded = service.encode("utf-8")
        request = b"\x0a" + _wire.varint(len(encoded)) + encoded if encoded else b""
        try:
            answer = self._health(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        status = 0
        for number, wire_type, value, _, _ in _wire.fields(answer):
            if number == 1 and wire_type == 0:
                status = value
        return _HEALTH_STATUS.get(status, "UNKNOWN")


def _next(responses, what):
    try:
        return next(responses)
    except StopIteration:
        raise ScanError(f"ScanStream: the server ended the call with {what}",
                        grpc.StatusCode.INTERNAL) from None


def _stream_broken(call, what):
    call.cancel()
    return ScanError(f"ScanStream: {what}", grpc.StatusCode.INTERNAL)


def _check_result(host, response, nbytes):
    if response.dtype != host.wire_dtype or tuple(response.shape) != host.array.shape:
        raise ScanError(
            f"the server answered with dtype {response.dtype} and shape {list(response.shape)} "
            f"for a tensor of dtype {host.wire_dtype} and shape {list(host.array.shape)}",
            grpc.StatusCode.INTERNAL)
    if nbytes != host.nbytes:
        raise ScanError(f"the result has {nbytes} bytes, expected {host.nbytes}",
                        grpc.StatusCode.INTERNAL)
