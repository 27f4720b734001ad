// Scraping /metrics as Prometheus does, for the in-process suites that check exact series.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>
#include <string>

namespace scan::testing {

inline std::string http_get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      for (ssize_t got; (got = read(fd, buffer, sizeof buffer)) > 0;) reply.append(buffer, got);
    }
  }
  close(fd);
  return reply;
}

// The value of the one sample whose name and labels are exactly `series`, or -1.
inline double sample(const std::string& text, const std::string& series) {
  const std::regex line(
      "(^|\n)" + std::regex_replace(series, std::regex(R"([{}()+.\[\]])"), R"(\$&)") + " ([^\n]+)");
  std::smatch match;
  return std::regex_search(text, match, line) ? std::stod(match[2]) : -1;
}

}  // namespace scan::testing
