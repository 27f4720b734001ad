#include "rpc/inference_service.h"

#include <fmt/format.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>

#include <climits>
#include <cstdint>

namespace scan::server {
namespace {

using kserve::kInputName;
using kserve::kModelName;
using kserve::kModelVersion;
using kserve::kOutputName;

constexpr const char* kPlatform = "scan-service";
// The layout MM-Rec scans, [batch, heads, seq_len, head_dim]: any size in each dimension. The
// model takes any rank from 1 to --max-rank; these are what tools that generate inputs from the
// metadata (perf_analyzer) should assume.
constexpr std::int64_t kTypicalDims[] = {-1, -1, -1, -1};

void set_duration(const RequestTotals::Duration& from, inference::StatisticDuration* to) {
  to->set_count(from.count);
  to->set_ns(from.nanoseconds);
}

// Triton's uint64 sizes as the registry's int64, refusing what does not fit.
bool to_int64(std::uint64_t value, std::int64_t* out) {
  if (value > static_cast<std::uint64_t>(INT64_MAX)) return false;
  *out = static_cast<std::int64_t>(value);
  return true;
}

grpc::Status too_large(const char* field, std::uint64_t value) {
  return {grpc::StatusCode::INVALID_ARGUMENT,
          fmt::format("{}: {} does not fit a signed 64-bit size", field, value)};
}

}  // namespace

InferenceService::InferenceService(ScanServiceImpl& scans, WireScanService& transport,
                                   const ServiceMetrics& metrics,
                                   const SharedMemoryService& shared_memory,
                                   const TokenAuthenticator* authenticator,
                                   const std::atomic<bool>& ready, InferenceServiceOptions options)
    : codec_(scans),
      scan_([&scans](grpc::ServerContextBase* context, v1::ScanRequest* request,
                     v1::ScanResponse* response, Waiting waiting, wire::BufferPool& buffers) {
        return scans.Scan(context, request, response, waiting, buffers, RequestRpc::kModelInfer);
      }),
      metrics_(metrics),
      shared_memory_(shared_memory),
      authenticator_(authenticator),
      ready_(ready),
      options_(std::move(options)) {
  // ModelInfer on raw buffers, served by the transport as Scan is (what protoc generates for
  // WithRawCallbackMethod_ModelInfer, without claiming the other methods): method index 0.
  AddMethod(new grpc::internal::RpcServiceMethod("/inference.GRPCInferenceService/ModelInfer",
                                                 grpc::internal::RpcMethod::NORMAL_RPC, nullptr));
  MarkMethodRawCallback(
      0, new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
             [this, &transport](grpc::CallbackServerContext* context,
                                const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
               return transport.serve_unary(context, request, response, codec_, scan_);
             }));
  add_unary("/inference.GRPCInferenceService/ServerLive", this, &InferenceService::server_live);
  add_unary("/inference.GRPCInferenceService/ServerReady", this, &InferenceService::server_ready);
  add_unary("/inference.GRPCInferenceService/ModelReady", this, &InferenceService::model_ready);
  add_unary("/inference.GRPCInferenceService/ServerMetadata", this,
            &InferenceService::server_metadata);
  add_unary("/inference.GRPCInferenceService/ModelMetadata", this,
            &InferenceService::model_metadata);
  add_unary("/inference.GRPCInferenceService/ModelConfig", this, &InferenceService::model_config);
  add_unary("/inference.GRPCInferenceService/ModelStatistics", this,
            &InferenceService::model_statistics);
  add_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus", this,
            &InferenceService::system_status);
  add_unary("/inference.GRPCInferenceService/SystemSharedMemoryRegister", this,
            &InferenceService::system_register);
  add_unary("/inference.GRPCInferenceService/SystemSharedMemoryUnregister", this,
            &InferenceService::system_unregister);
  add_unary("/inference.GRPCInferenceService/CudaSharedMemoryStatus", this,
            &InferenceService::cuda_status);
  add_unary("/inference.GRPCInferenceService/CudaSharedMemoryRegister", this,
            &InferenceService::cuda_register);
  add_unary("/inference.GRPCInferenceService/CudaSharedMemoryUnregister", this,
            &InferenceService::cuda_unregister);
}

std::vector<std::string> InferenceService::extensions() const {
  std::vector<std::string> extensions = {"model_configuration", "statistics", "parameters"};
  if (options_.shared_memory) {
    extensions.emplace_back("system_shared_memory");
    if (shared_memory_.cuda_supported()) extensions.emplace_back("cuda_shared_memory");
  }
  return extensions;
}

grpc::Status InferenceService::check(const grpc::ServerContextBase& context) const {
  return authenticator_ != nullptr ? authenticator_->check(context) : grpc::Status::OK;
}

grpc::Status InferenceService::server_live(grpc::ServerContext* /*context*/,
                                           const inference::ServerLiveRequest& /*request*/,
                                           inference::ServerLiveResponse* response) {
  response->set_live(true);
  return grpc::Status::OK;
}

