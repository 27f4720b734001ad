// Prometheus metrics of the service. Every time series a request can touch is created up front
// (per backend, dtype and status code), so the request path only bumps pre-resolved counters and
// histograms: no label lookups, no allocation, no lock held across compute.
#pragma once

#include <grpcpp/support/status.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "admission/byte_budget.h"
#include "backends/backend.h"
#include "metrics/metrics_http.h"
#include "routing/cost_model.h"
#include "rpc/stream_phase.h"
#include "scan/kernels/types.h"
#include "scan/wire/status_code_name.h"

namespace scan::server {

constexpr int kDtypeCount = 4;
constexpr int kStatusCodeCount = 17;  // grpc::StatusCode OK .. UNAUTHENTICATED

// Which RPC carried a request, and how its tensor travelled: labels of
// scan_request_duration_seconds.
enum class RequestRpc { kScan, kScanStream, kModelInfer };
constexpr int kRequestRpcCount = 3;
enum class RequestTransport { kGrpc, kSystemSharedMemory, kCudaIpc };
constexpr int kRequestTransportCount = 3;

// Why the router picked a backend; a label of scan_routing_decisions_total.
enum class RouteReason { kPreferenceCpu, kPreferenceGpu, kAuto };
constexpr int kRouteReasonCount = 3;

// The series of one backend, resolved once at startup.
struct BackendSeries {
  // By kernels::DType, RequestRpc and RequestTransport.
  std::array<
      std::array<std::array<prometheus::Histogram*, kRequestTransportCount>, kRequestRpcCount>,
      kDtypeCount>
      duration{};
  prometheus::Histogram* queue = nullptr;
  prometheus::Histogram* compute = nullptr;
  std::array<prometheus::Counter*, kStatusCodeCount> requests{};
  std::array<prometheus::Counter*, kRouteReasonCount> routed{};
  prometheus::Counter* request_bytes = nullptr;
  prometheus::Counter* response_bytes = nullptr;
  prometheus::Gauge* up = nullptr;
  prometheus::Gauge* cost_fixed_seconds = nullptr;
  prometheus::Gauge* cost_bytes_per_second = nullptr;
  // GPU backends only (null on CPU backends):
  prometheus::Histogram* host_to_device = nullptr;
  prometheus::Histogram* device_to_host = nullptr;
  prometheus::Gauge* device_memory_used = nullptr;
  prometheus::Counter* fallback_to_cpu = nullptr;  // requests retried on the first CPU backend
};

// What one finished request reports.
struct RequestRecord {
  const BackendSeries* backend = nullptr;  // null: rejected before a backend was chosen
  kernels::DType dtype = kernels::DType::kFloat32;
  RequestRpc rpc = RequestRpc::kScan;
  RequestTransport transport = RequestTransport::kGrpc;
  // Decoded request in to response ready. < 0: not measured by the RPC, so the whole handler
  // call counts (a unary Scan, whose request gRPC has fully received before the handler runs).
  double seconds = -1;
  double queue_seconds = -1;    // < 0: never queued
  double compute_seconds = -1;  // < 0: never computed
  std::size_t request_bytes = 0;
  std::size_t response_bytes = 0;
  grpc::StatusCode code = grpc::StatusCode::OK;
  double host_to_device_seconds = -1;  // GPU backends: copy times (< 0: none)
  double device_to_host_seconds = -1;
  // The server's own start-up call (ScanServiceImpl::set_warm_up_token): not recorded.
  bool warm_up = false;
};

// Every request's counts and cumulative durations since startup, in the terms of KServe's
// ModelStatistics (the statistics extension), kept from the same records as the Prometheus series:
// `succeeded` + `failed` counts equal the sum of scan_requests_total, split by code OK / not OK.
struct RequestTotals {
  struct Duration {
    std::uint64_t count = 0;
    std::uint64_t nanoseconds = 0;
  };
  Duration succeeded;  // whole request: decoded to answered
  Duration failed;
  Duration queued;                         // waiting for a compute slot
  Duration computed;                       // on a backend
  Duration copied_to_device;               // GPU backends: host-to-device copies
  Duration copied_to_host;                 // GPU backends: device-to-host copies
  std::uint64_t last_request_unix_ms = 0;  // 0: none yet
};

class ServiceMetrics {
 public:
  // `backends` are the router's backends, in its order.
  ServiceMetrics(const std::vector<BackendDescription>& backends, const std::string& version);
  ~ServiceMetrics();

  // Serves /metrics on `listen` (HOST:PORT, port 0 picks one); `authorize` (may be empty) guards
  // scrapes. Returns false with *error set.
  bool expose(const std::string& listen, MetricsHttpServer::Authorize authorize,
              std::string* error);
  int port() const;  // 0 when not exposed

  const BackendSeries& backend(std::size_t index) const { return backends_.at(index); }
  prometheus::Gauge& inflight() const { return *inflight_; }
  // Shows `budget`'s use and limit from now on (call before the budget is shared).
  void watch_budget(ByteBudget& budget) const;
  // A ScanStream ended by the server because its client made no progress in `phase`.
  void record_stream_stall(StreamPhase phase) const {
    streams_stalled_[static_cast<int>(phase)]->Increment();
  }
  void record(const RequestRecord& record) const;
  // A snapshot of the totals (each field read atomically, not all of them at one instant).
  RequestTotals totals() const;
  // Shows the router's current model of a backend (0 = unknown).
  void publish_cost_model(std::size_t index, const CostModel& cost) const {
    backends_.at(index).cost_fixed_seconds->Set(cost.fixed_seconds);
    backends_.at(index).cost_bytes_per_second->Set(cost.bytes_per_second);
  }
  // The shared-memory regions registered now, and the bytes they span.
  void publish_shared_memory(std::int64_t regions, std::int64_t bytes) const {
    shared_memory_regions_->Set(static_cast<double>(regions));
    shared_memory_bytes_->Set(static_cast<double>(bytes));
  }
  void record_route(const BackendSeries& backend, RouteReason reason) const {
    backend.routed[static_cast<int>(reason)]->Increment();
  }

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // The histogram bucket bounds (seconds) shared by every latency histogram.
  static const prometheus::Histogram::BucketBoundaries& latency_buckets();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::vector<BackendSeries> backends_;
  BackendSeries rejected_;  // requests refused before routing: backend="none"
  prometheus::Gauge* inflight_ = nullptr;
  prometheus::Gauge* inflight_bytes_ = nullptr;
  prometheus::Gauge* shared_memory_regions_ = nullptr;
  prometheus::Gauge* shared_memory_bytes_ = nullptr;
  std::array<prometheus::Counter*, kStreamPhaseCount> streams_stalled_{};
  std::unique_ptr<MetricsHttpServer> endpoint_;
  void record_totals(const RequestRecord& record) const;

  struct AtomicTotals;
  std::unique_ptr<AtomicTotals> totals_;
};

}  // namespace scan::server
