// libFuzzer harness for what every Scan call does with the bytes a client sends: the wire decoder
// as WireScanService::handle runs it (scan::wire::decode over gRPC slices into a pooled buffer),
// validate_scan_request, and, for a request that passes, the cpu-native backend on the validated
// view.
// Validation is the only thing between the network and the kernels, so an input that validates
// but then makes a kernel read or write out of bounds, or fail, is a bug in one of the two.
#include <grpc/grpc.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu_native_backend.h"
#include "request_validation.h"
#include "scan/kernels/thread_pool.h"
#include "scan/v1/scan.pb.h"
#include "wire_codec.h"

namespace {

struct Harness {
  // The backend as the server builds it, on a pool created once (a pool per input would spend
  // the run starting threads). Fuzz inputs stay far below the kernel's 2^18 elements per thread,
  // so they run on the caller; the kernel tests cover the parallel split.
  scan::kernels::ThreadPool pool{2};
  std::unique_ptr<scan::server::ScanBackend> backend =
      scan::server::make_cpu_native_backend(pool, pool.max_parallelism());
  scan::server::ValidationLimits limits;
  // Tiny minimum, unlike the server's, so that fuzz-sized buffers are recycled between inputs:
  // a decoder that trusted a reused buffer's old bytes or capacity would show here.
  std::shared_ptr<scan::wire::BufferPool> buffers =
      std::make_shared<scan::wire::BufferPool>(std::size_t{1} << 20, 16);

  Harness() {
    // Far below the server's default, so no single input can spend seconds in a kernel; the
    // size checks are the same code whatever the limit.
    limits.max_tensor_bytes = std::int64_t{1} << 20;
  }
};

// gRPC hands the handler a message as a chain of slices of its read buffers, and the decoder
// must reassemble fields that straddle them: cut the input into slices whose length depends on
// the input's size, so the corpus covers many different straddles.
grpc::ByteBuffer as_slices(const std::uint8_t* data, std::size_t size) {
  const std::size_t chunk = 1 + size % 61;
  std::vector<grpc::Slice> slices;
  for (std::size_t offset = 0; offset < size; offset += chunk) {
    slices.emplace_back(data + offset, std::min(chunk, size - offset));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  grpc_init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Never destroyed: libFuzzer exits without unwinding, and joining the pool then is pointless.
  static Harness* const harness = new Harness;

  grpc::ByteBuffer buffer = as_slices(data, size);
  scan::v1::ScanRequest request;
  std::string* input = request.mutable_gamma()->mutable_data();
  const bool decoded = scan::wire::decode(&buffer, &request, input, harness->buffers.get()).ok();
  scan::server::ValidatedScan scan;
  if (!decoded || !scan::server::validate_scan_request(request, harness->limits, &scan).ok()) {
    harness->buffers->give(std::move(*request.mutable_gamma()->mutable_data()));
    return 0;
  }

  // The service allocates the output from the validated size; so does the harness, so that ASan
  // catches a kernel writing past what validation promised.
  std::unique_ptr<char[]> output(new char[scan.bytes == 0 ? 1 : scan.bytes]);
  scan::server::ScanJob job;
  job.dtype = scan.dtype;
  job.view = scan.view;
  job.input = scan.input;
  job.output = output.get();
  const scan::kernels::KernelStatus status = harness->backend->run(job);
  if (!status.ok()) {
    // A validated request that the backend refuses would reach the client as an internal error.
    std::fprintf(stderr, "cpu-native refused a validated request: %s\n", status.message().c_str());
    std::abort();
  }
  harness->buffers->give(std::move(*request.mutable_gamma()->mutable_data()));
  return 0;
}
