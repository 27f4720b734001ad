"""The Python client over system shared memory: a server on this host started with
--allow-shared-memory; results for every dtype against float64, the transport reported, regions
reused and cleaned up, and the refusals when the server does not allow it."""
import os

import grpc
import numpy as np
import pytest

from conftest import assert_cumprod_close
from scan_service import Client, FailedPreconditionError, InvalidArgumentError
from scan_service._proto import scan_pb2 as pb
from scan_service._shared_memory import local_host_id

CASES = [((7,), 0), ((3, 129), 1), ((3, 129), -2), ((2, 4, 64, 64), 2), ((1,), 0),
         ((2, 3, 64, 5), -1)]


@pytest.fixture(scope="module")
def shm_server(start_server):
    return start_server("--allow-shared-memory", "true")


@pytest.fixture(scope="module")
def start_server():
    from conftest import ServerProcess
    started = []

    def start(*flags):
        process = ServerProcess(*flags)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        process.cleanup()


def regions_on(server):
    channel = grpc.insecure_channel(server.target)
    try:
        listed = channel.unary_unary(
            "/scan.v1.ScanService/ListSharedMemory",
            request_serializer=pb.ListSharedMemoryRequest.SerializeToString,
            response_deserializer=pb.ListSharedMemoryResponse.FromString)(
                pb.ListSharedMemoryRequest(), timeout=10)
        return list(listed.regions)
    finally:
        channel.close()


def test_server_advertises_system_shared_memory(shm_server):
    with Client(shm_server.target, timeout=30) as c:
        info = c.server_info()
    assert pb.SHARED_MEMORY_KIND_SYSTEM in info.shared_memory_kinds
    assert info.host_id == local_host_id() and info.host_id


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,dim", CASES)
@pytest.mark.parametrize("mode", ["system", "auto"])
def test_numpy_through_system_shared_memory(shm_server, rng, dtype, shape, dim, mode):
    x = rng.uniform(0.9, 1.0, size=shape).astype(dtype)
    with Client(shm_server.target, shared_memory=mode, timeout=30) as c:
        r = c.scan(x, dim=dim)
    assert r.transport == "system-shm"
    assert type(r.tensor) is np.ndarray and r.tensor.dtype == x.dtype and r.tensor.shape == shape
    assert r.tensor.flags.writeable
    assert_cumprod_close(r.tensor.astype(np.float64), x.astype(np.float64), dim,
                         np.dtype(dtype).name)


def test_torch_bfloat16_through_system_shared_memory(shm_server, rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.uniform(0.9, 1.0, size=(2, 8, 512, 16))).to(torch.bfloat16)
    with Client(shm_server.target, shared_memory="system", timeout=30) as c:
        r = c.scan(x, dim=2)
    assert r.transport == "system-shm"
    assert isinstance(r.tensor, torch.Tensor) and r.tensor.dtype == torch.bfloat16
    assert_cumprod_close(r.tensor.double().numpy(), x.double().numpy(), 2, "bfloat16")


def test_regions_are_reused_and_removed(shm_server, rng):
    with Client(shm_server.target, shared_memory="system", timeout=30) as c:
        for round_index in range(30):
            x = rng.uniform(0.5, 1.0, size=(4, 1000 + round_index)).astype(np.float32)
            y = c.cumprod(x, dim=1)
            assert_cumprod_close(y.astype(np.float64), x.astype(np.float64), 1, "float32")
        ours = [region for region in regions_on(shm_server)
                if region.name.startswith(f"scan-py-{os.getpid()}-")]
        assert 1 <= len(ours) <= 4, "a region per scan instead of reuse"
    after = [region for region in regions_on(shm_server)
             if region.name.startswith(f"scan-py-{os.getpid()}-")]
    assert after == [], "close() left regions registered"
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"scan-py-{os.getpid()}-")]


def test_empty_tensor_through_system_shared_memory(shm_server):
    with Client(shm_server.target, shared_memory="system", timeout=30) as c:
        r = c.scan(np.ones((3, 0, 4), np.float32), dim=1)
    assert r.tensor.shape == (3, 0, 4)


def test_server_errors_name_the_field(shm_server):
    with Client(shm_server.target, shared_memory="system", timeout=30) as c:
        with pytest.raises(InvalidArgumentError) as caught:
            c.cumprod(np.ones([1] * 17, np.float32), dim=0)
    assert "gamma.shape" in caught.value.message


def test_demanding_system_without_the_flag_is_refused(server):
    with Client(server.target, shared_memory="system", timeout=30) as c:
        with pytest.raises(FailedPreconditionError) as caught:
            c.cumprod(np.ones(4, np.float32), dim=0)
        assert "--allow-shared-memory" in caught.value.message
        # auto falls back to gRPC on the same server
    with Client(server.target, shared_memory="auto", timeout=30) as c:
        assert c.scan(np.ones(4, np.float32), dim=0).transport == "grpc"
