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

Clock::time_point steady_deadline_of(const grpc::ServerContext& context) {
  const auto remaining = context.deadline() - std::chrono::system_clock::now();
  // An absent deadline shows up as a time point centuries away; clamp before converting clocks.
  if (remaining > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(remaining);
}

grpc::Status reject(const grpc::ServerContext& context, grpc::Status status) {
  spdlog::debug("scan rejected from {}: {} ({})", context.peer(), status.error_message(),
                static_cast<int>(status.error_code()));
  return status;
}

}  // namespace

grpc::Status ScanServiceImpl::Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                                   v1::ScanResponse* response) {
  const auto received = Clock::now();

  ValidatedScan scan;
  if (auto status = validate_scan_request(*request, limits_, &scan); !status.ok()) {
    return reject(*context, std::move(status));
  }
  RegisteredBackend* chosen = nullptr;
  if (auto status = router_.route(scan, &chosen); !status.ok()) {
    return reject(*context, std::move(status));
  }

  v1::Tensor* result = response->mutable_result();
  result->set_dtype(request->gamma().dtype());
  *result->mutable_shape() = request->gamma().shape();
  std::string* output = result->mutable_data();
  output->resize(scan.bytes);
  response->set_backend(chosen->backend->name());

  const auto queued = Clock::now();
  auto compute_started = queued;
  auto compute_finished = queued;
  if (scan.numel > 0) {
    const auto outcome = chosen->slots->acquire(steady_deadline_of(*context),
                                                [context] { return context->IsCancelled(); });
    if (outcome == ComputeSlots::Outcome::kDeadlineExceeded) {
      return reject(*context,
                    {grpc::StatusCode::DEADLINE_EXCEEDED,
                     "deadline passed while waiting for backend " + chosen->backend->name()});
    }
    if (outcome == ComputeSlots::Outcome::kCancelled) {
      return reject(*context, {grpc::StatusCode::CANCELLED, "request cancelled while queued"});
    }
    SlotLease lease(*chosen->slots);
    compute_started = Clock::now();
    spdlog::debug("scan started: [{}] {} dim {} on {} for {}", fmt::join(scan.shape, ","),
                  kernels::dtype_name(scan.dtype), scan.dim, chosen->backend->name(),
                  context->peer());
    const ScanJob job{scan.dtype, scan.view, scan.input, output->data()};
    const kernels::KernelStatus status = chosen->backend->run(job);
    compute_finished = Clock::now();
    if (!status.ok()) {
      spdlog::error("backend {} failed: {}", chosen->backend->name(), status.message());
      response->Clear();
      return {grpc::StatusCode::INTERNAL,
              "backend " + chosen->backend->name() + " failed: " + status.message()};
    }
  }

  v1::Timing* timing = response->mutable_timing();
  timing->set_queue_us(micros_between(queued, compute_started));
  timing->set_compute_us(micros_between(compute_started, compute_finished));
  timing->set_total_us(micros_between(received, Clock::now()));
  return grpc::Status::OK;
}

}  // namespace scan::server
