#!/usr/bin/python3
"""What a user could write instead of scan-server: Debian's python3-grpcio and NumPy's cumprod.

Serves /scan.v1.ScanService/Scan with the same contract (dtypes, negative dims, 16-bit types
accumulated in float32), without the C++ service's validation detail or limits. The messages come
from scan_pb2, which bench/service/run.sh generates with protoc into --proto-dir.

  python_server.py --proto-dir DIR [--port 0] [--port-file FILE] [--workers 8]
"""
import argparse
import signal
import sys
import time
from concurrent import futures

import grpc
import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", required=True, help="where scan/v1/scan_pb2.py lives")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, args.proto_dir)
    from scan.v1 import scan_pb2 as pb

    # bfloat16 has no NumPy dtype: it travels as the top half of a float32's bits.
    storage = {pb.DATA_TYPE_FLOAT32: np.float32, pb.DATA_TYPE_FLOAT64: np.float64,
               pb.DATA_TYPE_FLOAT16: np.float16, pb.DATA_TYPE_BFLOAT16: np.uint16}

    def scan(request, context):
        started = time.perf_counter()
        gamma = request.gamma
        if gamma.dtype not in storage:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "gamma.dtype: unsupported")
        shape = tuple(gamma.shape)
        try:
            values = np.frombuffer(gamma.data, dtype=storage[gamma.dtype]).reshape(shape)
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gamma.data: {error}")
        if not -len(shape) <= request.dim < len(shape):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "dim: out of range")
        if gamma.dtype == pb.DATA_TYPE_BFLOAT16:
            wide = (values.astype(np.uint32) << 16).view(np.float32)
            product = np.cumprod(wide, axis=request.dim)
            # Round to nearest even into the top 16 bits, as torch does.
            bits = product.view(np.uint32)
            out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        elif gamma.dtype == pb.DATA_TYPE_FLOAT16:
            out = np.cumprod(values, axis=request.dim, dtype=np.float32).astype(np.float16)
        else:
            out = np.cumprod(values, axis=request.dim)
        micros = int((time.perf_counter() - started) * 1e6)
        return pb.ScanResponse(
            result=pb.Tensor(dtype=gamma.dtype, shape=shape, data=out.tobytes()),
            backend="python-numpy",
            timing=pb.Timing(compute_us=micros, total_us=micros))

    handler = grpc.method_handlers_generic_handler("scan.v1.ScanService", {
        "Scan": grpc.unary_unary_rpc_method_handler(
            scan, request_deserializer=pb.ScanRequest.FromString,
            response_serializer=pb.ScanResponse.SerializeToString)})
    limit = 512 << 20
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    if args.port_file:
        with open(args.port_file, "w") as file:
            file.write(f"{port}\n")
    print(f"python_server: listening on 127.0.0.1:{port}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(1))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
