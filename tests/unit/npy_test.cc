#include "npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>

namespace scan::client {
namespace {

using ::testing::HasSubstr;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("scan-npy-test-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }
  std::string path(const std::string& name) const { return (directory_ / name).string(); }

  std::filesystem::path directory_;
};

TEST_F(NpyTest, RoundTripsEveryNumpyDtype) {
  for (const auto dtype :
       {kernels::DType::kFloat16, kernels::DType::kFloat32, kernels::DType::kFloat64}) {
    for (const std::vector<std::int64_t>& shape :
         std::vector<std::vector<std::int64_t>>{{7}, {2, 3, 5}, {1, 0, 4}}) {
      const HostTensor written = random_gamma(dtype, shape, 0.5, 1.0, std::random_device{}());
      std::string error;
      ASSERT_TRUE(write_npy(path("t.npy"), written, &error)) << error;
      HostTensor read;
      ASSERT_TRUE(read_npy(path("t.npy"), &read, &error)) << error;
      EXPECT_EQ(read.dtype, written.dtype);
      EXPECT_EQ(read.shape, written.shape);
      EXPECT_EQ(read.data, written.data);
    }
  }
}

TEST_F(NpyTest, HeaderIsPaddedToSixtyFourBytes) {
  const HostTensor written = random_gamma(kernels::DType::kFloat32, {3, 4}, 0.5, 1.0, 1);
  std::string error;
  ASSERT_TRUE(write_npy(path("t.npy"), written, &error)) << error;
  EXPECT_EQ((std::filesystem::file_size(path("t.npy")) - written.data.size()) % 64, 0u);
}

TEST_F(NpyTest, BFloat16IsWrittenAsExactFloat32) {
  const HostTensor written = random_gamma(kernels::DType::kBFloat16, {4, 5}, 0.5, 1.0, 2);
  std::string error;
  ASSERT_TRUE(write_npy(path("t.npy"), written, &error)) << error;
  HostTensor read;
  ASSERT_TRUE(read_npy(path("t.npy"), &read, &error)) << error;
  EXPECT_EQ(read.dtype, kernels::DType::kFloat32);
  EXPECT_EQ(convert_dtype(read, kernels::DType::kBFloat16).data, written.data);
}

TEST_F(NpyTest, RejectsWhatItCannotRead) {
  auto write_raw = [this](const std::string& header, std::size_t data_bytes) {
    std::ofstream file(path("bad.npy"), std::ios::binary);
    file.write("\x93NUMPY\x01\x00", 8);
    const char length[] = {static_cast<char>(header.size() & 0xff),
                           static_cast<char>(header.size() >> 8)};
    file.write(length, 2);
    file << header << std::string(data_bytes, '\0');
  };
  HostTensor tensor;
  std::string error;

  write_raw("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", 8);
  EXPECT_FALSE(read_npy(path("bad.npy"), &tensor, &error));
  EXPECT_THAT(error, HasSubstr(">f4"));

  write_raw("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", 16);
  EXPECT_FALSE(read_npy(path("bad.npy"), &tensor, &error));
  EXPECT_THAT(error, HasSubstr("Fortran"));

  write_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 8);
  EXPECT_FALSE(read_npy(path("bad.npy"), &tensor, &error));
  EXPECT_THAT(error, HasSubstr("shorter"));

  EXPECT_FALSE(read_npy(path("missing.npy"), &tensor, &error));
  std::ofstream(path("text.npy")) << "not numpy";
  EXPECT_FALSE(read_npy(path("text.npy"), &tensor, &error));
  EXPECT_THAT(error, HasSubstr("magic"));
}

// A version 2 file (4-byte header length) around `header`, followed by `data`.
std::string npy_v2(const std::string& header, const std::string& data = {}) {
  const auto length = static_cast<std::uint32_t>(header.size());
  std::string file("\x93NUMPY\x02\x00", 8);
  for (int shift = 0; shift < 32; shift += 8) file.push_back(static_cast<char>(length >> shift));
  return file + header + data;
}

TEST(ParseNpyTest, ParsesWhatWriteNpyWrites) {
  const HostTensor written = random_gamma(kernels::DType::kFloat32, {2, 3}, 0.5, 1.0, 3);
  HostTensor read;
  std::string error;
  ASSERT_TRUE(parse_npy(
      npy_v2("{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4', }\n", written.data), &read,
      &error))
      << error;
  EXPECT_EQ(read.shape, written.shape);
  EXPECT_EQ(read.data, written.data);
}

// Headers that crashed or fooled the former regex-based reader (found fuzzing it with
// tests/fuzz/npy_fuzzer.cc): a stack overflow on long headers, std::stoll throwing, a signed
// overflow and a huge allocation for a shape the file cannot back, and "-2" silently read as 2.
TEST(ParseNpyTest, RejectsHostileHeadersWithAnError) {
  const std::string huge(200000, '1');
  const std::pair<std::string, std::string> cases[] = {
      {"{'descr': '" + std::string(300000, 'A') + "', 'shape': (2,), }\n", "not supported"},
      {"{'descr': '<f4', 'shape': (" + std::string(300000, ' ') + "4,), }\n", "shorter"},
      {"{'descr': '<f4', 'shape': (99999999999999999999999,), }\n", "overflows"},
      {"{'descr': '<f4', 'shape': (" + huge + ",), }\n", "overflows"},
      {"{'descr': '<f4', 'shape': (1099511627776, 1099511627776), }\n", "too large"},
      {"{'descr': '<f4', 'shape': (1099511627776,), }\n", "shorter"},
      {"{'descr': '<f4', 'shape': (-2,), }\n", "non-negative"},
      {"{'descr': '<f4', 'shape': (2,), 'shape': (3,)}\n", "repeated"},
      {"{'descr': '<f4', 'shape': (2,) 'fortran_order': False}\n", "expected ','"},
      {"{'descr': '<f4', }\n", "no 'shape'"},
  };
  for (const auto& [header, complaint] : cases) {
    HostTensor tensor;
    std::string error;
    EXPECT_FALSE(parse_npy(npy_v2(header, std::string(8, '\0')), &tensor, &error))
        << header.substr(0, 80);
    EXPECT_THAT(error, HasSubstr(complaint)) << header.substr(0, 80);
  }
}

}  // namespace
}  // namespace scan::client
