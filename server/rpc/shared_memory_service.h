// ScanService.RegisterSharedMemory, UnregisterSharedMemory and ListSharedMemory over the
// server's region registry (shared_memory/region_registry.h). Served whether or not shared memory
// is allowed, so that a client gets a precise FAILED_PRECONDITION instead of UNIMPLEMENTED.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "admission/request_validation.h"
#include "rpc/security.h"
#include "rpc/unary_methods.h"
#include "scan/v1/scan.pb.h"
#include "shared_memory/region_registry.h"

namespace scan::server {

// The namespace a caller's regions live in: its TLS client-certificate identity when it has one,
// else one namespace shared by every caller (with a token, by every holder of that token).
std::string caller_namespace(const grpc::ServerContextBase& context);

// A registry status as the client sees it.
grpc::Status to_status(const shared_memory::Error& error);

// The regions a validated Scan request names (gamma.shared_memory, output), held in *input and
// *output for the call, with scan->input pointed into the first: bounds, writability and aliasing
// checked. `registry` null: shared memory is off, and a request naming a region is refused.
grpc::Status use_request_regions(shared_memory::Registry* registry, const std::string& owner,
                                 const v1::ScanRequest& request, ValidatedScan* scan,
                                 shared_memory::RegionUse* input, shared_memory::RegionUse* output);

class SharedMemoryService final : public UnaryMethods {
 public:
  // `registry` null: shared memory is off (the server lacks --allow-shared-memory). `changed`
  // runs after every change of the registry (the metrics). Everything referenced must outlive
  // the service.
  SharedMemoryService(shared_memory::Registry* registry, const TokenAuthenticator* authenticator,
                      std::function<void()> changed = {});

  // The operations behind the RPCs, in the caller's namespace, each checking credentials and that
  // shared memory is on: also KServe's shared-memory RPCs (rpc/inference_service.h), so both
  // protocols share one set of regions, rules and limits. `cuda_handle` is a cudaIpcMemHandle_t.
  grpc::Status add_system(const grpc::ServerContextBase& context,
                          const shared_memory::RegionSpec& spec) const;
  grpc::Status add_cuda(const grpc::ServerContextBase& context,
                        const shared_memory::RegionSpec& spec,
                        const std::string& cuda_handle) const;
  grpc::Status remove(const grpc::ServerContextBase& context, const std::string& name) const;
  grpc::Status list(const grpc::ServerContextBase& context,
                    std::vector<shared_memory::RegionStatus>* regions) const;
  bool cuda_supported() const { return registry_ != nullptr && registry_->cuda_supported(); }

 private:
  grpc::Status check(const grpc::ServerContextBase& context) const;
  grpc::Status register_region(grpc::ServerContext* context,
                               const v1::RegisterSharedMemoryRequest& request,
                               v1::RegisterSharedMemoryResponse* response);
  grpc::Status unregister_region(grpc::ServerContext* context,
                                 const v1::UnregisterSharedMemoryRequest& request,
                                 v1::UnregisterSharedMemoryResponse* response);
  grpc::Status list_regions(grpc::ServerContext* context,
                            const v1::ListSharedMemoryRequest& request,
                            v1::ListSharedMemoryResponse* response);

  shared_memory::Registry* registry_;
  const TokenAuthenticator* authenticator_;
  const std::function<void()> changed_;
};

}  // namespace scan::server
