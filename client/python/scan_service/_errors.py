"""ScanError and one subclass per status code the service documents.

Remote errors carry the server's status code and message (which names the offending field, e.g.
"gamma.shape: rank 17 exceeds the server's maximum of 16"). Errors the client catches before
sending use the same classes, codes and wording, so callers handle both alike.
"""
import grpc


class ScanError(Exception):
    """A scan-service call failed. `.code` is a grpc.StatusCode, `.message` the explanation."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self):
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(ScanError, ValueError):
    """A malformed tensor, dim or option; the message names the field."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhaustedError(ScanError):
    """Tensor over the server's limit, or the server saturated (after the client's retries)."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(ScanError):
    """The request needs what the server lacks (a usable GPU, a kind of shared memory)."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(ScanError):
    """The server could not be reached or is shutting down (after the client's retries)."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ScanError):
    """The call's timeout passed first."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnauthenticatedError(ScanError):
    """The server requires a token that was missing or wrong."""
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE = {cls.code: cls for cls in (InvalidArgumentError, ResourceExhaustedError,
                                      FailedPreconditionError, UnavailableError,
                                      DeadlineExceededError, UnauthenticatedError)}


def error_for(code, message):
    """The ScanError (subclass, where there is one) for a status code."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else ScanError(message, code)


def from_rpc_error(error):
    """Turns grpc.RpcError (raised by grpcio's calls) into a ScanError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    return error_for(code, details or str(error))
