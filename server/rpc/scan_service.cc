#include "rpc/scan_service.h"

#include <fmt/ranges.h>
#include <grpcpp/server_context.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "rpc/outcome_status.h"
#include "rpc/shared_memory_service.h"
#include "rpc/stream_assembly.h"
#include "scan/wire/codec.h"

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

void ScanServiceImpl::record_end(grpc::ServerContextBase& context, RequestRecord& record,
                                 const grpc::Status& status, Clock::time_point received) {
  metrics_.inflight().Decrement();
  if (!status.ok()) {
    spdlog::debug("scan from {} answered {}: {}", context.peer(),
                  v1::status_code_name(status.error_code()), status.error_message());
  }
  record.code = status.error_code();
  if (record.seconds < 0) record.seconds = seconds_between(received, Clock::now());
  if (!record.warm_up) metrics_.record(record);
}

// A Scan call from its arrival to its end in the metrics. When it would have to wait for a compute
// slot where it may not, it is handed to the transport as it stands (DeferredScan): its budget,
// route and record stay held, so nothing is validated, admitted or routed twice.
class ScanServiceImpl::UnaryCall final : public DeferredScan {
 public:
  UnaryCall(ScanServiceImpl& service, grpc::ServerContextBase& context,
            const v1::ScanRequest& request, v1::ScanResponse& response, wire::BufferPool& buffers,
            RequestRpc rpc)
      : service_(service),
        context_(context),
        request_(request),
        response_(response),
        buffers_(buffers),
        received_(Clock::now()) {
    service_.metrics_.inflight().Increment();
    record_.request_bytes = request.gamma().data().size();
    record_.rpc = rpc;
    record_.warm_up = service_.is_warm_up(context);
  }

  // Caller, validation, shared-memory regions, budget and route; the response gets its shape and
  // a buffer to fill (or the region it goes to).
  grpc::Status prepare() {
    if (auto status = service_.check_caller(context_); !status.ok()) return status;
    if (auto outcome = validate_scan_request(request_, service_.limits_, &scan_); !outcome.ok()) {
      return to_status(outcome);
    }
    if (auto status = use_regions(); !status.ok()) return status;
    // Only tensors that travel through gRPC occupy server memory.
    const auto bytes = static_cast<std::int64_t>(scan_.bytes);
    const std::int64_t held = (input_region_ ? 0 : bytes) + (output_region_ ? 0 : bytes);
    if (auto status = service_.admit(held, &held_); !status.ok()) return status;
    v1::Tensor* result = response_.mutable_result();
    result->set_dtype(request_.gamma().dtype());
    *result->mutable_shape() = request_.gamma().shape();
    if (output_region_) {
      *result->mutable_shared_memory() = request_.output();
    } else {
      // A pooled buffer, overwritten in full by the scan: resizing within its old size writes
      // nothing (see BufferPool::take_for_overwrite).
      *result->mutable_data() = buffers_.take_for_overwrite(scan_.bytes);
      result->mutable_data()->resize(scan_.bytes);
    }
    if (input_region_.device() >= 0) {
      // A client's device memory is scanned on the GPU that holds it, in place or into its
      // output region there.
      return to_status(
          service_.router_.route_to_gpu(input_region_.device(), "gamma.shared_memory", &chosen_));
    }
    return to_status(service_.router_.route(scan_, &chosen_));
  }

  // False when a compute slot is needed and none is free now.
  bool try_take_slot() {
    if (scan_.numel == 0) return true;
    slot_held_ = chosen_->slots->try_acquire();
    return slot_held_;
  }

  grpc::Status run() {
    void* output =
        output_region_ ? output_region_.data() : response_.mutable_result()->mutable_data()->data();
    grpc::Status status =
        service_.execute(context_, scan_, *chosen_, slot_held_, output, response_, record_,
                         received_, /*device_memory=*/input_region_.device() >= 0);
    // A region truncated by its owner mid-scan read or took zeros, not the client's bytes.
    if (status.ok()) status = to_status(input_region_.check_intact("gamma.shared_memory"));
    if (status.ok()) status = to_status(output_region_.check_intact("output"));
    if (!status.ok()) response_.Clear();
    return status;
  }

