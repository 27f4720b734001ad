#include "app/config.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <limits>
#include <thread>
#include <type_traits>

#include "scan/wire/byte_size.h"

extern char** environ;

namespace scan::server {
namespace {

using Setter = std::function<std::string(const std::string& value, ServerConfig* config)>;
using Shower = std::function<std::string(const ServerConfig& config)>;

// How one setting is parsed into the config, and how its value is shown in describe() (the
// startup log and --help): both come from the same table entry, so they cannot drift apart.
struct Field {
  Setter set;
  Shower show;
};

struct Option {
  const char* flag;
  const char* env;
  const char* help;
  Field field;
};

// The field's value.
template <class T>
Shower show_field(T ServerConfig::*field, std::nullptr_t = nullptr) {
  return [field](const ServerConfig& config) -> std::string {
    if constexpr (std::is_same_v<T, std::string>) {
      return (config.*field).empty() ? std::string("-") : config.*field;
    } else {
      return fmt::format("{}", config.*field);
    }
  };
}

// What the server makes of the field (0 = "one per core" shows the core count).
template <class T, class Value>
Shower show_field(T ServerConfig::*, Value (ServerConfig::*effective)() const) {
  return [effective](const ServerConfig& config) -> std::string {
    return fmt::format("{}", (config.*effective)());
  };
}

template <class Effective = std::nullptr_t>
Field int64_setting(std::int64_t ServerConfig::*field, std::int64_t minimum,
                    Effective effective = nullptr) {
  return {[field, minimum](const std::string& text, ServerConfig* config) -> std::string {
            std::int64_t value = 0;
            if (!wire::parse_byte_size(text, &value) || value < minimum) {
              return fmt::format(
                  "expected an integer >= {} (suffixes Ki, Mi, Gi allowed), got '{}'", minimum,
                  text);
            }
            config->*field = value;
            return {};
          },
          show_field(field, effective)};
}

template <class Effective = std::nullptr_t>
Field int_setting(int ServerConfig::*field, int minimum, int maximum,
                  Effective effective = nullptr) {
  return {[field, minimum, maximum](const std::string& text, ServerConfig* config) -> std::string {
            std::int64_t value = 0;
            if (!wire::parse_byte_size(text, &value) || value < minimum || value > maximum) {
              return fmt::format("expected an integer in [{}, {}], got '{}'", minimum, maximum,
                                 text);
            }
            config->*field = static_cast<int>(value);
            return {};
          },
          show_field(field, effective)};
}

Field choice_setting(std::string ServerConfig::*field, std::vector<std::string> choices) {
  return {[field, choices](const std::string& text, ServerConfig* config) -> std::string {
            if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
              return fmt::format("expected one of {}, got '{}'", fmt::join(choices, "|"), text);
            }
            config->*field = text;
            return {};
          },
          show_field(field)};
}

Field seconds_setting(double ServerConfig::*field) {
  return {[field](const std::string& text, ServerConfig* config) -> std::string {
            char* end = nullptr;
            const double seconds = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || !(seconds >= 0) || seconds > 86400) {
              return "expected seconds in [0, 86400], got '" + text + "'";
            }
            config->*field = seconds;
            return {};
          },
          show_field(field)};
}

Field bool_setting(bool ServerConfig::*field) {
  return {[field](const std::string& text, ServerConfig* config) -> std::string {
            if (text == "true" || text == "1" || text == "on") {
              config->*field = true;
            } else if (text == "false" || text == "0" || text == "off") {
              config->*field = false;
            } else {
              return "expected true or false, got '" + text + "'";
            }
            return {};
          },
          show_field(field)};
}

// A string setting; `check` returns why a value is refused, or nothing.
Field string_setting(std::string ServerConfig::*field,
                     std::function<std::string(const std::string&)> check = {}) {
  return {[field, check](const std::string& text, ServerConfig* config) -> std::string {
            if (check) {
              if (std::string error = check(text); !error.empty()) return error;
            }
            config->*field = text;
            return {};
          },
          show_field(field)};
}

