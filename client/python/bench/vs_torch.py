#!/usr/bin/python3
"""client.cumprod vs torch.cumprod on CUDA tensors of MM-Rec's shapes, side by side.

torch.cumprod runs on the tensor's own GPU (synchronised before the clock stops); client.cumprod
copies it to the host, sends it to scan-server (which runs its own GPU kernel when it has one),
and copies the result back to the same device. Medians of --repeats runs, alternating.

  vs_torch.py --target HOST:PORT [--repeats 10] [--backend auto|gpu|cpu]
              [--shared-memory auto|cuda|system|off]

With a server started with --allow-shared-memory on the same host, --shared-memory cuda (or auto)
hands the server CUDA IPC handles instead: it scans the tensor in its own device memory.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from scan_service import Client  # noqa: E402

SHAPES = [(2, 8, 4096, 128), (2, 8, 32768, 128)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--shared-memory", default="off",
                        help="the client's shared_memory mode (default off: gRPC)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {device}"
          f" ({torch.cuda.get_device_name() if device == 'cuda' else 'no CUDA'})")
    print("| shape | dtype | MiB | torch.cumprod ms | client.cumprod ms | torch / client | transport |"
          " backend | server total ms | max err / MM-Rec tolerance |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with Client(args.target, timeout=120, shared_memory=args.shared_memory) as client:
        for shape in SHAPES:
            for dtype in (torch.float32, torch.bfloat16):
                # MM-Rec's decays: in (0.999, 1) after its clamp, so products stay normal numbers
                # over 32K rows (wider ranges underflow, where relative errors say nothing).
                gamma = (0.999 + 0.001 * torch.rand(shape, device=device)).clamp(
                    1e-6, 1 - 1e-6).to(dtype)
                times = {"torch": [], "client": []}
                for run in range(args.repeats + 1):
                    started = time.perf_counter()
                    want = torch.cumprod(gamma, dim=2)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    torch_s = time.perf_counter() - started
                    started = time.perf_counter()
                    result = client.scan(gamma, dim=2, backend=args.backend)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    client_s = time.perf_counter() - started
                    if run:  # the first of each is a warm-up
                        times["torch"].append(torch_s)
                        times["client"].append(client_s)
                got = result.tensor
                assert got.device == gamma.device and got.dtype == dtype
                # MM-Rec's test: rtol 1e-3, atol 1e-4 against float64 (<= 1 passes).
                exact = torch.cumprod(gamma.double(), dim=2)
                diff = ((got.double() - exact).abs() / (1e-4 + 1e-3 * exact.abs())).max().item()
                mib = gamma.numel() * gamma.element_size() / (1 << 20)
                torch_ms = statistics.median(times["torch"]) * 1e3
                client_ms = statistics.median(times["client"]) * 1e3
                print(f"| {list(shape)} | {str(dtype)[6:]} | {mib:.0f} | {torch_ms:.3f} | "
                      f"{client_ms:.3f} | {torch_ms / client_ms:.1f}x | {result.transport} | "
                      f"{result.backend} | {result.timing['total_us'] / 1e3:.2f} | {diff:.2g} |")


if __name__ == "__main__":
    main()
