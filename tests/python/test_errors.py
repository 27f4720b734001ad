"""Every error path: caught locally before sending, and reported by the server."""
import socket

import grpc
import numpy as np
import pytest

import scan_service
from scan_service import (Client, DeadlineExceededError, FailedPreconditionError,
                          InvalidArgumentError, ResourceExhaustedError, ScanError,
                          UnavailableError)

torch = pytest.importorskip("torch")


def local_client():
    # Local checks need no server: a target nothing listens on proves nothing was sent.
    return Client("127.0.0.1:1", timeout=5)


# -- local ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [np.zeros(3, np.int32), np.zeros(3, np.complex64),
                               np.zeros(3, bool), np.zeros(3, np.longdouble),
                               torch.zeros(3, dtype=torch.int64),
                               torch.zeros(3, dtype=torch.complex64)],
                         ids=["np-int32", "np-complex64", "np-bool", "np-longdouble",
                              "torch-int64", "torch-complex64"])
def test_unsupported_dtype(x):
    with local_client() as c, pytest.raises(InvalidArgumentError) as caught:
        c.cumprod(x, dim=0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("gamma.dtype: ")
    assert str(x.dtype) in caught.value.message


@pytest.mark.parametrize("x", [[1.0, 2.0], 3.0, "abc"], ids=["list", "float", "str"])
def test_not_a_tensor(x):
    with local_client() as c, pytest.raises(InvalidArgumentError, match=r": gamma: expected"):
        c.cumprod(x, dim=0)


@pytest.mark.parametrize("shape,dim", [((2, 3), 2), ((2, 3), -3), ((4,), 1), ((), 1), ((), -2)])
def test_dim_out_of_range_uses_the_servers_wording(shape, dim):
    with local_client() as c, pytest.raises(InvalidArgumentError) as caught:
        c.cumprod(np.ones(shape, np.float32), dim=dim)
    rank = max(len(shape), 1)
    assert caught.value.message == (f"dim: {dim} is out of range for a rank-{len(shape)} tensor "
                                    f"(expected {-rank}..{rank - 1})")


def test_dim_must_be_an_integer():
    with local_client() as c, pytest.raises(InvalidArgumentError, match=r": dim: expected an int"):
        c.cumprod(np.ones(3, np.float32), dim=1.0)


def test_invalid_argument_is_also_a_value_error():
    with local_client() as c, pytest.raises(ValueError):
        c.cumprod(np.ones(3, np.float32), dim=5)


def test_bad_backend():
    with local_client() as c, pytest.raises(InvalidArgumentError, match=r": backend: 'tpu'"):
        c.scan(np.ones(3, np.float32), dim=0, backend="tpu")


@pytest.mark.parametrize("value", ["shm", "", None, "SYSTEM"])
def test_bad_shared_memory_value(value):
    with pytest.raises(ValueError, match="shared_memory"):
        Client("127.0.0.1:1", shared_memory=value)


@pytest.mark.parametrize("kwargs,match", [({"timeout": 0}, "timeout"), ({"timeout": -1}, "timeout"),
                                          ({"max_attempts": 0}, "max_attempts"),
                                          ({"stream_chunk_bytes": 0}, "stream_chunk_bytes"),
                                          ({"private_key": b"k"}, "go together"),
                                          ({"token": "a\nb"}, "token"),
                                          ({"root_certificates": "/nonexistent/ca.pem"},
                                           "cannot read")])
def test_bad_client_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Client("127.0.0.1:1", **kwargs)


@pytest.mark.parametrize("kind,transport", [("system", "system-shm"), ("cuda", "cuda-ipc")])
def test_demanded_shared_memory_the_server_does_not_offer(server, kind, transport):
    with Client(server.target, shared_memory=kind, timeout=30) as c:
        with pytest.raises(FailedPreconditionError) as caught:
            c.cumprod(np.ones(4, np.float32), dim=0)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"shared_memory='{kind}'" in caught.value.message
    assert transport in caught.value.message and "does not" in caught.value.message


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_auto_and_off_use_grpc(server, mode):
    with Client(server.target, shared_memory=mode, timeout=30) as c:
        assert c.scan(np.ones(4, np.float32), dim=0).transport == "grpc"


# -- remote --------------------------------------------------------------------------------------

def test_server_rejects_rank_over_its_limit(client):
    with pytest.raises(InvalidArgumentError) as caught:
        client.cumprod(np.ones([1] * 17, np.float32), dim=0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "gamma.shape: rank 17 exceeds the server's maximum of 16"


def test_stream_errors_name_the_header_field(small_server):
    with Client(small_server.target, timeout=30) as c:
        with pytest.raises(InvalidArgumentError) as caught:
            c.cumprod(np.ones([2] * 15 + [1, 1], np.float32), dim=0)  # 128 KiB: streamed
    assert caught.value.message.startswith("header.gamma.shape: rank 17 exceeds")


def test_gpu_requested_on_a_server_without_one(client):
    if any(b.kind == scan_service.pb.DEVICE_KIND_GPU for b in client.server_info().backends):
        pytest.skip("this server has a GPU backend")
    with pytest.raises(FailedPreconditionError) as caught:
        client.cumprod(np.ones(4, np.float32), dim=0, backend="gpu")
    assert caught.value.message.startswith("backend: ")


def test_tensor_over_the_tensor_limit(start_server):
    # The default --max-inflight-bytes, 4 x 4 KiB: gRPC's memory quota once was just that, and it
    # reset every stream (RST_STREAM 11) before the server could answer.
    server = start_server("--max-tensor-bytes", "4096", "--stream-chunk-bytes", "1024")
    x = np.ones(1025, np.float32)  # 4100 bytes
    with Client(server.target, timeout=30) as c:
        with pytest.raises(ResourceExhaustedError) as local:
            c.cumprod(x, dim=0)
        # Without the limits (as before GetServerInfo answers) the server says the same, after
        # gRPC's retries of RESOURCE_EXHAUSTED.
        c._info = scan_service.pb.GetServerInfoResponse()
        with pytest.raises(ResourceExhaustedError) as remote:
            c.cumprod(x, dim=0)
    assert local.value.message == remote.value.message == (
        "gamma: 4100 bytes exceed the server's tensor limit of 4096 bytes")


def test_deadline(client):
    x = np.ones(8 << 20, np.float32)
    with pytest.raises(DeadlineExceededError) as caught:
        client.cumprod(x, dim=0, timeout=0.001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_server():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]  # free now; nothing listens on it
    probe.close()
    with Client(f"127.0.0.1:{dead_port}", timeout=5) as dead:
        with pytest.raises(UnavailableError) as caught:
            dead.cumprod(np.ones(4, np.float32), dim=0)
        with pytest.raises(UnavailableError):
            dead.health()
    assert isinstance(caught.value, ScanError) and caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_errors_print_code_and_message(client):
    with pytest.raises(ScanError) as caught:
        client.cumprod(np.ones([1] * 17, np.float32), dim=0)
    assert str(caught.value) == ("INVALID_ARGUMENT: gamma.shape: rank 17 exceeds the server's "
                                 "maximum of 16")
