// ScanService.GetServerInfo: what the server runs with (version, backends with their state, load
// and current cost models, GPUs, routing thresholds), so operators can see why a request went where
// it did. The description is built by a plain function (unit-testable with fake backends); the
// service registers only that method, beside the zero-copy Scan of wire_service.h.
#pragma once

#include <grpcpp/server_context.h>

#include <string>

#include "routing/router.h"
#include "rpc/security.h"
#include "rpc/unary_methods.h"
#include "scan/kernels/gpu_inventory.h"
#include "scan/v1/scan.grpc.pb.h"

namespace scan::server {

v1::GetServerInfoResponse describe_server(const Router& router, const kernels::GpuInventory& gpus,
                                          const std::string& version);

class ServerInfoService final : public UnaryMethods {
 public:
  // `authenticator` null: no token needed. `fixed`: the fields that never change while the server
  // runs (limits, shared-memory kinds, host id), merged into every answer. Everything referenced
  // must outlive the service.
  ServerInfoService(const Router& router, const kernels::GpuInventory& gpus,
                    const TokenAuthenticator* authenticator, v1::GetServerInfoResponse fixed = {});

 private:
  grpc::Status handle(grpc::ServerContext* context, const v1::GetServerInfoRequest& request,
                      v1::GetServerInfoResponse* response);

  const Router& router_;
  const kernels::GpuInventory& gpus_;
  const TokenAuthenticator* authenticator_;
  const v1::GetServerInfoResponse fixed_;
};

}  // namespace scan::server
