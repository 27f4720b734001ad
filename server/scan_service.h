// The ScanService RPC handlers: decode and validate, route, compute into the response, and report
// every finished call to the metrics.
#pragma once

#include "metrics.h"
#include "request_validation.h"
#include "router.h"
#include "scan/v1/scan.grpc.pb.h"

namespace scan::server {

class ScanServiceImpl final : public v1::ScanService::Service {
 public:
  ScanServiceImpl(Router& router, ValidationLimits limits, const ServiceMetrics& metrics)
      : router_(router), limits_(limits), metrics_(metrics) {}

  grpc::Status Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                    v1::ScanResponse* response) override;

 private:
  grpc::Status serve(grpc::ServerContext& context, const v1::ScanRequest& request,
                     v1::ScanResponse& response, RequestRecord& record);

  Router& router_;
  const ValidationLimits limits_;
  const ServiceMetrics& metrics_;
};

}  // namespace scan::server
