#include "rpc/shared_memory_service.h"

#include <fmt/format.h>
#include <grpcpp/security/auth_context.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace scan::server {

std::string caller_namespace(const grpc::ServerContextBase& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return {};
  std::string identity;
  for (const grpc::string_ref& part : auth->GetPeerIdentity()) {
    identity.append(part.data(), part.size());
    identity.push_back('\n');
  }
  return identity;
}

grpc::Status to_status(const shared_memory::Error& error) {
  using shared_memory::ErrorCode;
  switch (error.code) {
    case ErrorCode::kOk:
      return grpc::Status::OK;
    case ErrorCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, error.message};
    case ErrorCode::kAlreadyExists:
      return {grpc::StatusCode::ALREADY_EXISTS, error.message};
    case ErrorCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, error.message};
    case ErrorCode::kResourceExhausted:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, error.message};
    case ErrorCode::kPermissionDenied:
      return {grpc::StatusCode::PERMISSION_DENIED, error.message};
    case ErrorCode::kFailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, error.message};
    case ErrorCode::kDataLoss:
      return {grpc::StatusCode::DATA_LOSS, error.message};
  }
  return {grpc::StatusCode::INTERNAL, error.message};
}

namespace {

// Kernels read and write whole elements (vectors of them on the CPU, packets on the GPU), so a
// tensor must start on a multiple of its element size; a client's offset decides that here, where
// over gRPC the server's own buffers do. The region's registered offset counts too.
grpc::Status check_alignment(const shared_memory::RegionUse& use, const ValidatedScan& scan,
                             const char* field) {
  const std::size_t element = kernels::element_size(scan.dtype);
  const auto address = reinterpret_cast<std::uintptr_t>(use.data());
  if (address % element == 0) return grpc::Status::OK;
  return {grpc::StatusCode::INVALID_ARGUMENT,
          fmt::format("{}.offset: the tensor would start {} bytes past a multiple of its element "
                      "size ({} bytes of {}); the region's offset plus this offset must be a "
                      "multiple of it",
                      field, address % element, element, kernels::dtype_name(scan.dtype))};
}

}  // namespace

grpc::Status use_request_regions(shared_memory::Registry* registry, const std::string& owner,
                                 const v1::ScanRequest& request, ValidatedScan* scan,
                                 shared_memory::RegionUse* input,
                                 shared_memory::RegionUse* output) {
  const bool from_region = request.gamma().has_shared_memory();
  const bool to_region = request.has_output();
  if (!from_region && !to_region) return grpc::Status::OK;
  if (registry == nullptr) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            std::string(from_region ? "gamma.shared_memory" : "output") +
                ": shared memory is off on this server; start it with --allow-shared-memory"};
  }
  if (from_region) {
    const v1::SharedMemoryReference& ref = request.gamma().shared_memory();
    if (auto error = registry->use(owner, ref.region(), ref.offset(), ref.byte_size(),
                                   /*for_writing=*/false, "gamma.shared_memory", input);
        !error.ok()) {
      return to_status(error);
    }
    if (auto status = check_alignment(*input, *scan, "gamma.shared_memory"); !status.ok()) {
      return status;
    }
    scan->input = input->data();
  }
  if (to_region) {
    const v1::SharedMemoryReference& ref = request.output();
    if (auto error = registry->use(owner, ref.region(), ref.offset(), ref.byte_size(),
                                   /*for_writing=*/true, "output", output);
        !error.ok()) {
      return to_status(error);
    }
    if (auto status = check_alignment(*output, *scan, "output"); !status.ok()) return status;
  }
  if (*input && input->device() >= 0) {
    // Device memory is scanned where it lies: the result goes to device memory of the same GPU.
    if (!*output) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "output: required for a tensor in a CUDA region (name the same range for an "
              "in-place scan): the result stays in device memory"};
    }
    if (output->device() != input->device()) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "output: a tensor in a CUDA region of GPU " + std::to_string(input->device()) +
                  " is scanned into a CUDA region of the same GPU (or in place)"};
    }
  } else if (*output && output->device() >= 0) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "output: a CUDA region takes only the scan of a tensor in a CUDA region of its GPU"};
  }
  if (shared_memory::partially_aliased(*input, *output)) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "output: overlaps gamma.shared_memory without being the same range; for an in-place "
            "scan name the same region and offset, else use disjoint ranges"};
  }
  return grpc::Status::OK;
}

SharedMemoryService::SharedMemoryService(shared_memory::Registry* registry,
                                         const TokenAuthenticator* authenticator,
                                         std::function<void()> changed)
    : registry_(registry), authenticator_(authenticator), changed_(std::move(changed)) {
  add_unary("/scan.v1.ScanService/RegisterSharedMemory", this,
            &SharedMemoryService::register_region);
  add_unary("/scan.v1.ScanService/UnregisterSharedMemory", this,
            &SharedMemoryService::unregister_region);
  add_unary("/scan.v1.ScanService/ListSharedMemory", this, &SharedMemoryService::list_regions);
}

