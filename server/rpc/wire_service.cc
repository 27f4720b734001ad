#include "rpc/wire_service.h"

#include <fmt/format.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "scan/wire/codec.h"

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

using Clock = std::chrono::steady_clock;

// Keeps the set of live ScanStream calls, and wakes a few times per progress limit to end those
// whose client stopped. One thread for all streams: a stream waiting for its client costs an
// entry here, not a thread or a timer.
class WireScanService::StreamWatchdog {
 public:
  explicit StreamWatchdog(StreamProgressLimits limits) : limits_(limits) {
    auto shortest = std::chrono::milliseconds::max();
    for (const auto limit : {limits.first_message, limits.idle}) {
      if (limit.count() > 0) shortest = std::min(shortest, limit);
    }
    if (shortest == std::chrono::milliseconds::max()) return;  // no limits: nothing to watch
    period_ = std::clamp<std::chrono::milliseconds>(shortest / 10, std::chrono::milliseconds(10),
                                                    std::chrono::milliseconds(250));
    thread_ = std::thread([this] { watch(); });
  }
  // gRPC's shutdown has waited for every call by now, so no stream is left.
  ~StreamWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  void add(StreamCall* call) {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.insert(call);
  }
  // Once this returns, the watchdog no longer touches `call`.
  void remove(StreamCall* call) {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.erase(call);
  }
  template <class Visit>
  void for_each(Visit visit) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (StreamCall* call : calls_) visit(*call);
  }

  const StreamProgressLimits& limits() const { return limits_; }

 private:
  void watch();

  const StreamProgressLimits limits_;
  std::chrono::milliseconds period_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::unordered_set<StreamCall*> calls_;
  bool stopping_ = false;
  std::thread thread_;
};

