// scan-client: sends one scan (random decays or a .npy file) and reports what happened; --check
// verifies the answer against a local float64 reference; --health asks the health service.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "npy.h"
#include "scan/client/scan_client.h"
#include "scan/wire/byte_size.h"

namespace {

constexpr const char* kUsage = R"(Usage: scan-client --target HOST:PORT [options]

  --shape 2,8,1024,128     shape of the random gamma to send (default 2,8,1024,128)
  --dtype f32|f64|f16|bf16 element type (default f32; with --input: convert the file to it)
  --dim N                  dim to scan along, negative counts from the end (default 2)
  --backend auto|cpu|gpu   backend preference (default auto)
  --input FILE.npy         send this array instead of random decays in (0.5, 1)
  --output FILE.npy        save the result (bfloat16 is saved as float32)
  --check                  verify the result against a local float64 cumprod
  --seed N                 seed of the random gamma (default: random)
  --timeout-ms N           deadline of the call (default 60000)
  --stream                 use ScanStream (the tensor and result travel in chunks); automatic
                           for tensors over 1 GiB
  --chunk-bytes N          ScanStream chunk size, e.g. 4Mi (default 4Mi; implies --stream)
  --shared-memory MODE     system: send the tensor and take the result through a POSIX
                           shared-memory region (the server must share this host and run with
                           --allow-shared-memory); auto: so when the server can, else gRPC;
                           cuda: CUDA IPC (not supported yet); off (default)
  --health [SERVICE]       only ask grpc.health.v1 whether SERVICE ("" = server) is SERVING
  --info                   only print the server's version, backends (state, load, cost models)
                           and GPUs (ScanService.GetServerInfo)
  --tls-ca FILE            use TLS, verifying the server against this PEM CA bundle
  --tls-cert FILE          client certificate (PEM) for servers that require one (mTLS)
  --tls-key FILE           private key (PEM) of --tls-cert
  --auth-token-file FILE   send the token in FILE as "authorization: Bearer <token>"
  --help

Exit status: 0 success, 1 the call failed, 2 bad usage or file, 3 --check found mismatches.
)";

std::vector<std::int64_t> parse_shape(const std::string& text, bool* ok) {
  std::vector<std::int64_t> shape;
  std::size_t start = 0;
  *ok = !text.empty();
  while (*ok && start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? comma : comma - start);
    char* end = nullptr;
    const long long size = std::strtoll(part.c_str(), &end, 10);
    *ok = !part.empty() && *end == '\0' && size >= 0;
    shape.push_back(size);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return shape;
}

