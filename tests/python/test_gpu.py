"""CUDA tensors in and out: through gRPC, and through CUDA IPC (the server scans the client's
device memory where it lies, in another process: this one).

Skipped without CUDA (torch.cuda.is_available()), e.g. in CI.
"""
import os

import pytest

from conftest import assert_cumprod_close, regions_on

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("backend", ["auto", "gpu", "cpu"])
def test_cuda_tensor_in_and_out(client, dtype, backend):
    has_gpu = any(b.kind == 2 for b in client.server_info().backends)  # DEVICE_KIND_GPU
    if backend == "gpu" and not has_gpu:
        pytest.skip("the server has no GPU backend")
    x = (0.9 + 0.1 * torch.rand(2, 4, 512, 64, device="cuda:0", dtype=torch.float64)).to(dtype)
    r = client.scan(x, dim=2, backend=backend)
    y = r.tensor
    assert y.device == x.device and y.dtype == dtype and y.shape == x.shape
    assert r.transport == "grpc"
    if backend == "gpu":
        assert r.backend.startswith("cuda:")
    name = str(dtype).replace("torch.", "")
    assert_cumprod_close(y.double().cpu().numpy(), x.double().cpu().numpy(), 2, name)


def test_cuda_tensor_on_another_device_comes_back_there(client):
    if torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device")
    x = torch.full((3, 100), 0.99, device="cuda:1")
    y = client.cumprod(x, dim=1)
    assert y.device == x.device
    torch.testing.assert_close(y, torch.cumprod(x, dim=1), rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def ipc_server():
    from conftest import ServerProcess
    process = ServerProcess("--allow-shared-memory", "true")
    yield process
    process.stop()
    process.cleanup()


def _server_has_gpu(target):
    from scan_service import Client
    with Client(target, timeout=60) as c:
        return any(b.kind == 2 for b in c.server_info().backends)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("mode", ["cuda", "auto"])
def test_cuda_ipc_scans_the_tensor_where_it_lies(ipc_server, dtype, mode):
    from scan_service import Client
    if not _server_has_gpu(ipc_server.target):
        pytest.skip("the server has no GPU backend")
    with Client(ipc_server.target, shared_memory=mode, timeout=60) as c:
        for shape, dim in [((2, 4, 512, 64), 2), ((3, 1021), 1), ((7,), 0), ((2, 8, 4096, 128), -2)]:
            x = (0.9 + 0.1 * torch.rand(*shape, device="cuda:0", dtype=torch.float64)).to(dtype)
            r = c.scan(x, dim=dim)
            assert r.transport == "cuda-ipc", r.transport
            assert r.backend.startswith("cuda:")
            y = r.tensor
            assert y.device == x.device and y.dtype == dtype and y.shape == x.shape
            name = str(dtype).replace("torch.", "")
            assert_cumprod_close(y.double().cpu().numpy(), x.double().cpu().numpy(), dim, name)


def test_cuda_ipc_views_and_reused_allocations(ipc_server):
    from scan_service import Client
    if not _server_has_gpu(ipc_server.target):
        pytest.skip("the server has no GPU backend")
    base = 0.9 + 0.1 * torch.rand(64, 1000, device="cuda:0")
    with Client(ipc_server.target, shared_memory="cuda", timeout=60) as c:
        for start in (0, 1, 17, 40):  # views at offsets inside one allocation
            x = base[start:start + 20]
            y = c.cumprod(x, dim=1)
            torch.testing.assert_close(y, torch.cumprod(x.double(), dim=1).float(), rtol=2e-7,
                                       atol=0)
        strided = base[:, ::3]  # made contiguous first (a copy on the device)
        torch.testing.assert_close(c.cumprod(strided, dim=0),
                                   torch.cumprod(strided.double(), dim=0).float(), rtol=2e-7, atol=0)
        for _ in range(20):  # fresh allocations each round
            x = 0.9 + 0.1 * torch.rand(256, 256, device="cuda:0")
            torch.testing.assert_close(c.cumprod(x, dim=0),
                                       torch.cumprod(x.double(), dim=0).float(), rtol=2e-7, atol=0)


def test_cuda_ipc_from_threads_sharing_one_client(ipc_server):
    # Scans from several threads register, grow and evict regions of one client at once: none may
    # name a region another thread has just replaced, and every region is gone after close().
    import threading
    from scan_service import Client
    if not _server_has_gpu(ipc_server.target):
        pytest.skip("the server has no GPU backend")
    failures = []
    with Client(ipc_server.target, shared_memory="cuda", timeout=60) as c:
        def scans(seed):
            generator = torch.Generator(device="cuda:0").manual_seed(seed)
            try:
                for round_ in range(40):
                    rows = 1 + (seed * 7 + round_ * 13) % 97
                    x = 0.9 + 0.1 * torch.rand(rows, 333, device="cuda:0", generator=generator)
                    torch.testing.assert_close(c.cumprod(x, dim=1),
                                               torch.cumprod(x.double(), dim=1).float(),
                                               rtol=2e-7, atol=0)
            except Exception as error:  # noqa: BLE001 - reported below with its thread
                failures.append((seed, repr(error)))

        threads = [threading.Thread(target=scans, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    ours = [region.name for region in regions_on(ipc_server)
            if region.name.startswith(f"scan-cuda-{os.getpid()}-")]
    assert ours == [], "close() left CUDA regions registered"


def test_cuda_ipc_returns_every_result_to_the_allocator(ipc_server):
    # Repeated scans of one tensor must not hold device memory: each result, once dropped, goes
    # back to torch's caching allocator, so the next result reuses its block and its region. The
    # first client shared storages through torch's own IPC reference counting, which only a torch
    # consumer releases: every result stayed allocated, and every scan registered a new region.
    from scan_service import Client
    if not _server_has_gpu(ipc_server.target):
        pytest.skip("the server has no GPU backend")
    x = 0.999 + 0.001 * torch.rand(2, 8, 1024, 128, device="cuda:0")
    want = torch.cumprod(x.double(), dim=2).float()
    with Client(ipc_server.target, shared_memory="cuda", timeout=60) as c:
        torch.testing.assert_close(c.cumprod(x, dim=2), want, rtol=2e-7, atol=0)
        torch.cuda.synchronize()
        allocated = torch.cuda.memory_allocated()
        before = {region.name for region in regions_on(ipc_server)}
        for _ in range(20):
            torch.testing.assert_close(c.cumprod(x, dim=2), want, rtol=2e-7, atol=0)
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == allocated
        assert {region.name for region in regions_on(ipc_server)} == before
