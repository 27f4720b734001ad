#include "wire_service.h"

#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <climits>

#include "wire_codec.h"

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

WireScanService::WireScanService(Handler handler, std::size_t pooled_bytes,
                                 StreamHandler stream_handler)
    : handler_(std::move(handler)),
      stream_handler_(std::move(stream_handler)),
      buffers_(std::make_shared<wire::BufferPool>(pooled_bytes)) {
  // What protoc generates for a sync unary method, with ByteBuffer in place of the messages: the
  // sync API has no raw variant of its own.
  using RawHandler =
      grpc::internal::RpcMethodHandler<WireScanService, grpc::ByteBuffer, grpc::ByteBuffer>;
  AddMethod(new grpc::internal::RpcServiceMethod(
      "/scan.v1.ScanService/Scan", grpc::internal::RpcMethod::NORMAL_RPC,
      new RawHandler(
          [](WireScanService* service, grpc::ServerContext* context,
             const grpc::ByteBuffer* request,
             grpc::ByteBuffer* response) { return service->handle(context, *request, response); },
          this)));
  if (!stream_handler_) return;
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
}

grpc::Status WireScanService::handle(grpc::ServerContext* context, const grpc::ByteBuffer& request,
                                     grpc::ByteBuffer* response) {
  // Copying a ByteBuffer only takes references to its slices; decoding consumes the copy.
  grpc::ByteBuffer received(request);
  const std::size_t bytes = received.Length();
  v1::ScanRequest scan_request;
  std::string* input = scan_request.mutable_gamma()->mutable_data();
  if (grpc::Status status = wire::decode(&received, &scan_request, input, buffers_.get());
      !status.ok()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "request is not a valid scan.v1.ScanRequest"};
  }
  // The result has the request's size: give the handler a pooled buffer to resize into.
  v1::ScanResponse scan_response;
  *scan_response.mutable_result()->mutable_data() = buffers_->take(bytes);
  grpc::Status status = handler_(context, &scan_request, &scan_response);
  buffers_->give(std::move(*scan_request.mutable_gamma()->mutable_data()));
  if (status.ok()) {
    *response = wire::encode_response(&scan_response, buffers_);
  } else {
    buffers_->give(std::move(*scan_response.mutable_result()->mutable_data()));
  }
  return status;
}

}  // namespace scan::server
