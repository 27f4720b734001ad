#!/usr/bin/python3
"""The Python client's overhead: Client.scan vs a plain grpcio call of the same request bytes.

Three ways to scan the same tensor on the same server: Client.scan as users call it (above 8 MiB
it uses ScanStream, see Client's stream_above_bytes), Client.scan held to one Scan message, and a
plain grpcio Scan call. The unary ones send the same ScanRequest (a 64 MiB float32 tensor by
default) to the same server over channels with the same options. The plain call sends a request
serialised once, before timing, and gets grpcio's response bytes back without parsing them:
gRPC's own cost. Client.scan adds what a user pays on top: converting the array, framing the
request (one copy of the tensor into grpcio's message), finding the result in the response and
copying it into a writable array of the input's type. Runs rotate the order of the three so that
drift hits all; medians are reported side by side.

  overhead.py (--target HOST:PORT | --server path/to/scan-server) [--mib 64] [--repeats 15]
              [--warmup 3] [--backend auto|cpu|gpu] [--json FILE]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from scan_service import Client, _grpc, _wire, pb  # noqa: E402

_BACKENDS = {"auto": pb.BACKEND_PREFERENCE_AUTO, "cpu": pb.BACKEND_PREFERENCE_CPU,
             "gpu": pb.BACKEND_PREFERENCE_GPU}


def start_server(binary, directory):
    port_file = os.path.join(directory, "port")
    process = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--port-file", port_file,
                                "--metrics-listen", "", "--drain-delay-seconds", "0",
                                "--shutdown-grace-seconds", "1", "--log-level", "warn"])
    for _ in range(600):
        if os.path.exists(port_file) and os.path.getsize(port_file):
            with open(port_file) as file:
                return process, f"127.0.0.1:{int(file.read())}"
        time.sleep(0.05)
    process.kill()
    sys.exit("scan-server did not report its port")


def median_ms(samples):
    return statistics.median(samples) * 1e3


def measure(target, mib, repeats, warmup, backend, dim=2):
    elements = mib * (1 << 20) // 4
    head_dim, heads, batch = 128, 8, 4
    seq_len = max(elements // (batch * heads * head_dim), 1)
    x = np.random.default_rng(0).uniform(0.9, 1.0, (batch, heads, seq_len, head_dim))
    x = x.astype(np.float32)
    request = pb.ScanRequest(gamma=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=x.shape,
                                             data=x.tobytes()),
                             dim=dim, backend=_BACKENDS[backend]).SerializeToString()
    channel = _grpc.make_channel(target)
    plain = channel.unary_unary("/scan.v1.ScanService/Scan")  # bytes in, bytes out
    clients = {"client": Client(target), "client_unary": Client(target, stream_above_bytes=1 << 62)}
    names = ("client", "client_unary", "plain")
    times = {name: [] for name in names}
    server_us = {name: [] for name in names}
    transports = {}

    def scan_with(name):
        def run():
            started = time.perf_counter()
            result = clients[name].scan(x, dim, backend=backend)
            elapsed = time.perf_counter() - started
            transports[name] = result.transport
            return elapsed, result.timing["total_us"]
        return run

    def run_plain():
        started = time.perf_counter()
        response = plain(request)
        elapsed = time.perf_counter() - started
        return elapsed, _wire.scan_response(response).timing.total_us

    runners = {"client": scan_with("client"), "client_unary": scan_with("client_unary"),
               "plain": run_plain}
    for run in range(warmup + repeats):
        order = names[run % 3:] + names[:run % 3]
        for name in order:
            elapsed, total_us = runners[name]()
            if run >= warmup:
                times[name].append(elapsed)
                server_us[name].append(total_us)

    # The client's own Python work on this tensor, outside any call: framing the request and
    # copying a result of the same size into a fresh array.
    data = memoryview(x.reshape(-1)).cast("B")
    framing, copying = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        _wire.scan_request(pb.DATA_TYPE_FLOAT32, x.shape, data, x.nbytes, dim, 0)
        framing.append(time.perf_counter() - started)
        started = time.perf_counter()
        out = np.empty_like(x)
        memoryview(out.reshape(-1)).cast("B")[:] = memoryview(request)[:x.nbytes]
        copying.append(time.perf_counter() - started)
    for client in clients.values():
        client.close()
    channel.close()
    plain_ms = median_ms(times["plain"])
    report = {
        "tensor": f"float32 {list(x.shape)} ({x.nbytes / (1 << 20):.0f} MiB), dim {dim}, "
                  f"backend {backend}",
        "repeats": repeats,
        "transports": transports,
    }
    for name in names:
        report[f"{name}_ms"] = round(median_ms(times[name]), 2)
        report[f"{name}_ms_min_max"] = [round(min(times[name]) * 1e3, 2),
                                        round(max(times[name]) * 1e3, 2)]
        report[f"{name}_server_total_us"] = statistics.median(server_us[name])
        report[f"{name}_ratio"] = round(median_ms(times[name]) / plain_ms, 3)
    report.update({        "framing_ms": round(median_ms(framing), 2),
        "result_copy_ms": round(median_ms(copying), 2),
        "python": platform.python_version(),
        "grpcio": __import__("grpc").__version__,
        "protobuf": __import__("google.protobuf").protobuf.__version__,
        "numpy": np.__version__,
    })
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target")
    where.add_argument("--server", help="scan-server binary to start on loopback")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backend", choices=sorted(_BACKENDS), default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process = None
        target = args.target
        if args.server:
            process, target = start_server(args.server, directory)
        try:
            report = measure(target, args.mib, args.repeats, args.warmup, args.backend)
        finally:
            if process:
                process.terminate()
                process.wait()
    print(f"{report['tensor']}, medians of {report['repeats']} runs in rotating order:")
    labels = {"client": f"client.scan ({report['transports']['client']})",
              "client_unary": "client.scan, one Scan message",
              "plain": "plain grpcio Scan call"}
    for name, label in labels.items():
        print(f"  {label:32s} {report[name + '_ms']:9.2f} ms  x{report[name + '_ratio']:.3f}  "
              f"(server total {report[name + '_server_total_us'] / 1e3:.2f} ms)")
    print(f"  client's own work: framing {report['framing_ms']} ms, result copy "
          f"{report['result_copy_ms']} ms")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
