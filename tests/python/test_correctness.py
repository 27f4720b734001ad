"""Results against a float64 NumPy reference, for every dtype, through both transports."""
import numpy as np
import pytest

from conftest import SMALL_MESSAGE_BYTES, assert_cumprod_close

torch = pytest.importorskip("torch")

NUMPY_DTYPES = [np.float16, np.float32, np.float64]
TORCH_DTYPES = [torch.float16, torch.float32, torch.float64, torch.bfloat16]
# Shapes with the dims to scan, negative ones included.
CASES = [((7,), 0), ((7,), -1), ((3, 129), 1), ((3, 129), -2), ((2, 3, 64, 5), 2),
         ((2, 3, 64, 5), -1), ((2, 3, 64, 5), 0), ((1,), 0), ((1, 1, 1), -3)]


def decays(rng, shape):
    # MM-Rec's gammas lie in (0, 1); above 0.9 their products stay normal over these lengths.
    return rng.uniform(0.9, 1.0, size=shape)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,dim", CASES)
def test_numpy_matches_float64_reference(client, rng, dtype, shape, dim):
    x = decays(rng, shape).astype(dtype)
    y = client.cumprod(x, dim=dim)
    assert type(y) is np.ndarray and y.dtype == x.dtype and y.shape == x.shape
    assert y.flags.writeable and y.flags.c_contiguous
    assert_cumprod_close(y.astype(np.float64), x.astype(np.float64), dim, np.dtype(dtype).name)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", CASES)
def test_torch_matches_float64_reference(client, rng, dtype, shape, dim):
    x = torch.from_numpy(decays(rng, shape)).to(dtype)
    y = client.cumprod(x, dim=dim)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype and tuple(y.shape) == shape
    assert y.device == x.device and not y.requires_grad
    name = str(dtype).replace("torch.", "")
    assert_cumprod_close(y.double().numpy(), x.double().numpy(), dim, name)


def test_result_has_server_account(client, rng):
    r = client.scan(decays(rng, (4, 256)).astype(np.float32), dim=1, backend="cpu")
    assert r.transport == "grpc"
    assert r.backend.startswith("cpu-")
    assert set(r.timing) == {"queue_us", "compute_us", "total_us"}
    assert all(isinstance(v, int) and v >= 0 for v in r.timing.values())
    assert r.timing["total_us"] >= r.timing["compute_us"]
    assert r.round_trip_us > 0


@pytest.mark.parametrize("shape,dim", [((0,), 0), ((3, 0, 4), 1), ((3, 0, 4), -1), ((0, 5), 1)])
@pytest.mark.parametrize("make", ["numpy", "torch-bf16"])
def test_empty_tensors(client, shape, dim, make):
    x = np.ones(shape, np.float32) if make == "numpy" else torch.ones(shape, dtype=torch.bfloat16)
    y = client.cumprod(x, dim=dim)
    assert type(y) is type(x) and tuple(y.shape) == shape and y.dtype == x.dtype


def test_zero_dim_tensor_scans_like_torch(client):
    x = torch.tensor(0.5, dtype=torch.float64)
    for dim in (0, -1):
        y = client.cumprod(x, dim=dim)
        assert y.shape == () and y.item() == torch.cumprod(x, dim=dim).item() == 0.5
    assert client.cumprod(np.array(0.25, np.float32), dim=0).shape == ()


def test_non_contiguous_inputs_are_scanned_as_given(client, rng):
    base = decays(rng, (64, 48)).astype(np.float32)
    views = [base.T, base[:, ::3], base[::2]]
    for x in views:
        assert not x.flags.c_contiguous
        y = client.cumprod(x, dim=0)
        assert y.shape == x.shape
        assert_cumprod_close(y.astype(np.float64), x.astype(np.float64), 0, "float32")
    t = torch.from_numpy(base).to(torch.bfloat16).t()
    assert not t.is_contiguous()
    assert_cumprod_close(client.cumprod(t, dim=1).double().numpy(), t.double().numpy(), 1,
                         "bfloat16")


def test_big_endian_numpy_keeps_its_dtype(client, rng):
    x = decays(rng, (5, 40)).astype(">f8")
    y = client.cumprod(x, dim=1)
    assert y.dtype == np.dtype(">f8")
    assert_cumprod_close(y.astype(np.float64), x.astype(np.float64), 1, "float64")


def test_requires_grad_input_is_accepted(client):
    x = torch.full((3, 10), 0.9, requires_grad=True)
    y = client.cumprod(x, dim=1)
    assert not y.requires_grad
    torch.testing.assert_close(y, torch.cumprod(x.detach(), dim=1), rtol=1e-6, atol=0)


def test_input_is_left_untouched(client, rng):
    x = decays(rng, (8, 100)).astype(np.float32)
    before = x.copy()
    client.cumprod(x, dim=1)
    np.testing.assert_array_equal(x, before)


# -- over the message limit: ScanStream ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16],
                         ids=lambda d: np.dtype(d).name)
def test_tensor_over_message_limit_goes_through_scan_stream(small_server, rng, dtype):
    from scan_service import Client
    x = decays(rng, (3, 2, 700, 31)).astype(dtype)  # over 256 KiB for every dtype
    assert x.nbytes > SMALL_MESSAGE_BYTES
    with Client(small_server.target, timeout=60) as c:
        r = c.scan(x, dim=2)
        assert r.transport == "grpc-stream"
        assert r.tensor.dtype == x.dtype and r.tensor.shape == x.shape
        assert_cumprod_close(r.tensor.astype(np.float64), x.astype(np.float64), 2,
                             np.dtype(dtype).name)
        small = c.scan(x[:1, :1, :10], dim=2)  # the same server's small tensors: one message
        assert small.transport == "grpc"


def test_stream_bf16_torch_and_client_chunks_below_servers(small_server, rng):
    from scan_service import Client
    x = torch.from_numpy(decays(rng, (4, 30000))).to(torch.bfloat16)  # 240 KB
    # 1000-byte chunks: smaller than the server's accepted.max_chunk_bytes, so the client's
    # size holds, and 240 of them must arrive in order.
    with Client(small_server.target, timeout=60, stream_chunk_bytes=1000) as c:
        r = c.scan(x, dim=-1)
    assert r.transport == "grpc-stream" and r.tensor.dtype == torch.bfloat16
    assert_cumprod_close(r.tensor.double().numpy(), x.double().numpy(), -1, "bfloat16")


def test_stream_chunks_shrink_to_the_servers_limit(small_server):
    from scan_service import Client
    with Client(small_server.target, timeout=60, stream_chunk_bytes=1 << 30) as c:
        # A tensor just over the limit with a huge client chunk: the server's limit decides.
        x = np.full((SMALL_MESSAGE_BYTES // 4 + 1,), 0.999, np.float32)
        r = c.scan(x, dim=0)
    assert r.transport == "grpc-stream"
    assert_cumprod_close(r.tensor.astype(np.float64), x.astype(np.float64), 0, "float32")
