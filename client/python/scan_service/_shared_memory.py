"""Which shared-memory transport a scan may use, and the system (POSIX) one itself.

The Client asks `SharedMemoryPolicy.transport_for(host, server_info)` before every scan: None means
gRPC; otherwise a transport whose `scan(host, dim, backend, deadline)` answers like the gRPC calls.
The system transport keeps a few POSIX shared-memory regions registered with the server and reuses
them: a scan copies the tensor into a free region, names it in the request (gamma.shared_memory)
with the result's place beside it (output), and copies the result out, so nothing crosses gRPC but
the two small messages. CUDA IPC is in scan.proto but not served yet: "cuda" is refused.
"""
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
    accepts (GetServerInfo.shared_memory_kinds) that work from here (system: same host_id)."""
    if server_info is None:
        return frozenset()
    kinds = set()
    if (pb.SHARED_MEMORY_KIND_SYSTEM in server_info.shared_memory_kinds
            and server_info.host_id and server_info.host_id == local_host_id()):
        kinds.add("system")
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


class SharedMemoryPolicy:
    def __init__(self, mode):
        if mode not in MODES:
            raise ValueError(f"shared_memory: {mode!r} is not one of "
                             + ", ".join(repr(m) for m in MODES))
        self.mode = mode
        self._system = None
        self._lock = threading.Lock()

    def transport_for(self, calls, host, server_info):
        """None to use gRPC; raises FailedPreconditionError if a demanded kind is not offered."""
        del host  # host tensors (CUDA ones are brought to the host first) fit the system kind
        if self.mode == "off":
            return None
        offered = advertised_kinds(server_info)
        if self.mode == "auto":
            return self._system_transport(calls) if "system" in offered else None
        if self.mode not in offered:
            why = ("scan-server does not serve CUDA IPC yet" if self.mode == "cuda" else
                   "its GetServerInfo does not offer SYSTEM shared memory on this host (is it "
                   "started with --allow-shared-memory, and on the same host and IPC namespace?)")
            raise FailedPreconditionError(
                f"shared_memory={self.mode!r}: the server cannot use {TRANSPORT_NAMES[self.mode]}"
                f": {why}; use shared_memory='auto' to fall back to gRPC")
        return self._system_transport(calls)

    def close(self):
        with self._lock:
            system, self._system = self._system, None
        if system is not None:
            system.close()

    def _system_transport(self, calls):
        with self._lock:
            if self._system is None:
                self._system = SystemTransport(calls)
            return self._system
