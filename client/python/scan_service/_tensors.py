"""From the caller's NumPy array or torch tensor to the wire's bytes, and back to the same type.

torch is optional: it is never imported here. A torch.Tensor can only exist once its caller has
imported torch, so `sys.modules` tells whether an argument may be one.
"""
import operator
import sys

import numpy as np

from ._errors import InvalidArgumentError
from ._proto import scan_pb2 as pb

# NumPy dtypes the wire carries, by (kind, itemsize). bfloat16 has no NumPy dtype of its own
# (ml_dtypes' is recognised by name below): it travels as its 16 raw bits.
_NUMPY_WIRE = {2: pb.DATA_TYPE_FLOAT16, 4: pb.DATA_TYPE_FLOAT32, 8: pb.DATA_TYPE_FLOAT64}
_SUPPORTED = "float16, float32, float64 or bfloat16 (torch.bfloat16)"


def _torch():
    return sys.modules.get("torch")


def is_torch_tensor(value):
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


class HostTensor:
    """A contiguous little-endian host array ready to send, and how to give the result back.

    `array` is what travels (bfloat16 as int16/uint16 bits); `restore(result)` turns the result
    array, of the same NumPy dtype and shape, into the caller's type, dtype, shape and device.
    """

    __slots__ = ("array", "wire_dtype", "shape", "restore")

    def __init__(self, array, wire_dtype, shape, restore):
        self.array = array
        self.wire_dtype = wire_dtype
        self.shape = shape
        self.restore = restore

    @property
    def nbytes(self):
        return self.array.nbytes

    def data(self):
        """The bytes as a flat buffer over the array's memory (no copy)."""
        return memoryview(self.array.reshape(-1)).cast("B")


def to_host(value):
    """Validates `value` and views it as a HostTensor, copying only where the wire needs it."""
    if isinstance(value, np.ndarray):
        return _from_numpy(value)
    if is_torch_tensor(value):
        return _from_torch(value)
    raise InvalidArgumentError(
        f"gamma: expected a numpy.ndarray or torch.Tensor, got {type(value).__name__}")


def _rank_at_least_one(array):
    # The wire needs at least one dimension; a 0-d tensor scans like its single element, as in
    # torch, and comes back 0-d.
    return array.reshape(1) if array.ndim == 0 else array


def _from_numpy(array):
    dtype = array.dtype
    if dtype.name == "bfloat16" and dtype.itemsize == 2:  # ml_dtypes.bfloat16
        wire_dtype = pb.DATA_TYPE_BFLOAT16
        bits = np.ascontiguousarray(array).view(np.uint16)
        return HostTensor(_rank_at_least_one(bits), wire_dtype, array.shape,
                          lambda result: result.view(dtype).reshape(array.shape))
    if dtype.kind != "f" or dtype.itemsize not in _NUMPY_WIRE:
        raise InvalidArgumentError(f"gamma.dtype: {dtype} is not supported (expected {_SUPPORTED})")
    wire_dtype = _NUMPY_WIRE[dtype.itemsize]
    little = dtype.newbyteorder("<")
    # Strided or big-endian arrays are made contiguous little-endian (one copy, as the wire's
    # row-major little-endian layout requires); others are sent from their own memory.
    sendable = np.ascontiguousarray(array, dtype=little)
    if little == dtype:
        restore = lambda result: result.reshape(array.shape)  # noqa: E731
    else:
        restore = lambda result: result.astype(dtype).reshape(array.shape)  # noqa: E731
    return HostTensor(_rank_at_least_one(sendable), wire_dtype, array.shape, restore)


def torch_wire_dtype(tensor):
    """The wire's DataType of a torch tensor; InvalidArgumentError for the others."""
    torch = _torch()
    wire_dtypes = {torch.float16: pb.DATA_TYPE_FLOAT16, torch.float32: pb.DATA_TYPE_FLOAT32,
                   torch.float64: pb.DATA_TYPE_FLOAT64, torch.bfloat16: pb.DATA_TYPE_BFLOAT16}
    if tensor.dtype not in wire_dtypes:
        raise InvalidArgumentError(
            f"gamma.dtype: {tensor.dtype} is not supported (expected {_SUPPORTED})")
    return wire_dtypes[tensor.dtype]


def _from_torch(tensor):
    torch = _torch()
    wire_dtype = torch_wire_dtype(tensor)
    dtype = tensor.dtype
    device = tensor.device
    shape = tuple(tensor.shape)
    # The scan is not differentiable through the service: the result carries no autograd graph.
    host = tensor.detach()
    if device.type != "cpu":
        host = host.cpu()  # the device-to-host copy gRPC and system shm need (CUDA IPC does not)
    host = host.contiguous()  # a no-op for contiguous tensors
    if dtype == torch.bfloat16:
        # NumPy has no bfloat16: reinterpret the same memory as 16-bit integers.
        array = host.view(torch.int16).numpy()
    else:
        array = host.numpy()

    def restore(result):
        out = torch.from_numpy(result.reshape(shape))  # shares the array's memory
        if dtype == torch.bfloat16:
            out = out.view(torch.bfloat16)
        return out if device.type == "cpu" else out.to(device)

    return HostTensor(_rank_at_least_one(array), wire_dtype, shape, restore)


def normalise_dim(dim, shape):
    """`dim` as an int, checked against the tensor's rank as torch and the server do."""
    try:
        dim = operator.index(dim)
    except TypeError:
        raise InvalidArgumentError(f"dim: expected an integer, got {type(dim).__name__}") from None
    rank = max(len(shape), 1)  # a 0-d tensor takes dim 0 or -1, as in torch
    if not -rank <= dim < rank:
        raise InvalidArgumentError(f"dim: {dim} is out of range for a rank-{len(shape)} tensor "
                                   f"(expected {-rank}..{rank - 1})")
    return dim
