#include "npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "scan/kernels/reference.h"

namespace scan::client {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLength = 6;

bool fail(std::string* error, std::string message) {
  *error = std::move(message);
  return false;
}

const char* descr_of(kernels::DType dtype) {
  switch (dtype) {
    case kernels::DType::kFloat16:
      return "<f2";
    case kernels::DType::kFloat64:
      return "<f8";
    default:
      return "<f4";
  }
}

// The reader behind read_npy and parse_npy; `path` only names the source in error messages.
bool read_npy_stream(std::istream& file, const std::string& path, HostTensor* tensor,
                     std::string* error) {
  char preamble[kMagicLength + 2];
  if (!file.read(preamble, sizeof preamble) || std::memcmp(preamble, kMagic, kMagicLength) != 0) {
    return fail(error, path + ": not a .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(preamble[kMagicLength]);
  std::uint32_t header_length = 0;
  if (major == 1) {
    unsigned char length[2];
    if (!file.read(reinterpret_cast<char*>(length), 2)) return fail(error, path + ": truncated");
    header_length = length[0] | (length[1] << 8u);
  } else if (major == 2 || major == 3) {
    unsigned char length[4];
    if (!file.read(reinterpret_cast<char*>(length), 4)) return fail(error, path + ": truncated");
    header_length = length[0] | (length[1] << 8u) | (length[2] << 16u) |
                    (static_cast<std::uint32_t>(length[3]) << 24u);
  } else {
    return fail(error, path + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_length > (1u << 20)) return fail(error, path + ": header too large");
  std::string header(header_length, '\0');
  if (!file.read(header.data(), header_length)) return fail(error, path + ": truncated header");

  std::smatch match;
  if (!std::regex_search(header, match, std::regex(R"('descr'\s*:\s*'([^']*)')"))) {
    return fail(error, path + ": header has no 'descr'");
  }
  const std::string descr = match[1];
  if (descr == "<f4" || descr == "=f4") {
    tensor->dtype = kernels::DType::kFloat32;
  } else if (descr == "<f8" || descr == "=f8") {
    tensor->dtype = kernels::DType::kFloat64;
  } else if (descr == "<f2" || descr == "=f2") {
    tensor->dtype = kernels::DType::kFloat16;
  } else {
    return fail(error, path + ": dtype '" + descr +
                           "' is not supported (use little-endian float16, float32 or float64)");
  }
  if (std::regex_search(header, std::regex(R"('fortran_order'\s*:\s*True)"))) {
    return fail(error, path + ": Fortran-ordered arrays are not supported (save a C-ordered copy)");
  }
  if (!std::regex_search(header, match, std::regex(R"('shape'\s*:\s*\(([^)]*)\))"))) {
    return fail(error, path + ": header has no 'shape'");
  }
  tensor->shape.clear();
  const std::string dims = match[1];
  const std::regex number(R"(\d+)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number);
       it != std::sregex_iterator(); ++it) {
    tensor->shape.push_back(std::stoll(it->str()));
  }
  if (tensor->shape.empty()) return fail(error, path + ": 0-d arrays cannot be scanned");

  const std::size_t bytes =
      static_cast<std::size_t>(tensor->numel()) * kernels::element_size(tensor->dtype);
  tensor->data.resize(bytes);
  if (!file.read(tensor->data.data(), static_cast<std::streamsize>(bytes))) {
    return fail(error, path + ": data shorter than its shape says");
  }
  return true;
}

}  // namespace

HostTensor convert_dtype(const HostTensor& tensor, kernels::DType dtype) {
  if (tensor.dtype == dtype) return tensor;
  const std::int64_t count = tensor.numel();
  const std::vector<double> wide = kernels::widen_to_f64(tensor.data.data(), tensor.dtype, count);
  HostTensor converted{dtype, tensor.shape, {}};
  converted.data.resize(static_cast<std::size_t>(count) * kernels::element_size(dtype));
  kernels::narrow_from_f64(wide.data(), count, dtype, converted.data.data());
  return converted;
}

bool read_npy(const std::string& path, HostTensor* tensor, std::string* error) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return fail(error, path + ": cannot open");
  return read_npy_stream(file, path, tensor, error);
}

bool parse_npy(std::string_view bytes, HostTensor* tensor, std::string* error) {
  std::istringstream stream(std::string(bytes), std::ios::binary);
  return read_npy_stream(stream, "npy", tensor, error);
}

bool write_npy(const std::string& path, const HostTensor& tensor, std::string* error) {
  HostTensor widened;
  if (tensor.dtype == kernels::DType::kBFloat16) {
    widened = convert_dtype(tensor, kernels::DType::kFloat32);
  }
  const HostTensor& stored = tensor.dtype == kernels::DType::kBFloat16 ? widened : tensor;
  std::string shape = "(";
  for (const std::int64_t size : stored.shape) shape += std::to_string(size) + ",";
  if (stored.shape.size() > 1) shape.pop_back();
  shape += ")";
  std::string header = std::string("{'descr': '") + descr_of(stored.dtype) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Version 1 pads magic + version + length + header + '\n' to a multiple of 64 bytes.
  const std::size_t unpadded = kMagicLength + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 0xffff) return fail(error, path + ": shape too long for a .npy header");

  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return fail(error, path + ": cannot create");
  file.write(kMagic, kMagicLength);
  const char version_and_length[] = {1, 0, static_cast<char>(header.size() & 0xff),
                                     static_cast<char>(header.size() >> 8)};
  file.write(version_and_length, sizeof version_and_length);
  file << header;
  file.write(stored.data.data(), static_cast<std::streamsize>(stored.data.size()));
  if (!file) return fail(error, path + ": write failed");
  return true;
}

}  // namespace scan::client
