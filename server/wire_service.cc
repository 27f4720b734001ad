#include "wire_service.h"

#include <fmt/format.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "wire_codec.h"

// gRPC's callback threads are shared by every server of a process and outlive them; a server
// built after they started is handed to them inside uninstrumented libgrpc, so TSan would see no
// order between the service's construction and its calls. These annotations state it.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
#define SCAN_PUBLISHED(object) __tsan_release(object)
#define SCAN_SEEN_PUBLISHED(object) __tsan_acquire(object)
#endif
#endif
#ifndef SCAN_PUBLISHED
#define SCAN_PUBLISHED(object) (void)(object)
#define SCAN_SEEN_PUBLISHED(object) (void)(object)
#endif

namespace scan::server {

void configure_transport(grpc::ServerBuilder& builder, std::int64_t message_limit,
                         const transport::ChannelArgs& overrides) {
  transport::keep_buffers_on_heap();
  const int limit = static_cast<int>(std::min<std::int64_t>(message_limit, INT_MAX));
  builder.SetMaxReceiveMessageSize(limit);
  builder.SetMaxSendMessageSize(limit);
  for (const auto& [name, value] : transport::tuned_channel_args()) {
    builder.AddChannelArgument(name, value);
  }
  for (const auto& [name, value] : overrides) builder.AddChannelArgument(name, value);
}

namespace {

class GrpcScanStreamIo final : public ScanStreamIo {
 public:
  using Stream = grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;
  GrpcScanStreamIo(Stream& stream, const std::shared_ptr<wire::BufferPool>& buffers)
      : stream_(stream), buffers_(buffers) {}

  bool read(grpc::ByteBuffer* message) override { return stream_.Read(message); }
  bool write(const grpc::ByteBuffer& message) override { return stream_.Write(message); }
  const std::shared_ptr<wire::BufferPool>& buffers() override { return buffers_; }

 private:
  Stream& stream_;
  const std::shared_ptr<wire::BufferPool>& buffers_;
};

}  // namespace

std::size_t send_result_chunks(ScanStreamIo& io, std::shared_ptr<wire::PooledBuffer> result,
                               std::size_t chunk_bytes) {
  const std::string& bytes = result->bytes();
  std::size_t offset = 0;
  while (offset < bytes.size()) {
    const std::size_t size = std::min(chunk_bytes, bytes.size() - offset);
    if (!io.write(wire::encode_chunk(v1::ScanStreamResponse::kChunkFieldNumber,
                                     bytes.data() + offset, size, result))) {
      break;
    }
    offset += size;
  }
  return offset;
}

// A bounded set of threads, grown on demand, for handlers that may wait.
class WireScanService::BlockingThreads {
 public:
  explicit BlockingThreads(int limit) : limit_(limit) {}
  ~BlockingThreads() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_) thread.join();
  }

  // Runs `job` on a free thread; false, without running it, when all `limit` threads are busy.
  bool try_run(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (busy_ >= limit_) return false;
      ++busy_;
      jobs_.push_back(std::move(job));
      if (busy_ > static_cast<int>(threads_.size())) {
        threads_.emplace_back([this] { work(); });
      }
    }
    ready_.notify_one();
    return true;
  }

  int limit() const { return limit_; }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
      --busy_;
    }
  }

  const int limit_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  int busy_ = 0;  // jobs queued or running; each has (or is about to get) a thread of its own
  bool stopping_ = false;
};

// The decoded request and the response being built, for as long as a call is in the handler.
struct WireScanService::Call {
  v1::ScanRequest request;
  v1::ScanResponse response;
};

