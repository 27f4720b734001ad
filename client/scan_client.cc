#include "scan/client/scan_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/sync_stream.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "scan/client/shared_memory.h"
#include "scan/wire/codec.h"
#include "scan/wire/dtype.h"

namespace scan::client {
namespace {

constexpr const char* kScanMethod = "/scan.v1.ScanService/Scan";
constexpr const char* kScanStreamMethod = "/scan.v1.ScanService/ScanStream";
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
  // server shutting down), after backoff when it is saturated (RESOURCE_EXHAUSTED). The unary
  // methods only: gRPC's transparent retries of the bidi ScanStream, under a replica killed and
  // restarted, left a call hanging until its deadline now and then (resilience_test ReplicaLoss);
  // stream_once's callers retry a stream themselves, with the same bytes, within its deadline.
  arguments.SetServiceConfigJSON(R"({
    "methodConfig": [{
      "name": [{"service": "scan.v1.ScanService", "method": "Scan"},
               {"service": "scan.v1.ScanService", "method": "GetServerInfo"}],
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
  // Channels told not to retry get clients that do not resend either.
  bool retries = true;
  for (const auto& [name, value] : overrides) {
    if (name == GRPC_ARG_ENABLE_RETRIES) retries = value != 0;
  }
  for (const auto& target : targets) {
    clients_.push_back(std::make_unique<Client>(make_channel(target, overrides)));
    if (!retries) clients_.back()->set_max_attempts(1);
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
      scan_stream_method_(kScanStreamMethod, grpc::internal::RpcMethod::BIDI_STREAMING, channel_),
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
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
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

grpc::Status Client::ScanStream(const v1::ScanRequest& request,
                                std::shared_ptr<const std::string> payload, std::size_t chunk_bytes,
                                std::chrono::milliseconds timeout, v1::ScanResponse* response,
                                std::chrono::microseconds* round_trip) {
  const auto sent = std::chrono::steady_clock::now();
  const auto deadline = deadline_after(timeout);
  grpc::Status status;
  // gRPC's own retry policy is for the unary methods only (see make_channel), so streams are
  // retried here, with the same bytes, within the deadline, after backoff (50 ms, doubling, at
  // most 2 s), on what a replica going away or a busy one answers: UNAVAILABLE (refused while
  // draining, or gone), CANCELLED (a server in its shutdown grace cancels streams it had not taken,
  // for as long as its last calls take: this side never cancels one without returning another
  // code), and RESOURCE_EXHAUSTED for the header (a refusal that cost one small message; one after
  // the upload is final).
  constexpr int kStreamAttempts = 8;  // about 5 s of backoff in all
  const int attempts = max_attempts_ > 1 ? kStreamAttempts : 1;
  auto backoff = std::chrono::milliseconds(50);
  for (int attempt = 0; attempt < attempts; ++attempt) {
    response->Clear();
    bool accepted = false;
    status = stream_once(request, *payload, payload, std::max<std::size_t>(chunk_bytes, 1),
                         deadline, response, &accepted);
    const grpc::StatusCode code = status.error_code();
    const bool retryable = code == grpc::StatusCode::UNAVAILABLE ||
                           code == grpc::StatusCode::CANCELLED ||
                           (code == grpc::StatusCode::RESOURCE_EXHAUSTED && !accepted);
    if (!retryable || attempt + 1 == attempts) break;
    if (deadline != std::chrono::system_clock::time_point() &&
        std::chrono::system_clock::now() + backoff >= deadline) {
      break;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(2 * backoff, std::chrono::milliseconds(2000));
  }
  *round_trip = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - sent);
  return status;
}

grpc::Status Client::stream_once(const v1::ScanRequest& request, const std::string& payload,
                                 const std::shared_ptr<const std::string>& owner,
                                 std::size_t chunk_bytes,
                                 std::chrono::system_clock::time_point deadline,
                                 v1::ScanResponse* response, bool* accepted) {
  grpc::ClientContext context;
  prepare(&context, deadline);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel_.get(), scan_stream_method_, &context));
  // The server's status explains an early end better than anything seen on this side.
  auto end = [&](grpc::StatusCode code, const std::string& what) {
    context.TryCancel();
    grpc::Status finished = stream->Finish();
    if (!finished.ok() && finished.error_code() != grpc::StatusCode::CANCELLED) return finished;
    return grpc::Status(code, what);
  };
  auto broken = [&](const std::string& what) {
    return end(grpc::StatusCode::INTERNAL, "ScanStream: " + what);
  };

  v1::ScanStreamRequest head;
  *head.mutable_header() = request;
  grpc::ByteBuffer message;
  if (!stream->Write(wire::encode_message(head)) || !stream->Read(&message)) {
    grpc::Status finished = stream->Finish();
    return finished.ok() ? grpc::Status(grpc::StatusCode::INTERNAL,
                                        "ScanStream: the server ended the call without an answer")
                         : finished;
  }
  v1::ScanStreamResponse answer;
  if (!wire::decode(&message, &answer).ok() ||
      answer.part_case() != v1::ScanStreamResponse::kAccepted) {
    return broken("the server's first message is not `accepted`");
  }
  *accepted = true;
  if (answer.accepted().max_chunk_bytes() > 0) {
    chunk_bytes =
        std::min(chunk_bytes, static_cast<std::size_t>(answer.accepted().max_chunk_bytes()));
  }
  // A failed write means the server ended the call (e.g. refused a chunk): Finish says why.
  bool writing = true;
  for (std::size_t offset = 0; writing && offset < payload.size(); offset += chunk_bytes) {
    const std::size_t size = std::min(chunk_bytes, payload.size() - offset);
    writing = stream->Write(wire::encode_chunk(v1::ScanStreamRequest::kChunkFieldNumber,
                                               payload.data() + offset, size, owner));
  }
  if (writing) stream->WritesDone();

  if (!stream->Read(&message)) {
    grpc::Status finished = stream->Finish();
    return finished.ok() ? grpc::Status(grpc::StatusCode::INTERNAL,
                                        "ScanStream: the server ended the call without a result")
                         : finished;
  }
  answer.Clear();
  if (!wire::decode(&message, &answer).ok() ||
      answer.part_case() != v1::ScanStreamResponse::kHeader) {
    return broken("expected the result's header");
  }
  response->Swap(answer.mutable_header());
  // The result has the tensor's size; the chunks are copied straight into place.
  std::string* data = response->mutable_result()->mutable_data();
  data->clear();
  data->reserve(payload.size());
  while (stream->Read(&message)) {
    switch (wire::append_chunk(&message, v1::ScanStreamResponse::kChunkFieldNumber, data,
                               payload.size())) {
      case wire::ChunkAppend::kAppended:
        continue;
      case wire::ChunkAppend::kOverflow:
        return broken("the result is larger than the tensor sent");
      case wire::ChunkAppend::kNotAChunk:
        break;
    }
    answer.Clear();
    if (!wire::decode(&message, &answer).ok() ||
        answer.part_case() != v1::ScanStreamResponse::kChunk) {
      return broken("expected a chunk of the result");
    }
    if (answer.chunk().size() > payload.size() - data->size()) {
      return broken("the result is larger than the tensor sent");
    }
    data->append(answer.chunk());
  }
  grpc::Status finished = stream->Finish();
  if (finished.ok() && data->size() != payload.size()) {
    return {grpc::StatusCode::INTERNAL, "ScanStream: the result has " +
                                            std::to_string(data->size()) + " bytes, expected " +
                                            std::to_string(payload.size())};
  }
  return finished;
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
  grpc::Status status;
  bool shared_memory = options.shared_memory == ScanOptions::SharedMemory::kSystem;
  if (options.shared_memory == ScanOptions::SharedMemory::kAuto) {
    v1::GetServerInfoResponse info;
    shared_memory = GetServerInfo(&info).ok() && server_shares_system_memory(info);
  }
  if (shared_memory) {
    HostTensor input{gamma.dtype, gamma.shape, std::move(*tensor->mutable_data())};
    tensor->clear_data();
    status = scan_through_shared_memory(input, &request, options, &response, &result->round_trip);
    result->transport = "system-shm";
  } else if (options.stream_chunk_bytes > 0) {
    result->transport = "grpc-stream";
    auto payload = std::make_shared<const std::string>(std::move(*tensor->mutable_data()));
    tensor->clear_data();
    status = ScanStream(request, std::move(payload), options.stream_chunk_bytes, options.timeout,
                        &response, &result->round_trip);
  } else {
    result->transport = "grpc";
    status = Scan(&request, options.timeout, &response, &result->round_trip);
  }
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

grpc::Status Client::scan_through_shared_memory(const HostTensor& gamma, v1::ScanRequest* request,
                                                const ScanOptions& options,
                                                v1::ScanResponse* response,
                                                std::chrono::microseconds* round_trip) {
  const std::size_t bytes = gamma.data.size();
  // The result right behind the input, at an offset aligned for any element type.
  const std::size_t out_offset = (bytes + 63) / 64 * 64;
  std::string error;
  const std::string key = SystemSharedMemory::unique_key("scan");
  auto region = SystemSharedMemory::create(key, out_offset + bytes, &error);
  if (region == nullptr) return {grpc::StatusCode::FAILED_PRECONDITION, error};
  std::memcpy(region->data(), gamma.data.data(), bytes);
  const std::string name = key.substr(1);
  v1::RegisterSharedMemoryRequest registration;
  registration.set_name(name);
  registration.set_kind(v1::SHARED_MEMORY_KIND_SYSTEM);
  registration.set_key(key);
  registration.set_byte_size(static_cast<std::int64_t>(region->size()));
  if (grpc::Status status = RegisterSharedMemory(registration); !status.ok()) return status;
  const auto size = static_cast<std::int64_t>(bytes);
  *request->mutable_gamma()->mutable_shared_memory() = shared_memory_reference(name, 0, size);
  *request->mutable_output() =
      shared_memory_reference(name, static_cast<std::int64_t>(out_offset), size);
  grpc::Status status = Scan(request, options.timeout, response, round_trip);
  if (status.ok()) {
    response->mutable_result()->set_data(region->data() + out_offset, bytes);
    response->mutable_result()->clear_shared_memory();
  }
  UnregisterSharedMemory(name);  // best effort: the server drops it at shutdown anyway
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

grpc::Status Client::RegisterSharedMemory(const v1::RegisterSharedMemoryRequest& request,
                                          std::chrono::milliseconds timeout) {
  auto stub = v1::ScanService::NewStub(channel_);
  grpc::ClientContext context;
  prepare(&context, deadline_after(timeout));
  v1::RegisterSharedMemoryResponse response;
  return stub->RegisterSharedMemory(&context, request, &response);
}

grpc::Status Client::UnregisterSharedMemory(const std::string& name,
                                            std::chrono::milliseconds timeout) {
  auto stub = v1::ScanService::NewStub(channel_);
  grpc::ClientContext context;
  prepare(&context, deadline_after(timeout));
  v1::UnregisterSharedMemoryRequest request;
  request.set_name(name);
  v1::UnregisterSharedMemoryResponse response;
  return stub->UnregisterSharedMemory(&context, request, &response);
}

grpc::Status Client::ListSharedMemory(v1::ListSharedMemoryResponse* regions,
                                      std::chrono::milliseconds timeout) {
  auto stub = v1::ScanService::NewStub(channel_);
  grpc::ClientContext context;
  prepare(&context, deadline_after(timeout));
  return stub->ListSharedMemory(&context, v1::ListSharedMemoryRequest(), regions);
}

}  // namespace scan::client
