// The GPU pipeline's piece plan, checked on the CPU: pieces tile the tensor exactly once within the
// size limit, and scanning each piece on its own then applying the carries the way the device does
// (cuda_apply_carry, alternating two carry buffers) reproduces the whole scan.
#include "scan/kernels/chunk_plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "scan/kernels/reference.h"

namespace scan::kernels {
namespace {

std::string describe(ScanShape shape, std::int64_t limit) {
  return "shape {" + std::to_string(shape.outer) + ", " + std::to_string(shape.length) + ", " +
         std::to_string(shape.inner) + "} limit " + std::to_string(limit);
}

// What the device does with the plan, in float64 on the host.
std::vector<double> scan_in_pieces(const std::vector<double>& input, ScanShape shape,
                                   std::int64_t limit) {
  std::vector<double> output(input.size());
  const auto pieces = plan_chunks(shape, limit);
  std::vector<double> carry[2] = {std::vector<double>(static_cast<std::size_t>(limit)),
                                  std::vector<double>(static_cast<std::size_t>(limit))};
  for (const ChunkPiece& piece : pieces) {
    const auto offset = static_cast<std::size_t>(piece.offset);
    std::vector<double> scanned(static_cast<std::size_t>(piece.numel()));
    reference_cumprod(input.data() + offset, scanned.data(), piece.shape);
    if (!piece.needs_carry()) {
      std::copy(scanned.begin(), scanned.end(), output.begin() + piece.offset);
      continue;
    }
    const std::int64_t rows = piece.shape.length;
    const std::int64_t columns = piece.shape.inner;
    EXPECT_EQ(piece.shape.outer, 1);
    EXPECT_LE(columns, limit);
    for (std::int64_t row = 0; row < rows; ++row) {
      for (std::int64_t column = 0; column < columns; ++column) {
        double value = scanned[static_cast<std::size_t>(row * columns + column)];
        if (piece.carry_in) value *= carry[piece.parity][static_cast<std::size_t>(column)];
        output[offset + static_cast<std::size_t>(row * columns + column)] = value;
        if (piece.carry_out && row == rows - 1) {
          carry[1 - piece.parity][static_cast<std::size_t>(column)] = value;
        }
      }
    }
  }
  return output;
}

TEST(ChunkPlan, PiecesTileTheTensorWithinTheLimit) {
  const ScanShape shapes[] = {{1, 1, 1},  {16, 64, 128},  {2, 1000, 3}, {1, 7, 1000},
                              {3, 5, 17}, {1, 100000, 1}, {5, 1, 33}};
  for (const ScanShape shape : shapes) {
    for (const std::int64_t limit : {1, 2, 7, 64, 1000, 4096, 1 << 20}) {
      SCOPED_TRACE(describe(shape, limit));
      const auto pieces = plan_chunks(shape, limit);
      std::int64_t next = 0;
      std::vector<char> seen(static_cast<std::size_t>(shape.numel()), 0);
      for (const ChunkPiece& piece : pieces) {
        EXPECT_GE(piece.numel(), 1);
        EXPECT_LE(piece.numel(), limit);
        for (std::int64_t element = 0; element < piece.numel(); ++element) {
          ++seen[static_cast<std::size_t>(piece.offset + element)];
        }
        next += piece.numel();
      }
      EXPECT_EQ(next, shape.numel());
      for (char count : seen) ASSERT_EQ(count, 1);
    }
  }
  EXPECT_TRUE(plan_chunks({0, 5, 5}, 10).empty());
}

TEST(ChunkPlan, WholeBlocksNeedNoCarryAndPiecesAreBalanced) {
  // MM-Rec's [2, 8, 32768, 128] float32 with 8 MiB pieces: 16 blocks of 16 MiB, two pieces each.
  const auto pieces = plan_chunks({16, 32768, 128}, (8 << 20) / 4);
  ASSERT_EQ(pieces.size(), 32u);
  EXPECT_FALSE(pieces[0].carry_in);
  EXPECT_TRUE(pieces[0].carry_out);
  EXPECT_TRUE(pieces[1].carry_in);
  EXPECT_FALSE(pieces[1].carry_out);
  EXPECT_EQ(pieces[0].shape.length, 16384);
  // The same tensor in bfloat16 fits a block per piece: nothing to carry.
  for (const ChunkPiece& piece : plan_chunks({16, 32768, 128}, (8 << 20) / 2)) {
    EXPECT_FALSE(piece.needs_carry());
    EXPECT_EQ(piece.shape.outer, 1);
  }
  // 10 rows at 4 per piece: 4, 3, 3 rather than 4, 4, 2.
  const auto balanced = plan_chunks({1, 10, 1}, 4);
  ASSERT_EQ(balanced.size(), 3u);
  EXPECT_EQ(balanced[0].shape.length, 4);
  EXPECT_EQ(balanced[2].shape.length, 3);
}

TEST(ChunkPlan, ScanningPieceByPieceWithCarriesEqualsTheWholeScan) {
  std::mt19937_64 generator(std::random_device{}());
  std::uniform_real_distribution<double> decay(0.9, 1.1);
  const ScanShape shapes[] = {{3, 50, 4}, {1, 9, 50}, {2, 300, 7}, {4, 1, 10}, {1, 1000, 1}};
  for (const ScanShape shape : shapes) {
    std::vector<double> input(static_cast<std::size_t>(shape.numel()));
    for (double& value : input) value = decay(generator);
    std::vector<double> expected(input.size());
    reference_cumprod(input.data(), expected.data(), shape);
    for (const std::int64_t limit : {1, 3, 16, 64, 200, 100000}) {
      SCOPED_TRACE(describe(shape, limit));
      const auto output = scan_in_pieces(input, shape, limit);
      for (std::size_t index = 0; index < expected.size(); ++index) {
        ASSERT_NEAR(output[index], expected[index], 1e-12 * std::abs(expected[index]))
            << "element " << index;
      }
    }
  }
}

}  // namespace
}  // namespace scan::kernels
