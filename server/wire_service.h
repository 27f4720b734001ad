// The transport side of the server, shared by scan-server and the benchmark echo server so that
// both run on exactly the same gRPC stack: channel arguments, and ScanService.Scan registered on
// raw byte buffers so the response's tensor bytes go to the socket without a protobuf copy.
#pragma once

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "scan/v1/scan.pb.h"
#include "transport.h"
#include "wire_codec.h"

namespace scan::server {

// Message limits (send and receive), then transport::tuned_channel_args(), then `overrides`.
void configure_transport(grpc::ServerBuilder& builder, std::int64_t message_limit,
                         const transport::ChannelArgs& overrides = {});

// One ScanStream call as its handler sees it: raw messages in both directions (so chunks are
// neither parsed nor copied by protobuf) and the server's pool of tensor buffers.
class ScanStreamIo {
 public:
  virtual ~ScanStreamIo() = default;
  // The next message from the client; false once the client has closed its side or the call is
  // over (cancelled, deadline passed).
  virtual bool read(grpc::ByteBuffer* message) = 0;
  // Blocks until gRPC has taken the message (flow control applies); false once the call is over.
  virtual bool write(const grpc::ByteBuffer& message) = 0;
  virtual const std::shared_ptr<wire::BufferPool>& buffers() = 0;
};

// Sends `result` as ScanStreamResponse chunks of at most `chunk_bytes`, by reference (the last
// chunk gRPC releases returns the buffer to its pool). Returns the bytes gRPC took: fewer than
// the result's size when the call ended first.
std::size_t send_result_chunks(ScanStreamIo& io, std::shared_ptr<wire::PooledBuffer> result,
                               std::size_t chunk_bytes);

// Where a Scan handler runs: first on gRPC's callback thread, where it must not wait (for a
// compute slot, say); if it would have to, it returns nullopt and is called again from one of the
// service's own threads, where it may wait.
enum class Waiting { kNotAllowed, kAllowed };

struct WireOptions {
  // Threads for calls that must wait (or are large); calls beyond them are refused at once with
  // RESOURCE_EXHAUSTED. Created as needed, kept once created.
  int blocking_threads = 64;
  // Requests up to this size are first tried on gRPC's callback thread: small scans finish in
  // microseconds, and handing them to another thread costs more than the scan (a third of the
  // throughput at 4 KiB, bench/RESULTS.md).
  std::size_t inline_max_bytes = std::size_t{1} << 20;
};

// Serves /scan.v1.ScanService/Scan on gRPC's callback API: decodes the request (wire::decode),
// runs `handler` (see Waiting), and sends the response through wire::encode_response. The handler
// may move the request's data out. With a `stream_handler`, also serves
// /scan.v1.ScanService/ScanStream through it (sync API: a stream is a conversation that waits).
class WireScanService final : public grpc::Service {
 public:
  using Handler = std::function<std::optional<grpc::Status>(
      grpc::ServerContextBase*, v1::ScanRequest*, v1::ScanResponse*, Waiting)>;
  using StreamHandler = std::function<grpc::Status(grpc::ServerContextBase*, ScanStreamIo&)>;
  // Keeps up to `pooled_bytes` of idle tensor buffers for reuse (see wire::BufferPool); the
  // server passes its in-flight byte budget, so idle memory never exceeds what busy requests may
  // hold anyway.
  WireScanService(Handler handler, std::size_t pooled_bytes, StreamHandler stream_handler = {},
                  WireOptions options = {});
  ~WireScanService() override;

  // The pool of request and response tensor buffers (the server registers them with CUDA).
  wire::BufferPool& buffer_pool() { return *buffers_; }

 private:
  struct Call;
  class BlockingThreads;

  grpc::ServerUnaryReactor* handle(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response);
  // Returns the request's buffer to the pool, encodes the response (or returns its buffer) and
  // finishes the call.
  void finish(grpc::ServerUnaryReactor* reactor, const grpc::Status& status, Call& call,
              grpc::ByteBuffer* response);

  Handler handler_;
  StreamHandler stream_handler_;
  const WireOptions options_;
  // Tensor buffers of requests and responses, reused across calls (see wire::BufferPool).
  std::shared_ptr<wire::BufferPool> buffers_;
  std::unique_ptr<BlockingThreads> blocking_;
};

}  // namespace scan::server
