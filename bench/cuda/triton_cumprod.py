"""A three-pass chunked cumprod in Triton, as an MM-Rec engineer would write it: an anchor for
torch_cumprod_bench.py, not our product.

    triton_cumprod(x, dim) -> torch.Tensor

A contiguous tensor is seen as [outer, length, inner] and scanned along `length` in chunks:
  1. one program per chunk (and block of inner lanes) multiplies its chunk down to one product;
  2. the chunk products are scanned along the chunk axis, in place, so that entry c holds the
     product of chunks 0..c (pass 3 reads entry c - 1: the exclusive carry of chunk c);
  3. each chunk is scanned again with tl.cumprod, times its carry, and stored in the output dtype.
Products accumulate in float32 (float64 for float64 input). When inner == 1 (rows, e.g. [N] dim 0
or [rows, N] dim 1), the chunk runs along the contiguous axis instead of across lanes.

Importing this module imports triton; callers that may lack it import this module lazily.
"""
import math

import torch
import triton
import triton.language as tl

# Elements per program in passes 1 and 3: about 32 registers of data per thread at the warp
# counts used below, large enough that pass 2 sees few chunks.
LANE_TILE = 4096
ROW_CHUNK = 8192
# Upper bound on the lanes of one program: 64 float32 are 256 contiguous bytes per row, and
# [*, 128] tensors still give two programs per chunk.
MAX_LANES = 64
# Below 16 the tile is all mask anyway; not going lower keeps clear of degenerate layouts.
MIN_BLOCK = 16


@triton.jit
def _multiply(a, b):
    return a * b


# Inner lanes: tile [CHUNK, BLOCK_INNER] of the [outer, length, inner] view. Program ids run lane
# block fastest, then chunk, then outer, so that neighbouring programs read neighbouring memory.
# Offsets are int64 throughout: in int32, an element offset (and a product like outer * length *
# inner on the way to one) wraps silently at 2^31 elements, 8 GiB of float32; the bench's largest
# tensors (2^28 and 2^29 elements) are within a factor of 8 of that.

