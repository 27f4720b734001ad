"""Which shared-memory transport a scan may use, if any (scan.proto has none yet: issue 19).

The Client asks `SharedMemoryPolicy.transport_for(host, server_info)` before every scan. Today it
returns None (use gRPC) or raises when the caller demanded a kind the server does not offer.
When the server advertises shared memory, this is where a transport object (registering its
regions once and reusing them) is made and returned; the Client then calls it instead of gRPC.
"""
from ._errors import FailedPreconditionError

MODES = ("auto", "system", "cuda", "off")
# The transport names ScanResult.transport will report for each kind.
TRANSPORT_NAMES = {"system": "system-shm", "cuda": "cuda-ipc"}


def advertised_kinds(server_info):
    """The shared-memory kinds ("system", "cuda") the server offers this client.

    scan.v1.GetServerInfoResponse has no field for it yet, so no server advertises any; once the
    shared-memory issue adds one, it is read here (and only here).
    """
    del server_info
    return frozenset()


class SharedMemoryPolicy:
    def __init__(self, mode):
        if mode not in MODES:
            raise ValueError(f"shared_memory: {mode!r} is not one of "
                             + ", ".join(repr(m) for m in MODES))
        self.mode = mode

    def transport_for(self, host, server_info):
        """None to use gRPC; raises FailedPreconditionError if a demanded kind is not offered."""
        del host  # which kind fits (host or CUDA memory) decides once a kind exists
        if self.mode in ("auto", "off"):
            return None  # "auto" falls back to gRPC: nothing is offered
        if self.mode not in advertised_kinds(server_info):
            raise FailedPreconditionError(
                f"shared_memory={self.mode!r}: the server does not offer "
                f"{TRANSPORT_NAMES[self.mode]} (its GetServerInfo advertises no shared memory); "
                f"use shared_memory='auto' to fall back to gRPC")
        raise NotImplementedError("shared-memory transports arrive with the server's support")
