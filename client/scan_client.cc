#include "scan_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <limits>

#include "grpc/health/v1/health.grpc.pb.h"
#include "scan/v1/dtype.h"

namespace scan::client {
namespace {

void apply_timeout(grpc::ClientContext* context, std::chrono::milliseconds timeout) {
  if (timeout.count() > 0) context->set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace

const char* status_code_name(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const auto index = static_cast<std::size_t>(code);
  return index < std::size(kNames) ? kNames[index] : "UNKNOWN_CODE";
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& target) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(std::numeric_limits<int>::max());
  arguments.SetMaxSendMessageSize(std::numeric_limits<int>::max());
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
}

Client::Client(const std::string& target) : Client(make_channel(target)) {}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(v1::ScanService::NewStub(channel_)) {}

grpc::Status Client::Scan(HostTensor gamma, const ScanOptions& options, ScanResult* result) {
  v1::ScanRequest request;
  v1::Tensor* tensor = request.mutable_gamma();
  tensor->set_dtype(v1::to_wire_dtype(gamma.dtype));
  tensor->mutable_shape()->Add(gamma.shape.begin(), gamma.shape.end());
  *tensor->mutable_data() = std::move(gamma.data);
  request.set_dim(options.dim);
  request.set_backend(options.backend);

  grpc::ClientContext context;
  apply_timeout(&context, options.timeout);
  v1::ScanResponse response;
  const auto sent = std::chrono::steady_clock::now();
  grpc::Status status = stub_->Scan(&context, request, &response);
  result->round_trip = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - sent);
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
  apply_timeout(&context, timeout);
  grpc::Status status = health->Check(&context, request, &response);
  *serving = status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  return status;
}

}  // namespace scan::client
