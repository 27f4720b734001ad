// libFuzzer harness for what every Scan call does with the bytes a client sends: the wire decoder
// as WireScanService::handle runs it (scan::wire::decode over gRPC slices into a pooled buffer),
// validate_scan_request, and, for a request that passes, the cpu-native backend on the validated
// view.
// Validation is the only thing between the network and the kernels, so an input that validates
// but then makes a kernel read or write out of bounds, or fail, is a bug in one of the two.
#include <grpc/grpc.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "admission/request_validation.h"
#include "fuzz_harness.h"
#include "scan/v1/scan.pb.h"
#include "scan/wire/codec.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  grpc_init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Never destroyed: libFuzzer exits without unwinding, and joining the pool then is pointless.
  static scan::fuzz::ServerHarness* const harness = new scan::fuzz::ServerHarness;

  // Slice lengths depend on the input's size, so the corpus covers many different straddles.
  grpc::ByteBuffer buffer = scan::fuzz::as_slices(data, size, 1 + size % 61);
  scan::v1::ScanRequest request;
  std::string* input = request.mutable_gamma()->mutable_data();
  const bool decoded = scan::wire::decode(&buffer, &request, input, harness->buffers.get()).ok();
  scan::server::ValidatedScan scan;
  if (!decoded || !scan::server::validate_scan_request(request, harness->limits, &scan).ok()) {
    harness->buffers->give(std::move(*request.mutable_gamma()->mutable_data()));
    return 0;
  }

  harness->scan_or_abort(scan, scan.input);
  harness->buffers->give(std::move(*request.mutable_gamma()->mutable_data()));
  return 0;
}
