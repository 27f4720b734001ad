// The transport side of the server, shared by scan-server and the benchmark echo server so that
// both run on exactly the same gRPC stack: channel arguments, and ScanService.Scan registered on
// raw byte buffers so the response's tensor bytes go to the socket without a protobuf copy.
#pragma once

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

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

// Serves /scan.v1.ScanService/Scan: decodes the request (wire::decode), runs `handler`, and sends
// the response through wire::encode_response. The handler may move the request's data out.
// With a `stream_handler`, also serves /scan.v1.ScanService/ScanStream through it.
class WireScanService final : public grpc::Service {
 public:
  using Handler =
      std::function<grpc::Status(grpc::ServerContext*, v1::ScanRequest*, v1::ScanResponse*)>;
  using StreamHandler = std::function<grpc::Status(grpc::ServerContext*, ScanStreamIo&)>;
  // Keeps up to `pooled_bytes` of idle tensor buffers for reuse (see wire::BufferPool); the
  // server passes its in-flight byte budget, so idle memory never exceeds what busy requests may
  // hold anyway.
  WireScanService(Handler handler, std::size_t pooled_bytes, StreamHandler stream_handler = {});

 private:
  grpc::Status handle(grpc::ServerContext* context, const grpc::ByteBuffer& request,
                      grpc::ByteBuffer* response);

  Handler handler_;
  StreamHandler stream_handler_;
  // Tensor buffers of requests and responses, reused across calls (see wire::BufferPool).
  std::shared_ptr<wire::BufferPool> buffers_;
};

}  // namespace scan::server
