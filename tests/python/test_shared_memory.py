"""The Python client over system shared memory: a server on this host started with
--allow-shared-memory; results for every dtype against float64, the transport reported, regions
reused and cleaned up, and the refusals when the server does not allow it."""
import os
import random
import threading

import grpc
import numpy as np
import pytest

from conftest import assert_cumprod_close, regions_on
from scan_service import Client, FailedPreconditionError, InvalidArgumentError
from scan_service._errors import ScanError
from scan_service._proto import scan_pb2 as pb
from scan_service._shared_memory import CudaRegions, local_host_id

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


class _FakeRegionServer:
    """Registrations as a server keeps them, so tests can check that no leased name is gone."""

    def __init__(self, fail_on=None):
        self.registered = {}
        self.unregistered = []
        self.fail_on = fail_on
        self.count = 0
        self.lock = threading.Lock()

    def register(self, key, end):
        with self.lock:
            if self.fail_on is not None and self.fail_on(key, end):
                raise ScanError("too many regions", grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.count += 1
            name = f"r{self.count}"
            self.registered[name] = (key, end)
            return name

    def unregister(self, name):
        with self.lock:
            assert name in self.registered, f"{name} unregistered twice"
            del self.registered[name]
            self.unregistered.append(name)


def test_cuda_regions_keep_a_replaced_region_while_a_scan_names_it():
    # The tensor and its result usually share one allocation of torch's caching allocator, the
    # result after the tensor: the second reaches further, and replacing the region must not pull
    # the first's name from under the scan that is about to send it.
    server = _FakeRegionServer()
    regions = CudaRegions(server.unregister, kept=4)
    first = regions.lease({"allocation": 100}, server.register)
    second = regions.lease({"allocation": 200}, server.register)
    assert first["allocation"] != second["allocation"]
    assert set(server.registered) == {first["allocation"], second["allocation"]}
    regions.release(first.values())
    assert server.unregistered == [first["allocation"]]
    # A smaller span reuses the larger region; releasing it keeps the current region.
    third = regions.lease({"allocation": 50}, server.register)
    assert third == second
    regions.release(third.values())
    regions.release(second.values())
    assert set(server.registered) == {second["allocation"]}
    regions.close()
    assert server.registered == {}


def test_cuda_regions_evict_the_oldest_once_unused():
    server = _FakeRegionServer()
    regions = CudaRegions(server.unregister, kept=2)
    leased = [regions.lease({key: 64}, server.register) for key in ("a", "b", "c")]
    assert len(server.registered) == 3  # "a" is evicted but still named by a scan in flight
    for names in leased:
        regions.release(names.values())
    assert server.unregistered == [leased[0]["a"]]
    assert regions.lease({"a": 64}, server.register)["a"] not in (leased[0]["a"],)


def test_cuda_regions_release_what_they_leased_when_registration_fails():
    server = _FakeRegionServer(fail_on=lambda key, end: key == "b")
    regions = CudaRegions(server.unregister, kept=1)
    with pytest.raises(ScanError):
        regions.lease({"a": 8, "b": 8}, server.register)
    # "a" was registered and is current, not leased: a new region for "c" evicts it at once.
    names = regions.lease({"c": 8}, server.register)
    assert list(server.registered) == [names["c"]]


def test_cuda_regions_under_concurrent_scans_never_name_a_removed_region():
    server = _FakeRegionServer()
    regions = CudaRegions(server.unregister, kept=3)
    errors = []

    def scans(seed):
        rng = random.Random(seed)
        for _ in range(300):
            wanted = {rng.choice("abcde"): rng.randrange(1, 1000) for _ in range(2)}
            names = regions.lease(wanted, server.register)
            with server.lock:
                held = {key: server.registered.get(names[key]) for key in wanted}
            wrong = [key for key, end in wanted.items()
                     if held[key] is None or held[key][0] != key or held[key][1] < end]
            if wrong:
                errors.append((wanted, names, wrong))
            regions.release(names.values())

    threads = [threading.Thread(target=scans, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.registered) <= 3
    regions.close()
    assert server.registered == {}


def test_cuda_allocation_place_is_the_allocation_and_the_offset_in_it():
    # The key names the allocation by its IPC handle (a new allocation at a freed one's address
    # gets a new handle, so never a stale region); the offset is from the allocation's base.
    import types
    from scan_service._shared_memory import _allocation_place

    class FakeDriver:
        def __init__(self):
            self.allocations = {0x7000: (0x1000, b"a" * 64), 0x9000: (0x4000, b"b" * 64)}

        def allocation_base(self, pointer):
            return next(base for base, (size, _) in self.allocations.items()
                        if base <= pointer < base + size)

        def ipc_handle(self, base):
            return self.allocations[base][1]

    def tensor(pointer, device):
        return types.SimpleNamespace(data_ptr=lambda: pointer,
                                     device=types.SimpleNamespace(index=device))

    driver = FakeDriver()
    assert _allocation_place(tensor(0x7000, 0), driver) == ((0, b"a" * 64), 0)
    assert _allocation_place(tensor(0x7400, 0), driver) == ((0, b"a" * 64), 0x400)
    assert _allocation_place(tensor(0x9ffc, 1), driver) == ((1, b"b" * 64), 0xffc)


def test_cuda_driver_missing_is_a_precise_error():
    from scan_service import ScanError
    from scan_service._shared_memory import CudaDriver
    with pytest.raises(ScanError) as caught:
        CudaDriver("libcuda-that-does-not-exist.so")
    assert "CUDA driver" in str(caught.value)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
