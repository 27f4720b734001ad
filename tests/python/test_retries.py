"""The retry policy of the C++ client: gRPC's retryPolicy (UNAVAILABLE, RESOURCE_EXHAUSTED with
backoff, CANCELLED; 5 attempts) and then up to max_attempts resends of a call ending UNAVAILABLE.

A scripted in-process grpcio server fails a given number of calls with a given status, so the
attempts can be counted exactly; then a real scan-server restarted under a client.
"""
import signal
from concurrent import futures

import grpc
import numpy as np
import pytest

from scan_service import (Client, InvalidArgumentError, ResourceExhaustedError, UnavailableError,
                          pb)


class ScriptedServer:
    """Scan fails with `code` for the first `failures` calls, then answers correctly (float32)."""

    def __init__(self, code, failures):
        self.code, self.failures, self.calls = code, failures, 0
        handler = grpc.method_handlers_generic_handler("scan.v1.ScanService", {
            # No GetServerInfo: the client must cope with UNIMPLEMENTED (and use Scan).
            "Scan": grpc.unary_unary_rpc_method_handler(self._scan)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def _scan(self, request_bytes, context):
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(self.code, f"scripted failure {self.calls}")
        request = pb.ScanRequest.FromString(request_bytes)
        gamma = request.gamma
        values = np.frombuffer(gamma.data, np.float32).reshape(tuple(gamma.shape))
        result = np.cumprod(values, axis=request.dim, dtype=np.float32)
        return pb.ScanResponse(result=pb.Tensor(dtype=gamma.dtype, shape=gamma.shape,
                                                data=result.tobytes()),
                               backend="scripted").SerializeToString()


@pytest.fixture
def scripted():
    servers = []

    def make(code, failures):
        servers.append(ScriptedServer(code, failures))
        return servers[-1]

    yield make
    for s in servers:
        s.server.stop(0)


X = np.linspace(0.9, 1.0, 24, dtype=np.float32).reshape(2, 12)


def scan(target, **kwargs):
    with Client(target, timeout=30, **kwargs) as c:
        return c.scan(X, dim=1)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.CANCELLED])
def test_retryable_failures_are_retried(scripted, code):
    server = scripted(code, failures=3)
    r = scan(server.target)
    assert server.calls == 4 and r.backend == "scripted" and r.transport == "grpc"
    np.testing.assert_allclose(r.tensor, np.cumprod(X.astype(np.float64), 1), rtol=1e-6)


def test_other_failures_are_not_retried(scripted):
    server = scripted(grpc.StatusCode.INVALID_ARGUMENT, failures=1)
    with pytest.raises(InvalidArgumentError, match="scripted failure 1"):
        scan(server.target)
    assert server.calls == 1


def test_resource_exhausted_gives_up_after_grpcs_five_attempts(scripted):
    server = scripted(grpc.StatusCode.RESOURCE_EXHAUSTED, failures=100)
    with pytest.raises(ResourceExhaustedError, match="scripted failure 5"):
        scan(server.target)
    assert server.calls == 5


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_unavailable_is_resent_max_attempts_times(scripted, max_attempts):
    server = scripted(grpc.StatusCode.UNAVAILABLE, failures=100)
    with pytest.raises(UnavailableError):
        scan(server.target, max_attempts=max_attempts)
    assert server.calls == 5 * max_attempts


def test_server_restarted_under_a_client(start_server):
    first = start_server()
    x = np.full((3, 100), 0.99, np.float32)
    with Client(first.target, timeout=30) as c:
        want = c.cumprod(x, dim=1)
        # Killed, as a replica is lost (SIGTERM would wait out the shutdown grace for this
        # client's idle connection).
        first.stop(signal.SIGKILL)
        second = start_server(port=first.port)  # same address, new process
        assert second.port == first.port
        np.testing.assert_array_equal(c.cumprod(x, dim=1), want)
