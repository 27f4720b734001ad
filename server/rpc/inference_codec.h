// KServe v2's ModelInfer served as a Scan: the model `cumprod` (input `gamma`, output `output`,
// request parameters `dim` and `backend`) translated to and from scan.v1, so that one router,
// one set of backends, limits, metrics and security serve both protocols. The tensor's bytes are
// not copied on the way: raw_input_contents is parsed straight into a pooled buffer, and the
// result goes out as raw_output_contents by reference (wire::encode_with_bytes_field).
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <optional>
#include <string>

#include "inference/grpc_service.pb.h"
#include "rpc/scan_service.h"
#include "rpc/wire_service.h"
#include "scan/v1/scan.pb.h"

namespace scan::server::kserve {

// The one model, as KServe clients name it.
inline constexpr const char* kModelName = "cumprod";
inline constexpr const char* kModelVersion = "1";
inline constexpr const char* kInputName = "gamma";
inline constexpr const char* kOutputName = "output";
// The parameters of Triton's shared-memory extension, on an input or a requested output.
inline constexpr const char* kRegionParameter = "shared_memory_region";
inline constexpr const char* kOffsetParameter = "shared_memory_offset";
inline constexpr const char* kByteSizeParameter = "shared_memory_byte_size";

// KServe's datatype names of the four element types: "FP32", "FP64", "FP16", "BF16".
const char* datatype_name(v1::DataType dtype);
// DATA_TYPE_UNSPECIFIED for any other name.
v1::DataType data_type_of(const std::string& datatype);

// NOT_FOUND naming the field unless `name` and `version` ("" picks the only one) name the model.
grpc::Status check_model(const std::string& name, const std::string& version,
                         const char* name_field, const char* version_field);

// What a ModelInfer request carries beyond its scan, for the response and for error messages.
struct InferEnvelope {
  std::string id;
  // The tensor's bytes came in inputs[0].contents rather than raw_input_contents.
  bool typed_contents = false;
  // The requested output's parameters (shared memory), echoed on the response's output.
  google::protobuf::Map<std::string, inference::InferParameter> output_parameters;
};

// Translates a parsed ModelInferRequest into `scan` (its gamma.data must already hold the tensor's
// raw bytes, if any: the caller moves raw_input_contents[0] there) and `envelope`. A refusal names
// the KServe field (`inputs[0].datatype`, `parameters[dim]`, ...).
grpc::Status to_scan_request(const inference::ModelInferRequest& infer, v1::ScanRequest* scan,
                             InferEnvelope* envelope);

// The serialised ModelInferResponse of a finished scan, without the result's bytes (the caller
// appends them as raw_output_contents, unless the result went to a shared-memory region): model,
// version, the request's id, parameters `backend`, `queue_us`, `compute_us` and `total_us`, and the
// output tensor (with the requested output's parameters).
std::string infer_response_head(const v1::ScanResponse& response, const InferEnvelope& envelope);

// `status` with scan.v1's field names at the start of its message (`gamma.shape[1]`, `dim`, ...)
// replaced by the KServe fields they came from (`inputs[0].shape[1]`, `parameters[dim]`, ...).
grpc::Status in_kserve_terms(const grpc::Status& status, const InferEnvelope& envelope);

// ModelInfer's messages for WireScanService::serve_unary. Requests that parse but cannot be served
// (unknown model, input or datatype) are refused through ScanServiceImpl::refuse, so that they are
// counted like refused Scans and credentials are checked before anything is said about the model.
class ModelInferCodec final : public UnaryScanCodec {
 public:
  explicit ModelInferCodec(ScanServiceImpl& scans) : scans_(scans) {}

  grpc::Status decode(grpc::ServerContextBase& context, grpc::ByteBuffer* received,
                      UnaryScanCall& call, wire::BufferPool& pool) const override;
  grpc::ByteBuffer encode(UnaryScanCall& call,
                          std::shared_ptr<wire::BufferPool> pool) const override;
  grpc::Status refusal(const grpc::Status& status, const UnaryScanCall& call) const override;

 private:
  ScanServiceImpl& scans_;
};

}  // namespace scan::server::kserve
