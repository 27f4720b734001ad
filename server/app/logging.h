// spdlog setup: level and text or JSON-lines format, the latter for log collectors.
#pragma once

#include <string>

namespace scan::server {

void configure_logging(const std::string& level, const std::string& format);

}  // namespace scan::server
