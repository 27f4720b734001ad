#include "rpc/server_info.h"

namespace scan::server {

v1::GetServerInfoResponse describe_server(const Router& router, const kernels::GpuInventory& gpus,
                                          const std::string& version) {
  v1::GetServerInfoResponse info;
  info.set_version(version);
  for (const RegisteredBackend& registered : router.backends()) {
    v1::BackendInfo* backend = info.add_backends();
    backend->set_name(registered.backend->name());
    backend->set_kind(registered.backend->device_kind() == DeviceKind::kGpu ? v1::DEVICE_KIND_GPU
                                                                            : v1::DEVICE_KIND_CPU);
    backend->set_available(registered.backend->available());
    backend->set_flushes_subnormals(registered.backend->flushes_subnormals());
    const CostModel cost = registered.cost->model();
    backend->mutable_cost_model()->set_fixed_seconds(cost.fixed_seconds);
    backend->mutable_cost_model()->set_bytes_per_second(cost.bytes_per_second);
    backend->mutable_cost_model()->set_source(cost_source_name(registered.cost->source()));
    backend->set_concurrency(registered.concurrency);
    backend->set_outstanding_requests(registered.load->requests.load());
    backend->set_outstanding_bytes(registered.load->bytes.load());
  }
  for (const kernels::GpuDevice& device : gpus.devices) {
    v1::GpuInfo* gpu = info.add_gpus();
    gpu->set_ordinal(device.ordinal);
    gpu->set_name(device.name);
    gpu->set_total_memory_bytes(device.total_memory_bytes);
    gpu->set_compute_capability_major(device.compute_capability_major);
    gpu->set_compute_capability_minor(device.compute_capability_minor);
    gpu->set_multiprocessors(device.multiprocessors);
    gpu->set_usable(device.usable);
    gpu->set_detail(device.detail);
  }
  info.set_gpu_status(gpus.status);
  info.set_gpu_min_bytes(router.policy().gpu_min_bytes);
  return info;
}

ServerInfoService::ServerInfoService(const Router& router, const kernels::GpuInventory& gpus,
                                     const TokenAuthenticator* authenticator,
                                     v1::GetServerInfoResponse fixed)
    : router_(router), gpus_(gpus), authenticator_(authenticator), fixed_(std::move(fixed)) {
  add_unary("/scan.v1.ScanService/GetServerInfo", this, &ServerInfoService::handle);
}

grpc::Status ServerInfoService::handle(grpc::ServerContext* context,
                                       const v1::GetServerInfoRequest& /*request*/,
                                       v1::GetServerInfoResponse* response) {
  if (authenticator_ != nullptr) {
    if (grpc::Status status = authenticator_->check(*context); !status.ok()) return status;
  }
  *response = describe_server(router_, gpus_, SCAN_VERSION);
  response->MergeFrom(fixed_);
  return grpc::Status::OK;
}

}  // namespace scan::server
