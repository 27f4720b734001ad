"""scan_service.Client: cumprod of NumPy arrays and torch tensors through scan-server."""
import dataclasses
import os
import threading
import time
from typing import Any, Dict

import grpc

from . import _grpc
from ._errors import (FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError,
                      ScanError)
from ._proto import scan_pb2 as pb
from ._shared_memory import CudaTransport, SharedMemoryPolicy
from ._tensors import is_torch_tensor, normalise_dim, to_host, torch_wire_dtype

_BACKENDS = {"auto": pb.BACKEND_PREFERENCE_AUTO, "cpu": pb.BACKEND_PREFERENCE_CPU,
             "gpu": pb.BACKEND_PREFERENCE_GPU}
# What a Scan message holds besides the tensor bytes (tags, shape, dim, backend; the response's
# backend name and timing), generously: tensors within this of the server's message limit
# are streamed.
_MESSAGE_OVERHEAD = 4096
# One gRPC message carries at most 2 GiB; without the server's limits, stream above 1 GiB (as
# scan-client does).
_STREAM_ABOVE_WITHOUT_LIMITS = 1 << 30
# grpcio turns a large unary message into one fresh `bytes` each way (page faults, no overlap of
# copy and transfer), while ScanStream's 4 MiB chunks reuse memory: on loopback a 16 MiB float32
# scan took 44 ms as Scan and 22 ms as ScanStream, 64 MiB 228 vs 95 ms; up to 8 MiB Scan is
# faster (12.3 vs 14.2 ms). bench/RESULTS.md, "Python client".
DEFAULT_STREAM_ABOVE_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """What scan() returns.

    tensor:    the result, of the input's type, dtype, shape and device
    backend:   the server's backend that ran it, e.g. "cpu-native", "cuda:0"
    timing:    server microseconds: {"queue_us", "compute_us", "total_us"} (scan.proto, Timing)
    transport: how the tensor travelled: "grpc" (one Scan message each way) or "grpc-stream"
               (ScanStream chunks), "system-shm" (POSIX shared memory; the server shares the host
               and allows it)
    round_trip_us: this client's wall time for the call, conversions included
    """
    tensor: Any
    backend: str
    timing: Dict[str, int]
    transport: str
    round_trip_us: int


