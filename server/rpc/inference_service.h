// inference.GRPCInferenceService, the Open Inference Protocol (KServe v2) with the Triton
// extensions its tools use, on the server's one port beside scan.v1, over the same router,
// backends, limits, metrics, credentials and shared-memory regions:
//   - ServerLive, ServerReady, ModelReady: no credentials needed (probes), like grpc.health.v1;
//   - ServerMetadata, ModelMetadata, ModelConfig, ModelStatistics: the model `cumprod`;
//   - ModelInfer: served as a Scan by the zero-copy transport (rpc/inference_codec.h);
//   - System/CudaSharedMemory{Status,Register,Unregister}: the scan.v1 regions
//     (rpc/shared_memory_service.h), one namespace for both kinds, as in Triton.
// ServerMetadata lists exactly the extensions that work on this server.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "inference/grpc_service.pb.h"
#include "metrics/metrics.h"
#include "rpc/inference_codec.h"
#include "rpc/scan_service.h"
#include "rpc/security.h"
#include "rpc/shared_memory_service.h"
#include "rpc/unary_methods.h"
#include "rpc/wire_service.h"

namespace scan::server {

struct InferenceServiceOptions {
  std::string server_version;
  int max_rank = 16;
  // --allow-shared-memory: the shared-memory extensions are listed and served.
  bool shared_memory = false;
};

class InferenceService final : public UnaryMethods {
 public:
  // `ready`: false until the server serves, and again from the start of its shutdown.
  // Everything referenced must outlive the service.
  InferenceService(ScanServiceImpl& scans, WireScanService& transport,
                   const ServiceMetrics& metrics, const SharedMemoryService& shared_memory,
                   const TokenAuthenticator* authenticator, const std::atomic<bool>& ready,
                   InferenceServiceOptions options);

  // The extensions ServerMetadata lists (Triton's names).
  std::vector<std::string> extensions() const;

 private:
  grpc::Status check(const grpc::ServerContextBase& context) const;
  grpc::Status server_live(grpc::ServerContext* context,
                           const inference::ServerLiveRequest& request,
                           inference::ServerLiveResponse* response);
  grpc::Status server_ready(grpc::ServerContext* context,
                            const inference::ServerReadyRequest& request,
                            inference::ServerReadyResponse* response);
  grpc::Status model_ready(grpc::ServerContext* context,
                           const inference::ModelReadyRequest& request,
                           inference::ModelReadyResponse* response);
  grpc::Status server_metadata(grpc::ServerContext* context,
                               const inference::ServerMetadataRequest& request,
                               inference::ServerMetadataResponse* response);
  grpc::Status model_metadata(grpc::ServerContext* context,
                              const inference::ModelMetadataRequest& request,
                              inference::ModelMetadataResponse* response);
  grpc::Status model_config(grpc::ServerContext* context,
                            const inference::ModelConfigRequest& request,
                            inference::ModelConfigResponse* response);
  grpc::Status model_statistics(grpc::ServerContext* context,
                                const inference::ModelStatisticsRequest& request,
                                inference::ModelStatisticsResponse* response);
  grpc::Status system_status(grpc::ServerContext* context,
                             const inference::SystemSharedMemoryStatusRequest& request,
                             inference::SystemSharedMemoryStatusResponse* response);
  grpc::Status system_register(grpc::ServerContext* context,
                               const inference::SystemSharedMemoryRegisterRequest& request,
                               inference::SystemSharedMemoryRegisterResponse* response);
  grpc::Status system_unregister(grpc::ServerContext* context,
                                 const inference::SystemSharedMemoryUnregisterRequest& request,
                                 inference::SystemSharedMemoryUnregisterResponse* response);
  grpc::Status cuda_status(grpc::ServerContext* context,
                           const inference::CudaSharedMemoryStatusRequest& request,
                           inference::CudaSharedMemoryStatusResponse* response);
  grpc::Status cuda_register(grpc::ServerContext* context,
                             const inference::CudaSharedMemoryRegisterRequest& request,
                             inference::CudaSharedMemoryRegisterResponse* response);
  grpc::Status cuda_unregister(grpc::ServerContext* context,
                               const inference::CudaSharedMemoryUnregisterRequest& request,
                               inference::CudaSharedMemoryUnregisterResponse* response);
  // The caller's regions of one kind (`cuda`), all of them or the one `name` names (NOT_FOUND if
  // it has none of that kind by that name).
  grpc::Status regions_of_kind(const grpc::ServerContextBase& context, bool cuda,
                               const std::string& name,
                               std::vector<shared_memory::RegionStatus>* regions) const;
  // Unregisters the region `name` of that kind, or every one of the caller's of that kind.
  grpc::Status unregister_kind(const grpc::ServerContextBase& context, bool cuda,
                               const std::string& name) const;

  const kserve::ModelInferCodec codec_;
  const WireScanService::Handler scan_;
  const ServiceMetrics& metrics_;
  const SharedMemoryService& shared_memory_;
  const TokenAuthenticator* authenticator_;
  const std::atomic<bool>& ready_;
  const InferenceServiceOptions options_;
};

}  // namespace scan::server
