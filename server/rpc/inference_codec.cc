#include "rpc/inference_codec.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "scan/wire/codec.h"

namespace scan::server::kserve {
namespace {

using inference::InferParameter;
using inference::InferTensorContents;
using ParameterMap = google::protobuf::Map<std::string, InferParameter>;

// A client's string as its refusal quotes it: at most 64 characters, so that a huge name cannot
// inflate the status beyond what a client accepts in trailing metadata.
std::string_view clipped(std::string_view text) { return text.substr(0, 64); }

grpc::Status invalid(std::string message) {
  return {grpc::StatusCode::INVALID_ARGUMENT, std::move(message)};
}

struct DatatypeName {
  v1::DataType dtype;
  const char* name;
};
constexpr std::array<DatatypeName, 4> kDatatypes = {{{v1::DATA_TYPE_FLOAT32, "FP32"},
                                                     {v1::DATA_TYPE_FLOAT64, "FP64"},
                                                     {v1::DATA_TYPE_FLOAT16, "FP16"},
                                                     {v1::DATA_TYPE_BFLOAT16, "BF16"}}};

// Reads Triton's shared-memory parameters of one tensor (`tensor`: "inputs[0]" or "outputs[0]")
// into *region; *present says whether they name one. Parameters in `ignored` are accepted and have
// no effect here; any other one is refused, so that a misspelt name is not silently dropped.
grpc::Status read_region(const ParameterMap& parameters, const std::string& tensor,
                         std::initializer_list<const char*> ignored, bool* present,
                         v1::SharedMemoryReference* region) {
  bool has_offset = false;
  bool has_byte_size = false;
  *present = false;
  for (const auto& [key, value] : parameters) {
    const std::string field = fmt::format("{}.parameters[{}]", tensor, clipped(key));
    if (key == kRegionParameter) {
      if (value.parameter_choice_case() != InferParameter::kStringParam) {
        return invalid(field + ": must be a string_param naming a registered region");
      }
      region->set_region(value.string_param());
      *present = true;
    } else if (key == kOffsetParameter || key == kByteSizeParameter) {
      if (value.parameter_choice_case() != InferParameter::kInt64Param) {
        return invalid(field + ": must be an int64_param");
      }
      if (key == kOffsetParameter) {
        region->set_offset(value.int64_param());
        has_offset = true;
      } else {
        region->set_byte_size(value.int64_param());
        has_byte_size = true;
      }
    } else {
      bool accepted = false;
      for (const char* name : ignored) accepted = accepted || key == name;
      if (!accepted) {
        return invalid(
            fmt::format("{}: unknown parameter (this model's tensors take {}, {} and {})", field,
                        kRegionParameter, kOffsetParameter, kByteSizeParameter));
      }
    }
  }
  if (!*present && (has_offset || has_byte_size)) {
    return invalid(fmt::format("{}.parameters[{}]: required with {}", tensor, kRegionParameter,
                               has_offset ? kOffsetParameter : kByteSizeParameter));
  }
  if (*present && !has_byte_size) {
    return invalid(fmt::format("{}.parameters[{}]: required with {}", tensor, kByteSizeParameter,
                               kRegionParameter));
  }
  return grpc::Status::OK;
}

grpc::Status read_request_parameters(const inference::ModelInferRequest& infer,
                                     v1::ScanRequest* scan) {
  for (const auto& [key, value] : infer.parameters()) {
    if (key == "dim") {
      if (value.parameter_choice_case() != InferParameter::kInt64Param) {
        return invalid("parameters[dim]: must be an int64_param");
      }
      const std::int64_t dim = value.int64_param();
      if (dim < INT_MIN || dim > INT_MAX) {
        return invalid(fmt::format("parameters[dim]: {} is out of range for a rank-{} tensor", dim,
                                   infer.inputs(0).shape_size()));
      }
      scan->set_dim(static_cast<std::int32_t>(dim));
    } else if (key == "backend") {
      const std::string& name = value.string_param();
      if (value.parameter_choice_case() != InferParameter::kStringParam ||
          (name != "auto" && name != "cpu" && name != "gpu")) {
        return invalid("parameters[backend]: must be a string_param: auto, cpu or gpu");
      }
      scan->set_backend(name == "cpu"   ? v1::BACKEND_PREFERENCE_CPU
                        : name == "gpu" ? v1::BACKEND_PREFERENCE_GPU
                                        : v1::BACKEND_PREFERENCE_AUTO);
    } else if (key != "priority" && key != "timeout") {
      // Triton's scheduling hints (priority, timeout) are accepted: this server schedules by size
      // and load, and a call's own deadline bounds its wait.
      return invalid(
          fmt::format("parameters[{}]: unknown parameter (model '{}' takes dim and backend)",
                      clipped(key), kModelName));
    }
  }
  return grpc::Status::OK;
}

// Whether any typed contents field holds elements (*any), and whether `wanted_field` (the field of
// the tensor's datatype; 0: none has one) is the only one that does.
bool only_field_used(const InferTensorContents& contents, int wanted_field, bool* any) {
  const std::array<std::pair<int, int>, 8> sizes = {{
      {InferTensorContents::kBoolContentsFieldNumber, contents.bool_contents_size()},
      {InferTensorContents::kIntContentsFieldNumber, contents.int_contents_size()},
      {InferTensorContents::kInt64ContentsFieldNumber, contents.int64_contents_size()},
      {InferTensorContents::kUintContentsFieldNumber, contents.uint_contents_size()},
      {InferTensorContents::kUint64ContentsFieldNumber, contents.uint64_contents_size()},
      {InferTensorContents::kFp32ContentsFieldNumber, contents.fp32_contents_size()},
      {InferTensorContents::kFp64ContentsFieldNumber, contents.fp64_contents_size()},
      {InferTensorContents::kBytesContentsFieldNumber, contents.bytes_contents_size()},
  }};
  *any = false;
  bool only_wanted = true;
  for (const auto& [field, size] : sizes) {
    if (size == 0) continue;
    *any = true;
    only_wanted = only_wanted && field == wanted_field;
  }
  return only_wanted;
}

// The typed contents of `input` as the tensor's raw bytes, in *data (whose capacity is kept).
grpc::Status copy_typed_contents(const inference::ModelInferRequest::InferInputTensor& input,
                                 v1::DataType dtype, std::string* data) {
  const InferTensorContents& contents = input.contents();
  const int wanted = dtype == v1::DATA_TYPE_FLOAT32 ? InferTensorContents::kFp32ContentsFieldNumber
                     : dtype == v1::DATA_TYPE_FLOAT64
                         ? InferTensorContents::kFp64ContentsFieldNumber
                         : 0;
  bool any = false;
  const bool only_wanted = only_field_used(contents, wanted, &any);
  if (!any) return grpc::Status::OK;
  if (wanted == 0) {
    return invalid(fmt::format(
        "inputs[0].contents: {} has no typed contents field; send its bytes in raw_input_contents",
        datatype_name(dtype)));
  }
  if (!only_wanted) {
    return invalid(fmt::format("inputs[0].contents: {} elements go in {}", datatype_name(dtype),
                               dtype == v1::DATA_TYPE_FLOAT32 ? "fp32_contents" : "fp64_contents"));
  }
  // Little-endian hosts only (as every scan.v1 tensor): the elements' bytes are the raw layout.
  if (dtype == v1::DATA_TYPE_FLOAT32) {
    data->resize(sizeof(float) * static_cast<std::size_t>(contents.fp32_contents_size()));
    std::memcpy(data->data(), contents.fp32_contents().data(), data->size());
  } else {
    data->resize(sizeof(double) * static_cast<std::size_t>(contents.fp64_contents_size()));
    std::memcpy(data->data(), contents.fp64_contents().data(), data->size());
  }
  return grpc::Status::OK;
}

grpc::Status read_contents(const inference::ModelInferRequest& infer, v1::Tensor* gamma,
                           InferEnvelope* envelope) {
  const auto& input = infer.inputs(0);
  bool in_region = false;
  v1::SharedMemoryReference region;
  if (auto status =
          read_region(input.parameters(), "inputs[0]", {"binary_data_size"}, &in_region, &region);
      !status.ok()) {
    return status;
  }
  bool typed = false;
  only_field_used(input.contents(), 0, &typed);
  if (in_region) {
    if (infer.raw_input_contents_size() > 0 || typed) {
      return invalid(fmt::format(
          "inputs[0].parameters[{}]: the tensor is in shared memory; send no raw_input_contents "
          "or contents with it",
          kRegionParameter));
    }
    *gamma->mutable_shared_memory() = std::move(region);
    return grpc::Status::OK;
  }
  if (infer.raw_input_contents_size() > 1) {
    return invalid(
        fmt::format("raw_input_contents: {} entries, but model '{}' has one input ('{}')",
                    infer.raw_input_contents_size(), kModelName, kInputName));
  }
  if (infer.raw_input_contents_size() == 1) {
    if (typed) {
      return invalid(
          "inputs[0].contents: given together with raw_input_contents; send the tensor one way");
    }
    return grpc::Status::OK;
  }
  envelope->typed_contents = typed;
  return copy_typed_contents(input, gamma->dtype(), gamma->mutable_data());
}

grpc::Status read_outputs(const inference::ModelInferRequest& infer, v1::ScanRequest* scan,
                          InferEnvelope* envelope) {
  if (infer.outputs_size() == 0) return grpc::Status::OK;
  if (infer.outputs_size() > 1) {
    return invalid(fmt::format("outputs: model '{}' has one output ('{}'); the request asks for {}",
                               kModelName, kOutputName, infer.outputs_size()));
  }
  const auto& output = infer.outputs(0);
  if (output.name() != kOutputName) {
    return invalid(fmt::format("outputs[0].name: unknown output '{}'; model '{}' has '{}'",
                               clipped(output.name()), kModelName, kOutputName));
  }
  bool in_region = false;
  v1::SharedMemoryReference region;
  if (auto status =
          read_region(output.parameters(), "outputs[0]", {"binary_data"}, &in_region, &region);
      !status.ok()) {
    return status;
  }
  if (in_region) {
    *scan->mutable_output() = std::move(region);
    envelope->output_parameters = output.parameters();
  }
  return grpc::Status::OK;
}

// scan.v1 field names (as validation and the region registry start their messages) and the KServe
// fields they came from; the longest names first.
struct Renaming {
  const char* scan_field;
  const char* kserve_field;
};
constexpr std::array<Renaming, 13> kRenamings = {{
    {"gamma.shared_memory.region", "inputs[0].parameters[shared_memory_region]"},
    {"gamma.shared_memory.offset", "inputs[0].parameters[shared_memory_offset]"},
    {"gamma.shared_memory.byte_size", "inputs[0].parameters[shared_memory_byte_size]"},
    {"gamma.shared_memory", "inputs[0].parameters[shared_memory_region]"},
    {"gamma.shape", "inputs[0].shape"},
    {"gamma.dtype", "inputs[0].datatype"},
    {"gamma", "inputs[0]"},
    {"output.region", "outputs[0].parameters[shared_memory_region]"},
    {"output.offset", "outputs[0].parameters[shared_memory_offset]"},
    {"output.byte_size", "outputs[0].parameters[shared_memory_byte_size]"},
    {"output", "outputs[0].parameters[shared_memory_region]"},
    {"dim", "parameters[dim]"},
    {"backend", "parameters[backend]"},
}};

// Protobuf's wire format for the few fields the response head has, written straight into a
// string: building a ModelInferResponse (its map of parameters, its strings) and serialising it
// cost a 4 KiB ModelInfer a tenth of its server time. Parsers read it as the message it encodes
// (tests/python/test_kserve.py, the inference fuzzer's check).
class FieldWriter {
 public:
  void varint(std::uint64_t value) {
    while (value >= 0x80) {
      out_.push_back(static_cast<char>(value | 0x80));
      value >>= 7;
    }
    out_.push_back(static_cast<char>(value));
  }
  void bytes_field(int field, std::string_view bytes) {
    varint((static_cast<std::uint64_t>(field) << 3) | 2);
    varint(bytes.size());
    out_.append(bytes);
  }
  // One entry of a map<string, InferParameter> field: key 1, value 2 (a serialised parameter).
  void parameter(int field, std::string_view key, std::string_view serialized_value) {
    FieldWriter entry;
    entry.bytes_field(1, key);
    entry.bytes_field(2, serialized_value);
    bytes_field(field, entry.bytes());
  }
  void string_parameter(int field, std::string_view key, std::string_view value) {
    FieldWriter parameter_value;
    parameter_value.bytes_field(InferParameter::kStringParamFieldNumber, value);
    parameter(field, key, parameter_value.bytes());
  }
  void int64_parameter(int field, std::string_view key, std::int64_t value) {
    FieldWriter parameter_value;
    parameter_value.varint(static_cast<std::uint64_t>(InferParameter::kInt64ParamFieldNumber) << 3);
    parameter_value.varint(static_cast<std::uint64_t>(value));
    parameter(field, key, parameter_value.bytes());
  }
  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

bool starts_with_field(const std::string& message, const std::string& field) {
  if (message.compare(0, field.size(), field) != 0) return false;
  if (message.size() == field.size()) return true;
  const char next = message[field.size()];
  return !(std::isalnum(static_cast<unsigned char>(next)) || next == '_' || next == '.');
}

}  // namespace

const char* datatype_name(v1::DataType dtype) {
  for (const auto& entry : kDatatypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "INVALID";
}

v1::DataType data_type_of(const std::string& datatype) {
  for (const auto& entry : kDatatypes) {
    if (datatype == entry.name) return entry.dtype;
  }
  return v1::DATA_TYPE_UNSPECIFIED;
}

grpc::Status check_model(const std::string& name, const std::string& version,
                         const char* name_field, const char* version_field) {
  if (name != kModelName) {
    return {grpc::StatusCode::NOT_FOUND,
            fmt::format("{}: unknown model '{}'; this server serves '{}'", name_field,
                        clipped(name), kModelName)};
  }
  if (!version.empty() && version != kModelVersion) {
    return {grpc::StatusCode::NOT_FOUND,
            fmt::format("{}: model '{}' has version '{}' only, not '{}'", version_field, kModelName,
                        kModelVersion, clipped(version))};
  }
  return grpc::Status::OK;
}

grpc::Status to_scan_request(const inference::ModelInferRequest& infer, v1::ScanRequest* scan,
                             InferEnvelope* envelope) {
  if (auto status =
          check_model(infer.model_name(), infer.model_version(), "model_name", "model_version");
      !status.ok()) {
    return status;
  }
  envelope->id = infer.id();
  if (infer.inputs_size() != 1) {
    return invalid(fmt::format("inputs: model '{}' takes one input ('{}'); the request has {}",
                               kModelName, kInputName, infer.inputs_size()));
  }
  const auto& input = infer.inputs(0);
  if (input.name() != kInputName) {
    return invalid(fmt::format("inputs[0].name: unknown input '{}'; model '{}' takes '{}'",
                               clipped(input.name()), kModelName, kInputName));
  }
  const v1::DataType dtype = data_type_of(input.datatype());
  if (dtype == v1::DATA_TYPE_UNSPECIFIED) {
    return invalid(
        fmt::format("inputs[0].datatype: '{}' is not supported (expected FP32, FP64, FP16 or BF16)",
                    clipped(input.datatype())));
  }
  v1::Tensor* gamma = scan->mutable_gamma();
  gamma->set_dtype(dtype);
  *gamma->mutable_shape() = input.shape();
  if (auto status = read_request_parameters(infer, scan); !status.ok()) return status;
  if (auto status = read_contents(infer, gamma, envelope); !status.ok()) return status;
  return read_outputs(infer, scan, envelope);
}

std::string infer_response_head(const v1::ScanResponse& response, const InferEnvelope& envelope) {
  using Response = inference::ModelInferResponse;
  using Output = inference::ModelInferResponse::InferOutputTensor;
  FieldWriter head;
  head.bytes_field(Response::kModelNameFieldNumber, kModelName);
  head.bytes_field(Response::kModelVersionFieldNumber, kModelVersion);
  if (!envelope.id.empty()) head.bytes_field(Response::kIdFieldNumber, envelope.id);
  // Where and how long it ran, as Scan's response tells (ScanResponse.backend and timing).
  head.string_parameter(Response::kParametersFieldNumber, "backend", response.backend());
  head.int64_parameter(Response::kParametersFieldNumber, "queue_us", response.timing().queue_us());
  head.int64_parameter(Response::kParametersFieldNumber, "compute_us",
                       response.timing().compute_us());
  head.int64_parameter(Response::kParametersFieldNumber, "total_us", response.timing().total_us());
  FieldWriter output;
  output.bytes_field(Output::kNameFieldNumber, kOutputName);
  output.bytes_field(Output::kDatatypeFieldNumber, datatype_name(response.result().dtype()));
  if (response.result().shape_size() > 0) {
    FieldWriter packed;
    for (const std::int64_t size : response.result().shape()) packed.varint(size);
    output.bytes_field(Output::kShapeFieldNumber, packed.bytes());
  }
  for (const auto& [key, value] : envelope.output_parameters) {
    output.parameter(Output::kParametersFieldNumber, key, value.SerializeAsString());
  }
  head.bytes_field(Response::kOutputsFieldNumber, output.bytes());
  return head.take();
}

grpc::Status in_kserve_terms(const grpc::Status& status, const InferEnvelope& envelope) {
  const std::string& message = status.error_message();
  const std::string data_field =
      envelope.typed_contents ? "inputs[0].contents" : "raw_input_contents[0]";
  if (starts_with_field(message, "gamma.data")) {
    return {status.error_code(), data_field + message.substr(std::strlen("gamma.data"))};
  }
  for (const Renaming& renaming : kRenamings) {
    if (starts_with_field(message, renaming.scan_field)) {
      return {status.error_code(),
              renaming.kserve_field + message.substr(std::strlen(renaming.scan_field))};
    }
  }
  return status;
}

grpc::Status ModelInferCodec::decode(grpc::ServerContextBase& context, grpc::ByteBuffer* received,
                                     UnaryScanCall& call, wire::BufferPool& pool) const {
  const std::size_t request_bytes = received->Length();
  inference::ModelInferRequest infer;
  int raw_entries = 0;
  const bool parsed =
      wire::decode_repeated(received, &infer, infer.mutable_raw_input_contents(),
                            call.request.mutable_gamma()->mutable_data(), &pool, &raw_entries)
          .ok();
  if (!parsed) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "request is not a valid inference.ModelInferRequest"};
  }
  auto envelope = std::make_shared<InferEnvelope>();
  call.envelope = envelope;
  if (auto status = to_scan_request(infer, &call.request, envelope.get()); !status.ok()) {
    return scans_.refuse(context, status, RequestRpc::kModelInfer, request_bytes);
  }
  return grpc::Status::OK;
}

grpc::ByteBuffer ModelInferCodec::encode(UnaryScanCall& call,
                                         std::shared_ptr<wire::BufferPool> pool) const {
  const auto& envelope = *static_cast<const InferEnvelope*>(call.envelope.get());
  std::string head = infer_response_head(call.response, envelope);
  std::string* result = call.response.mutable_result()->mutable_data();
  if (call.response.result().has_shared_memory()) {
    // The result is in the client's region; the response carries no bytes.
    pool->give(std::move(*result));
    grpc::Slice whole(std::move(head));
    return grpc::ByteBuffer(&whole, 1);
  }
  return wire::encode_with_bytes_field(std::move(head),
                                       inference::ModelInferResponse::kRawOutputContentsFieldNumber,
                                       result, std::move(pool));
}

grpc::Status ModelInferCodec::refusal(const grpc::Status& status, const UnaryScanCall& call) const {
  if (!call.envelope) return status;
  return in_kserve_terms(status, *static_cast<const InferEnvelope*>(call.envelope.get()));
}

}  // namespace scan::server::kserve