def _pem(value, name):
    """PEM bytes from bytes, PEM text, or a path to a PEM file."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii")
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as file:
                return file.read()
        except OSError as error:
            raise ValueError(
                f"{name}: cannot read {os.fspath(value)!r}: {error.strerror}") from None
    raise TypeError(f"{name}: expected PEM bytes or a file path, got {type(value).__name__}")


class Client:
    """A client of scan-server's scan.v1.ScanService.

    Client("host:port") speaks plaintext. TLS: root_certificates (the CA that signed the server's
    certificate; None with tls=True: the system's roots), plus private_key and certificate_chain
    for servers that require client certificates. Each may be PEM bytes, PEM text or a file path.
    token: sent as "authorization: Bearer <token>" with every call. timeout: seconds per call
    (None: no deadline), including retries. max_attempts: how often a call that ends UNAVAILABLE
    is sent again on top of gRPC's own retries (1: once). Tensors over the server's message limit,
    or over stream_above_bytes (default 8 MiB, above which grpcio's chunked stream is faster than
    one message), go through ScanStream in stream_chunk_bytes chunks. shared_memory: "auto"
    (shared memory when the server offers it, else gRPC), "system", "cuda" (demand it;
    FailedPreconditionError if not offered) or "off". options: extra gRPC channel arguments,
    applied last.

    Thread-safe: one Client (one channel, one connection per server address) may serve many
    threads. Calls fetch the server's limits once (GetServerInfo) to pick Scan or ScanStream.
    """

    def __init__(self, target, *, token=None, root_certificates=None, private_key=None,
                 certificate_chain=None, tls=None, shared_memory="auto", timeout=None,
                 max_attempts=3, stream_chunk_bytes=_grpc.DEFAULT_STREAM_CHUNK_BYTES,
                 stream_above_bytes=DEFAULT_STREAM_ABOVE_BYTES, options=()):
        self._shared_memory = SharedMemoryPolicy(shared_memory)
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout: {timeout!r} is not a positive number of seconds")
        if int(max_attempts) < 1:
            raise ValueError(f"max_attempts: {max_attempts!r} is below 1")
        if int(stream_chunk_bytes) < 1:
            raise ValueError(f"stream_chunk_bytes: {stream_chunk_bytes!r} is below 1")
        if (private_key is None) != (certificate_chain is None):
            raise ValueError("private_key and certificate_chain go together (mutual TLS)")
        if token is not None and (not isinstance(token, str) or not token
                                  or any(c in token for c in "\r\n")):
            raise ValueError("token: expected a non-empty string on one line")
        self._timeout = timeout
        self._stream_chunk_bytes = int(stream_chunk_bytes)
        self._stream_above_bytes = int(stream_above_bytes)

        credentials = None
        if tls or (tls is None and (root_certificates is not None or private_key is not None)):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certificates, "root_certificates"),
                private_key=_pem(private_key, "private_key"),
                certificate_chain=_pem(certificate_chain, "certificate_chain"))
        self.target = target
        self._channel = _grpc.make_channel(target, credentials, options)
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._calls = _grpc.GrpcCalls(self._channel, metadata, int(max_attempts))
        self._info = None
        self._info_lock = threading.Lock()

    # -- the scan -------------------------------------------------------------------------------

    def cumprod(self, x, dim, *, backend="auto", timeout=None):
        """torch.cumprod(x, dim) computed by the server: same type, dtype, shape and device."""
        return self.scan(x, dim, backend=backend, timeout=timeout).tensor

    def scan(self, x, dim, *, backend="auto", timeout=None):
        """Cumulative product of `x` along `dim`, with the server's account of it (ScanResult).

        x: numpy.ndarray (float16/32/64) or torch.Tensor (float16/32/64, bfloat16; CPU or CUDA);
        non-contiguous inputs are made contiguous first (one copy). backend: "auto", "cpu", "gpu".
        timeout: seconds, overriding the client's. Raises ScanError (see scan_service.errors).
        """
        started = time.perf_counter()
        if backend not in _BACKENDS:
            raise InvalidArgumentError(f"backend: {backend!r} is not one of 'auto', 'cpu', 'gpu'")
        on_cuda = is_torch_tensor(x) and x.is_cuda and x.numel() > 0
        deadline = _grpc.Deadline(self._timeout if timeout is None else timeout)
        if on_cuda:
            wire_dtype = torch_wire_dtype(x)  # refused here before any call, as for the host
            dim = normalise_dim(dim, tuple(x.shape))
            info = self._server_info_for_scan(deadline)
            shared = self._shared_memory.transport_for(self._calls, True, info)
            if isinstance(shared, CudaTransport):
                try:
                    response, tensor = shared.scan(x, wire_dtype, dim, _BACKENDS[backend],
                                                   deadline)
                except FailedPreconditionError:
                    # An allocation that exports no IPC handle: "auto" takes the host path.
                    if self._shared_memory.mode != "auto":
                        raise
                else:
                    timing = {"queue_us": response.timing.queue_us,
                              "compute_us": response.timing.compute_us,
                              "total_us": response.timing.total_us}
                    return ScanResult(tensor, response.backend, timing, shared.name,
                                      int((time.perf_counter() - started) * 1e6))
        host = to_host(x)
        dim = normalise_dim(dim, host.shape)

        info = self._server_info_for_scan(deadline)
        shared = self._shared_memory.transport_for(self._calls, on_cuda, info)
        limits = info.limits if info is not None else pb.ServerLimits()
        if 0 < limits.max_tensor_bytes < host.nbytes:
            # The server's own wording; caught here because RESOURCE_EXHAUSTED is retried.
            raise ResourceExhaustedError(f"gamma: {host.nbytes} bytes exceed the server's tensor "
                                         f"limit of {limits.max_tensor_bytes} bytes")
        message_limit = limits.max_message_bytes or _STREAM_ABOVE_WITHOUT_LIMITS
        stream = (host.nbytes + _MESSAGE_OVERHEAD > message_limit
                  or host.nbytes > self._stream_above_bytes)
        if shared is not None:  # a transport with the same interface as self._calls' scan
            transport = shared.name
            response, out = shared.scan(host, dim, _BACKENDS[backend], deadline)
        elif stream:
            transport = "grpc-stream"
            response, out = self._calls.scan_stream(host, dim, _BACKENDS[backend], deadline,
                                                    self._stream_chunk_bytes)
        else:
            transport = "grpc"
            response, out = self._calls.scan(host, dim, _BACKENDS[backend], deadline)
        tensor = host.restore(out)
        timing = {"queue_us": response.timing.queue_us, "compute_us": response.timing.compute_us,
                  "total_us": response.timing.total_us}
        return ScanResult(tensor, response.backend, timing, transport,
                          int((time.perf_counter() - started) * 1e6))

    # -- about the server -----------------------------------------------------------------------

    def server_info(self, timeout=5.0):
        """GetServerInfo: version, backends, GPUs, limits (scan.v1.GetServerInfoResponse)."""
        info = self._calls.server_info(timeout)
        with self._info_lock:
            self._info = info
        return info

    def health(self, service="", timeout=5.0):
        """True if grpc.health.v1 says SERVING for `service` ("" is the whole server; the server
        also answers for "scan.v1.ScanService"), False for any other answer (NOT_SERVING while
        draining). Raises ScanError if the check itself fails (e.g. UnavailableError)."""
        return self._calls.health(service, timeout) == "SERVING"

    def _server_info_for_scan(self, deadline):
        with self._info_lock:
            if self._info is not None:
                return self._info
        try:
            return self.server_info(deadline.remaining())
        except ScanError as error:
            if error.code == grpc.StatusCode.UNIMPLEMENTED:
                return None  # a server (or proxy) without GetServerInfo: no limits known
            raise

    # -- lifetime -------------------------------------------------------------------------------

    @property
    def channel(self):
        """The grpc.Channel, for callers who want to add their own stubs on it."""
        return self._channel

    def close(self):
        self._shared_memory.close()
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"Client({self.target!r})"
