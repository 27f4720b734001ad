#include "metrics/metrics.h"

#include <grpcpp/grpcpp.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>

namespace scan::server {
namespace {

constexpr kernels::DType kDtypes[kDtypeCount] = {kernels::DType::kFloat32, kernels::DType::kFloat64,
                                                 kernels::DType::kFloat16,
                                                 kernels::DType::kBFloat16};
constexpr const char* kRouteReasons[kRouteReasonCount] = {"preference_cpu", "preference_gpu",
                                                          "auto"};

}  // namespace

const prometheus::Histogram::BucketBoundaries& ServiceMetrics::latency_buckets() {
  // 10 us to 30 s in 1-2.5-5 steps: fine enough for histogram_quantile at every scale a scan
  // spans, from a tiny tensor on a warm CPU to a 256 MiB tensor on a slow one.
  static const prometheus::Histogram::BucketBoundaries buckets = {
      10e-6, 25e-6, 50e-6,  100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
      25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0,    10.0, 30.0};
  return buckets;
}

struct ServiceMetrics::AtomicTotals {
  struct Duration {
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> nanoseconds{0};

    void add(double seconds) {
      count.fetch_add(1, std::memory_order_relaxed);
      nanoseconds.fetch_add(static_cast<std::uint64_t>(std::llround(seconds * 1e9)),
                            std::memory_order_relaxed);
    }
    RequestTotals::Duration load() const {
      return {count.load(std::memory_order_relaxed), nanoseconds.load(std::memory_order_relaxed)};
    }
  };
  Duration succeeded, failed, queued, computed, copied_to_device, copied_to_host;
  std::atomic<std::uint64_t> last_request_unix_ms{0};
};

ServiceMetrics::ServiceMetrics(const std::vector<BackendDescription>& backends,
                               const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()),
      totals_(std::make_unique<AtomicTotals>()) {
  auto& duration =
      prometheus::BuildHistogram()
          .Name("scan_request_duration_seconds")
          .Help(
              "Time from receiving a decoded request to its response being ready, "
              "by backend, dtype, rpc (Scan, ScanStream, ModelInfer) and transport (grpc, "
              "system-shm, cuda-ipc) (requests that reached a backend)")
          .Register(*registry_);
  auto& queue = prometheus::BuildHistogram()
                    .Name("scan_queue_wait_seconds")
                    .Help("Time a request waited for a free compute slot of its backend")
                    .Register(*registry_);
  auto& compute = prometheus::BuildHistogram()
                      .Name("scan_compute_seconds")
                      .Help("Time a backend spent computing a scan")
                      .Register(*registry_);
  auto& requests = prometheus::BuildCounter()
                       .Name("scan_requests_total")
                       .Help(
                           "Finished Scan calls by backend (\"none\": refused before routing) "
                           "and gRPC status code")
                       .Register(*registry_);
  auto& routed = prometheus::BuildCounter()
                     .Name("scan_routing_decisions_total")
                     .Help("Requests the router sent to each backend, by reason")
                     .Register(*registry_);
  auto& request_bytes = prometheus::BuildCounter()
                            .Name("scan_request_bytes_total")
                            .Help("Tensor bytes received in Scan requests")
                            .Register(*registry_);
  auto& response_bytes = prometheus::BuildCounter()
                             .Name("scan_response_bytes_total")
                             .Help("Tensor bytes sent in Scan responses")
                             .Register(*registry_);
  auto& up = prometheus::BuildGauge()
                 .Name("scan_backend_up")
                 .Help("1 when the backend is available to serve, 0 otherwise")
                 .Register(*registry_);
  inflight_ = &prometheus::BuildGauge()
                   .Name("scan_inflight_requests")
                   .Help("Scan calls being handled right now")
                   .Register(*registry_)
                   .Add({});
  shared_memory_regions_ = &prometheus::BuildGauge()
                                .Name("scan_shared_memory_regions")
                                .Help("Shared-memory regions clients have registered now")
                                .Register(*registry_)
                                .Add({});
  shared_memory_bytes_ = &prometheus::BuildGauge()
                              .Name("scan_shared_memory_bytes")
                              .Help("Bytes of the registered shared-memory regions")
                              .Register(*registry_)
                              .Add({});
  inflight_bytes_ = &prometheus::BuildGauge()
                         .Name("scan_inflight_bytes")
                         .Help(
                             "Tensor bytes held by calls being served (request and result "
                             "buffers), out of scan_inflight_bytes_limit")
                         .Register(*registry_)
                         .Add({});
  auto& stalled = prometheus::BuildCounter()
                      .Name("scan_stream_stalls_total")
                      .Help(
                          "ScanStream calls the server ended (DEADLINE_EXCEEDED) because the "
                          "client made no progress, by the phase it stalled in")
                      .Register(*registry_);
  for (int phase = 0; phase < kStreamPhaseCount; ++phase) {
    streams_stalled_[phase] =
        &stalled.Add({{"phase", stream_phase_name(static_cast<StreamPhase>(phase))}});
  }
  auto& cost_fixed = prometheus::BuildGauge()
                         .Name("scan_router_cost_fixed_seconds")
                         .Help("Router's model of a backend: fixed cost per request (0 = unknown)")
                         .Register(*registry_);
  auto& cost_throughput =
      prometheus::BuildGauge()
          .Name("scan_router_cost_bytes_per_second")
          .Help("Router's model of a backend: tensor bytes per second (0 = unknown)")
          .Register(*registry_);
  auto& transfer = prometheus::BuildHistogram()
                       .Name("scan_transfer_duration_seconds")
                       .Help("Host<->device copy time of GPU backends, by direction")
                       .Register(*registry_);
  auto& device_memory = prometheus::BuildGauge()
                            .Name("scan_gpu_memory_used_bytes")
                            .Help("Device memory held by a GPU backend (buffers and pools)")
                            .Register(*registry_);
  auto& fallbacks = prometheus::BuildCounter()
                        .Name("scan_backend_fallbacks_total")
                        .Help("Requests that failed on one backend and were retried on another")
                        .Register(*registry_);
  std::string first_cpu = "none";
  int gpu_count = 0;
  for (const auto& backend : backends) {
    if (backend.kind == DeviceKind::kGpu) ++gpu_count;
    if (backend.kind == DeviceKind::kCpu && first_cpu == "none") first_cpu = backend.name;
  }
  prometheus::BuildGauge()
      .Name("scan_gpu_devices")
      .Help("GPU backends this server serves with")
      .Register(*registry_)
      .Add({})
      .Set(gpu_count);
  prometheus::BuildGauge()
      .Name("scan_build_info")
      .Help("Build of the running server (value is always 1)")
      .Register(*registry_)
      .Add({{"version", version}, {"grpc_version", grpc::Version()}})
      .Set(1);

  auto make_series = [&](const std::string& name, bool routable, DeviceKind kind) {
    BackendSeries series;
    if (routable) {
      static const char* const kRpcs[kRequestRpcCount] = {"Scan", "ScanStream", "ModelInfer"};
      static const char* const kTransports[kRequestTransportCount] = {"grpc", "system-shm",
                                                                      "cuda-ipc"};
      for (int index = 0; index < kDtypeCount; ++index) {
        for (int rpc = 0; rpc < kRequestRpcCount; ++rpc) {
          for (int transport = 0; transport < kRequestTransportCount; ++transport) {
            series.duration[index][rpc][transport] =
                &duration.Add({{"backend", name},
                               {"dtype", kernels::dtype_name(kDtypes[index])},
                               {"rpc", kRpcs[rpc]},
                               {"transport", kTransports[transport]}},
                              latency_buckets());
          }
        }
      }
      series.queue = &queue.Add({{"backend", name}}, latency_buckets());
      series.compute = &compute.Add({{"backend", name}}, latency_buckets());
      for (int index = 0; index < kRouteReasonCount; ++index) {
        series.routed[index] = &routed.Add({{"backend", name}, {"reason", kRouteReasons[index]}});
      }
      series.up = &up.Add({{"backend", name}});
      series.up->Set(1);
      series.cost_fixed_seconds = &cost_fixed.Add({{"backend", name}});
      series.cost_bytes_per_second = &cost_throughput.Add({{"backend", name}});
    }
    if (kind == DeviceKind::kGpu) {
      series.host_to_device =
          &transfer.Add({{"backend", name}, {"direction", "host_to_device"}}, latency_buckets());
      series.device_to_host =
          &transfer.Add({{"backend", name}, {"direction", "device_to_host"}}, latency_buckets());
      series.device_memory_used = &device_memory.Add({{"backend", name}});
      series.fallback_to_cpu = &fallbacks.Add({{"from", name}, {"to", first_cpu}});
    }
    for (int code = 0; code < kStatusCodeCount; ++code) {
      series.requests[code] = &requests.Add(
          {{"backend", name}, {"code", v1::status_code_name(static_cast<grpc::StatusCode>(code))}});
    }
    series.request_bytes = &request_bytes.Add({{"backend", name}});
    series.response_bytes = &response_bytes.Add({{"backend", name}});
    return series;
  };
  for (const auto& backend : backends) {
    backends_.push_back(make_series(backend.name, true, backend.kind));
  }
  rejected_ = make_series("none", false, DeviceKind::kCpu);
}

bool ServiceMetrics::expose(const std::string& listen, MetricsHttpServer::Authorize authorize,
                            std::string* error) {
  std::weak_ptr<prometheus::Registry> registry = registry_;
  endpoint_ = MetricsHttpServer::start(
      listen,
      [registry] {
        const auto alive = registry.lock();
        return alive ? prometheus::TextSerializer().Serialize(alive->Collect()) : std::string();
      },
      std::move(authorize), MetricsHttpLimits{}, error);
  return endpoint_ != nullptr;
}

void ServiceMetrics::watch_budget(ByteBudget& budget) const {
  prometheus::BuildGauge()
      .Name("scan_inflight_bytes_limit")
      .Help("The in-flight budget's size in bytes (--max-inflight-bytes)")
      .Register(*registry_)
      .Add({})
      .Set(static_cast<double>(budget.limit()));
  prometheus::Gauge* in_use = inflight_bytes_;
  budget.set_observer(
      [in_use](std::int64_t delta) { in_use->Increment(static_cast<double>(delta)); });
}

ServiceMetrics::~ServiceMetrics() = default;

int ServiceMetrics::port() const { return endpoint_ ? endpoint_->port() : 0; }

RequestTotals ServiceMetrics::totals() const {
  RequestTotals totals;
  totals.succeeded = totals_->succeeded.load();
  totals.failed = totals_->failed.load();
  totals.queued = totals_->queued.load();
  totals.computed = totals_->computed.load();
  totals.copied_to_device = totals_->copied_to_device.load();
  totals.copied_to_host = totals_->copied_to_host.load();
  totals.last_request_unix_ms = totals_->last_request_unix_ms.load(std::memory_order_relaxed);
  return totals;
}

void ServiceMetrics::record_totals(const RequestRecord& record) const {
  AtomicTotals& totals = *totals_;
  (record.code == grpc::StatusCode::OK ? totals.succeeded : totals.failed)
      .add(std::max(record.seconds, 0.0));
  if (record.queue_seconds >= 0) totals.queued.add(record.queue_seconds);
  if (record.compute_seconds >= 0) totals.computed.add(record.compute_seconds);
  if (record.host_to_device_seconds >= 0) {
    totals.copied_to_device.add(record.host_to_device_seconds);
  }
  if (record.device_to_host_seconds >= 0) totals.copied_to_host.add(record.device_to_host_seconds);
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  totals.last_request_unix_ms.store(static_cast<std::uint64_t>(now.count()),
                                    std::memory_order_relaxed);
}

void ServiceMetrics::record(const RequestRecord& record) const {
  record_totals(record);
  const BackendSeries& series = record.backend != nullptr ? *record.backend : rejected_;
  const auto code = static_cast<int>(record.code);
  series.requests[code >= 0 && code < kStatusCodeCount ? code : 2]->Increment();
  series.request_bytes->Increment(static_cast<double>(record.request_bytes));
  series.response_bytes->Increment(static_cast<double>(record.response_bytes));
  if (record.backend == nullptr) return;
  series
      .duration[static_cast<int>(record.dtype)][static_cast<int>(record.rpc)]
               [static_cast<int>(record.transport)]
      ->Observe(record.seconds);
  if (record.queue_seconds >= 0) series.queue->Observe(record.queue_seconds);
  if (record.compute_seconds >= 0) series.compute->Observe(record.compute_seconds);
  if (series.host_to_device != nullptr && record.host_to_device_seconds >= 0) {
    series.host_to_device->Observe(record.host_to_device_seconds);
  }
  if (series.device_to_host != nullptr && record.device_to_host_seconds >= 0) {
    series.device_to_host->Observe(record.device_to_host_seconds);
  }
}

}  // namespace scan::server
