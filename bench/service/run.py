#!/usr/bin/python3
"""Transport and service overhead, side by side in one run (issue 7).

Starts scan-server, the gRPC echo on the same stack (scan-bench-echo), the raw TCP echo
(scan-bench-tcp-echo) and the Python grpcio+NumPy server, then drives each with scan-bench over
loopback, case by case and round by round, so every ratio compares figures taken under the same
conditions. Prints a Markdown report (medians over rounds; ratios are medians of per-round ratios)
and keeps every scan-bench JSON under --out.

  bench/service/run.py [--build-dir build/release] [--rounds 5] [--out DIR] [--quick]
                      [--cases '1MiB x1,...'] [--server-args '--cpu-flush-subnormals false']
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name, scan-bench arguments, servers to drive, what to compare. Large payloads are one request at
# a time (throughput of a single stream); small ones are many in flight (per-request overhead).
# "<server>-stream" drives that server with ScanStream (4 MiB chunks) instead of Scan, and
# "scan-shm" scan-server with tensors and results in system shared memory (--protocol system-shm),
# and "scan-kserve" scan-server through KServe v2's ModelInfer on the same port (--protocol kserve).
CASES = [
    ("4KiB x32", ["--bytes", "4Ki", "--concurrency", "32", "--duration", "3"],
     ["scan", "scan-kserve", "echo", "tcp", "python"]),
    ("1MiB x1", ["--bytes", "1Mi", "--concurrency", "1", "--duration", "3"],
     ["scan", "scan-kserve", "echo", "tcp", "python"]),
    ("1MiB x4", ["--bytes", "1Mi", "--concurrency", "4", "--duration", "3"],
     ["scan", "echo", "tcp", "python"]),
    ("16MiB x1", ["--bytes", "16Mi", "--concurrency", "1", "--requests", "30"],
     ["scan", "echo", "scan-stream", "echo-stream", "tcp"]),
    ("64MiB x1", ["--bytes", "64Mi", "--concurrency", "1", "--requests", "10"],
     ["scan", "scan-kserve", "echo", "scan-stream", "echo-stream", "tcp", "scan-shm"]),
    ("256MiB x1", ["--bytes", "256Mi", "--concurrency", "1", "--requests", "4"],
     ["scan", "echo", "scan-stream", "echo-stream", "tcp", "scan-shm"]),
]


def start(command, port_file, env=None):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    for _ in range(600):  # scan-server calibrates its backends first: allow a minute
        if os.path.exists(port_file) and open(port_file).read().strip():
            return process, int(open(port_file).read())
        if process.poll() is not None:
            sys.exit(f"run.py: {command[0]} exited with {process.returncode}")
        time.sleep(0.1)
    sys.exit(f"run.py: {command[0]} did not report its port")


def bench(build, target, protocol, args, warmup, out):
    command = [os.path.join(build, "bench", "load", "scan-bench"), "--target", target, "--protocol",
               protocol, "--warmup", str(warmup), "--quiet", "--json", out] + args
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    run = json.load(open(out))["runs"][0]
    if run["errors"]:
        sys.exit(f"run.py: {run['errors']} errors: {' '.join(command)}")
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(REPO, "build", "release"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="where to keep the JSON (default: temp)")
    parser.add_argument("--quick", action="store_true", help="1 round, short runs (smoke test)")
    parser.add_argument("--cases", default="", help="comma-separated case names to run")
    parser.add_argument("--server-args", default="",
                        help="extra scan-server flags, e.g. '--cpu-flush-subnormals false'")
    args = parser.parse_args()
    build = os.path.abspath(args.build_dir)
    out = args.out or tempfile.mkdtemp(prefix="scan-transport-")
    os.makedirs(out, exist_ok=True)
    rounds = 1 if args.quick else args.rounds
    cases = [case for case in CASES if not args.cases or case[0] in args.cases.split(",")]
    if args.quick:
        cases = [(name, [a if a not in ("3", "30", "10", "4") else "1" for a in case_args], servers)
                 for name, case_args, servers in cases if "256MiB" not in name]

    protos = os.path.join(out, "python-proto")
    os.makedirs(protos, exist_ok=True)
    subprocess.run(["protoc", f"--proto_path={REPO}/proto", f"--python_out={protos}",
                    f"{REPO}/proto/scan/v1/scan.proto"], check=True)
    ports = {name: os.path.join(out, f"{name}.port") for name in ("scan", "echo", "tcp", "python")}
    for path in ports.values():
        if os.path.exists(path):
            os.remove(path)
    processes = []
    try:
        targets = {}
        for name, command in [
                ("scan", [f"{build}/server/scan-server", "--listen", "127.0.0.1:0",
                          "--log-level", "warn", "--port-file", ports["scan"],
                          "--allow-shared-memory", "true"]
                 + shlex.split(args.server_args)),
                ("echo", [f"{build}/bench/scan-bench-echo", "--port-file", ports["echo"]]),
                ("tcp", [f"{build}/bench/scan-bench-tcp-echo", "--port-file", ports["tcp"]]),
                ("python", ["/usr/bin/python3", f"{REPO}/bench/service/python_server.py",
                            "--proto-dir", protos, "--port-file", ports["python"]])]:
            process, port = start(command, ports[name])
            processes.append(process)
            targets[name] = f"127.0.0.1:{port}"

        results = {}  # (case, server) -> [run per round]
        for round_index in range(rounds):
            for name, case_args, servers in cases:
                for server in servers:
                    path = os.path.join(out, f"{name.replace(' ', '_')}-{server}-{round_index}.json")
                    warmup = 0.5 if args.quick else 1
                    protocol = ("tcp" if server == "tcp" else
                                "grpc-stream" if server.endswith("-stream") else
                                "system-shm" if server.endswith("-shm") else
                                "kserve" if server.endswith("-kserve") else "grpc")
                    run = bench(build, targets[server.split("-")[0]], protocol, case_args, warmup,
                                path)
                    results.setdefault((name, server), []).append(run)
                    print(f"round {round_index + 1}/{rounds} {name:10} {server:11} "
                          f"{run['throughput_rps']:10.1f} req/s  p50 "
                          f"{run['latency']['p50_us'] / 1000:9.3f} ms  "
                          f"backends {','.join(run['backends'])}", file=sys.stderr)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()

    report(results, cases, rounds, out, args.server_args)


def median(values):
    return statistics.median(values) if values else float("nan")


def report(results, cases, rounds, out, server_args):
    def per_round(case, a, b, key):
        pairs = zip(results[(case, a)], results[(case, b)])
        return median([key(x) / key(y) for x, y in pairs if key(y)])

    rps = lambda run: run["throughput_rps"]  # noqa: E731
    p50 = lambda run: run["latency"]["p50_us"]  # noqa: E731
    mbps = lambda run: run["payload_mbps"]  # noqa: E731

    load = os.getloadavg()
    print(f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {rounds} rounds; JSON in {out}; "
          f"scan-server flags: {server_args or 'defaults'}\n")
    print("| case | server | req/s | payload MB/s | p50 ms | p99 ms | backend |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, _, servers in cases:
        for server in servers:
            runs = results[(name, server)]
            backends = sorted({b for run in runs for b in run["backends"]})
            print(f"| {name} | {server} | {median([rps(r) for r in runs]):.1f} | "
                  f"{median([mbps(r) for r in runs]):.1f} | "
                  f"{median([p50(r) for r in runs]) / 1000:.3f} | "
                  f"{median([r['latency']['p99_us'] for r in runs]) / 1000:.3f} | "
                  f"{','.join(backends)} |")
    print("\n| target | measured (median of per-round ratios) | met |")
    print("|---|---:|---|")
    names = [case[0] for case in cases]
    for name in names:
        if name.startswith(("16MiB", "64MiB", "256MiB")):
            ratio = per_round(name, "scan", "tcp", mbps)
            print(f"| {name}: Scan throughput >= 50% of raw TCP | {ratio:.0%} | "
                  f"{'yes' if ratio >= 0.5 else 'no'} |")
            ratio = per_round(name, "scan-stream", "tcp", mbps)
            print(f"| {name}: ScanStream throughput >= 50% of raw TCP | {ratio:.0%} | "
                  f"{'yes' if ratio >= 0.5 else 'no'} |")
    for name in names:
        if (name, "scan-shm") not in results:
            continue
        ratio = per_round(name, "scan", "scan-shm", p50)
        print(f"| {name}: system shm round trip >= 5x faster than Scan | {ratio:.1f}x | "
              f"{'yes' if ratio >= 5 else 'no'} |")
        kernel = lambda run: run["server_compute"]["p50_us"]  # noqa: E731
        ratio = median([p50(run) / kernel(run) for run in results[(name, "scan-shm")]
                        if kernel(run)])
        print(f"| {name}: system shm round trip <= 1.5x the server's compute time | "
              f"{ratio:.2f}x | {'yes' if ratio <= 1.5 else 'no'} |")
    for name in names:
        if (name, "scan-kserve") not in results:
            continue
        ratio = per_round(name, "scan-kserve", "scan", rps)
        print(f"| {name}: KServe ModelInfer throughput within 10% of Scan | {ratio:.0%} | "
              f"{'yes' if ratio >= 0.9 else 'no'} |")
    if "1MiB x1" in names:
        ratio = per_round("1MiB x1", "scan", "echo", p50)
        print(f"| 1 MiB: Scan p50 <= 1.3x tuned echo | {ratio:.2f}x | "
              f"{'yes' if ratio <= 1.3 else 'no'} |")
    if "4KiB x32" in names:
        ratio = per_round("4KiB x32", "scan", "echo", rps)
        print(f"| 4 KiB x32: Scan throughput >= 80% of echo | {ratio:.0%} | "
              f"{'yes' if ratio >= 0.8 else 'no'} |")
    for name in ("4KiB x32", "1MiB x1", "1MiB x4"):
        if name in names:
            ratio = per_round(name, "scan", "python", rps)
            print(f"| {name}: Scan >= 5x Python grpcio+NumPy throughput | {ratio:.1f}x | "
                  f"{'yes' if ratio >= 5 else 'no'} |")


if __name__ == "__main__":
    main()
