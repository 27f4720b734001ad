// scan::client::Client, the C++ client library every tool of the project uses to call the
// service: one channel, typed requests, server timing and round-trip latency in the result.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scan/client/host_tensor.h"
#include "scan/v1/scan.grpc.pb.h"
#include "scan/wire/codec.h"
#include "scan/wire/status_code_name.h"
#include "scan/wire/transport.h"

namespace scan::client {

struct ScanOptions {
  int dim = 0;  // may be negative, as in torch
  v1::BackendPreference backend = v1::BACKEND_PREFERENCE_AUTO;
  std::chrono::milliseconds timeout{0};  // 0 = no deadline
  // 0: one Scan call. Otherwise a ScanStream call sending the tensor in chunks of this many bytes
  // (or fewer, if the server accepts less): for tensors larger than one gRPC message.
  std::size_t stream_chunk_bytes = 0;
  // kSystem: the tensor and its result go through a POSIX shared-memory region of this call
  // (created, registered, unregistered and removed around it) instead of gRPC; the server must
  // share the host and allow it (FAILED_PRECONDITION otherwise). kAuto: so when the server says
  // it can (GetServerInfo: shared_memory_kinds, host_id), else gRPC. Callers that scan many
  // tensors keep a region registered instead (scan/client/shared_memory.h).
  enum class SharedMemory { kOff, kSystem, kAuto };
  SharedMemory shared_memory = SharedMemory::kOff;
};

// A chunk size for ScanStream that keeps messages small without costing throughput.
inline constexpr std::size_t kDefaultStreamChunkBytes = std::size_t{4} << 20;

struct ScanResult {
  HostTensor result;
  std::string backend;
  v1::Timing server_timing;
  std::chrono::microseconds round_trip{0};
  std::string transport;  // "grpc", "grpc-stream" or "system-shm"
};

// How to reach a server that requires TLS, mutual TLS or a bearer token. Empty fields: off.
struct Security {
  std::string tls_ca_file;    // PEM CA bundle to verify the server; set: the channel uses TLS
  std::string tls_cert_file;  // PEM client certificate, for servers that require one (mTLS)
  std::string tls_key_file;   // PEM private key of that certificate
  std::string auth_token;     // sent with every call as "authorization: Bearer <token>"

  bool tls() const { return !tls_ca_file.empty(); }
};

class Client {
 public:
  // `target` is a gRPC target, e.g. "localhost:50051" or "dns:///scan.example:50051".
  explicit Client(const std::string& target);
  explicit Client(std::shared_ptr<grpc::Channel> channel);
  // Waits for the callbacks of StartScan calls still running.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // A client of a server with TLS and/or token auth; null, with *error set, when a certificate
  // or key file cannot be read.
  static std::unique_ptr<Client> Connect(const std::string& target, const Security& security,
                                         std::string* error);

  // Every later call carries "authorization: Bearer <token>" (empty: no header).
  void set_auth_token(std::string token) { auth_token_ = std::move(token); }
  // How often Scan and ScanStream send a call whose replica went away (UNAVAILABLE) on top of
  // gRPC's own retries, within the call's deadline; 1: once. Default 3. Load generators that
  // disable retries set 1, so that every refusal is seen and counted.
  void set_max_attempts(int attempts) { max_attempts_ = attempts < 1 ? 1 : attempts; }

  // Sends `gamma` (moved into the request, so pass a copy to keep it) and waits for the answer.
  // The tensor bytes go to gRPC without a copy (see scan/wire/codec.h).
  grpc::Status Scan(HostTensor gamma, const ScanOptions& options, ScanResult* result);
  // The same call for a request built by the caller (its gamma data is moved out).
  grpc::Status Scan(v1::ScanRequest* request, std::chrono::milliseconds timeout,
                    v1::ScanResponse* response, std::chrono::microseconds* round_trip);
  // ScanStream: sends `request` (whose gamma data stays empty) as the header, then `payload` as
  // gamma's data in chunks of `chunk_bytes` by reference, and collects the result's chunks into
  // response->result().data(). Sent again (the payload is kept) if a replica goes away.
  grpc::Status ScanStream(const v1::ScanRequest& request,
                          std::shared_ptr<const std::string> payload, std::size_t chunk_bytes,
                          std::chrono::milliseconds timeout, v1::ScanResponse* response,
                          std::chrono::microseconds* round_trip);
  // Starts a call that sends `payload` as the gamma data of `request` (whose own data stays
  // empty) without copying it, so the same tensor can be sent again and again, and returns at
  // once; `done` runs on a gRPC thread when the answer is in. For load generators: no thread
  // waits per call in flight.
  using Done = std::function<void(const grpc::Status&, v1::ScanResponse&)>;
  // Count of StartScan calls not finished yet (shared with the calls themselves).
  struct PendingCalls {
    std::mutex mutex;
    std::condition_variable idle;
    int calls = 0;
  };
  void StartScan(const v1::ScanRequest& request, std::shared_ptr<const std::string> payload,
                 std::chrono::milliseconds timeout, Done done);

