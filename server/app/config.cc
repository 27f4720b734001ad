#include "app/config.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <limits>
#include <thread>

extern char** environ;

namespace scan::server {
namespace {

using Setter = std::function<std::string(const std::string& value, ServerConfig* config)>;

struct Option {
  const char* flag;
  const char* env;
  const char* help;
  Setter set;
};

// Accepts plain integers and binary suffixes (64Ki, 256Mi, 1Gi) since byte limits are easier to
// read that way.
bool parse_int64(const std::string& text, std::int64_t* value) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long number = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str()) return false;
  const std::string suffix(end);
  int shift = 0;
  if (suffix == "Ki")
    shift = 10;
  else if (suffix == "Mi")
    shift = 20;
  else if (suffix == "Gi")
    shift = 30;
  else if (!suffix.empty())
    return false;
  if (number < 0 || number > (std::numeric_limits<std::int64_t>::max() >> shift)) return false;
  *value = static_cast<std::int64_t>(number) << shift;
  return true;
}

Setter int64_setter(std::int64_t ServerConfig::*field, std::int64_t minimum) {
  return [field, minimum](const std::string& text, ServerConfig* config) -> std::string {
    std::int64_t value = 0;
    if (!parse_int64(text, &value) || value < minimum) {
      return fmt::format("expected an integer >= {} (suffixes Ki, Mi, Gi allowed), got '{}'",
                         minimum, text);
    }
    config->*field = value;
    return {};
  };
}

Setter int_setter(int ServerConfig::*field, int minimum, int maximum) {
  return [field, minimum, maximum](const std::string& text, ServerConfig* config) -> std::string {
    std::int64_t value = 0;
    if (!parse_int64(text, &value) || value < minimum || value > maximum) {
      return fmt::format("expected an integer in [{}, {}], got '{}'", minimum, maximum, text);
    }
    config->*field = static_cast<int>(value);
    return {};
  };
}

Setter choice_setter(std::string ServerConfig::*field, std::vector<std::string> choices) {
  return [field, choices](const std::string& text, ServerConfig* config) -> std::string {
    if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
      return fmt::format("expected one of {}, got '{}'", fmt::join(choices, "|"), text);
    }
    config->*field = text;
    return {};
  };
}

Setter seconds_setter(double ServerConfig::*field) {
  return [field](const std::string& text, ServerConfig* config) -> std::string {
    char* end = nullptr;
    const double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(seconds >= 0) || seconds > 86400) {
      return "expected seconds in [0, 86400], got '" + text + "'";
    }
    config->*field = seconds;
    return {};
  };
}

Setter bool_setter(bool ServerConfig::*field) {
  return [field](const std::string& text, ServerConfig* config) -> std::string {
    if (text == "true" || text == "1" || text == "on") {
      config->*field = true;
    } else if (text == "false" || text == "0" || text == "off") {
      config->*field = false;
    } else {
      return "expected true or false, got '" + text + "'";
    }
    return {};
  };
}

Setter string_setter(std::string ServerConfig::*field) {
  return [field](const std::string& text, ServerConfig* config) -> std::string {
    config->*field = text;
    return {};
  };
}

