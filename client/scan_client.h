// scan::client::Client, the C++ client library every tool of the project uses to call the
// service: one channel, typed requests, server timing and round-trip latency in the result.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <string>

#include "host_tensor.h"
#include "scan/v1/scan.grpc.pb.h"

namespace scan::client {

struct ScanOptions {
  int dim = 0;  // may be negative, as in torch
  v1::BackendPreference backend = v1::BACKEND_PREFERENCE_AUTO;
  std::chrono::milliseconds timeout{0};  // 0 = no deadline
};

struct ScanResult {
  HostTensor result;
  std::string backend;
  v1::Timing server_timing;
  std::chrono::microseconds round_trip{0};
};

class Client {
 public:
  // `target` is a gRPC target, e.g. "localhost:50051" or "dns:///scan.example:50051".
  explicit Client(const std::string& target);
  explicit Client(std::shared_ptr<grpc::Channel> channel);

  // Sends `gamma` (moved into the request, so pass a copy to keep it) and waits for the answer.
  grpc::Status Scan(HostTensor gamma, const ScanOptions& options, ScanResult* result);

  // grpc.health.v1 Check of `service` ("" = the whole server); *serving tells the answer.
  grpc::Status CheckHealth(const std::string& service, bool* serving,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5));

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ScanService::Stub> stub_;
};

// "INVALID_ARGUMENT" and so on, as gRPC's documentation names the codes.
const char* status_code_name(grpc::StatusCode code);

// A channel with message limits raised to gRPC's maximum: tensors are large by nature.
std::shared_ptr<grpc::Channel> make_channel(const std::string& target);

}  // namespace scan::client
