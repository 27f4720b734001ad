"""CUDA tensors in and out (through gRPC; CUDA IPC arrives with the shared-memory issue).

Skipped without CUDA (torch.cuda.is_available()), e.g. in CI.
"""
import pytest

from conftest import assert_cumprod_close

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