  // Records the call's end in the metrics; returns `status`.
  grpc::Status end(grpc::Status status) {
    if (status.ok()) record_.response_bytes = response_.result().data().size();
    service_.record_end(context_, record_, status, received_);
    held_.reset();
    input_region_ = {};
    output_region_ = {};
    return status;
  }

  grpc::Status resume() override { return end(run()); }
  // A deferred call holds no slot: it was deferred for want of one.
  grpc::Status abandon(grpc::Status refusal) override { return end(std::move(refusal)); }

 private:
  // The regions gamma.shared_memory and output name, held for the call; scan_.input points into
  // the first.
  grpc::Status use_regions() {
    if (request_.gamma().has_shared_memory() || request_.has_output()) {
      record_.transport = RequestTransport::kSystemSharedMemory;
    }
    grpc::Status status = use_request_regions(service_.shared_memory_, caller_namespace(context_),
                                              request_, &scan_, &input_region_, &output_region_);
    if (input_region_.device() >= 0) record_.transport = RequestTransport::kCudaIpc;
    return status;
  }

  ScanServiceImpl& service_;
  grpc::ServerContextBase& context_;
  const v1::ScanRequest& request_;
  v1::ScanResponse& response_;
  wire::BufferPool& buffers_;
  const Clock::time_point received_;
  RequestRecord record_;
  ValidatedScan scan_;
  shared_memory::RegionUse input_region_;
  shared_memory::RegionUse output_region_;
  std::optional<BudgetLease> held_;
  RegisteredBackend* chosen_ = nullptr;
  bool slot_held_ = false;
};

HandlerResult ScanServiceImpl::Scan(grpc::ServerContextBase* context,
                                    const v1::ScanRequest* request, v1::ScanResponse* response,
                                    Waiting waiting, wire::BufferPool& buffers, RequestRpc rpc) {
  auto call = std::make_shared<UnaryCall>(*this, *context, *request, *response, buffers, rpc);
  grpc::Status status = call->prepare();
  if (status.ok()) {
    if (waiting == Waiting::kNotAllowed && !call->try_take_slot()) {
      return {grpc::Status::OK, std::move(call)};
    }
    status = call->run();
  }
  return {call->end(std::move(status)), nullptr};
}

grpc::Status ScanServiceImpl::refuse(grpc::ServerContextBase& context, const grpc::Status& refusal,
                                     RequestRpc rpc, std::size_t request_bytes) {
  const auto received = Clock::now();
  metrics_.inflight().Increment();
  RequestRecord record;
  record.rpc = rpc;
  record.request_bytes = request_bytes;
  grpc::Status status = check_caller(context);
  if (status.ok()) status = refusal;
  record_end(context, record, status, received);
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
    // Device-memory jobs skip the host path this model predicts, and warm-up calls run cold:
    // either would teach it wrong.
    if (!job.device_memory && !record.warm_up &&
        router_.observe(chosen.index, bytes, seconds_between(started, Clock::now()),
                        kernels::element_size(job.dtype))) {
      metrics_.publish_cost_model(chosen.index, router_.cost_model(chosen.index));
    }
    return status;
  }
  // A GPU failing (device error, lost context) must not fail the request: the CPU computes it
  // again from the untouched input, overwriting whatever the GPU left in the output. It does so
  // within the GPU's slot rather than queueing for a CPU one: fallbacks are rare, bounded by the
  // GPU's slots, and a request that already waited once should not wait behind the CPU queue.
  // A CPU cannot reach device memory: a GPU failure on a client's device tensor stands.
  if (chosen.backend->device_kind() != DeviceKind::kGpu || job.device_memory) return status;
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
  if (authenticator_ != nullptr && !is_warm_up(context)) return authenticator_->check(context);
  return grpc::Status::OK;
}

bool ScanServiceImpl::is_warm_up(const grpc::ServerContextBase& context) const {
  if (warm_up_token_.empty()) return false;
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find(kWarmUpHeader);
  if (found == metadata.end() || found->second.size() != warm_up_token_.size()) return false;
  // In constant time, as the bearer token (security.cc): how much of the token a guess got right
  // must not show in the answer's time.
  return CRYPTO_memcmp(found->second.data(), warm_up_token_.data(), warm_up_token_.size()) == 0;
}