// One ScanStream call: reads and writes driven by gRPC's reactions, the session's work in order,
// and the client's progress checked by the watchdog. Every step runs under `mutex_`, except the
// session's complete(), which runs on a blocking thread while nothing else may touch the session.
class WireScanService::StreamCall final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamCall(WireScanService& service, grpc::CallbackServerContext* context)
      : service_(service),
        context_(context),
        session_(service.open_stream_(context, service.buffers_)),
        last_progress_(Clock::now()) {
    // gRPC calls the reactions below on other threads, after a hand-off inside libgrpc that TSan
    // cannot see; each reaction acquires what the constructor released here (mutex_ included).
    SCAN_PUBLISHED(this);
    service_.watchdog_->add(this);
    std::lock_guard<std::mutex> lock(mutex_);
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    SCAN_SEEN_PUBLISHED(this);
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    if (!ok) return on_client_closed();
    last_progress_ = Clock::now();
    if (phase_ == StreamPhase::kHeader) {
      if (grpc::Status status = session_->begin(&incoming_, &outgoing_); !status.ok()) {
        return finish(status);
      }
      // `accepted`; the first chunk is read once it is out (the client waits for it anyway).
      phase_ = StreamPhase::kUpload;
      StartWrite(&outgoing_);
      return;
    }
    chunk_received_ = true;
    if (grpc::Status status = session_->add(&incoming_); !status.ok()) return finish(status);
    StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    SCAN_SEEN_PUBLISHED(this);
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    if (!ok) {
      return finish({grpc::StatusCode::CANCELLED,
                     phase_ == StreamPhase::kDownload
                         ? fmt::format("the call ended after {} of {} result bytes", sent_,
                                       session_->expected_bytes())
                         : std::string("the call ended before the tensor was sent")});
    }
    last_progress_ = Clock::now();
    if (phase_ == StreamPhase::kUpload) {
      StartRead(&incoming_);
      return;
    }
    sent_ += writing_bytes_;
    send_next_chunk();
  }

  void OnCancel() override {
    SCAN_SEEN_PUBLISHED(this);
    std::lock_guard<std::mutex> lock(mutex_);
    // A computing call is finished by its blocking thread, which sees the cancellation.
    if (finished_ || phase_ == StreamPhase::kCompute) return;
    finish({grpc::StatusCode::CANCELLED, "cancelled by the client"});
  }

  void OnDone() override {
    SCAN_SEEN_PUBLISHED(this);
    { std::lock_guard<std::mutex> wait_for_whoever_finished(mutex_); }
    service_.watchdog_->remove(this);
    delete this;
  }

  // The watchdog's round: ends the call if its client has kept it waiting too long.
  void check_progress(Clock::time_point now) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_ || phase_ == StreamPhase::kCompute) return;
    const StreamProgressLimits& limits = service_.watchdog_->limits();
    const bool first_message = phase_ == StreamPhase::kHeader || !chunk_received_;
    const auto limit =
        first_message && phase_ != StreamPhase::kDownload ? limits.first_message : limits.idle;
    if (limit.count() == 0 || now - last_progress_ < limit) return;
    const double seconds = std::chrono::duration<double>(limit).count();
    std::string why;
    switch (phase_) {
      case StreamPhase::kHeader:
        why = fmt::format(
            "header: none arrived within {:g} s of the call's start "
            "(--stream-first-chunk-timeout-seconds)",
            seconds);
        break;
      case StreamPhase::kUpload:
        why = chunk_received_
                  ? fmt::format(
                        "chunk: none arrived for {:g} s, after {} of {} tensor bytes "
                        "(--stream-idle-timeout-seconds); the stream's memory is released",
                        seconds, session_->received_bytes(), session_->expected_bytes())
                  : fmt::format(
                        "chunk: none arrived within {:g} s of `accepted` "
                        "(--stream-first-chunk-timeout-seconds)",
                        seconds);
        break;
      default:
        why = fmt::format(
            "result: the client read nothing for {:g} s, after {} of {} result bytes "
            "(--stream-idle-timeout-seconds); the stream's memory is released",
            seconds, sent_, session_->expected_bytes());
        break;
    }
    finish({grpc::StatusCode::DEADLINE_EXCEEDED, why}, phase_);
    // gRPC sends the status only after the write under way, which a client that reads nothing
    // never lets complete: the call (and the result it holds) would stay until the client left.
    // Cancelling ends it now; such a client sees CANCELLED instead of the message.
    if (phase_ == StreamPhase::kDownload) context_->TryCancel();
  }

  // For shutdown: a call that has not received a tensor byte has nothing to lose.
  void end_if_not_started(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_ || chunk_received_) return;
    if (phase_ == StreamPhase::kHeader || phase_ == StreamPhase::kUpload) finish(status);
  }

 private:
  // The client closed its side (or the call ended).
  void on_client_closed() {
    if (context_->IsCancelled()) return finish({grpc::StatusCode::CANCELLED, "the call ended"});
    if (phase_ == StreamPhase::kHeader) {
      return finish(
          {grpc::StatusCode::INVALID_ARGUMENT, "header: the stream ended before its header"});
    }
    phase_ = StreamPhase::kCompute;
    if (!service_.blocking_->try_run([this] { compute(); })) {
      finish({grpc::StatusCode::RESOURCE_EXHAUSTED,
              fmt::format("server busy: all {} handler threads are busy (--rpc-threads); retry "
                          "with backoff",
                          service_.blocking_->limit())});
    }
  }

  // On a blocking thread; nothing else touches the session meanwhile (see OnCancel and
  // check_progress).
  void compute() {
    grpc::ByteBuffer head;
    std::shared_ptr<wire::PooledBuffer> result;
    const grpc::Status status = session_->complete(&head, &result);
    std::lock_guard<std::mutex> lock(mutex_);
    if (!status.ok()) return finish(status);
    if (context_->IsCancelled()) return finish({grpc::StatusCode::CANCELLED, "the call ended"});
    phase_ = StreamPhase::kDownload;
    last_progress_ = Clock::now();
    result_ = std::move(result);
    outgoing_ = std::move(head);
    writing_bytes_ = 0;
    StartWrite(&outgoing_);
  }

  void send_next_chunk() {
    const std::string& bytes = result_->bytes();
    if (sent_ == bytes.size()) return finish(grpc::Status::OK);
    writing_bytes_ = std::min(service_.options_.stream_chunk_bytes, bytes.size() - sent_);
    // By reference: the last chunk gRPC releases returns the buffer to its pool.
    outgoing_ = wire::encode_chunk(v1::ScanStreamResponse::kChunkFieldNumber, bytes.data() + sent_,
                                   writing_bytes_, result_);
    StartWrite(&outgoing_);
  }

  void finish(const grpc::Status& status, std::optional<StreamPhase> stalled = std::nullopt) {
    finished_ = true;
    session_->end(status, StreamEnd{sent_, stalled});
    result_.reset();
    Finish(status);
  }

  WireScanService& service_;
  grpc::CallbackServerContext* const context_;
  const std::unique_ptr<ScanStreamSession> session_;
  std::mutex mutex_;
  StreamPhase phase_ = StreamPhase::kHeader;
  bool finished_ = false;
  bool chunk_received_ = false;
  Clock::time_point last_progress_;  // the last message in, or out to a reading client
  grpc::ByteBuffer incoming_;
  grpc::ByteBuffer outgoing_;
  std::shared_ptr<wire::PooledBuffer> result_;
  std::size_t writing_bytes_ = 0;  // result bytes in the write under way
  std::size_t sent_ = 0;           // result bytes gRPC has taken
};

void WireScanService::StreamWatchdog::watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, period_, [this] { return stopping_; })) {
    const auto now = Clock::now();
    for (StreamCall* call : calls_) call->check_progress(now);
  }
}

void WireScanService::end_streams_not_started(const grpc::Status& status) {
  if (!watchdog_) return;
  watchdog_->for_each([&status](StreamCall& call) { call.end_if_not_started(status); });
}

