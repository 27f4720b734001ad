"""Which shared-memory transport a scan may use, and the system (POSIX) one itself.

The Client asks `SharedMemoryPolicy.transport_for(host, server_info)` before every scan: None means
gRPC; otherwise a transport whose `scan(host, dim, backend, deadline)` answers like the gRPC calls.
The system transport keeps a few POSIX shared-memory regions registered with the server and reuses
them: a scan copies the tensor into a free region, names it in the request (gamma.shared_memory)
with the result's place beside it (output), and copies the result out, so nothing crosses gRPC but
the two small messages. The CUDA transport hands the server CUDA IPC handles of a CUDA tensor's
allocation and of its result's (registered once per allocation and kept), so the server scans
the tensor on its own GPU where it lies: nothing crosses PCIe or gRPC but two small messages.
"""
import collections
import ctypes
import itertools
import mmap
import os
import threading

import numpy as np

from ._errors import FailedPreconditionError, ScanError
from ._proto import scan_pb2 as pb

MODES = ("auto", "system", "cuda", "off")
# The transport names ScanResult.transport reports for each kind.
TRANSPORT_NAMES = {"system": "system-shm", "cuda": "cuda-ipc"}
# Regions kept registered for reuse, at most (more scans at once make regions per call).
_KEPT_REGIONS = 4
_names = itertools.count()


