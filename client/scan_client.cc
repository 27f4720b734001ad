#include "scan_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_callback.h>

#include <fstream>
#include <limits>
#include <sstream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "scan/v1/dtype.h"
#include "wire_codec.h"

namespace scan::client {
namespace {

constexpr const char* kScanMethod = "/scan.v1.ScanService/Scan";
// Idle response buffers a client keeps for StartScan: enough for a few of the largest tensors.
constexpr std::size_t kPooledBytes = std::size_t{1} << 30;

// The deadline `timeout` from now; the default time point (no deadline) when it is 0.
std::chrono::system_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  return timeout.count() > 0 ? std::chrono::system_clock::now() + timeout
                             : std::chrono::system_clock::time_point();
}

}  // namespace

std::shared_ptr<grpc::Channel> make_channel(const std::string& target,
                                            const transport::ChannelArgs& overrides,
                                            std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(std::numeric_limits<int>::max());
  arguments.SetMaxSendMessageSize(std::numeric_limits<int>::max());
  for (const auto& [name, value] : transport::tuned_channel_args()) arguments.SetInt(name, value);
  for (const auto& [name, value] : overrides) arguments.SetInt(name, value);
  arguments.SetLoadBalancingPolicyName("round_robin");
  // A scan is a pure function of its request, so any attempt the server did not complete can be
  // sent again: to another replica when one is down or draining (UNAVAILABLE, or CANCELLED by a
  // server shutting down), after backoff when it is saturated (RESOURCE_EXHAUSTED).
  arguments.SetServiceConfigJSON(R"({
    "methodConfig": [{
      "name": [{"service": "scan.v1.ScanService"}],
      "retryPolicy": {
        "maxAttempts": 5,
        "initialBackoff": "0.05s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"]
      }
    }]
  })");
  // Retries resend from a buffer that only references the request's slices (the tensor bytes
  // are not copied), so it can cover every request size instead of gRPC's default 256 KiB.
  arguments.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, std::numeric_limits<int>::max());
  if (!credentials) credentials = grpc::InsecureChannelCredentials();
  return grpc::CreateCustomChannel(target, credentials, arguments);
}

std::vector<std::string> split_targets(const std::string& text) {
  std::vector<std::string> targets;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) targets.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return targets;
}

RoundRobinClients::RoundRobinClients(const std::vector<std::string>& targets,
                                     const transport::ChannelArgs& overrides) {
  for (const auto& target : targets) {
    clients_.push_back(std::make_unique<Client>(make_channel(target, overrides)));
  }
}

Client& RoundRobinClients::next() {
  return *clients_[next_.fetch_add(1, std::memory_order_relaxed) % clients_.size()];
}

Client::Client(const std::string& target) : Client(make_channel(target)) {}

Client::~Client() {
  std::unique_lock<std::mutex> lock(pending_->mutex);
  pending_->idle.wait(lock, [this] { return pending_->calls == 0; });
}

std::unique_ptr<Client> Client::Connect(const std::string& target, const Security& security,
                                        std::string* error) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (security.tls()) {
    grpc::SslCredentialsOptions options;
    const std::pair<const std::string*, std::string*> files[] = {
        {&security.tls_ca_file, &options.pem_root_certs},
        {&security.tls_cert_file, &options.pem_cert_chain},
        {&security.tls_key_file, &options.pem_private_key}};
    for (const auto& [path, contents] : files) {
      if (path->empty()) continue;
      std::ifstream file(*path, std::ios::binary);
      std::ostringstream text;
      text << file.rdbuf();
      if (!file || text.str().empty()) {
        *error = "cannot read " + *path;
        return nullptr;
      }
      *contents = text.str();
    }
    credentials = grpc::SslCredentials(options);
  }
  auto client = std::make_unique<Client>(make_channel(target, {}, credentials));
  client->set_auth_token(security.auth_token);
  return client;
}

void Client::prepare(grpc::ClientContext* context,
                     std::chrono::system_clock::time_point deadline) const {
  if (deadline != std::chrono::system_clock::time_point()) context->set_deadline(deadline);
  if (!auth_token_.empty()) context->AddMetadata("authorization", "Bearer " + auth_token_);
}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      scan_method_(kScanMethod, grpc::internal::RpcMethod::NORMAL_RPC, channel_),
      buffers_(std::make_shared<wire::BufferPool>(kPooledBytes)) {}