grpc::Status InferenceService::server_ready(grpc::ServerContext* /*context*/,
                                            const inference::ServerReadyRequest& /*request*/,
                                            inference::ServerReadyResponse* response) {
  response->set_ready(ready_.load(std::memory_order_relaxed));
  return grpc::Status::OK;
}

grpc::Status InferenceService::model_ready(grpc::ServerContext* /*context*/,
                                           const inference::ModelReadyRequest& request,
                                           inference::ModelReadyResponse* response) {
  if (auto status = kserve::check_model(request.name(), request.version(), "name", "version");
      !status.ok()) {
    return status;
  }
  response->set_ready(ready_.load(std::memory_order_relaxed));
  return grpc::Status::OK;
}

grpc::Status InferenceService::server_metadata(grpc::ServerContext* context,
                                               const inference::ServerMetadataRequest& /*request*/,
                                               inference::ServerMetadataResponse* response) {
  if (auto status = check(*context); !status.ok()) return status;
  response->set_name("scan-service");
  response->set_version(options_.server_version);
  for (const std::string& extension : extensions()) response->add_extensions(extension);
  return grpc::Status::OK;
}

grpc::Status InferenceService::model_metadata(grpc::ServerContext* context,
                                              const inference::ModelMetadataRequest& request,
                                              inference::ModelMetadataResponse* response) {
  if (auto status = check(*context); !status.ok()) return status;
  if (auto status = kserve::check_model(request.name(), request.version(), "name", "version");
      !status.ok()) {
    return status;
  }
  response->set_name(kModelName);
  response->add_versions(kModelVersion);
  response->set_platform(kPlatform);
  for (auto [tensors, name] : {std::pair{response->mutable_inputs(), kInputName},
                               std::pair{response->mutable_outputs(), kOutputName}}) {
    auto* tensor = tensors->Add();
    tensor->set_name(name);
    tensor->set_datatype("FP32");
    for (const std::int64_t dim : kTypicalDims) tensor->add_shape(dim);
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::model_config(grpc::ServerContext* context,
                                            const inference::ModelConfigRequest& request,
                                            inference::ModelConfigResponse* response) {
  if (auto status = check(*context); !status.ok()) return status;
  if (auto status = kserve::check_model(request.name(), request.version(), "name", "version");
      !status.ok()) {
    return status;
  }
  inference::ModelConfig& config = *response->mutable_config();
  config.set_name(kModelName);
  config.set_platform(kPlatform);
  config.set_backend(kPlatform);
  config.set_max_batch_size(0);
  inference::ModelInput& input = *config.add_input();
  input.set_name(kInputName);
  input.set_data_type(inference::TYPE_FP32);
  inference::ModelOutput& output = *config.add_output();
  output.set_name(kOutputName);
  output.set_data_type(inference::TYPE_FP32);
  for (const std::int64_t dim : kTypicalDims) {
    input.add_dims(dim);
    output.add_dims(dim);
  }
  // What the fixed fields above cannot say: every accepted datatype (the output has the input's),
  // any rank up to the limit, and the request parameters.
  auto& parameters = *config.mutable_parameters();
  parameters["datatypes"].set_string_value("FP32,FP64,FP16,BF16");
  parameters["max_rank"].set_string_value(std::to_string(options_.max_rank));
  parameters["dim"].set_string_value("int64 request parameter, the dimension to scan; default 0");
  parameters["backend"].set_string_value("string request parameter: auto (default), cpu or gpu");
  return grpc::Status::OK;
}

grpc::Status InferenceService::model_statistics(grpc::ServerContext* context,
                                                const inference::ModelStatisticsRequest& request,
                                                inference::ModelStatisticsResponse* response) {
  if (auto status = check(*context); !status.ok()) return status;
  if (!request.name().empty()) {
    if (auto status = kserve::check_model(request.name(), request.version(), "name", "version");
        !status.ok()) {
      return status;
    }
  }
  const RequestTotals totals = metrics_.totals();
  inference::ModelStatistics& stats = *response->add_model_stats();
  stats.set_name(kModelName);
  stats.set_version(kModelVersion);
  stats.set_last_inference(totals.last_request_unix_ms);
  // No batching: every request is one inference and one execution.
  stats.set_inference_count(totals.succeeded.count);
  stats.set_execution_count(totals.succeeded.count);
  inference::InferStatistics& inference_stats = *stats.mutable_inference_stats();
  set_duration(totals.succeeded, inference_stats.mutable_success());
  set_duration(totals.failed, inference_stats.mutable_fail());
  set_duration(totals.queued, inference_stats.mutable_queue());
  set_duration(totals.copied_to_device, inference_stats.mutable_compute_input());
  set_duration(totals.computed, inference_stats.mutable_compute_infer());
  set_duration(totals.copied_to_host, inference_stats.mutable_compute_output());
  return grpc::Status::OK;
}

grpc::Status InferenceService::regions_of_kind(
    const grpc::ServerContextBase& context, bool cuda, const std::string& name,
    std::vector<shared_memory::RegionStatus>* regions) const {
  std::vector<shared_memory::RegionStatus> all;
  if (auto status = shared_memory_.list(context, &all); !status.ok()) return status;
  for (shared_memory::RegionStatus& region : all) {
    if ((region.spec.device >= 0) != cuda) continue;
    if (!name.empty() && region.spec.name != name) continue;
    regions->push_back(std::move(region));
  }
  if (!name.empty() && regions->empty()) {
    return {grpc::StatusCode::NOT_FOUND,
            fmt::format("name: no {} shared-memory region '{}' is registered",
                        cuda ? "CUDA" : "system", name.substr(0, 160))};
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::unregister_kind(const grpc::ServerContextBase& context, bool cuda,
                                               const std::string& name) const {
  std::vector<shared_memory::RegionStatus> regions;
  if (auto status = regions_of_kind(context, cuda, name, &regions); !status.ok()) return status;
  for (const shared_memory::RegionStatus& region : regions) {
    // A region a request still uses is unmapped when that request ends (the registry's rule).
    if (auto status = shared_memory_.remove(context, region.spec.name); !status.ok()) {
      // Another call of this caller removed it meanwhile: it is gone, as asked.
      if (status.error_code() != grpc::StatusCode::NOT_FOUND) return status;
    }
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::system_status(
    grpc::ServerContext* context, const inference::SystemSharedMemoryStatusRequest& request,
    inference::SystemSharedMemoryStatusResponse* response) {
  std::vector<shared_memory::RegionStatus> regions;
  if (auto status = regions_of_kind(*context, false, request.name(), &regions); !status.ok()) {
    return status;
  }
  for (const shared_memory::RegionStatus& region : regions) {
    auto& entry = (*response->mutable_regions())[region.spec.name];
    entry.set_name(region.spec.name);
    entry.set_key(region.spec.key);
    entry.set_offset(static_cast<std::uint64_t>(region.spec.offset));
    entry.set_byte_size(static_cast<std::uint64_t>(region.spec.byte_size));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::system_register(
    grpc::ServerContext* context, const inference::SystemSharedMemoryRegisterRequest& request,
    inference::SystemSharedMemoryRegisterResponse* /*response*/) {
  if (auto status = check(*context); !status.ok()) return status;
  shared_memory::RegionSpec spec{request.name(), request.key(), 0, 0, -1};
  if (!to_int64(request.offset(), &spec.offset)) return too_large("offset", request.offset());
  if (!to_int64(request.byte_size(), &spec.byte_size)) {
    return too_large("byte_size", request.byte_size());
  }
  return shared_memory_.add_system(*context, spec);
}

grpc::Status InferenceService::system_unregister(
    grpc::ServerContext* context, const inference::SystemSharedMemoryUnregisterRequest& request,
    inference::SystemSharedMemoryUnregisterResponse* /*response*/) {
  return unregister_kind(*context, false, request.name());
}

grpc::Status InferenceService::cuda_status(grpc::ServerContext* context,
                                           const inference::CudaSharedMemoryStatusRequest& request,
                                           inference::CudaSharedMemoryStatusResponse* response) {
  std::vector<shared_memory::RegionStatus> regions;
  if (auto status = regions_of_kind(*context, true, request.name(), &regions); !status.ok()) {
    return status;
  }
  for (const shared_memory::RegionStatus& region : regions) {
    auto& entry = (*response->mutable_regions())[region.spec.name];
    entry.set_name(region.spec.name);
    entry.set_device_id(static_cast<std::uint64_t>(region.spec.device));
    entry.set_byte_size(static_cast<std::uint64_t>(region.spec.byte_size));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::cuda_register(
    grpc::ServerContext* context, const inference::CudaSharedMemoryRegisterRequest& request,
    inference::CudaSharedMemoryRegisterResponse* /*response*/) {
  if (auto status = check(*context); !status.ok()) return status;
  shared_memory::RegionSpec spec{request.name(), "", 0, 0, 0};
  if (request.device_id() < 0 || request.device_id() > INT_MAX) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            fmt::format("device_id: {} is not a GPU ordinal", request.device_id())};
  }
  spec.device = static_cast<int>(request.device_id());
  if (!to_int64(request.byte_size(), &spec.byte_size)) {
    return too_large("byte_size", request.byte_size());
  }
  return shared_memory_.add_cuda(*context, spec, request.raw_handle());
}

grpc::Status InferenceService::cuda_unregister(
    grpc::ServerContext* context, const inference::CudaSharedMemoryUnregisterRequest& request,
    inference::CudaSharedMemoryUnregisterResponse* /*response*/) {
  return unregister_kind(*context, true, request.name());
}

}  // namespace scan::server
