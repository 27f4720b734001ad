#include "scan/wire/byte_size.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

namespace scan::wire {

bool parse_byte_size(const std::string& text, std::int64_t* bytes) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long number = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || number < 0) return false;
  const std::string suffix(end);
  int shift = 0;
  if (suffix == "Ki") {
    shift = 10;
  } else if (suffix == "Mi") {
    shift = 20;
  } else if (suffix == "Gi") {
    shift = 30;
  } else if (!suffix.empty()) {
    return false;
  }
  if (number > (std::numeric_limits<std::int64_t>::max() >> shift)) return false;
  *bytes = static_cast<std::int64_t>(number) << shift;
  return true;
}

}  // namespace scan::wire
