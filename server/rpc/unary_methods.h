// A grpc::Service that serves chosen sync unary methods of a proto service, added one by one: what
// protoc generates per method, without claiming the service's other methods (ScanService.Scan is
// served on raw buffers by wire_service.h, so the generated ScanService cannot be registered).
#pragma once

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/method_handler.h>

namespace scan::server {

class UnaryMethods : public grpc::Service {
 protected:
  // Serves `path` ("/package.Service/Method") with `method` of `self`.
  template <class Self, class Request, class Response>
  void add_unary(const char* path, Self* self,
                 grpc::Status (Self::*method)(grpc::ServerContext*, const Request&, Response*)) {
    using Handler = grpc::internal::RpcMethodHandler<Self, Request, Response>;
    AddMethod(new grpc::internal::RpcServiceMethod(
        path, grpc::internal::RpcMethod::NORMAL_RPC,
        new Handler(
            [method](Self* service, grpc::ServerContext* context, const Request* request,
                     Response* response) {
              return (service->*method)(context, *request, response);
            },
            self)));
  }
};

}  // namespace scan::server