const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      {"listen", "SCAN_LISTEN", "gRPC listen address HOST:PORT (port 0 picks a free port)",
       string_setting(&ServerConfig::listen,
                      [](const std::string& text) -> std::string {
                        if (text.rfind(':') == std::string::npos)
                          return "expected HOST:PORT, got '" + text + "'";
                        return {};
                      })},
      {"max-tensor-bytes", "SCAN_MAX_TENSOR_BYTES",
       "largest tensor accepted, in bytes; larger ones get RESOURCE_EXHAUSTED",
       int64_setting(&ServerConfig::max_tensor_bytes, 1)},
      {"max-message-bytes", "SCAN_MAX_MESSAGE_BYTES",
       "largest gRPC message received or sent; 0 = max-tensor-bytes + 1Mi. Tensors larger than "
       "a message can still be sent with ScanStream",
       int64_setting(&ServerConfig::max_message_bytes, 0,
                     &ServerConfig::effective_max_message_bytes)},
      {"stream-chunk-bytes", "SCAN_STREAM_CHUNK_BYTES",
       "size of the result chunks ScanStream sends (below max-message-bytes)",
       int64_setting(&ServerConfig::stream_chunk_bytes, 1024)},
      {"max-rank", "SCAN_MAX_RANK", "most dimensions a tensor may have",
       int_setting(&ServerConfig::max_rank, 1, 64)},
      {"worker-threads", "SCAN_WORKER_THREADS",
       "scans computed at once on the CPU; 0 = one per core; more requests wait in a queue",
       int_setting(&ServerConfig::worker_threads, 0, 4096,
                   &ServerConfig::effective_worker_threads)},
      {"rpc-threads", "SCAN_RPC_THREADS",
       "most threads serving calls that wait (scans over 1 MiB or queued for a backend, "
       "streams); calls beyond them get RESOURCE_EXHAUSTED at once (small scans with a free "
       "backend run on gRPC's own threads); 0 = max(64, 8 x worker-threads)",
       int_setting(&ServerConfig::rpc_threads, 0, 65536, &ServerConfig::effective_rpc_threads)},
      {"max-inflight-bytes", "SCAN_MAX_INFLIGHT_BYTES",
       "tensor bytes (request + response) all requests being served may hold; a request that "
       "does not fit gets RESOURCE_EXHAUSTED at once; 0 = 4 x max-tensor-bytes",
       int64_setting(&ServerConfig::max_inflight_bytes, 0,
                     &ServerConfig::effective_max_inflight_bytes)},
      {"max-queue", "SCAN_MAX_QUEUE",
       "requests that may wait for a busy backend; more get RESOURCE_EXHAUSTED at once",
       int_setting(&ServerConfig::max_queue, 0, 1 << 20)},
      {"max-concurrent-streams", "SCAN_MAX_CONCURRENT_STREAMS",
       "concurrent calls one client connection may open",
       int_setting(&ServerConfig::max_concurrent_streams, 1, 1 << 20)},
      {"min-client-ping-interval-seconds", "SCAN_MIN_CLIENT_PING_INTERVAL_SECONDS",
       "clients pinging more often than this (keepalive abuse) are disconnected",
       seconds_setting(&ServerConfig::min_client_ping_interval_seconds)},
      {"idle-connection-timeout-seconds", "SCAN_IDLE_CONNECTION_TIMEOUT_SECONDS",
       "connections without calls for this long are closed (0 = never)",
       seconds_setting(&ServerConfig::idle_connection_timeout_seconds)},
      {"stream-first-chunk-timeout-seconds", "SCAN_STREAM_FIRST_CHUNK_TIMEOUT_SECONDS",
       "a ScanStream whose header, or first chunk after `accepted`, takes longer is ended with "
       "DEADLINE_EXCEEDED (0 = never)",
       seconds_setting(&ServerConfig::stream_first_chunk_timeout_seconds)},
      {"stream-idle-timeout-seconds", "SCAN_STREAM_IDLE_TIMEOUT_SECONDS",
       "a ScanStream whose client sends no chunk, or reads no result chunk, for this long is ended "
       "with DEADLINE_EXCEEDED and its memory freed (0 = never)",
       seconds_setting(&ServerConfig::stream_idle_timeout_seconds)},
      {"tls-cert", "SCAN_TLS_CERT",
       "PEM certificate chain of the server; with --tls-key enables TLS",
       string_setting(&ServerConfig::tls_cert)},
      {"tls-key", "SCAN_TLS_KEY", "PEM private key of the server",
       string_setting(&ServerConfig::tls_key)},
      {"tls-client-ca", "SCAN_TLS_CLIENT_CA",
       "PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
       string_setting(&ServerConfig::tls_client_ca)},
      {"auth-token-file", "SCAN_AUTH_TOKEN_FILE",
       "file holding the bearer token Scan calls must carry ('authorization: Bearer <token>'); "
       "health checks need none",
       string_setting(&ServerConfig::auth_token_file)},
      {"allow-shared-memory", "SCAN_ALLOW_SHARED_MEMORY",
       "let clients on this host register POSIX shared-memory regions and pass tensors by "
       "reference (RegisterSharedMemory); off by default: a region is memory the server maps for "
       "any caller with the same credentials (true|false)",
       bool_setting(&ServerConfig::allow_shared_memory)},
      {"shared-memory-max-regions", "SCAN_SHARED_MEMORY_MAX_REGIONS",
       "shared-memory regions registered at once, all callers together",
       int_setting(&ServerConfig::shared_memory_max_regions, 1, 1024)},
      {"shared-memory-max-bytes", "SCAN_SHARED_MEMORY_MAX_BYTES",
       "bytes of shared memory mapped at once, all callers together (e.g. 64Gi)",
       int64_setting(&ServerConfig::shared_memory_max_bytes, 1)},
      {"reflection", "SCAN_REFLECTION", "serve gRPC server reflection (true|false)",
       bool_setting(&ServerConfig::reflection)},
      {"cpu-backend", "SCAN_CPU_BACKEND",
       "auto (calibrate cpu-native and cpu-torch at startup, route by predicted time), "
       "cpu-native or cpu-torch",
       choice_setting(&ServerConfig::cpu_backend, {"auto", "cpu-native", "cpu-torch"})},
      {"cpu-flush-subnormals", "SCAN_CPU_FLUSH_SUBNORMALS",
       "CPU backends return 0 for results below the smallest normal float32 (1.2e-38; float64: "
       "2.2e-308) instead of subnormals, which the CPU computes up to 15x slower; inputs are read "
       "exactly; false: exact IEEE subnormals, as torch.cumprod (true|false)",
       bool_setting(&ServerConfig::cpu_flush_subnormals)},
      {"gpu", "SCAN_GPU",
       "auto (serve from every usable GPU found at startup, calibrated against the CPU "
       "backends) or off (CPU only)",
       choice_setting(&ServerConfig::gpu, {"auto", "off"})},
      {"gpu-lanes", "SCAN_GPU_LANES",
       "requests one GPU serves at once, each with its own streams and pinned/device buffers",
       int_setting(&ServerConfig::gpu_lanes, 1, 64)},
      {"gpu-chunk-bytes", "SCAN_GPU_CHUNK_BYTES",
       "size of a GPU pipeline piece (staging buffer); larger tensors stream through in pieces",
       int64_setting(&ServerConfig::gpu_chunk_bytes, 64 << 10)},
      {"gpu-copy-threads", "SCAN_GPU_COPY_THREADS",
       "host threads copying between request memory and pinned staging buffers, per GPU; "
       "0 = one per core",
       int_setting(&ServerConfig::gpu_copy_threads, 0, 256,
                   &ServerConfig::effective_gpu_copy_threads)},
      {"gpu-streaming-copies", "SCAN_GPU_STREAMING_COPIES",
       "copy to and from pinned staging buffers with non-temporal stores (true|false)",
       bool_setting(&ServerConfig::gpu_streaming_copies)},
      {"gpu-register-pool", "SCAN_GPU_REGISTER_POOL",
       "register the pooled request/response buffers with CUDA once (in the background), so GPU "
       "requests skip the staging copies; false: always stage (true|false)",
       bool_setting(&ServerConfig::gpu_register_pool)},
      {"gpu-keep-awake-seconds", "SCAN_GPU_KEEP_AWAKE_SECONDS",
       "for this long after a GPU's last work (requests, startup self-test and warm-up), launch an "
       "empty kernel on it every 10 ms, so that the next small request pays less for the GPU "
       "waking up (a 64 KiB round trip after 0.5-2 s idle took 2.5-2.7x a back-to-back one, "
       "1.3-1.55x kept awake); costs power: the GPU stays out of its idle state for that long "
       "after each burst of work; 0 = off",
       seconds_setting(&ServerConfig::gpu_keep_awake_seconds)},
      {"warm-start", "SCAN_WARM_START",
       "before the port opens, fill the tensor buffer pool with paged-in buffers (registered "
       "with CUDA when GPUs serve) of every power of two from 64 KiB up to max-tensor-bytes, two "
       "of each within max-inflight-bytes, and before health says SERVING, send this server a "
       "few small Scan calls of every dtype on every kind of backend over its own listener (in "
       "process with TLS; not counted in metrics or cost models), so that the first request of a "
       "size pays for no first use; "
       "costs that memory from the start (about 4 x max-tensor-bytes) and the time to page it "
       "in (true|false)",
       bool_setting(&ServerConfig::warm_start)},
      {"gpu-min-bytes", "SCAN_GPU_MIN_BYTES",
       "AUTO sends tensors smaller than this to a CPU backend whatever the cost models predict "
       "(0 = the cost models decide)",
       int64_setting(&ServerConfig::gpu_min_bytes, 0)},
      {"route-cpu-contention", "SCAN_ROUTE_CPU_CONTENTION",
       "AUTO stretches CPU backends' predicted times by the cores the rest of the process (the "
       "gRPC transport above all) keeps busy, measured from the process's CPU time while "
       "serving, so that under transport-bound load the GPU takes the scans (true|false)",
       bool_setting(&ServerConfig::route_cpu_contention)},
      {"cost-model", "SCAN_COST_MODEL",
       "pinned cost models instead of calibration, BACKEND=FIXED_US:GBPS[,...], e.g. "
       "cuda:0=60:20,cpu-native=5:8 (fixed microseconds, GB/s)",
       Field{[](const std::string& text, ServerConfig* config) -> std::string {
               std::vector<CostOverride> overrides;
               std::string error;
               if (!parse_cost_overrides(text, &overrides, &error)) return error;
               config->cost_models = text;
               config->cost_overrides = std::move(overrides);
               return {};
             },
             show_field(&ServerConfig::cost_models)}},
      {"log-level", "SCAN_LOG_LEVEL", "trace|debug|info|warn|error",
       choice_setting(&ServerConfig::log_level, {"trace", "debug", "info", "warn", "error"})},
      {"log-format", "SCAN_LOG_FORMAT", "text|json (one JSON object per line)",
       choice_setting(&ServerConfig::log_format, {"text", "json"})},
      {"shutdown-grace-seconds", "SCAN_SHUTDOWN_GRACE_SECONDS",
       "on SIGTERM/SIGINT, how long in-flight requests may take to finish before being cancelled",
       seconds_setting(&ServerConfig::shutdown_grace_seconds)},
      {"drain-delay-seconds", "SCAN_DRAIN_DELAY_SECONDS",
       "on SIGTERM/SIGINT, keep serving this long while health says NOT_SERVING, so that load "
       "balancers stop sending before the server stops accepting",
       seconds_setting(&ServerConfig::drain_delay_seconds)},
      {"port-file", "SCAN_PORT_FILE", "write the bound gRPC port to this file once serving",
       string_setting(&ServerConfig::port_file)},
      {"metrics-listen", "SCAN_METRICS_LISTEN",
       "Prometheus /metrics address HOST:PORT (IPv4 or hostname; port 0 picks one; empty: off)",
       string_setting(&ServerConfig::metrics_listen,
                      [](const std::string& text) -> std::string {
                        if (!text.empty() && text.rfind(':') == std::string::npos) {
                          return "expected HOST:PORT or empty, got '" + text + "'";
                        }
                        return {};
                      })},
      {"metrics-auth-token-file", "SCAN_METRICS_AUTH_TOKEN_FILE",
       "scrapes of /metrics need 'Authorization: Bearer <token>' with the token in this file "
       "(Prometheus: authorization.credentials_file)",
       string_setting(&ServerConfig::metrics_auth_token_file)},
      {"metrics-port-file", "SCAN_METRICS_PORT_FILE",
       "write the bound metrics port to this file once serving",
       string_setting(&ServerConfig::metrics_port_file)},
  };
  return table;
}

