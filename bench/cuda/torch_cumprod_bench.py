#!/usr/bin/env python3
"""torch.cumprod on the shapes cuda_cumprod_bench timed, on the same GPU, and the merged table.

    torch_cumprod_bench.py --csv ours.csv --capi libscan_cumprod_capi.so [--markdown table.md]
                           [--reps N] [--no-anchors]

Reads the C++ benchmark's CSV (our kernel and the copy floor), times torch.cumprod on each shape the
same way (CUDA events, warm-up, median of >= 50 runs, L2 overwritten before each), and prints one
table: ours, copy, torch, the ratio to the copy and the speedup over torch. Through the C ABI shim
it also runs our kernel on torch's own tensors, to compare the two results' float64-measured error
on one input (float32 and bfloat16 at L = 32768).

Two anchors join the table unless --no-anchors: the chunked Triton scan an MM-Rec engineer would
write (triton_cumprod.py beside this file) and torch.compile(torch.cumprod), each checked against a
float64 cumprod of the same input before it is timed the same way. Without triton, or when the
compile fails, their columns read n/a.
"""
import argparse
import csv
import ctypes
import math
import statistics

import torch

DTYPES = {"f32": (torch.float32, 0), "f64": (torch.float64, 1), "f16": (torch.float16, 2),
          "bf16": (torch.bfloat16, 3)}

# (rtol, atol) for an anchor's result against a float64 cumprod of the same input. float32 is
# MM-Rec's own tolerance; a bfloat16 result is off by up to 2^-8 (3.9e-3) relative from rounding the
# output alone, so 16-bit results get 1e-2.
TOLERANCES = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-3, 1e-4),
              torch.float16: (1e-2, 1e-3), torch.bfloat16: (1e-2, 1e-3)}


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
        outer = math.prod(x.shape[:dim])
        inner = math.prod(x.shape[dim + 1:])
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


class Anchor:
    """One comparison column: a cumprod that is checked, then timed, shape by shape.

    A failure (no triton, a compile error, a kernel error) leaves the shape's cell n/a and prints
    its reason once, however many shapes hit it, so one missing dependency does not bury the table.
    """

    def __init__(self, name, make):
        self.name = name
        self.make = make  # make(x, dim) -> the op to time, compiled for x; None: anchor missing
        self.reasons_seen = set()

    def unavailable(self, reason):
        if reason not in self.reasons_seen:
            self.reasons_seen.add(reason)
            print(f"  {self.name}: n/a ({reason})")

    def measure(self, x, dim, reference, label, flush, reps):
        """(milliseconds, whether the result passed), or None where the anchor could not run."""
        if self.make is None:
            return None
        try:
            op = self.make(x, dim)
            result = op()
            torch.cuda.synchronize()
        except Exception as error:  # an anchor that fails is a finding to print, not a crash
            lines = str(error).splitlines()
            self.unavailable(f"{type(error).__name__}: {lines[0] if lines else ''}")
            return None
        passed = check(self.name, label, result, reference)
        del result
        return median_ms(op, flush, reps), passed


def check(name, label, result, reference):
    """Prints the max relative error against the float64 reference, and a FAIL line if any element
    is outside the dtype's tolerance; returns whether none was."""
    rtol, atol = TOLERANCES[result.dtype]
    worst, _ = relative_errors(result, reference)
    outside = (result.double() - reference).abs_() > reference.abs().mul_(rtol).add_(atol)
    count = outside.sum().item()
    print(f"  {label}: {name} max rel err {worst:.3e}")
    if count:
        print(f"FAIL {name} {label}: {count} of {result.numel()} elements outside rtol {rtol:g} "
              f"atol {atol:g} (max rel err {worst:.3e})")
    return count == 0


def triton_anchor():
    try:
        # Imported only here, so that a machine without triton still gets the rest of the table.
        import triton
        from triton_cumprod import triton_cumprod
    except Exception as error:
        print(f"triton: not available ({type(error).__name__}: {error})")
        return Anchor("triton", None)
    print(f"triton {triton.__version__}")
    return Anchor("triton", lambda x, dim: lambda: triton_cumprod(x, dim))


