// How the GPU pipeline (cuda_pipeline.h) cuts a tensor into pieces that fit its staging buffers, so
// that copy-in of one piece, the scan of the previous one and copy-out of the one before overlap.
// Pure arithmetic (no CUDA), unit-tested on any machine.
#pragma once

#include <cstdint>
#include <vector>

#include "scan/kernels/types.h"

namespace scan::kernels {

// One contiguous run of elements of the tensor, and how to finish its scan. A piece is either
//   - whole scanned blocks: shape {blocks, length, inner}, complete on its own;
//   - consecutive rows of one block: shape {1, rows, inner};
//   - part of one row of one block (rows wider than a piece): shape {1, 1, columns}.
// Pieces of one block follow each other in plan order. A piece that does not start the block is
// multiplied by the carry (the running product of the block's earlier rows, per column) and, unless
// it ends the block, hands on a new carry. Carries alternate between two buffers by `parity`: the
// piece reads buffer `parity` and writes buffer `1 - parity`, so a pass never reads what it writes.
// Row-part pieces are ordered column range by column range (all rows of columns [c0, c1), then the
// next range), so a carry buffer only ever spans one piece's columns.
struct ChunkPiece {
  std::int64_t offset = 0;  // first element, in the tensor's row-major order
  ScanShape shape;
  bool carry_in = false;
  bool carry_out = false;
  int parity = 0;

  std::int64_t numel() const { return shape.numel(); }
  bool needs_carry() const { return carry_in || carry_out; }
};

// Pieces of at most `max_elements` (>= 1) elements covering `shape` exactly once, in an order
// where every piece's carry comes from the piece just before it. Pieces are balanced: a block cut
// into n pieces gets n nearly equal ones rather than full ones and a sliver.
std::vector<ChunkPiece> plan_chunks(ScanShape shape, std::int64_t max_elements);

}  // namespace scan::kernels
