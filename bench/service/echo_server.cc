// scan-bench-echo: answers /scan.v1.ScanService/Scan with the request's own tensor, on the same
// gRPC stack as scan-server (configure_transport, WireScanService, the same thread quota). Nothing
// is validated or computed, so its figures are the floor the real service is measured against.
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "rpc/stream_assembly.h"
#include "rpc/wire_service.h"
#include "scan/wire/codec.h"
#include "scan/wire/dtype.h"
#include "scan/wire/limits.h"
#include "scan/wire/transport.h"

namespace {

constexpr const char* kUsage = R"(Usage: scan-bench-echo [--listen ADDR] [--port-file FILE]
                       [--max-message-bytes N] [--channel-arg NAME=INT]...
Serves /scan.v1.ScanService/Scan and ScanStream by echoing gamma as result (backend "echo"), for
benchmarks.
)";

// scan-server's default in-flight byte budget (4 x its 256 MiB tensor limit), which it also
// grants its buffer pool.
constexpr std::size_t kPooledBytes = 4 * scan::wire::kDefaultMaxTensorBytes;
// scan-server's default --stream-chunk-bytes.
constexpr std::size_t kStreamChunkBytes = scan::wire::kDefaultStreamChunkBytes;

// The tensor's size by its shape and dtype (0 for anything invalid, or over the pool's size):
// just enough checking to reassemble a stream exactly as the server would.
std::size_t declared_bytes(const scan::v1::Tensor& tensor) {
  const auto dtype = scan::v1::to_kernel_dtype(tensor.dtype());
  if (!dtype) return 0;
  std::size_t bytes = scan::kernels::element_size(*dtype);
  for (const std::int64_t size : tensor.shape()) {
    if (size < 0 || __builtin_mul_overflow(bytes, static_cast<std::size_t>(size), &bytes)) {
      return 0;
    }
  }
  return bytes <= kPooledBytes ? bytes : 0;
}

// ScanStream the same way as the server: the header, `accepted`, the chunks reassembled as the
// server does, then the result header and the same bytes back in chunks.
class EchoStream final : public scan::server::ScanStreamSession {
 public:
  explicit EchoStream(std::shared_ptr<scan::wire::BufferPool> buffers)
      : buffers_(std::move(buffers)) {}

  grpc::Status begin(grpc::ByteBuffer* message, grpc::ByteBuffer* reply) override {
    if (auto status = scan::server::parse_stream_header(message, &header_); !status.ok()) {
      return status;
    }
    expected_ = declared_bytes(header_.gamma());
    tensor_ = std::make_shared<scan::wire::PooledBuffer>(buffers_, expected_);
    assembler_.emplace(&tensor_->bytes(), expected_);
    scan::v1::ScanStreamResponse accepted;
    accepted.mutable_accepted()->set_max_chunk_bytes(kStreamChunkBytes);
    *reply = scan::wire::encode_message(accepted);
    return grpc::Status::OK;
  }
  grpc::Status add(grpc::ByteBuffer* chunk) override { return assembler_->add(chunk); }
  grpc::Status complete(grpc::ByteBuffer* head,
                        std::shared_ptr<scan::wire::PooledBuffer>* result) override {
    if (auto status = assembler_->finish(); !status.ok()) return status;
    scan::v1::ScanStreamResponse reply;
    scan::v1::ScanResponse* response = reply.mutable_header();
    response->mutable_result()->Swap(header_.mutable_gamma());
    response->set_backend("echo");
    *head = scan::wire::encode_message(reply);
    *result = std::move(tensor_);
    return grpc::Status::OK;
  }
  void end(const grpc::Status&, const scan::server::StreamEnd&) override {
    assembler_.reset();
    tensor_.reset();
  }
  std::size_t received_bytes() const override {
    return assembler_ ? assembler_->received_bytes() : 0;
  }
  std::size_t expected_bytes() const override { return expected_; }

 private:
  const std::shared_ptr<scan::wire::BufferPool> buffers_;
  scan::v1::ScanRequest header_;
  std::size_t expected_ = 0;
  std::shared_ptr<scan::wire::PooledBuffer> tensor_;
  std::optional<scan::server::StreamAssembler> assembler_;
};

grpc::Server* g_server = nullptr;

void stop(int) {
  // Shutdown from a signal handler is not safe; a helper thread does it.
  std::thread([] { g_server->Shutdown(); }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  std::string port_file;
  long long message_limit = scan::wire::kDefaultMaxTensorBytes + scan::wire::kMessageOverheadBytes;
  scan::transport::ChannelArgs overrides;
  for (int index = 1; index < argc; ++index) {
    const std::string arg = argv[index];
    const bool has_value = index + 1 < argc;
    if (arg == "--listen" && has_value) {
      listen = argv[++index];
    } else if (arg == "--port-file" && has_value) {
      port_file = argv[++index];
    } else if (arg == "--max-message-bytes" && has_value) {
      message_limit = std::atoll(argv[++index]);
    } else if (arg == "--channel-arg" && has_value &&
               scan::transport::parse_channel_arg(argv[index + 1], &overrides)) {
      ++index;
    } else {
      std::fprintf(stderr, "%s", kUsage);
      return arg == "--help" ? 0 : 2;
    }
  }

  scan::server::WireScanService echo(
      [](grpc::ServerContextBase*, scan::v1::ScanRequest* request, scan::v1::ScanResponse* response,
         scan::server::Waiting, scan::wire::BufferPool&) -> scan::server::HandlerResult {
        response->mutable_result()->Swap(request->mutable_gamma());
        response->set_backend("echo");
        return {grpc::Status::OK, nullptr};
      },
      kPooledBytes,
      [](grpc::ServerContextBase*, const std::shared_ptr<scan::wire::BufferPool>& buffers) {
        return std::make_unique<EchoStream>(buffers);
      });
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  scan::server::configure_transport(builder, message_limit, overrides);
  // scan-server's default --rpc-threads on this machine, so both serve with the same threads.
  grpc::ResourceQuota quota("scan-bench-echo");
  quota.SetMaxThreads(std::max(64, 8 * static_cast<int>(std::thread::hardware_concurrency())));
  builder.SetResourceQuota(quota);
  builder.RegisterService(&echo);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "scan-bench-echo: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  if (!port_file.empty()) std::ofstream(port_file) << port << "\n";
  std::fprintf(stderr, "scan-bench-echo: listening on port %d\n", port);
  g_server = server.get();
  std::signal(SIGTERM, stop);
  std::signal(SIGINT, stop);
  server->Wait();
  return 0;
}