def local_host_id():
    """This process's "<boot id>/<ipc namespace>", as scan-server reports its own in host_id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.readline().strip()
        return boot_id + "/" + os.readlink("/proc/self/ns/ipc")
    except OSError:
        return ""


def advertised_kinds(server_info):
    """The shared-memory kinds ("system", "cuda") the server offers this client: the kinds it
    accepts (GetServerInfo.shared_memory_kinds) that work from here (both need the same host:
    host_id; CUDA IPC handles are meaningful on the host that made them only)."""
    if server_info is None or not server_info.host_id:
        return frozenset()
    if server_info.host_id != local_host_id():
        return frozenset()
    kinds = set()
    if pb.SHARED_MEMORY_KIND_SYSTEM in server_info.shared_memory_kinds:
        kinds.add("system")
    if pb.SHARED_MEMORY_KIND_CUDA in server_info.shared_memory_kinds:
        kinds.add("cuda")
    return frozenset(kinds)


class _Region:
    """A POSIX shared-memory object of this process, mapped, and registered under `name`."""

    def __init__(self, calls, size, deadline):
        self.name = f"scan-py-{os.getpid()}-{next(_names)}-{os.urandom(4).hex()}"
        self.size = size
        self._path = "/dev/shm/" + self.name
        self._calls = calls
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except OSError:
            os.unlink(self._path)
            raise
        finally:
            os.close(fd)
        self.view = memoryview(self._map)
        try:
            calls.register_shared_memory(pb.RegisterSharedMemoryRequest(
                name=self.name, kind=pb.SHARED_MEMORY_KIND_SYSTEM, key="/" + self.name,
                byte_size=size), deadline.remaining())
        except BaseException:
            self._release()
            raise

    def reference(self, offset, byte_size):
        return pb.SharedMemoryReference(region=self.name, offset=offset, byte_size=byte_size)

    def close(self):
        try:
            self._calls.unregister_shared_memory(self.name, 5.0)
        except ScanError:
            pass  # the server unmaps it at shutdown anyway
        self._release()

    def _release(self):
        self.view.release()
        self._map.close()
        try:
            os.unlink(self._path)
        except OSError:
            pass


class SystemTransport:
    name = TRANSPORT_NAMES["system"]

    def __init__(self, calls):
        self._calls = calls
        self._lock = threading.Lock()
        self._free = []  # registered regions not in use

    def scan(self, host, dim, backend, deadline):
        nbytes = host.nbytes
        out_offset = (nbytes + 63) // 64 * 64  # aligned for every element type
        region = self._take(max(out_offset + nbytes, 64), deadline)
        try:
            if nbytes:
                region.view[:nbytes] = host.data()
            request = pb.ScanRequest(
                gamma=pb.Tensor(dtype=host.wire_dtype, shape=host.array.shape,
                                shared_memory=region.reference(0, nbytes)),
                dim=dim, backend=backend, output=region.reference(out_offset, nbytes))
            response = self._calls.scan_message(request.SerializeToString(), deadline)
            out = np.empty(host.array.shape, dtype=host.array.dtype)
            if nbytes:
                memoryview(out.reshape(-1)).cast("B")[:] = region.view[out_offset:
                                                                       out_offset + nbytes]
            return response, out
        finally:
            self._give(region)

    def close(self):
        with self._lock:
            regions, self._free = self._free, []
        for region in regions:
            region.close()

    def _take(self, size, deadline):
        with self._lock:
            for index, region in enumerate(self._free):
                if region.size >= size:
                    return self._free.pop(index)
        return _Region(self._calls, size, deadline)

    def _give(self, region):
        with self._lock:
            if len(self._free) < _KEPT_REGIONS:
                self._free.append(region)
                return
            # Keep the largest regions; the smallest goes.
            self._free.append(region)
            self._free.sort(key=lambda kept: kept.size)
            region = self._free.pop(0)
        region.close()


class CudaRegions:
    """CUDA IPC regions registered with the server, one per allocation, leased by the scans that
    name them.

    A region spans its allocation up to the furthest byte used so far. When a scan reaches further
    (the result often lies in the same allocation as the tensor, just after it), a larger region
    replaces it; the replaced one, like one that falls out of the `kept` most recent, is unregistered
    only once no scan in flight names it, so a scan never names a region that is gone.
    `unregister(name)` removes a region from the server.
    """

    def __init__(self, unregister, kept):
        self._unregister = unregister
        self._kept = kept
        self._lock = threading.Lock()
        self._current = collections.OrderedDict()  # allocation key -> (name, end), oldest first
        self._leases = collections.Counter()  # name -> scans in flight naming it
        self._retired = set()  # replaced or evicted, unregistered when no longer leased

    def lease(self, wanted, register):
        """Names covering each allocation key of `wanted` ({key: end}) up to its end, leased until
        release(); `register(key, end)` registers a new region and returns its name."""
        names, missing = {}, []
        with self._lock:
            for key, end in wanted.items():
                current = self._current.get(key)
                if current is not None and current[1] >= end:
                    names[key] = current[0]
                    self._leases[current[0]] += 1
                else:
                    missing.append((key, end))
        try:
            for key, end in missing:
                name = register(key, end)
                with self._lock:
                    names[key] = name
                    self._leases[name] += 1
                    replaced = self._current.pop(key, None)
                    self._current[key] = (name, end)
                    if replaced is not None:
                        self._retired.add(replaced[0])
                    while len(self._current) > self._kept:
                        self._retired.add(self._current.popitem(last=False)[1][0])
        except BaseException:
            self.release(names.values())
            raise
        self._unregister_idle()
        return names

    def release(self, names):
        with self._lock:
            for name in names:
                self._leases[name] -= 1
                if self._leases[name] <= 0:
                    del self._leases[name]
        self._unregister_idle()

    def close(self):
        with self._lock:
            names = {name for name, _ in self._current.values()} | self._retired
            self._current.clear()
            self._retired.clear()
            self._leases.clear()
        for name in names:
            self._unregister(name)

    def _unregister_idle(self):
        with self._lock:
            idle = {name for name in self._retired if name not in self._leases}
            self._retired -= idle
        for name in idle:
            self._unregister(name)


class CudaTransport:
    """CUDA tensors scanned by the server in their own device memory, through CUDA IPC.

    A tensor's storage lives in an allocation of torch's caching allocator; its IPC handle names
    the whole allocation (CudaDriver). Allocations are registered as regions and kept
    (CudaRegions) while the client lives (torch keeps its allocations unless empty_cache() is
    called): a scan then costs two small messages and the server's kernel.
    """

    name = TRANSPORT_NAMES["cuda"]
    _KEPT = 32  # registrations kept, at most; the oldest goes first

    def __init__(self, calls):
        self._calls = calls
        self._regions = CudaRegions(self._unregister, self._KEPT)
        self._driver = None  # CudaDriver, loaded by the first scan

    def scan(self, tensor, wire_dtype, dim, backend, deadline):
        torch = _torch_module()
        x = tensor.detach().contiguous()
        if x.dim() == 0:
            x = x.reshape(1)
        out = torch.empty_like(x)
        nbytes = x.numel() * x.element_size()
        with torch.cuda.device(x.device):
            # The tensor's producers must be done before another process reads it (this also
            # makes the device's context current for the driver calls below).
            torch.cuda.current_stream().synchronize()
            if self._driver is None:
                self._driver = CudaDriver()
            # An empty tensor names no region (an empty reference), so it needs no allocation.
            places = ([_allocation_place(t, self._driver) for t in (x, out)] if nbytes
                      else [(None, 0)] * 2)
        wanted = {}
        for key, offset in places:
            if key is not None:
                wanted[key] = max(wanted.get(key, 0), offset + nbytes)
        names = self._regions.lease(wanted, lambda key, end: self._register(key, end, deadline))
        try:
            gamma_ref, out_ref = (
                pb.SharedMemoryReference(region=names.get(key, ""), offset=offset, byte_size=nbytes)
                for key, offset in places)
            request = pb.ScanRequest(
                gamma=pb.Tensor(dtype=wire_dtype, shape=tuple(x.shape), shared_memory=gamma_ref),
                dim=dim, backend=backend, output=out_ref)
            response = self._calls.scan_message(request.SerializeToString(), deadline)
        finally:
            self._regions.release(names.values())
        return response, out.reshape(tensor.shape)

    def _register(self, key, end, deadline):
        device, handle = key
        name = f"scan-cuda-{os.getpid()}-{next(_names)}"
        self._calls.register_shared_memory(pb.RegisterSharedMemoryRequest(
            name=name, kind=pb.SHARED_MEMORY_KIND_CUDA, byte_size=end, cuda_handle=handle,
            device_id=device), deadline.remaining())
        return name

    def _unregister(self, name):
        try:
            self._calls.unregister_shared_memory(name, 5.0)
        except ScanError:
            pass

    def close(self):
        self._regions.close()


def _allocation_place(tensor, driver):
    """(allocation key, byte offset) of a CUDA tensor's first element in its allocation: the key
    is (device, IPC handle), so a new allocation at a freed one's address gets a new key."""
    pointer = tensor.data_ptr()
    base = driver.allocation_base(pointer)
    return (tensor.device.index, driver.ipc_handle(base)), pointer - base


