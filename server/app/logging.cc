#include "app/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace scan::server {
namespace {

// Writes the log message as the body of a JSON string: messages quote client input (peer
// addresses, field values), so they must be escaped for each line to stay valid JSON.
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& message, const std::tm&,
              spdlog::memory_buf_t& destination) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (const char character : message.payload) {
      const auto byte = static_cast<unsigned char>(character);
      switch (character) {
        case '"':
          destination.append(std::string_view("\\\""));
          break;
        case '\\':
          destination.append(std::string_view("\\\\"));
          break;
        case '\n':
          destination.append(std::string_view("\\n"));
          break;
        case '\t':
          destination.append(std::string_view("\\t"));
          break;
        default:
          if (byte < 0x20) {
            const char escaped[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xf]};
            destination.append(escaped, escaped + sizeof escaped);
          } else {
            destination.push_back(character);
          }
      }
    }
  }

  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

}  // namespace

void configure_logging(const std::string& level, const std::string& format) {
  // Logs go to stderr so that stdout stays free for tools that read the server's output.
  auto logger =
      std::make_shared<spdlog::logger>("scan", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"message":"%*"})");
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f %^%-5l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace scan::server
