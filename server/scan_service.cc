#include "scan_service.h"

#include <fmt/ranges.h>
#include <grpcpp/server_context.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "stream_assembly.h"
#include "wire_codec.h"

namespace scan::server {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t micros_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

Clock::time_point steady_deadline_of(const grpc::ServerContextBase& context) {
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

template <class Serve>
grpc::Status ScanServiceImpl::recorded(grpc::ServerContextBase& context, Serve serve) {
  const auto received = Clock::now();
  metrics_.inflight().Increment();
  RequestRecord record;
  bool deferred = false;
  grpc::Status status = serve(record, &deferred);
  metrics_.inflight().Decrement();
  if (deferred) return status;
  if (!status.ok()) {
    spdlog::debug("scan from {} answered {}: {}", context.peer(),
                  v1::status_code_name(status.error_code()), status.error_message());
  }
  record.code = status.error_code();
  if (record.seconds < 0) record.seconds = seconds_between(received, Clock::now());
  metrics_.record(record);
  return status;
}

std::optional<grpc::Status> ScanServiceImpl::Scan(grpc::ServerContextBase* context,
                                                  const v1::ScanRequest* request,
                                                  v1::ScanResponse* response, Waiting waiting) {
  bool was_deferred = false;
  grpc::Status status = recorded(*context, [&](RequestRecord& record, bool* deferred) {
    record.request_bytes = request->gamma().data().size();
    grpc::Status served = serve(*context, *request, *response, record, waiting, deferred);
    if (served.ok()) record.response_bytes = response->result().data().size();
    was_deferred = *deferred;
    return served;
  });
  if (was_deferred) return std::nullopt;
  return status;
}

grpc::Status ScanServiceImpl::StreamScan(grpc::ServerContextBase* context, ScanStreamIo& io) {
  return recorded(*context, [&](RequestRecord& record, bool* /*deferred*/) {
    return serve_stream(*context, io, record);
  });
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

grpc::Status ScanServiceImpl::check_caller(grpc::ServerContextBase& context) const {
  if (draining_.load(std::memory_order_relaxed)) {
    return {grpc::StatusCode::UNAVAILABLE, "server is shutting down; retry on another replica"};
  }
  if (authenticator_ != nullptr) return authenticator_->check(context);
  return grpc::Status::OK;
}

grpc::Status ScanServiceImpl::admit(const ValidatedScan& scan, std::optional<BudgetLease>* held) {
  // Request and response buffers both stay alive until the response is sent.
  const auto held_bytes = static_cast<std::int64_t>(2 * scan.bytes);
  if (!inflight_bytes_.try_acquire(held_bytes)) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            fmt::format("server busy: {} tensor bytes in flight, this request needs {} more, "
                        "limit {} (--max-inflight-bytes); retry with backoff",
                        inflight_bytes_.in_use(), held_bytes, inflight_bytes_.limit())};
  }
  held->emplace(inflight_bytes_, held_bytes);
  return grpc::Status::OK;
}

grpc::Status ScanServiceImpl::serve(grpc::ServerContextBase& context,
                                    const v1::ScanRequest& request, v1::ScanResponse& response,
                                    RequestRecord& record, Waiting waiting, bool* deferred) {
  const auto received = Clock::now();
  if (auto status = check_caller(context); !status.ok()) return status;
  ValidatedScan scan;
  if (auto status = validate_scan_request(request, limits_, &scan); !status.ok()) return status;
  std::optional<BudgetLease> held;
  if (auto status = admit(scan, &held); !status.ok()) return status;

  v1::Tensor* result = response.mutable_result();
  result->set_dtype(request.gamma().dtype());
  *result->mutable_shape() = request.gamma().shape();
  std::string* output = result->mutable_data();
  output->resize(scan.bytes);
  return execute(context, scan, output->data(), response, record, received, waiting, deferred);
}

grpc::Status ScanServiceImpl::execute(grpc::ServerContextBase& context, const ValidatedScan& scan,
                                      void* output, v1::ScanResponse& response,
                                      RequestRecord& record, Clock::time_point received,
                                      Waiting waiting, bool* deferred) {
  RegisteredBackend* chosen = nullptr;
  if (auto status = router_.route(scan, &chosen); !status.ok()) return status;
  // A caller that may not wait either gets a free slot now or comes back on a thread that may.
  const bool needs_slot = scan.numel > 0;
  const bool slot_taken = needs_slot && waiting == Waiting::kNotAllowed;
  if (slot_taken && !chosen->slots->try_acquire()) {
    *deferred = true;
    return grpc::Status::OK;
  }
  // Counted as the backend's backlog, for the routing decisions of later requests, until answered.
  LoadLease load(*chosen->load, static_cast<std::int64_t>(scan.bytes));
  const ScanBackend& backend = *chosen->backend;
  record.backend = &metrics_.backend(chosen->index);
  record.dtype = scan.dtype;
  metrics_.record_route(*record.backend, reason_for(scan.preference));

  response.set_backend(backend.name());

  const auto queued = Clock::now();
  auto compute_started = queued;
  auto compute_finished = queued;
  if (needs_slot) {
    const auto outcome = slot_taken
                             ? ComputeSlots::Outcome::kAcquired
                             : chosen->slots->acquire(steady_deadline_of(context),
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
        compute(*chosen, {scan.dtype, scan.view, scan.input, output}, record, response);
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

grpc::Status ScanServiceImpl::serve_stream(grpc::ServerContextBase& context, ScanStreamIo& io,
                                           RequestRecord& record) {
  if (auto status = check_caller(context); !status.ok()) return status;
  grpc::ByteBuffer message;
  if (!io.read(&message)) {
    if (context.IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled by the client"};
    return {grpc::StatusCode::INVALID_ARGUMENT, "header: the stream ended before its header"};
  }
  v1::ScanRequest header;
  if (auto status = parse_stream_header(&message, &header); !status.ok()) return status;
  ValidatedScan scan;
  if (auto status = validate_scan_header(header, limits_, &scan); !status.ok()) return status;
  // Admission happens here, before the client has sent a byte of the tensor: a refused stream
  // costs the server one small message, not the tensor.
  std::optional<BudgetLease> held;
  if (auto status = admit(scan, &held); !status.ok()) return status;

  const auto& pool = io.buffers();
  wire::PooledBuffer input(pool, scan.bytes);
  {
    v1::ScanStreamResponse accepted;
    accepted.mutable_accepted()->set_max_chunk_bytes(chunking_.max_input_chunk_bytes);
    if (!io.write(wire::encode_message(accepted))) {
      return {grpc::StatusCode::CANCELLED, "the call ended before the tensor was sent"};
    }
  }
  StreamAssembler assembler(&input.bytes(), scan.bytes);
  while (io.read(&message)) {
    if (auto status = assembler.add(&message); !status.ok()) return status;
  }
  if (context.IsCancelled()) {
    return {grpc::StatusCode::CANCELLED, fmt::format("the call ended after {} of {} tensor bytes",
                                                     assembler.received_bytes(), scan.bytes)};
  }
  if (auto status = assembler.finish(); !status.ok()) return status;
  // As for Scan, whose handler runs once gRPC holds the whole request: timings start with the last
  // chunk in, so that neither the upload nor the result's download counts (Timing.total_us,
  // scan_request_duration_seconds).
  const auto received = Clock::now();
  record.request_bytes = scan.bytes;
  scan.input = input.bytes().data();

  // The result's chunks go out by reference to this buffer, which the last of them returns to
  // the pool once gRPC has sent it.
  // Overwritten in full by the scan, so not cleared first (see BufferPool::take_for_overwrite).
  auto output = wire::PooledBuffer::for_overwrite(pool, scan.bytes);
  v1::ScanStreamResponse head;
  v1::ScanResponse& response = *head.mutable_header();
  v1::Tensor* result = response.mutable_result();
  result->set_dtype(header.gamma().dtype());
  *result->mutable_shape() = header.gamma().shape();
  bool never_deferred = false;  // streams run on threads that may wait
  if (auto status = execute(context, scan, output->bytes().data(), response, record, received,
                            Waiting::kAllowed, &never_deferred);
      !status.ok()) {
    return status;
  }
  record.seconds = seconds_between(received, Clock::now());
  if (!io.write(wire::encode_message(head))) {
    return {grpc::StatusCode::CANCELLED, "the call ended before the result was sent"};
  }
  const std::size_t sent = send_result_chunks(
      io, std::move(output), static_cast<std::size_t>(chunking_.output_chunk_bytes));
  if (sent < scan.bytes) {
    return {grpc::StatusCode::CANCELLED,
            fmt::format("the call ended after {} of {} result bytes", sent, scan.bytes)};
  }
  record.response_bytes = scan.bytes;
  return grpc::Status::OK;
}

}  // namespace scan::server