def compiled_cumprod(x, dim):
    # Dynamo keys its cache on the code it wraps (here the one frame it puts around any builtin),
    # and past its recompile limit (8) it falls back to eager; a reset per shape keeps every shape
    # compiled. dynamic=False: one kernel specialized to this shape, as torch's own launch is.
    torch._dynamo.reset()
    compiled = torch.compile(torch.cumprod, dynamic=False)
    compiled(x, dim=dim)  # compiles here, outside the timing and its warm-up
    return lambda: compiled(x, dim=dim)


def format_ms(measured):
    if measured is None:
        return "n/a"
    ms, passed = measured
    return f"{ms:.3f}" + ("" if passed else " FAIL")


def time_shape(row, ours, anchors, flush, reps):
    """torch's and our milliseconds on the CSV row's shape, and each anchor's measure(); a function
    so that its GiB-sized tensors are gone when it returns."""
    dims = [int(d) for d in row["dims"].strip("[]").split("x")]
    dim = int(row["dim"])
    x = torch.empty(dims, device="cuda", dtype=DTYPES[row["dtype"]][0]).uniform_(0.9999, 1.0)
    out = torch.empty_like(x)
    torch_ms = median_ms(lambda: torch.cumprod(x, dim=dim, out=out), flush, reps)
    ours_here_ms = median_ms(lambda: ours(x, out, dim), flush, reps)
    out = None  # room for the float64 reference and the anchors' outputs
    anchor_results = []
    if anchors:
        label = row["dims"].replace("x", ",") + f" dim{dim} {row['dtype']}"
        reference = torch.cumprod(x.double(), dim=dim)
        for anchor in anchors:
            anchor_results.append(anchor.measure(x, dim, reference, label, flush, reps))
            torch.cuda.empty_cache()
    return torch_ms, ours_here_ms, anchor_results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--capi", required=True)
    parser.add_argument("--markdown")
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--no-anchors", action="store_true",
                        help="skip the Triton and torch.compile columns (and their compile time)")
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

    anchors = []
    if not args.no_anchors:
        print("\nanchors, each checked against a float64 cumprod of the same input before timing:")
        anchors = [triton_anchor(), Anchor("compile", compiled_cumprod)]
    rows = []
    with open(args.csv) as handle:
        for row in csv.DictReader(handle):
            reps = 50 if int(row["bytes"]) >= (1 << 30) else args.reps
            rows.append((row, *time_shape(row, ours, anchors, flush, reps)))
            torch.cuda.empty_cache()

    header = ("| shape | dtype | MiB r+w | ours us | ours GB/s | copy GB/s | ours/copy | "
              "torch us | torch GB/s | speedup vs torch |")
    columns = 10
    if anchors:
        header += " triton ms | compile ms | ours/triton |"
        columns += 3
    lines = [header, "|" + "---|" * columns]
    for row, torch_ms, ours_here_ms, anchor_results in rows:
        moved = 2 * int(row["bytes"])
        ours_ms, copy_ms = float(row["ours_ms"]), float(row["copy_ms"])
        gbs = lambda ms: moved / (ms * 1e-3) / 1e9
        shape = row["dims"].replace("x", ",") + f" dim{row['dim']}"
        lines.append(f"| {shape} | {row['dtype']} | {moved / 2**20:.1f} | {ours_ms * 1e3:.1f} | "
                     f"{gbs(ours_ms):.0f} | {gbs(copy_ms):.0f} | {100 * copy_ms / ours_ms:.0f}% | "
                     f"{torch_ms * 1e3:.1f} | {gbs(torch_ms):.0f} | {torch_ms / ours_ms:.1f}x |")
        if anchors:
            triton_measured, compile_measured = anchor_results
            speedup = "n/a" if triton_measured is None else f"{triton_measured[0] / ours_ms:.1f}x"
            lines[-1] += (f" {format_ms(triton_measured)} | {format_ms(compile_measured)} | "
                          f"{speedup} |")
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
