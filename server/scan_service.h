// The ScanService RPC handlers: decode and validate, route, compute into the response.
#pragma once

#include "request_validation.h"
#include "router.h"
#include "scan/v1/scan.grpc.pb.h"

namespace scan::server {

class ScanServiceImpl final : public v1::ScanService::Service {
 public:
  ScanServiceImpl(Router& router, ValidationLimits limits) : router_(router), limits_(limits) {}

  grpc::Status Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                    v1::ScanResponse* response) override;

 private:
  Router& router_;
  const ValidationLimits limits_;
};

}  // namespace scan::server
