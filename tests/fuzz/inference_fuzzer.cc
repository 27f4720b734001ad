// libFuzzer harness for what every KServe ModelInfer call does with the bytes a client sends, as
// ModelInferCodec::decode and the Scan path run it: wire::decode_repeated over gRPC slices
// (raw_input_contents parsed into a pooled buffer), kserve::to_scan_request, validate_scan_request,
// the cpu-native backend on a request that passes, in_kserve_terms on every refusal, and the
// response (infer_response_head, encode_with_bytes_field, parsed back). The translation sits
// between the network and the same validation as Scan, so an input that translates and validates
// but then makes a kernel misbehave, or a pooled buffer that is lost, is a bug in one of them.
#include <grpc/grpc.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "admission/request_validation.h"
#include "fuzz_harness.h"
#include "inference/grpc_service.pb.h"
#include "rpc/inference_codec.h"
#include "rpc/outcome_status.h"
#include "scan/wire/codec.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  grpc_init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Never destroyed: libFuzzer exits without unwinding, and joining the pool then is pointless.
  static scan::fuzz::ServerHarness* const harness = new scan::fuzz::ServerHarness;

  grpc::ByteBuffer buffer = scan::fuzz::as_slices(data, size, 1 + size % 53);
  inference::ModelInferRequest infer;
  scan::v1::ScanRequest request;
  int raw_entries = 0;
  const bool decoded =
      scan::wire::decode_repeated(&buffer, &infer, infer.mutable_raw_input_contents(),
                                  request.mutable_gamma()->mutable_data(), harness->buffers.get(),
                                  &raw_entries)
          .ok();
  if (decoded && raw_entries != infer.raw_input_contents_size()) std::abort();
  scan::server::kserve::InferEnvelope envelope;
  grpc::Status status = decoded ? scan::server::kserve::to_scan_request(infer, &request, &envelope)
                                : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unparsed");
  scan::server::ValidatedScan scan;
  if (status.ok()) {
    status = scan::server::to_status(
        scan::server::validate_scan_request(request, harness->limits, &scan));
  }
  // Regions need a server with --allow-shared-memory: the service refuses them before any access.
  const bool in_region = request.gamma().has_shared_memory() || request.has_output();
  if (status.ok() && !in_region) {
    harness->scan_or_abort(scan, scan.input);
    scan::v1::ScanResponse response;
    response.set_backend("cpu-native");
    response.mutable_result()->set_dtype(request.gamma().dtype());
    *response.mutable_result()->mutable_shape() = request.gamma().shape();
    std::string result(scan.bytes, '\0');
    grpc::ByteBuffer encoded = scan::wire::encode_with_bytes_field(
        scan::server::kserve::infer_response_head(response, envelope),
        inference::ModelInferResponse::kRawOutputContentsFieldNumber, &result);
    // The hand-written head must parse as the response it stands for.
    inference::ModelInferResponse parsed;
    if (!scan::wire::decode(&encoded, &parsed).ok() || parsed.id() != envelope.id ||
        parsed.raw_output_contents_size() != 1 ||
        parsed.raw_output_contents(0).size() != scan.bytes || parsed.outputs_size() != 1 ||
        parsed.outputs(0).shape_size() != request.gamma().shape_size() ||
        parsed.parameters().count("total_us") != 1) {
      std::abort();
    }
  } else if (!status.ok()) {
    const grpc::Status renamed = scan::server::kserve::in_kserve_terms(status, envelope);
    if (renamed.error_code() != status.error_code() || renamed.error_message().empty()) {
      std::abort();
    }
  }
  harness->buffers->give(std::move(*request.mutable_gamma()->mutable_data()));
  return 0;
}
