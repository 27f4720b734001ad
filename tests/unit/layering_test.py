#!/usr/bin/env python3
"""The layering rules of the source tree (README, "Architecture"), checked on every include.

Dependencies point inward: proto -> wire -> server (rpc -> admission/routing -> backends) ->
kernels. A rule names the folders it covers and the includes they may not use; it fails with
every offending file and line, so a change that breaks a layer is caught in CI rather than in
review. Usage: layering_test.py <repository root>
"""
import pathlib
import re
import sys

SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')

CLIENT_HEADERS = r"^scan/client/|(scan_client|host_tensor|npy|bench_report)\.h$"
SERVER_LAYERS = r"^(rpc|admission|routing|backends|metrics|app)/"

# (folders, forbidden include pattern, why)
RULES = [
    (["kernels"], r"^(grpc|grpcpp|google/protobuf|torch|ATen|prometheus|spdlog)/|^scan/(v1|wire)/",
     "kernels are pure compute: no gRPC, protobuf, LibTorch, metrics or logging"),
    (["kernels"], SERVER_LAYERS, "kernels never include the service"),
    (["wire"], SERVER_LAYERS + "|" + CLIENT_HEADERS, "the wire layer is shared by server and client"),
    (["server/admission", "server/routing", "server/backends"], r"^(grpc|grpcpp|prometheus)/",
     "admission, routing and backends know nothing of gRPC or Prometheus (gRPC only at the edge)"),
    (["server/admission", "server/routing", "server/backends"], r"^(rpc|metrics|app)/",
     "dependencies point inward: admission, routing and backends never include the edge"),
    (["server/backends"], r"^routing/", "routing uses the backends, not the other way round"),
    (["server"], CLIENT_HEADERS, "the server never includes the client library"),
    (["client"], SERVER_LAYERS, "the client never includes the server"),
    (["kernels", "wire", "client", "server/admission", "server/routing", "server/backends",
      "server/metrics", "server/shared_memory"], r"^inference/",
     "the Open Inference Protocol (KServe v2) is spoken at the RPC edge only (server/rpc)"),
]

# LibTorch headers are slow to compile: one backend file may use them (plus the two benchmarks that
# compare against torch.cumprod itself: speed, and accuracy in the input's own dtype).
TORCH_ALLOWED = {"server/backends/cpu_torch_backend.cc", "bench/cpu/cpu_bench.cc",
                 "bench/numerics/numerics_report.cc"}


def includes(path):
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        match = INCLUDE.match(line)
        if match:
            yield number, match.group(2)


def main(root):
    root = pathlib.Path(root)
    failures = []
    checked = 0
    for path in sorted(root.rglob("*")):
        # Build trees (/build*/, ignored by git) hold generated and copied sources.
        top = path.relative_to(root).parts[0]
        if path.suffix not in SOURCE_SUFFIXES or top.startswith("build"):
            continue
        relative = path.relative_to(root).as_posix()
        for number, header in includes(path):
            checked += 1
            if re.match(r"^(torch|ATen)/", header) and relative not in TORCH_ALLOWED:
                failures.append(f"{relative}:{number}: includes {header}: LibTorch headers stay "
                                f"in {sorted(TORCH_ALLOWED)}")
            for folders, forbidden, why in RULES:
                if not any(relative.startswith(folder + "/") for folder in folders):
                    continue
                if re.search(forbidden, header):
                    failures.append(f"{relative}:{number}: includes {header}: {why}")
    if checked < 100:
        failures.append(f"only {checked} includes found under {root}: wrong root?")
    for failure in failures:
        print(failure)
    print(f"layering: {checked} includes checked, {len(failures)} violations")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
