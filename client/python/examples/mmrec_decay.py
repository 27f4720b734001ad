#!/usr/bin/python3
"""A tiny MM-Rec-like block whose decay scan runs locally (torch.cumprod) or on scan-server.

MM-Rec's recurrence h_t = gamma_t * h_{t-1} + x_t unrolls, per head and channel, into
h_t = G_t * cumsum(x_s / G_s) with G = cumprod(gamma, dim=2) over the sequence. This block
computes gamma from its input, scans it, and mixes the result back. --scan server swaps the one
torch.cumprod(gamma, dim=2) call for client.cumprod(gamma, dim=2); everything else is the same,
and so is the output (within the scan's rounding).

  mmrec_decay.py [--scan torch|server|both] [--target localhost:50051] [--device cpu|cuda]
                 [--batch 2 --heads 4 --seq-len 256 --head-dim 32] [--dtype float32|bfloat16]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from scan_service import Client  # noqa: E402


class DecayBlock(torch.nn.Module):
    """[batch, seq_len, model] -> same, through a decay recurrence over heads."""

    def __init__(self, model_dim, heads, cumprod):
        super().__init__()
        self.heads = heads
        self.to_gamma = torch.nn.Linear(model_dim, model_dim)
        self.to_value = torch.nn.Linear(model_dim, model_dim)
        self.out = torch.nn.Linear(model_dim, model_dim)
        self.cumprod = cumprod  # torch.cumprod or client.cumprod: the one switch

    def split_heads(self, t):  # [b, s, h*d] -> [b, h, s, d]
        b, s, _ = t.shape
        return t.view(b, s, self.heads, -1).transpose(1, 2)

    def forward(self, x):
        # Decays in (0.9, 1): long memory, products that stay far from underflow.
        gamma = self.split_heads(0.9 + 0.1 * torch.sigmoid(self.to_gamma(x))).contiguous()
        value = self.split_heads(self.to_value(x))
        decay = self.cumprod(gamma, dim=2)  # G_t, the scan the service computes
        state = decay * torch.cumsum(value / decay, dim=2)
        b, h, s, d = state.shape
        return self.out(state.transpose(1, 2).reshape(b, s, h * d))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", choices=["torch", "server", "both"], default="both")
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--head-dim", type=int, default=32)
    args = parser.parse_args()

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.batch, args.seq_len, args.heads * args.head_dim)
    x = x.to(device=args.device, dtype=dtype)

    outputs = {}
    with Client(args.target, timeout=60) as client:
        for name, cumprod in (("torch", torch.cumprod), ("server", client.cumprod)):
            if args.scan not in (name, "both"):
                continue
            torch.manual_seed(1)  # the same weights for both
            block = DecayBlock(x.shape[-1], args.heads, cumprod).to(args.device, dtype)
            with torch.no_grad():
                outputs[name] = block(x)
            y = outputs[name]
            print(f"{name:6s}: output {list(y.shape)} {y.dtype} on {y.device}, "
                  f"mean {y.float().mean().item():+.6f}, std {y.float().std().item():.6f}")
    if len(outputs) == 2:
        a, b = outputs["torch"].double(), outputs["server"].double()
        diff = ((a - b).abs().max() / a.abs().max()).item()
        # The scan differs by float rounding only (float32: ~1e-6 relative; bfloat16 ~1e-2).
        limit = 1e-4 if dtype == torch.float32 else 5e-2
        print(f"same output: max |torch - server| / max |torch| = {diff:.3g} (limit {limit:g})")
        if not diff <= limit:
            sys.exit("outputs differ")


if __name__ == "__main__":
    main()