class CudaDriver:
    """The two CUDA driver calls the IPC transport needs, through ctypes (torch ships no binding).

    Not torch's `storage._share_cuda_()`: that hands the storage to torch's inter-process
    reference counting, which expects a consumer that is itself torch and decrements the counter.
    scan-server never does, so every storage shared that way stayed in torch's limbo once freed:
    device memory never returned to the caching allocator, a new allocation (and registration) for
    every result, and a warning at exit.
    """

    _HANDLE_BYTES = 64  # CUipcMemHandle (cudaIpcMemHandle_t): 64 opaque bytes

    def __init__(self, library="libcuda.so.1"):
        try:
            self._cuda = ctypes.CDLL(library)
        except OSError as error:
            raise FailedPreconditionError(
                f"shared_memory='cuda': the CUDA driver ({library}) cannot be loaded: {error}")
        self._cuda.cuMemGetAddressRange_v2.argtypes = [
            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint64]
        self._cuda.cuIpcGetMemHandle.argtypes = [ctypes.c_char_p, ctypes.c_uint64]
        self._cuda.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]

    def allocation_base(self, pointer):
        base, size = ctypes.c_uint64(), ctypes.c_size_t()
        self._check(self._cuda.cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size),
                                                       pointer), "cuMemGetAddressRange")
        return base.value

    def ipc_handle(self, base):
        handle = ctypes.create_string_buffer(self._HANDLE_BYTES)
        result = self._cuda.cuIpcGetMemHandle(handle, base)
        if result != 0:
            raise FailedPreconditionError(
                f"shared_memory='cuda': this tensor's allocation exports no CUDA IPC handle "
                f"({self._error_name(result)}; torch's expandable segments?); set "
                "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False or use shared_memory='system'")
        return handle.raw

    def _check(self, result, call):
        if result != 0:
            raise FailedPreconditionError(
                f"shared_memory='cuda': {call} failed: {self._error_name(result)}")

    def _error_name(self, result):
        name = ctypes.c_char_p()
        if self._cuda.cuGetErrorName(result, ctypes.byref(name)) != 0 or not name.value:
            return f"CUresult {result}"
        return name.value.decode()


def _torch_module():
    import sys
    return sys.modules["torch"]


class SharedMemoryPolicy:
    def __init__(self, mode):
        if mode not in MODES:
            raise ValueError(f"shared_memory: {mode!r} is not one of "
                             + ", ".join(repr(m) for m in MODES))
        self.mode = mode
        self._transports = {}
        self._lock = threading.Lock()

    def transport_for(self, calls, on_cuda, server_info):
        """None to use gRPC, or the transport for a tensor on a CUDA device (`on_cuda`) or on the
        host; raises FailedPreconditionError if a demanded kind is not offered. "auto" takes CUDA
        IPC for CUDA tensors and system shm for host ones where offered; "system" takes CUDA
        tensors through the host; "cuda" refuses host tensors."""
        if self.mode == "off":
            return None
        offered = advertised_kinds(server_info)
        if self.mode == "auto":
            if on_cuda and "cuda" in offered:
                return self._transport("cuda", calls)
            return self._transport("system", calls) if "system" in offered else None
        if self.mode == "cuda" and not on_cuda:
            raise FailedPreconditionError(
                "shared_memory='cuda': the tensor is not on a CUDA device, so cuda-ipc does not "
                "apply; use 'system' or 'auto'")
        if self.mode not in offered:
            why = {"cuda": "its GetServerInfo does not offer CUDA regions on this host (no GPU "
                           "backend, or not started with --allow-shared-memory)",
                   "system": "its GetServerInfo does not offer SYSTEM shared memory on this host "
                             "(is it started with --allow-shared-memory, and on the same host and "
                             "IPC namespace?)"}[self.mode]
            raise FailedPreconditionError(
                f"shared_memory={self.mode!r}: the server cannot use {TRANSPORT_NAMES[self.mode]}"
                f": {why}; use shared_memory='auto' to fall back to gRPC")
        return self._transport(self.mode, calls)

    def close(self):
        with self._lock:
            transports, self._transports = self._transports, {}
        for transport in transports.values():
            transport.close()

    def _transport(self, kind, calls):
        with self._lock:
            if kind not in self._transports:
                self._transports[kind] = (CudaTransport if kind == "cuda" else
                                          SystemTransport)(calls)
            return self._transports[kind]