grpc::Status Client::call(const grpc::ByteBuffer& request, std::chrono::milliseconds timeout,
                          v1::ScanResponse* response) {
  // The generated stub would serialise through protobuf and copy the tensor; the raw method sends
  // the zero-copy buffer instead. Same method name, same bytes on the wire.
  const auto deadline = std::chrono::system_clock::now() + timeout;
  grpc::Status status;
  // gRPC's own retries (the channel's service config) stop once a replica has started answering;
  // a replica that dies mid-answer leaves UNAVAILABLE. A scan is a pure function of its request,
  // so sending it again is always safe: a few more attempts, within the same overall deadline.
  for (int attempt = 0; attempt < 3; ++attempt) {
    grpc::ClientContext context;
    prepare(&context, timeout.count() > 0 ? deadline : std::chrono::system_clock::time_point());
    grpc::ByteBuffer response_buffer;
    status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        channel_.get(), scan_method_, &context, request, &response_buffer);
    if (status.ok()) return wire::decode(&response_buffer, response);
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return status;
}

grpc::Status Client::Scan(v1::ScanRequest* request, std::chrono::milliseconds timeout,
                          v1::ScanResponse* response, std::chrono::microseconds* round_trip) {
  const auto sent = std::chrono::steady_clock::now();
  grpc::Status status = call(wire::encode_request(request), timeout, response);
  *round_trip = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - sent);
  return status;
}

namespace {

// One StartScan call. A reactor rather than a completion callback: gRPC runs a unary call's
// completion callback before releasing the call, so a Client destroyed as soon as the last
// callback signalled could free the channel's completion queue under gRPC's feet (seen as a
// double free under ASan). OnDone runs after gRPC has released the call.
class PendingScan final : public grpc::ClientUnaryReactor {
 public:
  PendingScan(Client::Done done, std::shared_ptr<wire::BufferPool> buffers,
              std::shared_ptr<Client::PendingCalls> pending)
      : done_(std::move(done)), buffers_(std::move(buffers)), pending_(std::move(pending)) {}

  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;

  void OnDone(const grpc::Status& finished) override {
    grpc::Status status = finished;
    v1::ScanResponse decoded;
    std::string* data = decoded.mutable_result()->mutable_data();
    if (status.ok()) status = wire::decode(&response, &decoded, data, buffers_.get());
    done_(status, decoded);
    buffers_->give(std::move(*decoded.mutable_result()->mutable_data()));
    const std::shared_ptr<Client::PendingCalls> pending = pending_;
    delete this;
    std::lock_guard<std::mutex> lock(pending->mutex);
    if (--pending->calls == 0) pending->idle.notify_all();
  }

 private:
  Client::Done done_;
  std::shared_ptr<wire::BufferPool> buffers_;
  std::shared_ptr<Client::PendingCalls> pending_;
};

}  // namespace

void Client::StartScan(const v1::ScanRequest& request, std::shared_ptr<const std::string> payload,
                       std::chrono::milliseconds timeout, Done done) {
  {
    std::lock_guard<std::mutex> lock(pending_->mutex);
    ++pending_->calls;
  }
  auto* call = new PendingScan(std::move(done), buffers_, pending_);
  prepare(&call->context, deadline_after(timeout));
  call->request = wire::encode_request(request, std::move(payload));
  grpc::internal::ClientCallbackUnaryFactory::Create<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel_.get(), scan_method_, &call->context, &call->request, &call->response, call);
  call->StartCall();
}

grpc::Status Client::Scan(HostTensor gamma, const ScanOptions& options, ScanResult* result) {
  v1::ScanRequest request;
  v1::Tensor* tensor = request.mutable_gamma();
  tensor->set_dtype(v1::to_wire_dtype(gamma.dtype));
  tensor->mutable_shape()->Add(gamma.shape.begin(), gamma.shape.end());
  *tensor->mutable_data() = std::move(gamma.data);
  request.set_dim(options.dim);
  request.set_backend(options.backend);

  v1::ScanResponse response;
  grpc::Status status = Scan(&request, options.timeout, &response, &result->round_trip);
  if (!status.ok()) return status;

  const auto dtype = v1::to_kernel_dtype(response.result().dtype());
  if (!dtype) {
    return {grpc::StatusCode::INTERNAL, "server answered with an unknown result dtype"};
  }
  result->result.dtype = *dtype;
  result->result.shape.assign(response.result().shape().begin(), response.result().shape().end());
  result->result.data = std::move(*response.mutable_result()->mutable_data());
  result->backend = response.backend();
  result->server_timing = response.timing();
  return status;
}

grpc::Status Client::CheckHealth(const std::string& service, bool* serving,
                                 std::chrono::milliseconds timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  prepare(&context, deadline_after(timeout));
  grpc::Status status = health->Check(&context, request, &response);
  *serving = status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  return status;
}

grpc::Status Client::GetServerInfo(v1::GetServerInfoResponse* info,
                                   std::chrono::milliseconds timeout) {
  // A plain generated stub: the reply is small, the zero-copy path is for tensors.
  auto stub = v1::ScanService::NewStub(channel_);
  grpc::ClientContext context;
  prepare(&context, deadline_after(timeout));
  return stub->GetServerInfo(&context, v1::GetServerInfoRequest(), info);
}

}  // namespace scan::client
