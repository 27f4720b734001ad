// The server's configuration: defaults, overridden by SCAN_* environment variables, overridden by
// command-line flags.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scan/kernels/cuda_pipeline.h"
#include "scan/wire/limits.h"

namespace scan::server {

// One entry of --cost-model: the model the router assumes for a backend instead of calibrating it.
struct CostOverride {
  std::string backend;
  double fixed_seconds = 0;
  double bytes_per_second = 0;
};

struct ServerConfig {
  std::string listen = "0.0.0.0:50051";
  std::int64_t max_tensor_bytes = wire::kDefaultMaxTensorBytes;
  // 0 means: max_tensor_bytes plus room for the message's other fields.
  std::int64_t max_message_bytes = 0;
  // ScanStream's result chunks; tensors larger than a message travel that way.
  std::int64_t stream_chunk_bytes = wire::kDefaultStreamChunkBytes;
  int max_rank = 16;
  int worker_threads = 0;  // 0 means: one per CPU core
  int rpc_threads = 0;     // 0 means: max(64, 8 x worker_threads)
  std::string log_level = "info";
  std::string log_format = "text";
  double shutdown_grace_seconds = 30.0;
  std::string port_file;  // where to write the bound port, for scripts that listen on port 0
  std::string metrics_listen = "0.0.0.0:9464";  // empty: no metrics endpoint
  std::string metrics_port_file;
  // Shared memory for clients on the same host (RegisterSharedMemory): off unless allowed; limits
  // on the regions registered and the bytes mapped, all callers together.
  bool allow_shared_memory = false;
  int shared_memory_max_regions = 64;
  std::int64_t shared_memory_max_bytes = std::int64_t{64} << 30;
  // gRPC hands a unary call to its handler only once the whole request has arrived, so a call
  // whose upload began before SIGTERM is indistinguishable from a new one until then: keep
  // accepting long enough for such uploads (a 64 MiB message takes well under a second on
  // loopback) to land. Costs every shutdown this long.
  double drain_delay_seconds = 2.0;
  // "auto": register cpu-native and cpu-torch, calibrate both at startup, and let the router pick
  // by predicted time; a backend name: serve the CPU path with that backend only.
  std::string cpu_backend = "auto";
  // CPU backends return 0 for results below the smallest normal number instead of subnormals:
  // float products of decays above 0.5 otherwise stick in the subnormal range, where every
  // multiply takes the CPU's slow path (15x slower scans). Changes results by < 1.2e-38.
  bool cpu_flush_subnormals = true;

  // GPU backends (builds with CUDA). "auto": serve from every usable GPU found at startup; "off":
  // CPU only.
  std::string gpu = "auto";
  // Requests one GPU serves at once (each with its own streams and buffers), and the pipeline
  // piece / staging buffer size: the pipeline's own defaults.
  int gpu_lanes = kernels::CudaPipelineOptions{}.lanes;
  std::int64_t gpu_chunk_bytes = kernels::CudaPipelineOptions{}.chunk_bytes;
  // Host threads copying between request memory and pinned buffers; 0 means one per core (these
  // copies bound the GPU path: see bench/RESULTS.md, "GPU backend (H100)").
  int gpu_copy_threads = 0;
  bool gpu_streaming_copies = true;  // those copies with non-temporal stores
  // Register the wire buffer pool's buffers with CUDA once, so GPU jobs DMA straight from the
  // request and into the response (no staging copies); false: always stage.
  bool gpu_register_pool = true;
  // For this long after its last work, each GPU is kept out of its idle state by an empty kernel
  // every 10 ms: a GPU left idle for half a second takes 2.5-2.7x as long for its next small
  // request (kernels::CudaPipelineOptions::keep_awake_seconds says more). 0: never.
  double gpu_keep_awake_seconds = kernels::CudaPipelineOptions{}.keep_awake_seconds;
  // Before the port opens, fill the tensor buffer pool with paged-in (and, with GPUs,
  // CUDA-registered) buffers of every power of two up to max_tensor_bytes, two of each within the
  // in-flight budget: the first request of a size then runs as fast as later ones.
  bool warm_start = true;
  // AUTO sends tensors smaller than this to a CPU whatever the cost models say (0: models decide).
  std::int64_t gpu_min_bytes = 0;
  // AUTO prices CPU backends by the cores the rest of the process (the gRPC transport above all)
  // leaves them, measured while serving (routing/cpu_contention.h); false: by their models alone.
  bool route_cpu_contention = true;
  // Pinned cost models replacing calibration: "BACKEND=FIXED_US:GBPS[,...]", e.g.
  // "cuda:0=60:20,cpu-native=5:8" (see parse_cost_overrides): the text as given, and what it was
  // parsed into, once, with the other flags.
  std::string cost_models;
  std::vector<CostOverride> cost_overrides;

  // Admission and abuse limits.
  std::int64_t max_inflight_bytes = 0;  // 0 means: 4 x max_tensor_bytes
  int max_queue = 32;                   // requests waiting per backend
  int max_concurrent_streams = 64;      // per connection
  double min_client_ping_interval_seconds = 10;
  double idle_connection_timeout_seconds = 3600;
  // A ScanStream must keep moving, or it is ended and its memory freed: its header, and then its
  // first chunk after `accepted`, each within the first limit; then no gap longer than the second
  // between chunks in, or between result chunks taken by the client. 0 = no limit.
  double stream_first_chunk_timeout_seconds = 10;
  double stream_idle_timeout_seconds = 10;

  // Security.
  std::string tls_cert;         // PEM certificate chain; with tls_key turns TLS on
  std::string tls_key;          // PEM private key
  std::string tls_client_ca;    // PEM CA bundle: client certificates required and verified (mTLS)
  std::string auth_token_file;  // bearer token clients must send; health stays open
  std::string metrics_auth_token_file;  // bearer token scrapes of /metrics must send
  bool reflection = true;

  std::int64_t effective_max_inflight_bytes() const {
    return max_inflight_bytes > 0 ? max_inflight_bytes : 4 * max_tensor_bytes;
  }  // NOT_SERVING but still serving, so load balancers notice

  std::int64_t effective_max_message_bytes() const;
  // The largest ScanStream chunk a client may send: the largest payload whose message (one tag
  // byte, the length varint, the payload) still fits in --max-message-bytes.
  std::int64_t max_stream_input_chunk_bytes() const;
  int effective_worker_threads() const;
  int effective_rpc_threads() const;
  int effective_gpu_copy_threads() const;
  // One line per setting, for the startup log.
  std::string describe() const;
};

struct ParseResult {
  enum class Action { kRun, kExitSuccess, kExitFailure };
  Action action = Action::kRun;
  std::string output;  // help or version text, or the error, for the caller to print
};

// `environment` maps variable names to values (tests pass their own; main passes the process's).
ParseResult parse_config(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& environment,
                         ServerConfig* config);

std::map<std::string, std::string> process_environment();

// Parses "BACKEND=FIXED_US:GBPS[,BACKEND=FIXED_US:GBPS...]" (fixed cost in microseconds, throughput
// in GB/s = 1e9 bytes/s); empty text gives no overrides. False with *error on malformed text.
bool parse_cost_overrides(const std::string& text, std::vector<CostOverride>* overrides,
                          std::string* error);

}  // namespace scan::server