const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      {"listen", "SCAN_LISTEN", "gRPC listen address HOST:PORT (port 0 picks a free port)",
       [](const std::string& text, ServerConfig* config) -> std::string {
         if (text.rfind(':') == std::string::npos) return "expected HOST:PORT, got '" + text + "'";
         config->listen = text;
         return {};
       }},
      {"max-tensor-bytes", "SCAN_MAX_TENSOR_BYTES",
       "largest tensor accepted, in bytes; larger ones get RESOURCE_EXHAUSTED",
       int64_setter(&ServerConfig::max_tensor_bytes, 1)},
      {"max-message-bytes", "SCAN_MAX_MESSAGE_BYTES",
       "largest gRPC message received or sent; 0 = max-tensor-bytes + 1Mi. Tensors larger than "
       "a message can still be sent with ScanStream",
       int64_setter(&ServerConfig::max_message_bytes, 0)},
      {"stream-chunk-bytes", "SCAN_STREAM_CHUNK_BYTES",
       "size of the result chunks ScanStream sends (below max-message-bytes)",
       int64_setter(&ServerConfig::stream_chunk_bytes, 1024)},
      {"max-rank", "SCAN_MAX_RANK", "most dimensions a tensor may have",
       int_setter(&ServerConfig::max_rank, 1, 64)},
      {"worker-threads", "SCAN_WORKER_THREADS",
       "scans computed at once on the CPU; 0 = one per core; more requests wait in a queue",
       int_setter(&ServerConfig::worker_threads, 0, 4096)},
      {"rpc-threads", "SCAN_RPC_THREADS",
       "most threads serving calls that wait (scans over 1 MiB or queued for a backend, "
       "streams); calls beyond them get RESOURCE_EXHAUSTED at once (small scans with a free "
       "backend run on gRPC's own threads); 0 = max(64, 8 x worker-threads)",
       int_setter(&ServerConfig::rpc_threads, 0, 65536)},
      {"max-inflight-bytes", "SCAN_MAX_INFLIGHT_BYTES",
       "tensor bytes (request + response) all requests being served may hold; a request that "
       "does not fit gets RESOURCE_EXHAUSTED at once; 0 = 4 x max-tensor-bytes",
       int64_setter(&ServerConfig::max_inflight_bytes, 0)},
      {"max-queue", "SCAN_MAX_QUEUE",
       "requests that may wait for a busy backend; more get RESOURCE_EXHAUSTED at once",
       int_setter(&ServerConfig::max_queue, 0, 1 << 20)},
      {"max-concurrent-streams", "SCAN_MAX_CONCURRENT_STREAMS",
       "concurrent calls one client connection may open",
       int_setter(&ServerConfig::max_concurrent_streams, 1, 1 << 20)},
      {"min-client-ping-interval-seconds", "SCAN_MIN_CLIENT_PING_INTERVAL_SECONDS",
       "clients pinging more often than this (keepalive abuse) are disconnected",
       seconds_setter(&ServerConfig::min_client_ping_interval_seconds)},
      {"idle-connection-timeout-seconds", "SCAN_IDLE_CONNECTION_TIMEOUT_SECONDS",
       "connections without calls for this long are closed (0 = never)",
       seconds_setter(&ServerConfig::idle_connection_timeout_seconds)},
      {"stream-first-chunk-timeout-seconds", "SCAN_STREAM_FIRST_CHUNK_TIMEOUT_SECONDS",
       "a ScanStream whose header, or first chunk after `accepted`, takes longer is ended with "
       "DEADLINE_EXCEEDED (0 = never)",
       seconds_setter(&ServerConfig::stream_first_chunk_timeout_seconds)},
      {"stream-idle-timeout-seconds", "SCAN_STREAM_IDLE_TIMEOUT_SECONDS",
       "a ScanStream whose client sends no chunk, or reads no result chunk, for this long is ended "
       "with DEADLINE_EXCEEDED and its memory freed (0 = never)",
       seconds_setter(&ServerConfig::stream_idle_timeout_seconds)},
      {"tls-cert", "SCAN_TLS_CERT",
       "PEM certificate chain of the server; with --tls-key enables TLS",
       string_setter(&ServerConfig::tls_cert)},
      {"tls-key", "SCAN_TLS_KEY", "PEM private key of the server",
       string_setter(&ServerConfig::tls_key)},
      {"tls-client-ca", "SCAN_TLS_CLIENT_CA",
       "PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
       string_setter(&ServerConfig::tls_client_ca)},
      {"auth-token-file", "SCAN_AUTH_TOKEN_FILE",
       "file holding the bearer token Scan calls must carry ('authorization: Bearer <token>'); "
       "health checks need none",
       string_setter(&ServerConfig::auth_token_file)},
      {"reflection", "SCAN_REFLECTION", "serve gRPC server reflection (true|false)",
       bool_setter(&ServerConfig::reflection)},
      {"cpu-backend", "SCAN_CPU_BACKEND",
       "auto (calibrate cpu-native and cpu-torch at startup, route by predicted time), "
       "cpu-native or cpu-torch",
       choice_setter(&ServerConfig::cpu_backend, {"auto", "cpu-native", "cpu-torch"})},
      {"cpu-flush-subnormals", "SCAN_CPU_FLUSH_SUBNORMALS",
       "CPU backends return 0 for results below the dtype's smallest normal number (1.2e-38 for "
       "float32) instead of subnormals, which the CPU computes up to 15x slower; false: exact "
       "IEEE subnormals, as torch.cumprod (true|false)",
       bool_setter(&ServerConfig::cpu_flush_subnormals)},
      {"gpu", "SCAN_GPU",
       "auto (serve from every usable GPU found at startup, calibrated against the CPU "
       "backends) or off (CPU only)",
       choice_setter(&ServerConfig::gpu, {"auto", "off"})},
      {"gpu-lanes", "SCAN_GPU_LANES",
       "requests one GPU serves at once, each with its own streams and pinned/device buffers",
       int_setter(&ServerConfig::gpu_lanes, 1, 64)},
      {"gpu-chunk-bytes", "SCAN_GPU_CHUNK_BYTES",
       "size of a GPU pipeline piece (staging buffer); larger tensors stream through in pieces",
       int64_setter(&ServerConfig::gpu_chunk_bytes, 64 << 10)},
      {"gpu-copy-threads", "SCAN_GPU_COPY_THREADS",
       "host threads copying between request memory and pinned staging buffers, per GPU; "
       "0 = one per core",
       int_setter(&ServerConfig::gpu_copy_threads, 0, 256)},
      {"gpu-streaming-copies", "SCAN_GPU_STREAMING_COPIES",
       "copy to and from pinned staging buffers with non-temporal stores (true|false)",
       bool_setter(&ServerConfig::gpu_streaming_copies)},
      {"gpu-register-pool", "SCAN_GPU_REGISTER_POOL",
       "register the pooled request/response buffers with CUDA once (in the background), so GPU "
       "requests skip the staging copies; false: always stage (true|false)",
       bool_setter(&ServerConfig::gpu_register_pool)},
      {"gpu-min-bytes", "SCAN_GPU_MIN_BYTES",
       "AUTO sends tensors smaller than this to a CPU backend whatever the cost models predict "
       "(0 = the cost models decide)",
       int64_setter(&ServerConfig::gpu_min_bytes, 0)},
      {"cost-model", "SCAN_COST_MODEL",
       "pinned cost models instead of calibration, BACKEND=FIXED_US:GBPS[,...], e.g. "
       "cuda:0=60:20,cpu-native=5:8 (fixed microseconds, GB/s)",
       [](const std::string& text, ServerConfig* config) -> std::string {
         std::vector<CostOverride> overrides;
         std::string error;
         if (!parse_cost_overrides(text, &overrides, &error)) return error;
         config->cost_models = text;
         return {};
       }},
      {"log-level", "SCAN_LOG_LEVEL", "trace|debug|info|warn|error",
       choice_setter(&ServerConfig::log_level, {"trace", "debug", "info", "warn", "error"})},
      {"log-format", "SCAN_LOG_FORMAT", "text|json (one JSON object per line)",
       choice_setter(&ServerConfig::log_format, {"text", "json"})},
      {"shutdown-grace-seconds", "SCAN_SHUTDOWN_GRACE_SECONDS",
       "on SIGTERM/SIGINT, how long in-flight requests may take to finish before being cancelled",
       seconds_setter(&ServerConfig::shutdown_grace_seconds)},
      {"drain-delay-seconds", "SCAN_DRAIN_DELAY_SECONDS",
       "on SIGTERM/SIGINT, keep serving this long while health says NOT_SERVING, so that load "
       "balancers stop sending before the server stops accepting",
       seconds_setter(&ServerConfig::drain_delay_seconds)},
      {"port-file", "SCAN_PORT_FILE", "write the bound gRPC port to this file once serving",
       string_setter(&ServerConfig::port_file)},
      {"metrics-listen", "SCAN_METRICS_LISTEN",
       "Prometheus /metrics address HOST:PORT (IPv4 or hostname; port 0 picks one; empty: off)",
       [](const std::string& text, ServerConfig* config) -> std::string {
         if (!text.empty() && text.rfind(':') == std::string::npos) {
           return "expected HOST:PORT or empty, got '" + text + "'";
         }
         config->metrics_listen = text;
         return {};
       }},
      {"metrics-auth-token-file", "SCAN_METRICS_AUTH_TOKEN_FILE",
       "scrapes of /metrics need 'Authorization: Bearer <token>' with the token in this file "
       "(Prometheus: authorization.credentials_file)",
       string_setter(&ServerConfig::metrics_auth_token_file)},
      {"metrics-port-file", "SCAN_METRICS_PORT_FILE",
       "write the bound metrics port to this file once serving",
       string_setter(&ServerConfig::metrics_port_file)},
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
  return std::min<std::int64_t>(max_tensor_bytes + (std::int64_t{1} << 20),
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
  auto or_dash = [](const std::string& text) { return text.empty() ? std::string("-") : text; };
  std::string text = fmt::format(
      "listen={} metrics_listen={} max_tensor_bytes={} max_message_bytes={} stream_chunk_bytes={} "
      "max_rank={} "
      "worker_threads={} rpc_threads={} cpu_backend={} cpu_flush_subnormals={} log_level={} "
      "log_format={} "
      "shutdown_grace_seconds={} drain_delay_seconds={} port_file={} metrics_port_file={} "
      "max_inflight_bytes={} max_queue={} max_concurrent_streams={} "
      "min_client_ping_interval_seconds={} idle_connection_timeout_seconds={} "
      "stream_first_chunk_timeout_seconds={} stream_idle_timeout_seconds={} tls={} mtls={} "
      "token_auth={} reflection={}",
      listen, or_dash(metrics_listen), max_tensor_bytes, effective_max_message_bytes(),
      stream_chunk_bytes, max_rank, effective_worker_threads(), effective_rpc_threads(),
      cpu_backend, cpu_flush_subnormals, log_level, log_format, shutdown_grace_seconds,
      drain_delay_seconds, or_dash(port_file), or_dash(metrics_port_file),
      effective_max_inflight_bytes(), max_queue, max_concurrent_streams,
      min_client_ping_interval_seconds, idle_connection_timeout_seconds,
      stream_first_chunk_timeout_seconds, stream_idle_timeout_seconds, !tls_cert.empty(),
      !tls_client_ca.empty(), !auth_token_file.empty(), reflection);
  text += fmt::format(
      " gpu={} gpu_lanes={} gpu_chunk_bytes={} gpu_copy_threads={} gpu_streaming_copies={} "
      "gpu_register_pool={} gpu_min_bytes={} cost_model={}",
      gpu, gpu_lanes, gpu_chunk_bytes, effective_gpu_copy_threads(), gpu_streaming_copies,
      gpu_register_pool, gpu_min_bytes, or_dash(cost_models));
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
    if (std::string error = option.set(found->second, config); !error.empty()) {
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
    if (std::string error = option->set(value, config); !error.empty()) {
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