namespace {

// ScanService.Scan: its messages are the scan's own.
class ScanCodec final : public UnaryScanCodec {
 public:
  grpc::Status decode(grpc::ServerContextBase& /*context*/, grpc::ByteBuffer* received,
                      UnaryScanCall& call, wire::BufferPool& pool) const override {
    std::string* input = call.request.mutable_gamma()->mutable_data();
    if (!wire::decode(received, &call.request, input, &pool).ok()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "request is not a valid scan.v1.ScanRequest"};
    }
    return grpc::Status::OK;
  }
  grpc::ByteBuffer encode(UnaryScanCall& call,
                          std::shared_ptr<wire::BufferPool> pool) const override {
    return wire::encode_response(&call.response, std::move(pool));
  }
};

const ScanCodec kScanCodec;

}  // namespace

WireScanService::WireScanService(Handler handler, std::size_t pooled_bytes,
                                 StreamOpener open_stream, WireOptions options)
    : handler_(std::move(handler)),
      open_stream_(std::move(open_stream)),
      options_(options),
      // From 64 KiB: below the pool's default 1 MiB, the first request of each small size paid
      // for fresh heap pages (4-11x its warm time on a fresh server); pooled, --warm-start pages
      // them in with the rest (2 MiB more).
      buffers_(std::make_shared<wire::BufferPool>(pooled_bytes, std::size_t{64} << 10)),
      blocking_(std::make_unique<BlockingThreads>(options.blocking_threads)) {
  // What protoc generates for a raw callback method (WithRawCallbackMethod_Scan), without also
  // claiming the service's other methods.
  AddMethod(new grpc::internal::RpcServiceMethod("/scan.v1.ScanService/Scan",
                                                 grpc::internal::RpcMethod::NORMAL_RPC, nullptr));
  MarkMethodRawCallback(
      0, new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
             [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                    grpc::ByteBuffer* response) {
               return serve_unary(context, request, response, kScanCodec, handler_);
             }));
  if (!open_stream_) {
    SCAN_PUBLISHED(this);
    return;
  }
  watchdog_ = std::make_unique<StreamWatchdog>(options_.stream_progress);
  AddMethod(new grpc::internal::RpcServiceMethod(
      "/scan.v1.ScanService/ScanStream", grpc::internal::RpcMethod::BIDI_STREAMING, nullptr));
  MarkMethodRawCallback(1,
                        new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                            [this](grpc::CallbackServerContext* context) {
                              SCAN_SEEN_PUBLISHED(this);
                              return new StreamCall(*this, context);
                            }));
  SCAN_PUBLISHED(this);
}

// gRPC's shutdown waits for every call to finish first, so no job is left by now.
WireScanService::~WireScanService() = default;

grpc::ServerUnaryReactor* WireScanService::serve_unary(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response,
                                                       const UnaryScanCodec& codec,
                                                       const Handler& handler) {
  SCAN_SEEN_PUBLISHED(this);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto call = std::make_unique<UnaryScanCall>();
  // Copying a ByteBuffer only takes references to its slices; decoding consumes the copy.
  grpc::ByteBuffer received(*request);
  const std::size_t bytes = received.Length();
  if (grpc::Status status = codec.decode(*context, &received, *call, *buffers_); !status.ok()) {
    finish(reactor, status, *call, codec, response);
    return reactor;
  }
  std::shared_ptr<DeferredScan> deferred;
  if (bytes <= options_.inline_max_bytes) {
    HandlerResult result =
        handler(context, &call->request, &call->response, Waiting::kNotAllowed, *buffers_);
    if (!result.deferred) {
      finish(reactor, result.status, *call, codec, response);
      return reactor;
    }
    deferred = std::move(result.deferred);
  }
  // The job owns the call from here on; gRPC keeps context, request and response alive until the
  // reactor finishes.
  UnaryScanCall* handed_over = call.release();
  const bool taken = blocking_->try_run([this, context, reactor, response, handed_over, deferred,
                                         &codec, &handler] {
    std::unique_ptr<UnaryScanCall> owned(handed_over);
    const grpc::Status status =
        deferred ? deferred->resume()
                 : handler(context, &owned->request, &owned->response, Waiting::kAllowed, *buffers_)
                       .status;
    finish(reactor, status, *owned, codec, response);
  });
  if (!taken) {
    std::unique_ptr<UnaryScanCall> owned(handed_over);
    grpc::Status busy(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      fmt::format("server busy: all {} handler threads are busy (--rpc-threads); "
                                  "retry with backoff",
                                  blocking_->limit()));
    if (deferred) busy = deferred->abandon(std::move(busy));
    finish(reactor, busy, *owned, codec, response);
  }
  return reactor;
}

void WireScanService::finish(grpc::ServerUnaryReactor* reactor, const grpc::Status& status,
                             UnaryScanCall& call, const UnaryScanCodec& codec,
                             grpc::ByteBuffer* response) {
  buffers_->give(std::move(*call.request.mutable_gamma()->mutable_data()));
  if (status.ok()) {
    *response = codec.encode(call, buffers_);
    reactor->Finish(status);
    return;
  }
  buffers_->give(std::move(*call.response.mutable_result()->mutable_data()));
  reactor->Finish(codec.refusal(status, call));
}

}  // namespace scan::server
