"""Shared fixtures of the Python client tests: real scan-server processes on loopback.

The server binary comes from $SCAN_SERVER (ctest passes $<TARGET_FILE:scan-server>), else
build/release/server/scan-server. Each server listens on 127.0.0.1 port 0 and reports its port
through --port-file, as tests/e2e/lib.sh does; every server started here is stopped at the end.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "client", "python"))  # as PYTHONPATH=client/python

SERVER_BIN = os.environ.get("SCAN_SERVER") or os.path.join(REPO, "build", "release", "server",
                                                           "scan-server")
# Quick exits and no metrics port: nothing here scrapes it.
BASE_FLAGS = ["--metrics-listen", "", "--drain-delay-seconds", "0", "--warm-start", "false",
              "--shutdown-grace-seconds", "5", "--log-level", "warn"]


class ServerProcess:
    """One scan-server process; `target` is its 127.0.0.1:PORT."""

    def __init__(self, *flags, port=0):
        if not os.access(SERVER_BIN, os.X_OK):
            pytest.fail(f"no scan-server at {SERVER_BIN} (set SCAN_SERVER or build it)")
        self.flags = list(flags)
        self._dir = tempfile.TemporaryDirectory(prefix="scan-py-")
        self.port_file = os.path.join(self._dir.name, "port")
        self.log_path = os.path.join(self._dir.name, "server.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [SERVER_BIN, "--listen", f"127.0.0.1:{port}", "--port-file", self.port_file,
             *BASE_FLAGS, *self.flags], stdout=self._log, stderr=subprocess.STDOUT)
        # Up to 30 s: sanitizer builds on two busy cores start slowly.
        for _ in range(600):
            if os.path.exists(self.port_file) and os.path.getsize(self.port_file) > 0:
                break
            if self.process.poll() is not None:
                pytest.fail(f"scan-server exited with {self.process.returncode}: {self.log()}")
            time.sleep(0.05)
        else:
            self.stop()
            pytest.fail(f"scan-server did not report its port: {self.log()}")
        with open(self.port_file) as file:
            self.port = int(file.read())
        self.target = f"127.0.0.1:{self.port}"

    def log(self):
        with open(self.log_path, errors="replace") as file:
            return file.read()[-4000:]

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def cleanup(self):
        self.stop()
        self._dir.cleanup()


@pytest.fixture
def start_server():
    """start_server(*flags, port=0) -> ServerProcess, stopped after the test."""
    started = []

    def start(*flags, port=0):
        server = ServerProcess(*flags, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture(scope="session")
def server():
    """A server with default limits, shared by the tests that need nothing special."""
    process = ServerProcess()
    yield process
    process.cleanup()


@pytest.fixture(scope="session")
def client(server):
    from scan_service import Client
    with Client(server.target, timeout=60) as c:
        yield c


# ScanStream carries anything over 64 KiB here; the server's result chunks are 16 KiB.
SMALL_MESSAGE_BYTES = 64 << 10


@pytest.fixture(scope="session")
def small_server():
    process = ServerProcess("--max-message-bytes", str(SMALL_MESSAGE_BYTES),
                            "--stream-chunk-bytes", str(16 << 10))
    yield process
    process.cleanup()


@pytest.fixture
def rng(request):
    """Fresh random inputs on every run; the seed is printed on failure to reproduce one."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed} ({request.node.name})")
    return np.random.default_rng(seed)


# The accuracy bound of the README ("Accuracy") and the C++ tests: |got - want| <= atol + rtol
# |want| with rtol = 1.01 (u_out + u_f32 + L u_f64) and atol the smallest normal of the stored type
# (the CPU backends flush results below it to zero by default) plus L subnormal steps of float64.
# u: unit roundoff. Every dtype accumulates in float64; the 16-bit types round through float32
# (the u_f32 term, zero for float32 and float64).
_UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11,
                  "bfloat16": 2.0**-8}
_SMALLEST_NORMAL = {"float64": 2.0**-1022, "float32": 2.0**-126, "float16": 2.0**-14,
                    "bfloat16": 2.0**-126}


def tolerance(dtype_name, length):
    through_float32 = 2.0**-24 if dtype_name in ("float16", "bfloat16") else 0.0
    rtol = 1.01 * (_UNIT_ROUNDOFF[dtype_name] + through_float32 + length * 2.0**-53)
    atol = _SMALLEST_NORMAL[dtype_name] + length * 2.0**-1074
    return rtol, atol


def assert_cumprod_close(got64, x64, dim, dtype_name):
    """got64 (the result as float64) against numpy's float64 cumprod of the same input values."""
    want = np.cumprod(x64, axis=dim)
    length = x64.shape[dim] if x64.ndim else 1
    rtol, atol = tolerance(dtype_name, length)
    np.testing.assert_allclose(got64, want, rtol=rtol, atol=atol,
                               err_msg=f"{dtype_name} dim={dim} shape={x64.shape}")


def regions_on(server):
    """The shared-memory regions registered with `server` (ListSharedMemory)."""
    import grpc
    from scan_service._proto import scan_pb2 as pb

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