WireScanService::WireScanService(Handler handler, std::size_t pooled_bytes,
                                 StreamHandler stream_handler, WireOptions options)
    : handler_(std::move(handler)),
      stream_handler_(std::move(stream_handler)),
      options_(options),
      buffers_(std::make_shared<wire::BufferPool>(pooled_bytes)),
      blocking_(std::make_unique<BlockingThreads>(options.blocking_threads)) {
  // What protoc generates for a raw callback method (WithRawCallbackMethod_Scan), without also
  // claiming the service's other methods.
  AddMethod(new grpc::internal::RpcServiceMethod("/scan.v1.ScanService/Scan",
                                                 grpc::internal::RpcMethod::NORMAL_RPC, nullptr));
  MarkMethodRawCallback(
      0, new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
             [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                    grpc::ByteBuffer* response) { return handle(context, request, response); }));
  if (!stream_handler_) {
    SCAN_PUBLISHED(this);
    return;
  }
  using RawStreamHandler =
      grpc::internal::BidiStreamingHandler<WireScanService, grpc::ByteBuffer, grpc::ByteBuffer>;
  AddMethod(new grpc::internal::RpcServiceMethod(
      "/scan.v1.ScanService/ScanStream", grpc::internal::RpcMethod::BIDI_STREAMING,
      new RawStreamHandler(
          [](WireScanService* service, grpc::ServerContext* context,
             GrpcScanStreamIo::Stream* stream) {
            GrpcScanStreamIo io(*stream, service->buffers_);
            return service->stream_handler_(context, io);
          },
          this)));
  SCAN_PUBLISHED(this);
}

// gRPC's shutdown waits for every call to finish first, so no job is left by now.
WireScanService::~WireScanService() = default;

grpc::ServerUnaryReactor* WireScanService::handle(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  SCAN_SEEN_PUBLISHED(this);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto call = std::make_unique<Call>();
  // Copying a ByteBuffer only takes references to its slices; decoding consumes the copy.
  grpc::ByteBuffer received(*request);
  const std::size_t bytes = received.Length();
  std::string* input = call->request.mutable_gamma()->mutable_data();
  if (grpc::Status status = wire::decode(&received, &call->request, input, buffers_.get());
      !status.ok()) {
    finish(reactor,
           {grpc::StatusCode::INVALID_ARGUMENT, "request is not a valid scan.v1.ScanRequest"},
           *call, response);
    return reactor;
  }
  // The result has the request's size: give the handler a pooled buffer to resize into. The scan
  // overwrites every byte (the tests compare every element), and a failed call's buffer goes back
  // to the pool unsent, so the old bytes need not be cleared first.
  *call->response.mutable_result()->mutable_data() = buffers_->take_for_overwrite(bytes);
  if (bytes <= options_.inline_max_bytes) {
    if (auto status = handler_(context, &call->request, &call->response, Waiting::kNotAllowed)) {
      finish(reactor, *status, *call, response);
      return reactor;
    }
  }
  // The job owns the call from here on; gRPC keeps context, request and response alive until the
  // reactor finishes.
  Call* handed_over = call.release();
  const bool taken = blocking_->try_run([this, context, reactor, response, handed_over] {
    std::unique_ptr<Call> owned(handed_over);
    const std::optional<grpc::Status> status =
        handler_(context, &owned->request, &owned->response, Waiting::kAllowed);
    finish(reactor,
           status.value_or(grpc::Status(grpc::StatusCode::INTERNAL, "handler did not run")), *owned,
           response);
  });
  if (!taken) {
    std::unique_ptr<Call> owned(handed_over);
    finish(reactor,
           {grpc::StatusCode::RESOURCE_EXHAUSTED,
            fmt::format("server busy: all {} handler threads are busy (--rpc-threads); retry "
                        "with backoff",
                        blocking_->limit())},
           *owned, response);
  }
  return reactor;
}

void WireScanService::finish(grpc::ServerUnaryReactor* reactor, const grpc::Status& status,
                             Call& call, grpc::ByteBuffer* response) {
  buffers_->give(std::move(*call.request.mutable_gamma()->mutable_data()));
  if (status.ok()) {
    *response = wire::encode_response(&call.response, buffers_);
  } else {
    buffers_->give(std::move(*call.response.mutable_result()->mutable_data()));
  }
  reactor->Finish(status);
}

}  // namespace scan::server
