#!/usr/bin/env python3
"""torch.cumprod on the shapes cuda_cumprod_bench timed, on the same GPU, and the merged table.

    torch_cumprod_bench.py --csv ours.csv --capi libscan_cumprod_capi.so [--markdown table.md]

Reads the C++ benchmark's CSV (our kernel and the copy floor), times torch.cumprod on each shape the
same way (CUDA events, warm-up, median of >= 50 runs, L2 overwritten before each), and prints one
table: ours, copy, torch, the ratio to the copy and the speedup over torch. Through the C ABI shim
it also runs our kernel on torch's own tensors, to compare the two results' float64-measured error
on one input (float32 and bfloat16 at L = 32768).
"""
import argparse
import csv
import ctypes
import statistics

import torch

DTYPES = {"f32": (torch.float32, 0), "f64": (torch.float64, 1), "f16": (torch.float16, 2),
          "bf16": (torch.bfloat16, 3)}


def median_ms(op, flush, reps, warmup=5):
    for _ in range(warmup):
        op()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        flush.zero_()
        start.record()
        op()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


class Ours:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.scan_cuda_cumprod.restype = ctypes.c_int
        self.lib.scan_cuda_cumprod.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                               ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                               ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.message = ctypes.create_string_buffer(512)

    def __call__(self, x, out, dim):
        outer = 1
        for size in x.shape[:dim]:
            outer *= size
        inner = 1
        for size in x.shape[dim + 1:]:
            inner *= size
        code = DTYPES[[k for k, v in DTYPES.items() if v[0] == x.dtype][0]][1]
        rc = self.lib.scan_cuda_cumprod(x.data_ptr(), out.data_ptr(), outer, x.shape[dim], inner,
                                        code, torch.cuda.current_stream().cuda_stream,
                                        self.message, len(self.message))
        if rc != 0:
            raise RuntimeError(self.message.value.decode())


def relative_errors(result, reference):
    ref = reference.flatten()
    err = (result.double().flatten() - ref).abs()
    keep = ref.abs() > 1e-30
    rel = err[keep] / ref[keep].abs()
    return rel.max().item(), rel.pow(2).mean().sqrt().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--capi", required=True)
    parser.add_argument("--markdown")
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args()

    ours = Ours(args.capi)
    props = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__} on {props.name}")
    flush = torch.empty(2 * props.L2_cache_size, dtype=torch.uint8, device="cuda")

    # Accuracy on one input: float64 cumprod on the GPU is the yardstick (its own error, ~1e-16 *
    # sqrt(L), is nothing next to float32's).
    print("\naccuracy on the same input, relative to a float64 cumprod (decays in (0.9999, 1)):")
    for name in ("f32", "bf16"):
        dtype = DTYPES[name][0]
        torch.manual_seed(0)
        x = torch.empty(2, 8, 32768, 128, device="cuda", dtype=dtype).uniform_(0.9999, 1.0)
        reference = torch.cumprod(x.double(), dim=2)
        mine = torch.empty_like(x)
        ours(x, mine, 2)
        torch.cuda.synchronize()
        ours_max, ours_rms = relative_errors(mine, reference)
        torch_max, torch_rms = relative_errors(torch.cumprod(x, dim=2), reference)
        print(f"  [2,8,32768,128] {name}: ours max {ours_max:.3e} rms {ours_rms:.3e} | "
              f"torch max {torch_max:.3e} rms {torch_rms:.3e}")
        del x, reference, mine

    rows = []
    with open(args.csv) as handle:
        for row in csv.DictReader(handle):
            dims = [int(d) for d in row["dims"].strip("[]").split("x")]
            dim = int(row["dim"])
            dtype = DTYPES[row["dtype"]][0]
            x = torch.empty(dims, device="cuda", dtype=dtype).uniform_(0.9999, 1.0)
            out = torch.empty_like(x)
            nbytes = int(row["bytes"])
            reps = 50 if nbytes >= (1 << 30) else args.reps
            torch_ms = median_ms(lambda: torch.cumprod(x, dim=dim, out=out), flush, reps)
            ours_here_ms = median_ms(lambda: ours(x, out, dim), flush, reps)
            del x, out
            torch.cuda.empty_cache()
            rows.append((row, torch_ms, ours_here_ms))

    header = ("| shape | dtype | MiB r+w | ours us | ours GB/s | copy GB/s | ours/copy | "
              "torch us | torch GB/s | speedup vs torch |")
    lines = [header, "|" + "---|" * 10]
    for row, torch_ms, ours_here_ms in rows:
        moved = 2 * int(row["bytes"])
        ours_ms, copy_ms = float(row["ours_ms"]), float(row["copy_ms"])
        gbs = lambda ms: moved / (ms * 1e-3) / 1e9
        shape = row["dims"].replace("x", ",") + f" dim{row['dim']}"
        lines.append(f"| {shape} | {row['dtype']} | {moved / 2**20:.1f} | {ours_ms * 1e3:.1f} | "
                     f"{gbs(ours_ms):.0f} | {gbs(copy_ms):.0f} | {100 * copy_ms / ours_ms:.0f}% | "
                     f"{torch_ms * 1e3:.1f} | {gbs(torch_ms):.0f} | {torch_ms / ours_ms:.1f}x |")
        print(f"  {shape} {row['dtype']}: ours via ctypes in this process {ours_here_ms * 1e3:.1f}"
              f" us (C++ bench {ours_ms * 1e3:.1f} us)")
    empty_us = float(rows[0][0]["empty_ms"]) * 1e3 if rows else 0.0
    table = "\n".join(lines) + f"\n\nEmpty kernel launch, same method: {empty_us:.2f} us.\n"
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table)


if __name__ == "__main__":
    main()
