#include "npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

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

// At most this many characters of a value from the file go into an error message.
constexpr std::size_t kQuoteLimit = 40;

std::string excerpt(std::string_view text) {
  if (text.size() <= kQuoteLimit) return std::string(text);
  return std::string(text.substr(0, kQuoteLimit)) + "...";
}

// The header is a Python dict literal, padded with spaces and ended by a newline:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Parsed by hand rather than with std::regex, which it was until fuzzing showed that libstdc++'s
// regex matcher recurses once per character (a header of a few 100 KiB, within the 1 MiB we
// accept, overflowed the stack), that `\d+` read "-2" as 2, and that std::stoll threw on sizes
// beyond int64.
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  // On success fills the three fields NumPy writes; fortran_order defaults to False.
  bool parse(std::string* descr, bool* fortran_order, std::vector<std::int64_t>* shape,
             std::string* why) {
    bool have_descr = false, have_order = false, have_shape = false;
    *fortran_order = false;
    if (!eat('{')) return fail(why, "header is not a dict");
    while (!eat('}')) {
      std::string key;
      if (!quoted(&key)) return fail(why, "header: expected a quoted key");
      if (!eat(':')) return fail(why, "header: expected ':' after '" + excerpt(key) + "'");
      if (key == "descr" && !have_descr) {
        if (!quoted(descr)) return fail(why, "header: 'descr' is not a string");
        have_descr = true;
      } else if (key == "fortran_order" && !have_order) {
        if (!boolean(fortran_order)) return fail(why, "header: 'fortran_order' is not a bool");
        have_order = true;
      } else if (key == "shape" && !have_shape) {
        if (!tuple(shape, why)) return false;
        have_shape = true;
      } else {
        return fail(why, "header: unexpected or repeated key '" + excerpt(key) + "'");
      }
      if (!eat(',') && !(peek('}'))) return fail(why, "header: expected ',' or '}'");
    }
    skip_spaces();
    if (position_ != text_.size()) return fail(why, "header: unexpected bytes after the dict");
    if (!have_descr) return fail(why, "header has no 'descr'");
    if (!have_shape) return fail(why, "header has no 'shape'");
    return true;
  }

 private:
  void skip_spaces() {
    while (position_ < text_.size() && (text_[position_] == ' ' || text_[position_] == '\t' ||
                                        text_[position_] == '\n' || text_[position_] == '\r')) {
      ++position_;
    }
  }
  bool peek(char expected) {
    skip_spaces();
    return position_ < text_.size() && text_[position_] == expected;
  }
  bool eat(char expected) {
    if (!peek(expected)) return false;
    ++position_;
    return true;
  }

  // A '...' or "..." literal without escapes (NumPy's keys and dtype strings have none).
  bool quoted(std::string* value) {
    skip_spaces();
    if (position_ >= text_.size() || (text_[position_] != '\'' && text_[position_] != '"')) {
      return false;
    }
    const char quote = text_[position_++];
    const std::size_t close = text_.find(quote, position_);
    if (close == std::string_view::npos) return false;
    value->assign(text_.substr(position_, close - position_));
    position_ = close + 1;
    return true;
  }

  bool boolean(bool* value) {
    skip_spaces();
    for (const auto& [word, meaning] :
         {std::pair{std::string_view("True"), true}, std::pair{std::string_view("False"), false}}) {
      if (text_.substr(position_, word.size()) == word) {
        position_ += word.size();
        *value = meaning;
        return true;
      }
    }
    return false;
  }

  // (), (n,) or (n, m, ...): non-negative decimal sizes, each fitting int64 (Python 2 wrote
  // long sizes with an L suffix).
  bool tuple(std::vector<std::int64_t>* sizes, std::string* why) {
    sizes->clear();
    if (!eat('(')) return fail(why, "header: 'shape' is not a tuple");
    while (!eat(')')) {
      skip_spaces();
      const std::size_t first = position_;
      std::int64_t size = 0;
      while (position_ < text_.size() && text_[position_] >= '0' && text_[position_] <= '9') {
        if (__builtin_mul_overflow(size, 10, &size) ||
            __builtin_add_overflow(size, text_[position_] - '0', &size)) {
          return fail(why, "header: a 'shape' size overflows a 64-bit integer");
        }
        ++position_;
      }
      if (position_ == first) {
        return fail(why, "header: 'shape' sizes must be non-negative integers");
      }
      if (position_ < text_.size() && text_[position_] == 'L') ++position_;
      sizes->push_back(size);
      if (!eat(',') && !peek(')')) return fail(why, "header: expected ',' or ')' in 'shape'");
    }
    return true;
  }

  std::string_view text_;
  std::size_t position_ = 0;
};

// Bytes left in `stream` after its read position, or SIZE_MAX if it cannot seek (then the read
// itself finds out). Checked before allocating, so that a small file claiming a huge shape fails
// instead of allocating what its shape claims.
std::uint64_t remaining_bytes(std::istream& stream) {
  const std::istream::pos_type here = stream.tellg();
  if (here == std::istream::pos_type(-1) || !stream.seekg(0, std::ios::end)) {
    stream.clear();
    return UINT64_MAX;
  }
  const std::istream::pos_type end = stream.tellg();
  stream.seekg(here);
  if (end == std::istream::pos_type(-1) || end < here) return UINT64_MAX;
  return static_cast<std::uint64_t>(end - here);
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
  if (header_length > remaining_bytes(file)) return fail(error, path + ": truncated header");
  std::string header(header_length, '\0');
  if (!file.read(header.data(), header_length)) return fail(error, path + ": truncated header");

  std::string descr, why;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  if (!HeaderParser(header).parse(&descr, &fortran_order, &shape, &why)) {
    return fail(error, path + ": " + why);
  }
  if (descr == "<f4" || descr == "=f4") {
    tensor->dtype = kernels::DType::kFloat32;
  } else if (descr == "<f8" || descr == "=f8") {
    tensor->dtype = kernels::DType::kFloat64;
  } else if (descr == "<f2" || descr == "=f2") {
    tensor->dtype = kernels::DType::kFloat16;
  } else {
    return fail(error, path + ": dtype '" + excerpt(descr) +
                           "' is not supported (use little-endian float16, float32 or float64)");
  }
  if (fortran_order) {
    return fail(error, path + ": Fortran-ordered arrays are not supported (save a C-ordered copy)");
  }
  if (shape.empty()) return fail(error, path + ": 0-d arrays cannot be scanned");
  std::int64_t bytes = static_cast<std::int64_t>(kernels::element_size(tensor->dtype));
  for (const std::int64_t size : shape) {
    if (__builtin_mul_overflow(bytes, size, &bytes)) {
      return fail(error, path + ": shape " + format_shape(shape) + " is too large");
    }
  }
  if (static_cast<std::uint64_t>(bytes) > remaining_bytes(file)) {
    return fail(error, path + ": data shorter than its shape says");
  }
  tensor->shape = std::move(shape);
  tensor->data.resize(static_cast<std::size_t>(bytes));
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
