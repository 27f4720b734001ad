"""The Client's lifetime, server_info, health, transport choice and optional torch."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from scan_service import Client, ScanError, pb


def test_context_manager_closes_the_channel(server):
    with Client(server.target, timeout=30) as c:
        assert c.cumprod(np.ones(3, np.float32), dim=0).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):  # grpcio refuses calls on a closed channel
        c.cumprod(np.ones(3, np.float32), dim=0)


def test_server_info(client):
    info = client.server_info()
    assert isinstance(info, pb.GetServerInfoResponse)
    assert info.version and info.backends
    assert any(b.kind == pb.DEVICE_KIND_CPU and b.available for b in info.backends)
    assert info.limits.max_tensor_bytes == 256 << 20
    assert info.limits.max_message_bytes == (256 << 20) + (1 << 20)  # the server's defaults
    assert info.limits.max_rank == 16


def test_health(client):
    assert client.health() is True
    assert client.health("scan.v1.ScanService") is True
    with pytest.raises(ScanError) as caught:
        client.health("no.such.Service")
    assert caught.value.code.name == "NOT_FOUND"


def test_backend_preference_is_honoured(client):
    r = client.scan(np.full((4, 64), 0.9, np.float32), dim=1, backend="cpu")
    assert r.backend in ("cpu-native", "cpu-torch")


def test_large_tensors_stream_even_below_the_message_limit(client, rng):
    # Above stream_above_bytes (8 MiB) ScanStream is faster than one grpcio message.
    x = rng.uniform(0.99, 1.0, (4, 1 << 19)).astype(np.float64)  # 16 MiB
    r = client.scan(x, dim=0)
    assert r.transport == "grpc-stream"
    np.testing.assert_allclose(r.tensor, np.cumprod(x, axis=0), rtol=1e-13)
    with Client(client.target, stream_above_bytes=1 << 40, timeout=60) as unary:
        r = unary.scan(x, dim=0)
    assert r.transport == "grpc"
    np.testing.assert_allclose(r.tensor, np.cumprod(x, axis=0), rtol=1e-13)


def test_works_without_torch(server):
    # A fresh interpreter where torch cannot be imported at all: the package imports and scans
    # NumPy arrays, and never tries to import torch.
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from scan_service import Client
with Client("{server.target}", timeout=30) as c:
    y = c.cumprod(np.array([0.5, 0.5, 0.5], np.float32), dim=0)
assert y.tolist() == [0.5, 0.25, 0.125], y
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "client", "python"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_many_threads_share_one_client(client, rng):
    from concurrent.futures import ThreadPoolExecutor
    inputs = [rng.uniform(0.9, 1.0, (8, 50)).astype(np.float32) for _ in range(32)]
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda x: client.cumprod(x, dim=1), inputs))
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, np.cumprod(x.astype(np.float64), 1), rtol=1e-5)
