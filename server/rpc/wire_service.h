// The transport side of the server, shared by scan-server and the benchmark echo server so that
// both run on exactly the same gRPC stack: channel arguments, and ScanService.Scan registered on
// raw byte buffers so the response's tensor bytes go to the socket without a protobuf copy.
#pragma once

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "rpc/stream_phase.h"
#include "scan/v1/scan.pb.h"
#include "scan/wire/codec.h"
#include "scan/wire/limits.h"
#include "scan/wire/transport.h"

namespace scan::server {

// Message limits (send and receive), then transport::tuned_channel_args(), then `overrides`.
void configure_transport(grpc::ServerBuilder& builder, std::int64_t message_limit,
                         const transport::ChannelArgs& overrides = {});

// How a ScanStream call ended, for the service's records.
struct StreamEnd {
  std::size_t result_bytes_sent = 0;
  // Set when the transport cut the call because the client made no progress in this phase.
  std::optional<StreamPhase> stalled;
};

// One ScanStream call as the service sees it. The transport calls these one at a time and in
// order (begin, add..., complete, end; end alone may come at any point), so a session needs no
// lock of its own, and it times the client's side of the conversation (StreamProgressLimits).
class ScanStreamSession {
 public:
  virtual ~ScanStreamSession() = default;
  // The client's first message. OK: *reply is the message that tells the client to send the
  // tensor.
  virtual grpc::Status begin(grpc::ByteBuffer* header, grpc::ByteBuffer* reply) = 0;
  // Each further message: a chunk of the tensor.
  virtual grpc::Status add(grpc::ByteBuffer* chunk) = 0;
  // The client has closed its side. Runs on a thread that may wait. OK: *head is the first
  // response message and *result the bytes that follow it, as ScanStreamResponse chunks.
  virtual grpc::Status complete(grpc::ByteBuffer* head,
                                std::shared_ptr<wire::PooledBuffer>* result) = 0;
  // The call is over and `status` is what the client was sent. Frees what the session holds.
  virtual void end(const grpc::Status& status, const StreamEnd& how) = 0;
  // Tensor bytes received so far, and in all (0 before the header), for the transport's messages.
  virtual std::size_t received_bytes() const = 0;
  virtual std::size_t expected_bytes() const = 0;
};

// A ScanStream client must keep the conversation moving: the header, and then the first chunk,
// each within `first_message` of the step before, and then no pause longer than `idle` between
// chunks received, or between result chunks taken by a reading client. Otherwise the call ends in
// DEADLINE_EXCEEDED, saying which step stalled, and frees everything it held. Zero: no limit.
struct StreamProgressLimits {
  std::chrono::milliseconds first_message{std::chrono::seconds(10)};
  std::chrono::milliseconds idle{std::chrono::seconds(10)};
};

// Where a Scan handler runs: first on gRPC's callback thread, where it must not wait (for a
// compute slot, say); if it would have to, it hands the rest of the call over (DeferredScan), and
// the transport finishes it on one of the service's own threads, where it may wait.
enum class Waiting { kNotAllowed, kAllowed };

// The rest of a Scan call whose handler stopped where it would have had to wait: everything before
// (validation, admission, routing) is done and still held. The transport calls exactly one of the
// two, once.
class DeferredScan {
 public:
  virtual ~DeferredScan() = default;
  // Finishes the call on a thread that may wait, and returns its status.
  virtual grpc::Status resume() = 0;
  // Ends the call with `refusal` instead (no thread is left to finish it on), and returns it.
  virtual grpc::Status abandon(grpc::Status refusal) = 0;
};

// What a Scan handler gives back: the call's status, or (only where waiting is not allowed) the
// rest of the call to run elsewhere.
struct HandlerResult {
  grpc::Status status;
  std::shared_ptr<DeferredScan> deferred;
};

// One unary call served as a Scan: its request decoded into a ScanRequest and its response built
// from the ScanResponse, by the method's UnaryScanCodec.
struct UnaryScanCall {
  v1::ScanRequest request;
  v1::ScanResponse response;
  // What the method's own request carried beyond the scan, for its response (KServe: the request's
  // id and output names); null for Scan itself.
  std::shared_ptr<const void> envelope;
};

// How one unary method's messages become a Scan and back. ScanService.Scan takes its messages as
// they are; KServe's ModelInfer (rpc/inference_codec.h) translates them. Shared by every call of
// the method, from any thread: implementations keep no per-call state.
class UnaryScanCodec {
 public:
  virtual ~UnaryScanCodec() = default;
  // Fills call.request from `received` (consumed), the tensor's bytes in a buffer taken from
  // `pool` and left in call.request.gamma.data, whatever the outcome, for the transport to return.
  // A refusal ends the call with that status.
  virtual grpc::Status decode(grpc::ServerContextBase& context, grpc::ByteBuffer* received,
                              UnaryScanCall& call, wire::BufferPool& pool) const = 0;
  // The response of a call whose scan succeeded. Moves the result's bytes out of call.response
  // (back to `pool` once gRPC has sent them).
  virtual grpc::ByteBuffer encode(UnaryScanCall& call,
                                  std::shared_ptr<wire::BufferPool> pool) const = 0;
  // The status a failed call ends with, in the method's own terms (its field names).
  virtual grpc::Status refusal(const grpc::Status& status, const UnaryScanCall& /*call*/) const {
    return status;
  }
};

struct WireOptions {
  // Threads for calls that must wait (or are large); calls beyond them are refused at once with
  // RESOURCE_EXHAUSTED. Created as needed, kept once created.
  int blocking_threads = 64;
  // Requests up to this size are first tried on gRPC's callback thread: small scans finish in
  // microseconds, and handing them to another thread costs more than the scan (a third of the
  // throughput at 4 KiB, bench/RESULTS.md).
  std::size_t inline_max_bytes = std::size_t{1} << 20;
  // Size of the result chunks ScanStream sends.
  std::size_t stream_chunk_bytes = wire::kDefaultStreamChunkBytes;
  StreamProgressLimits stream_progress;
};

// Serves /scan.v1.ScanService/Scan on gRPC's callback API: decodes the request (wire::decode),
// runs `handler` (see Waiting), and sends the response through wire::encode_response. The handler
// takes the response's tensor buffer from the pool it is given (only it knows the result's size)
// and may move the request's data out; both go back to the pool when the call ends. With
// `open_stream`, also serves /scan.v1.ScanService/ScanStream, also on the callback API: one session
// per call, driven by the client's messages, so that a stream waiting for its client holds no
// thread, and timed (StreamProgressLimits).
class WireScanService final : public grpc::Service {
 public:
  using Handler = std::function<HandlerResult(grpc::ServerContextBase*, v1::ScanRequest*,
                                              v1::ScanResponse*, Waiting, wire::BufferPool&)>;
  using StreamOpener = std::function<std::unique_ptr<ScanStreamSession>(
      grpc::ServerContextBase*, const std::shared_ptr<wire::BufferPool>&)>;
  // Keeps up to `pooled_bytes` of idle tensor buffers for reuse (see wire::BufferPool); the
  // server passes its in-flight byte budget, so idle memory never exceeds what busy requests may
  // hold anyway.
  WireScanService(Handler handler, std::size_t pooled_bytes, StreamOpener open_stream = {},
                  WireOptions options = {});
  ~WireScanService() override;