grpc::Status SharedMemoryService::check(const grpc::ServerContextBase& context) const {
  if (authenticator_ != nullptr) {
    if (grpc::Status status = authenticator_->check(context); !status.ok()) return status;
  }
  if (registry_ == nullptr) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "shared memory is off on this server; start it with --allow-shared-memory"};
  }
  return grpc::Status::OK;
}

grpc::Status SharedMemoryService::add_system(const grpc::ServerContextBase& context,
                                             const shared_memory::RegionSpec& spec) const {
  if (grpc::Status status = check(context); !status.ok()) return status;
  const shared_memory::Error error = registry_->add(caller_namespace(context), spec);
  if (error.ok() && changed_) changed_();
  return to_status(error);
}

grpc::Status SharedMemoryService::add_cuda(const grpc::ServerContextBase& context,
                                           const shared_memory::RegionSpec& spec,
                                           const std::string& cuda_handle) const {
  if (grpc::Status status = check(context); !status.ok()) return status;
  if (!registry_->cuda_supported()) {
    return {grpc::StatusCode::UNIMPLEMENTED,
            "this server scans no CUDA regions (no GPU backend; see GetServerInfo."
            "shared_memory_kinds); use system shared memory"};
  }
  const shared_memory::Error error =
      registry_->add_cuda(caller_namespace(context), spec, cuda_handle);
  if (error.ok() && changed_) changed_();
  return to_status(error);
}

grpc::Status SharedMemoryService::remove(const grpc::ServerContextBase& context,
                                         const std::string& name) const {
  if (grpc::Status status = check(context); !status.ok()) return status;
  const shared_memory::Error error = registry_->remove(caller_namespace(context), name);
  if (error.ok() && changed_) changed_();
  return to_status(error);
}

grpc::Status SharedMemoryService::list(const grpc::ServerContextBase& context,
                                       std::vector<shared_memory::RegionStatus>* regions) const {
  if (grpc::Status status = check(context); !status.ok()) return status;
  *regions = registry_->list(caller_namespace(context));
  return grpc::Status::OK;
}

grpc::Status SharedMemoryService::register_region(grpc::ServerContext* context,
                                                  const v1::RegisterSharedMemoryRequest& request,
                                                  v1::RegisterSharedMemoryResponse* /*response*/) {
  switch (request.kind()) {
    case v1::SHARED_MEMORY_KIND_SYSTEM:
      if (!request.cuda_handle().empty() || request.device_id() != 0) {
        if (grpc::Status status = check(*context); !status.ok()) return status;
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "cuda_handle: only CUDA regions have a handle or a device_id"};
      }
      return add_system(*context,
                        {request.name(), request.key(), request.offset(), request.byte_size(), -1});
    case v1::SHARED_MEMORY_KIND_CUDA:
      if (!cuda_supported() && registry_ != nullptr) {
        if (grpc::Status status = check(*context); !status.ok()) return status;
        return {grpc::StatusCode::UNIMPLEMENTED,
                "kind: this server scans no CUDA regions (no GPU backend; see "
                "GetServerInfo.shared_memory_kinds); use SYSTEM"};
      }
      if (!request.key().empty()) {
        if (grpc::Status status = check(*context); !status.ok()) return status;
        return {grpc::StatusCode::INVALID_ARGUMENT, "key: CUDA regions have no key"};
      }
      return add_cuda(
          *context,
          {request.name(), "", request.offset(), request.byte_size(), request.device_id()},
          request.cuda_handle());
    default:
      if (grpc::Status status = check(*context); !status.ok()) return status;
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "kind: must be SHARED_MEMORY_KIND_SYSTEM or SHARED_MEMORY_KIND_CUDA, got " +
                  std::to_string(static_cast<int>(request.kind()))};
  }
}

grpc::Status SharedMemoryService::unregister_region(
    grpc::ServerContext* context, const v1::UnregisterSharedMemoryRequest& request,
    v1::UnregisterSharedMemoryResponse* /*response*/) {
  return remove(*context, request.name());
}

grpc::Status SharedMemoryService::list_regions(grpc::ServerContext* context,
                                               const v1::ListSharedMemoryRequest& /*request*/,
                                               v1::ListSharedMemoryResponse* response) {
  std::vector<shared_memory::RegionStatus> regions;
  if (grpc::Status status = list(*context, &regions); !status.ok()) return status;
  for (const shared_memory::RegionStatus& region : regions) {
    v1::SharedMemoryRegionStatus* status = response->add_regions();
    status->set_name(region.spec.name);
    status->set_kind(region.spec.device < 0 ? v1::SHARED_MEMORY_KIND_SYSTEM
                                            : v1::SHARED_MEMORY_KIND_CUDA);
    status->set_device_id(std::max(region.spec.device, 0));
    status->set_key(region.spec.key);
    status->set_offset(region.spec.offset);
    status->set_byte_size(region.spec.byte_size);
    status->set_writable(region.writable);
    status->set_requests_in_flight(region.requests_in_flight);
  }
  return grpc::Status::OK;
}

}  // namespace scan::server
