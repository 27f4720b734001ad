#include "scan_service.h"

#include <fmt/ranges.h>
#include <grpcpp/server_context.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <string>

namespace scan::server {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t micros_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

Clock::time_point steady_deadline_of(const grpc::ServerContext& context) {
  const auto remaining = context.deadline() - std::chrono::system_clock::now();
  // An absent deadline shows up as a time point centuries away; clamp before converting clocks.
  if (remaining > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(remaining);
}

RouteReason reason_for(v1::BackendPreference preference) {
  switch (preference) {
    case v1::BACKEND_PREFERENCE_CPU:
      return RouteReason::kPreferenceCpu;
    case v1::BACKEND_PREFERENCE_GPU:
      return RouteReason::kPreferenceGpu;
    default:
      return RouteReason::kAuto;
  }
}

}  // namespace

grpc::Status ScanServiceImpl::Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                                   v1::ScanResponse* response) {
  const auto received = Clock::now();
  metrics_.inflight().Increment();
  RequestRecord record;
  record.request_bytes = request->gamma().data().size();
  grpc::Status status = serve(*context, *request, *response, record);
  if (status.ok()) {
    record.response_bytes = response->result().data().size();
  } else {
    spdlog::debug("scan from {} answered {}: {}", context->peer(),
                  v1::status_code_name(status.error_code()), status.error_message());
  }
  record.code = status.error_code();
  record.seconds = seconds_between(received, Clock::now());
  metrics_.record(record);
  metrics_.inflight().Decrement();
  return status;
}

kernels::KernelStatus ScanServiceImpl::compute(RegisteredBackend& chosen, ScanJob job,
                                               RequestRecord& record, v1::ScanResponse& response) {
  ScanJobStats stats;
  job.stats = &stats;
  const auto started = Clock::now();
  kernels::KernelStatus status = chosen.backend->run(job);
  if (status.ok()) {
    record.host_to_device_seconds = stats.host_to_device_seconds;
    record.device_to_host_seconds = stats.device_to_host_seconds;
    // Service times seen while serving keep the router's model of the backend current.
    const auto bytes = static_cast<double>(job.view.numel() * kernels::element_size(job.dtype));
    if (router_.observe(chosen.index, bytes, seconds_between(started, Clock::now()))) {
      metrics_.publish_cost_model(chosen.index, router_.cost_model(chosen.index));
    }
    return status;
  }
  // A GPU failing (device error, lost context) must not fail the request: the CPU computes it
  // again from the untouched input, overwriting whatever the GPU left in the output. It does so
  // within the GPU's slot rather than queueing for a CPU one: fallbacks are rare, bounded by the
  // GPU's slots, and a request that already waited once should not wait behind the CPU queue.
  if (chosen.backend->device_kind() != DeviceKind::kGpu) return status;
  RegisteredBackend* fallback = router_.fallback_for(chosen);
  if (fallback == nullptr) return status;
  spdlog::warn("{} failed ({}); retrying the request on {}", chosen.backend->name(),
               status.message(), fallback->backend->name());
  if (record.backend != nullptr && record.backend->fallback_to_cpu != nullptr) {
    record.backend->fallback_to_cpu->Increment();
  }
  job.stats = nullptr;
  status = fallback->backend->run(job);
  if (status.ok()) response.set_backend(fallback->backend->name());
  return status;
}

grpc::Status ScanServiceImpl::serve(grpc::ServerContext& context, const v1::ScanRequest& request,
                                    v1::ScanResponse& response, RequestRecord& record) {
  const auto received = Clock::now();
  if (draining_.load(std::memory_order_relaxed)) {
    return {grpc::StatusCode::UNAVAILABLE, "server is shutting down; retry on another replica"};
  }
  if (authenticator_ != nullptr) {
    if (auto status = authenticator_->check(context); !status.ok()) return status;
  }
  ValidatedScan scan;
  if (auto status = validate_scan_request(request, limits_, &scan); !status.ok()) return status;
  // Request and response buffers both stay alive until the response is sent.
  const auto held_bytes = static_cast<std::int64_t>(2 * scan.bytes);
  if (!inflight_bytes_.try_acquire(held_bytes)) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            fmt::format("server busy: {} tensor bytes in flight, this request needs {} more, "
                        "limit {} (--max-inflight-bytes); retry with backoff",
                        inflight_bytes_.in_use(), held_bytes, inflight_bytes_.limit())};
  }
  BudgetLease held(inflight_bytes_, held_bytes);
  RegisteredBackend* chosen = nullptr;
  if (auto status = router_.route(scan, &chosen); !status.ok()) return status;
  // Counted as the backend's backlog, for the routing decisions of later requests, until answered.
  LoadLease load(*chosen->load, static_cast<std::int64_t>(scan.bytes));
  const ScanBackend& backend = *chosen->backend;
  record.backend = &metrics_.backend(chosen->index);
  record.dtype = scan.dtype;
  metrics_.record_route(*record.backend, reason_for(scan.preference));

  v1::Tensor* result = response.mutable_result();
  result->set_dtype(request.gamma().dtype());
  *result->mutable_shape() = request.gamma().shape();
  std::string* output = result->mutable_data();
  output->resize(scan.bytes);
  response.set_backend(backend.name());

  const auto queued = Clock::now();
  auto compute_started = queued;
  auto compute_finished = queued;
  if (scan.numel > 0) {
    const auto outcome = chosen->slots->acquire(steady_deadline_of(context),
                                                [&context] { return context.IsCancelled(); });
    if (outcome == ComputeSlots::Outcome::kQueueFull) {
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              "server busy: the queue of backend " + backend.name() +
                  " is full (--max-queue); retry with backoff"};
    }
    if (outcome == ComputeSlots::Outcome::kDeadlineExceeded) {
      return {grpc::StatusCode::DEADLINE_EXCEEDED,
              "deadline passed while waiting for backend " + backend.name()};
    }
    if (outcome == ComputeSlots::Outcome::kCancelled) {
      return {grpc::StatusCode::CANCELLED, "request cancelled while queued"};
    }
    SlotLease lease(*chosen->slots);
    compute_started = Clock::now();
    record.queue_seconds = seconds_between(queued, compute_started);
    spdlog::debug("scan started: [{}] {} dim {} on {} for {}", fmt::join(scan.shape, ","),
                  kernels::dtype_name(scan.dtype), scan.dim, backend.name(), context.peer());
    const kernels::KernelStatus status =
        compute(*chosen, {scan.dtype, scan.view, scan.input, output->data()}, record, response);
    compute_finished = Clock::now();
    record.compute_seconds = seconds_between(compute_started, compute_finished);
    if (!status.ok()) {
      spdlog::error("backend {} failed: {}", backend.name(), status.message());
      response.Clear();
      return {grpc::StatusCode::INTERNAL,
              "backend " + backend.name() + " failed: " + status.message()};
    }
  }

  v1::Timing* timing = response.mutable_timing();
  timing->set_queue_us(micros_between(queued, compute_started));
  timing->set_compute_us(micros_between(compute_started, compute_finished));
  timing->set_total_us(micros_between(received, Clock::now()));
  return grpc::Status::OK;
}

}  // namespace scan::server
