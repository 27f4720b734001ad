// libFuzzer harness for the .npy reader (scan-client --input): any bytes must either parse into a
// tensor whose data matches its shape and dtype, or fail with an error message; never crash,
// throw, hang or allocate what the file cannot back.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "npy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  scan::client::HostTensor tensor;
  std::string error;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (!scan::client::parse_npy(bytes, &tensor, &error)) {
    if (error.empty()) {
      std::fprintf(stderr, "parse_npy failed without saying why\n");
      std::abort();
    }
    return 0;
  }
  const auto expected =
      static_cast<std::size_t>(tensor.numel()) * scan::kernels::element_size(tensor.dtype);
  if (tensor.shape.empty() || tensor.data.size() != expected || expected > size) {
    std::fprintf(stderr, "parse_npy accepted an inconsistent tensor: %zu data bytes for %s\n",
                 tensor.data.size(), scan::client::format_shape(tensor.shape).c_str());
    std::abort();
  }
  // What scan-client does next with a file it read: widen it for the local check.
  const scan::client::HostTensor widened = convert_dtype(tensor, scan::kernels::DType::kFloat64);
  if (widened.data.size() != static_cast<std::size_t>(tensor.numel()) * 8) std::abort();
  return 0;
}