grpc::Status ScanServiceImpl::admit(std::int64_t bytes, std::optional<BudgetLease>* held) {
  if (!inflight_bytes_.try_acquire(bytes)) return budget_exhausted(bytes);
  held->emplace(inflight_bytes_, bytes);
  return grpc::Status::OK;
}

grpc::Status ScanServiceImpl::budget_exhausted(std::int64_t needed) const {
  return {grpc::StatusCode::RESOURCE_EXHAUSTED,
          fmt::format("server busy: {} tensor bytes in flight, this request needs {} more, "
                      "limit {} (--max-inflight-bytes); retry with backoff",
                      inflight_bytes_.in_use(), needed, inflight_bytes_.limit())};
}

grpc::Status ScanServiceImpl::execute(grpc::ServerContextBase& context, const ValidatedScan& scan,
                                      RegisteredBackend& chosen, bool slot_held, void* output,
                                      v1::ScanResponse& response, RequestRecord& record,
                                      Clock::time_point received, bool device_memory) {
  const bool needs_slot = scan.numel > 0;
  // Counted as the backend's backlog, for the routing decisions of later requests, until answered.
  LoadLease load(*chosen.load, static_cast<std::int64_t>(scan.bytes));
  const ScanBackend& backend = *chosen.backend;
  record.backend = &metrics_.backend(chosen.index);
  record.dtype = scan.dtype;
  metrics_.record_route(*record.backend, reason_for(scan.preference));

  response.set_backend(backend.name());

  const auto queued = Clock::now();
  auto compute_started = queued;
  auto compute_finished = queued;
  if (needs_slot) {
    const auto outcome = slot_held ? ComputeSlots::Outcome::kAcquired
                                   : chosen.slots->acquire(steady_deadline_of(context), [&context] {
                                       return context.IsCancelled();
                                     });
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
    SlotLease lease(*chosen.slots);
    compute_started = Clock::now();
    record.queue_seconds = seconds_between(queued, compute_started);
    spdlog::debug("scan started: [{}] {} dim {} on {} for {}", fmt::join(scan.shape, ","),
                  kernels::dtype_name(scan.dtype), scan.dim, backend.name(), context.peer());
    const kernels::KernelStatus status =
        compute(chosen, {scan.dtype, scan.view, scan.input, output, nullptr, device_memory}, record,
                response);
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

// The server's side of one ScanStream call. Its budget grows as the tensor arrives (what was
// received) and by the result's size once the upload is complete; the received bytes are
// released as soon as the scan has run, leaving the result alone held while it downloads.
class ScanServiceImpl::StreamCall final : public ScanStreamSession {
 public:
  StreamCall(ScanServiceImpl& service, grpc::ServerContextBase& context,
             std::shared_ptr<wire::BufferPool> buffers)
      : service_(service),
        context_(context),
        buffers_(std::move(buffers)),
        held_(service.inflight_bytes_),
        started_(Clock::now()) {
    service_.metrics_.inflight().Increment();
    record_.rpc = RequestRpc::kScanStream;
  }

  grpc::Status begin(grpc::ByteBuffer* message, grpc::ByteBuffer* reply) override {
    if (auto status = service_.check_caller(context_); !status.ok()) return status;
    if (auto status = parse_stream_header(message, &header_); !status.ok()) return status;
    if (auto outcome = validate_scan_header(header_, service_.limits_, &scan_); !outcome.ok()) {
      return to_status(outcome);
    }
    // Refused while the budget lacks room for the whole stream: a refusal then costs the client
    // one small message, not the tensor. Nothing is reserved yet, so a header alone holds nothing.
    const auto needed = static_cast<std::int64_t>(2 * scan_.bytes);
    ByteBudget& budget = service_.inflight_bytes_;
    if (needed > budget.limit() - budget.in_use()) return service_.budget_exhausted(needed);
    v1::ScanStreamResponse accepted;
    accepted.mutable_accepted()->set_max_chunk_bytes(service_.chunking_.max_input_chunk_bytes);
    *reply = wire::encode_message(accepted);
    return grpc::Status::OK;
  }

  grpc::Status add(grpc::ByteBuffer* chunk) override {
    start_assembly();
    const std::size_t before = assembler_->received_bytes();
    if (auto status = assembler_->add(chunk); !status.ok()) return status;
    const auto arrived = static_cast<std::int64_t>(assembler_->received_bytes() - before);
    if (!held_.try_grow(arrived)) {
      return with_progress(service_.budget_exhausted(arrived), assembler_->received_bytes());
    }
    return grpc::Status::OK;
  }

  grpc::Status complete(grpc::ByteBuffer* head,
                        std::shared_ptr<wire::PooledBuffer>* result) override {
    start_assembly();
    if (auto status = assembler_->finish(); !status.ok()) return status;
    // As for Scan, whose handler runs once gRPC holds the whole request: timings start with the
    // last chunk in, so that neither the upload nor the result's download counts
    // (Timing.total_us, scan_request_duration_seconds).
    received_ = Clock::now();
    const auto result_bytes = static_cast<std::int64_t>(scan_.bytes);
    if (!held_.try_grow(result_bytes)) {
      return with_progress(service_.budget_exhausted(result_bytes), scan_.bytes);
    }
    record_.request_bytes = scan_.bytes;
    scan_.input = input_->bytes().data();
    // Overwritten in full by the scan, so not cleared first (see BufferPool::take_for_overwrite).
    auto output = wire::PooledBuffer::for_overwrite(buffers_, scan_.bytes);
    v1::ScanStreamResponse message;
    v1::ScanResponse& response = *message.mutable_header();
    v1::Tensor* tensor = response.mutable_result();
    tensor->set_dtype(header_.gamma().dtype());
    *tensor->mutable_shape() = header_.gamma().shape();
    RegisteredBackend* chosen = nullptr;
    grpc::Status status = to_status(service_.router_.route(scan_, &chosen));
    // complete() runs on a thread that may wait for a compute slot.
    if (status.ok()) {
      status = service_.execute(context_, scan_, *chosen, /*slot_held=*/false,
                                output->bytes().data(), response, record_, received_);
    }
    // The input has served its purpose: its memory and budget go before the download starts.
    assembler_.reset();
    input_.reset();
    held_.shrink(static_cast<std::int64_t>(scan_.bytes));
    if (!status.ok()) return status;
    record_.seconds = seconds_between(received_, Clock::now());
    *head = wire::encode_message(message);
    *result = std::move(output);
    return grpc::Status::OK;
  }

  void end(const grpc::Status& status, const StreamEnd& how) override {
    if (status.ok()) record_.response_bytes = how.result_bytes_sent;
    if (how.stalled) service_.metrics_.record_stream_stall(*how.stalled);
    service_.record_end(context_, record_, status, started_);
    assembler_.reset();
    input_.reset();
  }

  std::size_t received_bytes() const override {
    return assembler_ ? assembler_->received_bytes() : 0;
  }
  std::size_t expected_bytes() const override { return scan_.bytes; }

 private:
  // The tensor's buffer is taken with its first chunk, so that a stream that sent only its header
  // holds no memory at all.
  void start_assembly() {
    if (assembler_) return;
    input_.emplace(buffers_, scan_.bytes);
    assembler_.emplace(&input_->bytes(), scan_.bytes);
  }

  grpc::Status with_progress(const grpc::Status& status, std::size_t received) const {
    return {status.error_code(), fmt::format("{} (after {} of {} tensor bytes of this stream)",
                                             status.error_message(), received, scan_.bytes)};
  }

  ScanServiceImpl& service_;
  grpc::ServerContextBase& context_;
  const std::shared_ptr<wire::BufferPool> buffers_;
  BudgetLease held_;
  const Clock::time_point started_;
  Clock::time_point received_;
  v1::ScanRequest header_;
  ValidatedScan scan_;
  std::optional<wire::PooledBuffer> input_;
  std::optional<StreamAssembler> assembler_;
  RequestRecord record_;
};

std::unique_ptr<ScanStreamSession> ScanServiceImpl::open_stream(
    grpc::ServerContextBase* context, const std::shared_ptr<wire::BufferPool>& buffers) {
  return std::make_unique<StreamCall>(*this, *context, buffers);
}

}  // namespace scan::server