void print_server_info(const scan::v1::GetServerInfoResponse& info) {
  std::printf("version:    %s\n", info.version().c_str());
  std::printf("gpus:       %s\n", info.gpu_status().c_str());
  for (const auto& gpu : info.gpus()) {
    std::printf("  gpu %d: %s, %.1f GiB, sm_%d%d, %d SMs, %s%s%s\n", gpu.ordinal(),
                gpu.name().c_str(), static_cast<double>(gpu.total_memory_bytes()) / (1 << 30),
                gpu.compute_capability_major(), gpu.compute_capability_minor(),
                gpu.multiprocessors(), gpu.usable() ? "usable" : "not usable",
                gpu.detail().empty() ? "" : ": ", gpu.detail().c_str());
  }
  if (info.has_limits()) {
    const auto& limits = info.limits();
    std::printf(
        "limits:     tensor %lld bytes, message %lld bytes (larger tensors: --stream), "
        "in flight %lld bytes, rank %d\n",
        static_cast<long long>(limits.max_tensor_bytes()),
        static_cast<long long>(limits.max_message_bytes()),
        static_cast<long long>(limits.max_inflight_bytes()), limits.max_rank());
  }
  if (info.gpu_min_bytes() > 0) {
    std::printf("routing:    AUTO keeps tensors under %lld bytes on the CPU\n",
                static_cast<long long>(info.gpu_min_bytes()));
  }
  std::printf("%-12s %-4s %-5s %6s %12s %12s %10s %-10s  %s\n", "backend", "kind", "up", "slots",
              "fixed_us", "GB/s", "queued", "subnormals", "model");
  for (const auto& backend : info.backends()) {
    const auto& cost = backend.cost_model();
    std::printf(
        "%-12s %-4s %-5s %6d %12.1f %12.2f %10s %-10s  %s\n", backend.name().c_str(),
        backend.kind() == scan::v1::DEVICE_KIND_GPU ? "gpu" : "cpu",
        backend.available() ? "yes" : "no", backend.concurrency(), cost.fixed_seconds() * 1e6,
        cost.bytes_per_second() / 1e9,
        fmt::format("{}/{}B", backend.outstanding_requests(), backend.outstanding_bytes()).c_str(),
        backend.flushes_subnormals() ? "flushed" : "exact", cost.source().c_str());
  }
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "scan-client: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using scan::client::HostTensor;

  // Flags that take no value; every other flag takes exactly one.
  const std::vector<std::string> switches = {"--check", "--help", "--info", "--stream"};
  std::map<std::string, std::string> flags;
  for (int index = 1; index < argc; ++index) {
    const std::string arg = argv[index];
    if (arg == "--health") {
      // The service name is optional: an empty one asks about the whole server.
      const bool has_name = index + 1 < argc && std::string(argv[index + 1]).rfind("--", 0) != 0;
      flags[arg] = has_name ? argv[++index] : "";
    } else if (std::find(switches.begin(), switches.end(), arg) != switches.end()) {
      flags[arg] = "1";
    } else if (arg.rfind("--", 0) == 0 && index + 1 < argc) {
      flags[arg] = argv[++index];
    } else {
      return usage_error("unexpected or incomplete argument '" + arg + "'");
    }
  }
  auto flag = [&flags](const std::string& name, const std::string& fallback) {
    const auto found = flags.find(name);
    return found == flags.end() ? fallback : found->second;
  };
  static const std::vector<std::string> known = {
      "--target",  "--shape",           "--dtype",  "--dim",         "--backend",
      "--input",   "--output",          "--check",  "--seed",        "--help",
      "--health",  "--timeout-ms",      "--info",   "--tls-ca",      "--tls-cert",
      "--tls-key", "--auth-token-file", "--stream", "--chunk-bytes", "--shared-memory"};
  for (const auto& [name, value] : flags) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return usage_error("unknown flag " + name);
    }
  }
  if (flags.count("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!flags.count("--target")) return usage_error("--target is required");

  scan::client::Security security;
  security.tls_ca_file = flag("--tls-ca", "");
  security.tls_cert_file = flag("--tls-cert", "");
  security.tls_key_file = flag("--tls-key", "");
  if (flags.count("--auth-token-file")) {
    std::ifstream token_file(flags["--auth-token-file"]);
    if (!(token_file >> security.auth_token)) {
      return usage_error("--auth-token-file: cannot read a token from " +
                         flags["--auth-token-file"]);
    }
  }
  std::string connect_error;
  const auto connected =
      scan::client::Client::Connect(flag("--target", ""), security, &connect_error);
  if (!connected) return usage_error(connect_error);
  scan::client::Client& client = *connected;
  const auto timeout = std::chrono::milliseconds(std::atoll(flag("--timeout-ms", "60000").c_str()));

  if (flags.count("--health")) {
    bool serving = false;
    const grpc::Status status = client.CheckHealth(flags["--health"], &serving, timeout);
    if (!status.ok()) {
      std::fprintf(stderr, "health check failed: %s\n", status.error_message().c_str());
      return 1;
    }
    std::puts(serving ? "SERVING" : "NOT_SERVING");
    return serving ? 0 : 1;
  }
  if (flags.count("--info")) {
    scan::v1::GetServerInfoResponse info;
    const grpc::Status status = client.GetServerInfo(&info, timeout);
    if (!status.ok()) {
      std::fprintf(stderr, "server info failed: %s\n", status.error_message().c_str());
      return 1;
    }
    print_server_info(info);
    return 0;
  }

  scan::kernels::DType dtype = scan::kernels::DType::kFloat32;
  if (!scan::client::parse_dtype(flag("--dtype", "f32"), &dtype)) {
    return usage_error("--dtype: unknown dtype '" + flag("--dtype", "") + "'");
  }
  HostTensor gamma;
  if (flags.count("--input")) {
    std::string error;
    if (!scan::client::read_npy(flags["--input"], &gamma, &error)) return usage_error(error);
    if (flags.count("--dtype")) gamma = scan::client::convert_dtype(gamma, dtype);
  } else {
    bool shape_ok = false;
    const auto shape = parse_shape(flag("--shape", "2,8,1024,128"), &shape_ok);
    if (!shape_ok) return usage_error("--shape: expected comma-separated sizes like 2,8,1024,128");
    const std::uint64_t seed = flags.count("--seed")
                                   ? std::strtoull(flags["--seed"].c_str(), nullptr, 10)
                                   : std::random_device{}();
    gamma = scan::client::random_gamma(dtype, shape, 0.5, 1.0, seed);
  }

  scan::client::ScanOptions options;
  options.dim = std::atoi(flag("--dim", "2").c_str());
  options.timeout = timeout;
  const std::string backend = flag("--backend", "auto");
  if (backend == "cpu") {
    options.backend = scan::v1::BACKEND_PREFERENCE_CPU;
  } else if (backend == "gpu") {
    options.backend = scan::v1::BACKEND_PREFERENCE_GPU;
  } else if (backend != "auto") {
    return usage_error("--backend: expected auto, cpu or gpu");
  }

  // One message carries at most 2 GiB; larger tensors have to be streamed anyway.
  constexpr std::size_t kStreamAbove = std::size_t{1} << 30;
  if (flags.count("--stream") || flags.count("--chunk-bytes") || gamma.data.size() > kStreamAbove) {
    std::int64_t chunk_bytes = scan::client::kDefaultStreamChunkBytes;
    if (flags.count("--chunk-bytes") &&
        (!scan::wire::parse_byte_size(flags["--chunk-bytes"], &chunk_bytes) || chunk_bytes <= 0)) {
      return usage_error("--chunk-bytes: expected a positive size like 4Mi");
    }
    options.stream_chunk_bytes = static_cast<std::size_t>(chunk_bytes);
  }

  const std::string shared_memory = flag("--shared-memory", "off");
  if (shared_memory == "system") {
    options.shared_memory = scan::client::ScanOptions::SharedMemory::kSystem;
  } else if (shared_memory == "auto") {
    options.shared_memory = scan::client::ScanOptions::SharedMemory::kAuto;
  } else if (shared_memory == "cuda") {
    return usage_error("--shared-memory cuda: CUDA IPC is not supported by this client yet");
  } else if (shared_memory != "off") {
    return usage_error("--shared-memory: expected system, auto, cuda or off");
  }
  if (options.shared_memory != scan::client::ScanOptions::SharedMemory::kOff &&
      options.stream_chunk_bytes > 0) {
    return usage_error("--shared-memory and --stream exclude each other");
  }

  scan::client::ScanResult result;
  const grpc::Status status = client.Scan(gamma, options, &result);
  if (!status.ok()) {
    std::fprintf(stderr, "scan failed: %s: %s\n",
                 scan::client::status_code_name(status.error_code()),
                 status.error_message().c_str());
    return 1;
  }
  const auto& timing = result.server_timing;
  fmt::print("backend:    {}\n", result.backend);
  fmt::print("transport:  {}\n", result.transport);
  if (options.stream_chunk_bytes > 0) {
    fmt::print("rpc:        ScanStream, chunks of up to {} bytes\n", options.stream_chunk_bytes);
  }
  fmt::print("tensor:     {} {} dim={} ({} bytes)\n", scan::client::format_shape(gamma.shape),
             scan::kernels::dtype_name(gamma.dtype), options.dim, gamma.data.size());
  fmt::print("server:     queue {} us, compute {} us, total {} us\n", timing.queue_us(),
             timing.compute_us(), timing.total_us());
  fmt::print("round trip: {:.3f} ms\n", result.round_trip.count() / 1000.0);

  int exit_code = 0;
  if (flags.count("--check")) {
    const int rank = static_cast<int>(gamma.shape.size());
    const int dim = options.dim < 0 ? options.dim + rank : options.dim;
    scan::kernels::Tolerance tolerance;
    const auto comparison = scan::client::check_cumprod(gamma, result.result, dim, &tolerance);
    fmt::print(
        "check:      {} ({} elements, {} mismatches, max abs error {:.3g}, max rel error "
        "{:.3g}; tolerance rtol {:.3g} atol {:.3g})\n",
        comparison.ok() ? "OK" : "FAILED", comparison.checked, comparison.mismatches,
        comparison.max_abs_error, comparison.max_rel_error, tolerance.rtol, tolerance.atol);
    if (!comparison.ok()) exit_code = 3;
  }
  if (flags.count("--output")) {
    std::string error;
    if (!scan::client::write_npy(flags["--output"], result.result, &error)) {
      std::fprintf(stderr, "scan-client: %s\n", error.c_str());
      return 2;
    }
  }
  return exit_code;
}
