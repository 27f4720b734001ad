// The one place where the service's admission and routing outcomes become gRPC statuses.
#pragma once

#include <grpcpp/support/status.h>

#include "admission/outcome.h"

namespace scan::server {

inline grpc::StatusCode status_code_of(Refusal reason) {
  switch (reason) {
    case Refusal::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Refusal::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Refusal::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Refusal::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
  }
  return grpc::StatusCode::INTERNAL;
}

inline grpc::Status to_status(const Outcome& outcome) {
  if (outcome.ok()) return grpc::Status::OK;
  return {status_code_of(outcome.reason()), outcome.message()};
}

}  // namespace scan::server