  // grpc.health.v1 Check of `service` ("" = the whole server); *serving tells the answer.
  // ScanService.GetServerInfo: version, backends with state and cost models, GPUs.
  grpc::Status GetServerInfo(v1::GetServerInfoResponse* info,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // ScanService.RegisterSharedMemory / UnregisterSharedMemory / ListSharedMemory (see
  // scan/client/shared_memory.h for creating a region to register). Scan requests then name the
  // region in gamma.shared_memory and output (Scan(v1::ScanRequest*, ...)).
  grpc::Status RegisterSharedMemory(const v1::RegisterSharedMemoryRequest& request,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
  grpc::Status UnregisterSharedMemory(const std::string& name,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  grpc::Status ListSharedMemory(v1::ListSharedMemoryResponse* regions,
                                std::chrono::milliseconds timeout = std::chrono::seconds(5));

  grpc::Status CheckHealth(const std::string& service, bool* serving,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5));

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  // Scan(HostTensor) through a shared-memory region made for the call.
  grpc::Status scan_through_shared_memory(const HostTensor& gamma, v1::ScanRequest* request,
                                          const ScanOptions& options, v1::ScanResponse* response,
                                          std::chrono::microseconds* round_trip);
  grpc::Status call(const grpc::ByteBuffer& request, std::chrono::milliseconds timeout,
                    v1::ScanResponse* response);
  // One ScanStream attempt; *accepted tells whether the server took the header (after which a
  // refusal has cost the upload).
  grpc::Status stream_once(const v1::ScanRequest& request, const std::string& payload,
                           const std::shared_ptr<const std::string>& owner, std::size_t chunk_bytes,
                           std::chrono::system_clock::time_point deadline,
                           v1::ScanResponse* response, bool* accepted);

  // Sets the deadline (0 = none) and the credentials every call carries.
  void prepare(grpc::ClientContext* context, std::chrono::system_clock::time_point deadline) const;

  int max_attempts_ = 3;
  std::string auth_token_;
  std::shared_ptr<grpc::Channel> channel_;
  // Scan, registered with the channel once; called with raw buffers (see scan/wire/codec.h).
  grpc::internal::RpcMethod scan_method_;
  grpc::internal::RpcMethod scan_stream_method_;
  // Response buffers of StartScan calls, reused: their answers are not handed out.
  std::shared_ptr<wire::BufferPool> buffers_;
  // StartScan calls whose callback has not returned yet. The destructor waits for them: the last
  // reference to the channel must not go away inside a callback, where gRPC 1.51 would shut down
  // the very completion queue running it (assertion in grpc_cq_internal_unref).
  std::shared_ptr<PendingCalls> pending_ = std::make_shared<PendingCalls>();
};

// Spreads calls over several replicas given as separate targets, one channel each, in turn.
// (One target that resolves to several addresses, e.g. "dns:///scan.example:50051", is already
// balanced inside its channel: make_channel selects gRPC's round_robin policy.)
class RoundRobinClients {
 public:
  // Overrides with GRPC_ARG_ENABLE_RETRIES 0 also turn off the clients' own resending.
  explicit RoundRobinClients(const std::vector<std::string>& targets,
                             const transport::ChannelArgs& overrides = {});

  // The client for the next call; safe to call from many threads.
  Client& next();
  std::size_t size() const { return clients_.size(); }

 private:
  std::vector<std::unique_ptr<Client>> clients_;
  std::atomic<std::size_t> next_{0};
};

// "a,b,c" -> {"a", "b", "c"}; empty parts are dropped.
std::vector<std::string> split_targets(const std::string& text);

using v1::status_code_name;

// A channel with message limits raised to gRPC's maximum (tensors are large by nature), the
// transport tuning of transport.h, then `overrides`, and round_robin over every address the
// target resolves to.
// `credentials` null means plaintext.
std::shared_ptr<grpc::Channel> make_channel(
    const std::string& target, const transport::ChannelArgs& overrides = {},
    std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

}  // namespace scan::client
