"""Python client of scan-server: torch.cumprod / numpy.cumprod of tensors, computed by the service.

    from scan_service import Client, ScanError
    with Client("localhost:50051") as client:
        y = client.cumprod(x, dim=2)   # x: numpy.ndarray or torch.Tensor; y: the same type

Needs grpcio, protobuf and numpy; torch only for torch tensors (never imported by this package).
"""
from ._client import Client, ScanResult
from ._errors import (DeadlineExceededError, FailedPreconditionError, InvalidArgumentError,
                      ResourceExhaustedError, ScanError, UnauthenticatedError, UnavailableError)
from ._proto import scan_pb2 as pb

__version__ = "0.1.0"

__all__ = ["Client", "ScanResult", "ScanError", "InvalidArgumentError", "ResourceExhaustedError",
           "FailedPreconditionError", "UnavailableError", "DeadlineExceededError",
           "UnauthenticatedError", "pb"]