@triton.jit
def _lane_tile(length, inner, chunks, inner_blocks, CHUNK: tl.constexpr,
               BLOCK_INNER: tl.constexpr):
    """This program's tile of passes 1 and 3: its outer index, chunk, lanes, the lanes' mask, and
    the tile's element offsets and mask."""
    pid = tl.program_id(0).to(tl.int64)
    lane_block = pid % inner_blocks
    chunk = (pid // inner_blocks) % chunks
    outer = pid // inner_blocks // chunks
    rows = chunk * CHUNK + tl.arange(0, CHUNK)
    lanes = lane_block * BLOCK_INNER + tl.arange(0, BLOCK_INNER)
    lane_mask = lanes < inner
    offsets = outer * length * inner + rows[:, None] * inner + lanes[None, :]
    mask = (rows < length)[:, None] & lane_mask[None, :]
    return outer, chunk, lanes, lane_mask, offsets, mask


@triton.jit
def _lane_chunk_products(x, products, length, inner, chunks, inner_blocks,
                         CHUNK: tl.constexpr, BLOCK_INNER: tl.constexpr):
    outer, chunk, lanes, lane_mask, offsets, mask = _lane_tile(
        length, inner, chunks, inner_blocks, CHUNK, BLOCK_INNER)
    # Masked-off rows load 1, the identity, so a partial last chunk reduces correctly.
    tile = tl.load(x + offsets, mask=mask, other=1.0).to(products.dtype.element_ty)
    tl.store(products + (outer * chunks + chunk) * inner + lanes, tl.reduce(tile, 0, _multiply),
             mask=lane_mask)


@triton.jit
def _lane_chunk_prefix(products, chunks, inner, inner_blocks,
                       BLOCK_CHUNKS: tl.constexpr, BLOCK_INNER: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    lane_block = pid % inner_blocks
    outer = pid // inner_blocks
    lanes = lane_block * BLOCK_INNER + tl.arange(0, BLOCK_INNER)
    lane_mask = lanes < inner
    carry = tl.full([BLOCK_INNER], 1.0, products.dtype.element_ty)
    for start in range(0, chunks, BLOCK_CHUNKS):
        index = start + tl.arange(0, BLOCK_CHUNKS)
        offsets = (outer * chunks + index)[:, None] * inner + lanes[None, :]
        mask = (index < chunks)[:, None] & lane_mask[None, :]
        block = tl.load(products + offsets, mask=mask, other=1.0)
        tl.store(products + offsets, tl.cumprod(block, 0) * carry[None, :], mask=mask)
        carry = carry * tl.reduce(block, 0, _multiply)


@triton.jit
def _lane_rescan(x, prefix, out, length, inner, chunks, inner_blocks,
                 CHUNK: tl.constexpr, BLOCK_INNER: tl.constexpr):
    outer, chunk, lanes, lane_mask, offsets, mask = _lane_tile(
        length, inner, chunks, inner_blocks, CHUNK, BLOCK_INNER)
    tile = tl.load(x + offsets, mask=mask, other=1.0).to(prefix.dtype.element_ty)
    # The first chunk has no carry; its (negative) address is never read under the mask.
    carry = tl.load(prefix + (outer * chunks + chunk - 1) * inner + lanes,
                    mask=lane_mask & (chunk > 0), other=1.0)
    result = tl.cumprod(tile, 0) * carry[None, :]
    tl.store(out + offsets, result.to(out.dtype.element_ty), mask=mask)


# Rows (inner == 1): 1-D tiles of CHUNK contiguous elements; program id = row * chunks + chunk,
# which is also the index of that chunk's entry in `products`.

@triton.jit
def _row_chunk_products(x, products, length, chunks, CHUNK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    chunk = pid % chunks
    row = pid // chunks
    columns = chunk * CHUNK + tl.arange(0, CHUNK)
    tile = tl.load(x + row * length + columns, mask=columns < length, other=1.0)
    tl.store(products + pid, tl.reduce(tile.to(products.dtype.element_ty), 0, _multiply))


@triton.jit
def _row_chunk_prefix(products, chunks, BLOCK_CHUNKS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    # Carried as a block rather than a scalar so the loop-carried type is fixed from the start
    # (a Python 1.0 would be float32 and clash with float64 products).
    carry = tl.full([BLOCK_CHUNKS], 1.0, products.dtype.element_ty)
    for start in range(0, chunks, BLOCK_CHUNKS):
        index = start + tl.arange(0, BLOCK_CHUNKS)
        mask = index < chunks
        block = tl.load(products + row * chunks + index, mask=mask, other=1.0)
        tl.store(products + row * chunks + index, tl.cumprod(block, 0) * carry, mask=mask)
        carry = carry * tl.reduce(block, 0, _multiply)


@triton.jit
def _row_rescan(x, prefix, out, length, chunks, CHUNK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    chunk = pid % chunks
    row = pid // chunks
    columns = chunk * CHUNK + tl.arange(0, CHUNK)
    mask = columns < length
    offsets = row * length + columns
    tile = tl.load(x + offsets, mask=mask, other=1.0).to(prefix.dtype.element_ty)
    # Entry pid - 1 is the previous chunk's inclusive prefix; for a row's first chunk it belongs to
    # another row (or is entry 0 again), always a valid address, and is replaced by 1.
    carry = tl.load(prefix + tl.maximum(pid - 1, 0))
    carry = tl.where(chunk > 0, carry, 1.0)
    result = tl.cumprod(tile, 0) * carry
    tl.store(out + offsets, result.to(out.dtype.element_ty), mask=mask)


def _block(count, cap):
    return max(MIN_BLOCK, min(cap, triton.next_power_of_2(count)))


def triton_cumprod(x: torch.Tensor, dim: int) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"triton_cumprod: floating-point input only, got {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        return x.clone()
    dim = dim % x.dim()
    x = x.contiguous()
    out = torch.empty_like(x)
    length = x.shape[dim]
    outer = math.prod(x.shape[:dim])
    inner = math.prod(x.shape[dim + 1:])
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32

    if inner == 1:
        chunk = _block(length, ROW_CHUNK)
        chunks = triton.cdiv(length, chunk)
        warps = 8 if chunk >= 4096 else 4
        # Allocated even for one chunk, where passes 1 and 2 are skipped: pass 3 still takes a
        # pointer of the accumulation type, and never uses what it reads there.
        products = torch.empty((outer, chunks), device=x.device, dtype=accumulate)
        if chunks > 1:
            _row_chunk_products[(outer * chunks,)](x, products, length, chunks, CHUNK=chunk,
                                                   num_warps=warps)
            _row_chunk_prefix[(outer,)](products, chunks, BLOCK_CHUNKS=_block(chunks, LANE_TILE),
                                        num_warps=8)
        _row_rescan[(outer * chunks,)](x, products, out, length, chunks, CHUNK=chunk,
                                       num_warps=warps)
        return out

    block_inner = min(MAX_LANES, triton.next_power_of_2(inner))
    inner_blocks = triton.cdiv(inner, block_inner)
    chunk = _block(length, LANE_TILE // block_inner)
    chunks = triton.cdiv(length, chunk)
    products = torch.empty((outer, chunks, inner), device=x.device, dtype=accumulate)
    grid = (outer * chunks * inner_blocks,)
    if chunks > 1:
        _lane_chunk_products[grid](x, products, length, inner, chunks, inner_blocks, CHUNK=chunk,
                                   BLOCK_INNER=block_inner, num_warps=4)
        _lane_chunk_prefix[(outer * inner_blocks,)](
            products, chunks, inner, inner_blocks,
            BLOCK_CHUNKS=_block(chunks, LANE_TILE // block_inner), BLOCK_INNER=block_inner,
            num_warps=4)
    _lane_rescan[grid](x, products, out, length, inner, chunks, inner_blocks, CHUNK=chunk,
                       BLOCK_INNER=block_inner, num_warps=4)
    return out