std::string help_text() {
  std::string text =
      "Usage: scan-server [--flag=value | --flag value]...\n"
      "Serves scan.v1.ScanService (cumulative products of tensors) over gRPC.\n"
      "Each flag can also be set through its environment variable; flags win.\n"
      "Defaults: " +
      ServerConfig().describe() + "\n\n";
  for (const Option& option : options()) {
    text += fmt::format("  --{:<24} env {}\n      {}\n", option.flag, option.env, option.help);
  }
  text +=
      "  --help                      this text\n  --version                   print the version\n";
  return text;
}

const Option* find_option(const std::string& flag) {
  for (const Option& option : options()) {
    if (flag == option.flag) return &option;
  }
  return nullptr;
}

}  // namespace

std::int64_t ServerConfig::effective_max_message_bytes() const {
  if (max_message_bytes > 0) return max_message_bytes;
  return std::min<std::int64_t>(max_tensor_bytes + wire::kMessageOverheadBytes,
                                std::numeric_limits<int>::max());
}

int ServerConfig::effective_worker_threads() const {
  if (worker_threads > 0) return worker_threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

int ServerConfig::effective_gpu_copy_threads() const {
  if (gpu_copy_threads > 0) return gpu_copy_threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

int ServerConfig::effective_rpc_threads() const {
  if (rpc_threads > 0) return rpc_threads;
  return std::max(64, 8 * effective_worker_threads());
}

std::int64_t ServerConfig::max_stream_input_chunk_bytes() const {
  const auto varint_bytes = [](std::int64_t value) {
    int bytes = 1;
    for (; value >= 0x80; value >>= 7) ++bytes;
    return bytes;
  };
  const std::int64_t message = effective_max_message_bytes();
  std::int64_t payload = message - 2;
  while (payload > 0 && 1 + varint_bytes(payload) + payload > message) --payload;
  return payload;
}

std::string ServerConfig::describe() const {
  std::string text;
  for (const Option& option : options()) {
    std::string name = option.flag;
    std::replace(name.begin(), name.end(), '-', '_');
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", name, option.field.show(*this));
  }
  return text;
}

ParseResult parse_config(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& environment,
                         ServerConfig* config) {
  auto failure = [](std::string message) {
    return ParseResult{ParseResult::Action::kExitFailure, std::move(message)};
  };
  for (const Option& option : options()) {
    const auto found = environment.find(option.env);
    if (found == environment.end()) continue;
    if (std::string error = option.field.set(found->second, config); !error.empty()) {
      return failure(fmt::format("${}: {}", option.env, error));
    }
  }
  for (std::size_t index = 0; index < args.size(); ++index) {
    const std::string& arg = args[index];
    if (arg == "--help" || arg == "-h") return {ParseResult::Action::kExitSuccess, help_text()};
    if (arg == "--version") return {ParseResult::Action::kExitSuccess, SCAN_VERSION "\n"};
    if (arg.rfind("--", 0) != 0) return failure("unexpected argument '" + arg + "' (see --help)");
    std::string flag = arg.substr(2);
    std::string value;
    if (const auto equals = flag.find('='); equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag.resize(equals);
    } else if (index + 1 < args.size()) {
      value = args[++index];
    } else {
      return failure("--" + flag + " needs a value");
    }
    const Option* option = find_option(flag);
    if (option == nullptr) return failure("unknown flag --" + flag + " (see --help)");
    if (std::string error = option->field.set(value, config); !error.empty()) {
      return failure(fmt::format("--{}: {}", flag, error));
    }
  }
  // A result chunk is framed like an input chunk: one field, tag and length.
  if (config->stream_chunk_bytes > config->max_stream_input_chunk_bytes()) {
    return failure("--stream-chunk-bytes must leave room below --max-message-bytes");
  }
  if (config->effective_max_inflight_bytes() < 2 * config->max_tensor_bytes) {
    return failure(
        "--max-inflight-bytes must hold at least one largest request and its response "
        "(2 x --max-tensor-bytes)");
  }
  if (config->tls_cert.empty() != config->tls_key.empty()) {
    return failure("--tls-cert and --tls-key go together");
  }
  if (!config->tls_client_ca.empty() && config->tls_cert.empty()) {
    return failure("--tls-client-ca needs TLS (--tls-cert and --tls-key)");
  }
  if (config->effective_max_message_bytes() > std::numeric_limits<int>::max()) {
    return failure("--max-message-bytes: gRPC limits messages to 2Gi - 1 bytes");
  }
  return {};
}

bool parse_cost_overrides(const std::string& text, std::vector<CostOverride>* overrides,
                          std::string* error) {
  overrides->clear();
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string entry = text.substr(start, end - start);
    start = end + 1;
    if (entry.empty()) continue;
    const auto equals = entry.find('=');
    const auto colon = entry.find(':', equals == std::string::npos ? 0 : equals);
    CostOverride parsed;
    char* fixed_end = nullptr;
    char* rate_end = nullptr;
    if (equals != std::string::npos && equals > 0 && colon != std::string::npos) {
      parsed.backend = entry.substr(0, equals);
      const std::string fixed = entry.substr(equals + 1, colon - equals - 1);
      const std::string rate = entry.substr(colon + 1);
      const double fixed_us = std::strtod(fixed.c_str(), &fixed_end);
      const double gbps = std::strtod(rate.c_str(), &rate_end);
      if (!fixed.empty() && !rate.empty() && *fixed_end == '\0' && *rate_end == '\0' &&
          fixed_us >= 0 && gbps > 0 && gbps < 1e6) {
        parsed.fixed_seconds = fixed_us * 1e-6;
        parsed.bytes_per_second = gbps * 1e9;
        overrides->push_back(parsed);
        continue;
      }
    }
    *error =
        "expected BACKEND=FIXED_US:GBPS[,...] with FIXED_US >= 0 and GBPS > 0, got '" + entry + "'";
    return false;
  }
  return true;
}

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text(*entry);
    const auto equals = text.find('=');
    if (equals != std::string::npos) environment[text.substr(0, equals)] = text.substr(equals + 1);
  }
  return environment;
}

}  // namespace scan::server
