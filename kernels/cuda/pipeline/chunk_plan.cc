#include "scan/kernels/chunk_plan.h"

#include <algorithm>

namespace scan::kernels {
namespace {

// Splits `total` into the fewest parts of at most `limit`, as equal as possible; calls
// part(start, size) for each in order.
template <typename Part>
void balanced_parts(std::int64_t total, std::int64_t limit, Part&& part) {
  const std::int64_t parts = ceil_div(total, limit);
  const std::int64_t base = total / parts;
  const std::int64_t larger = total % parts;  // the first `larger` parts get one more
  std::int64_t start = 0;
  for (std::int64_t index = 0; index < parts; ++index) {
    const std::int64_t size = base + (index < larger ? 1 : 0);
    part(start, size);
    start += size;
  }
}

}  // namespace

std::vector<ChunkPiece> plan_chunks(ScanShape shape, std::int64_t max_elements) {
  std::vector<ChunkPiece> pieces;
  max_elements = std::max<std::int64_t>(max_elements, 1);
  if (shape.numel() == 0) return pieces;
  const std::int64_t block = shape.length * shape.inner;

  if (block <= max_elements) {
    balanced_parts(shape.outer, max_elements / block, [&](std::int64_t first, std::int64_t count) {
      pieces.push_back({first * block, {count, shape.length, shape.inner}});
    });
    return pieces;
  }
  for (std::int64_t outer = 0; outer < shape.outer; ++outer) {
    if (shape.inner <= max_elements) {
      int group = 0;
      balanced_parts(shape.length, max_elements / shape.inner,
                     [&](std::int64_t row, std::int64_t rows) {
                       pieces.push_back({(outer * shape.length + row) * shape.inner,
                                         {1, rows, shape.inner},
                                         row > 0,
                                         row + rows < shape.length,
                                         group++ % 2});
                     });
    } else {
      balanced_parts(shape.inner, max_elements, [&](std::int64_t column, std::int64_t columns) {
        for (std::int64_t row = 0; row < shape.length; ++row) {
          pieces.push_back({(outer * shape.length + row) * shape.inner + column,
                            {1, 1, columns},
                            row > 0,
                            row + 1 < shape.length,
                            static_cast<int>(row % 2)});
        }
      });
    }
  }
  return pieces;
}

}  // namespace scan::kernels