  // Serves one call of another unary method the way Scan is served (inline or on a handler thread,
  // with the same buffer pool and limits), its messages translated by `codec`. For services that
  // register such a method themselves (KServe's ModelInfer); `codec` and `handler` must outlive
  // every call.
  grpc::ServerUnaryReactor* serve_unary(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                        const UnaryScanCodec& codec, const Handler& handler);

  // The pool of request and response tensor buffers (the server registers them with CUDA).
  wire::BufferPool& buffer_pool() { return *buffers_; }

  // For shutdown: ends, with `status`, every ScanStream that has not yet received a tensor byte
  // (it has nothing to lose), so that idle streams do not hold the shutdown up. Streams under way
  // go on.
  void end_streams_not_started(const grpc::Status& status);

 private:
  class BlockingThreads;
  class StreamCall;
  class StreamWatchdog;

  // Returns the request's buffer to the pool, encodes the response (or returns its buffer) and
  // finishes the call.
  void finish(grpc::ServerUnaryReactor* reactor, const grpc::Status& status, UnaryScanCall& call,
              const UnaryScanCodec& codec, grpc::ByteBuffer* response);

  Handler handler_;
  StreamOpener open_stream_;
  const WireOptions options_;
  // Tensor buffers of requests and responses, reused across calls (see wire::BufferPool).
  std::shared_ptr<wire::BufferPool> buffers_;
  std::unique_ptr<BlockingThreads> blocking_;
  std::unique_ptr<StreamWatchdog> watchdog_;  // null without open_stream
};

}  // namespace scan::server
