// What the server-side harnesses share: the cpu-native backend as the server builds it, the
// validation limits, a buffer pool recycled between inputs, and gRPC-like slicing of input bytes.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "admission/request_validation.h"
#include "backends/cpu_native_backend.h"
#include "scan/kernels/thread_pool.h"
#include "scan/wire/codec.h"

namespace scan::fuzz {

struct ServerHarness {
  // The backend on a pool created once (a pool per input would spend the run starting threads).
  // Fuzz inputs stay far below the kernel's 2^18 elements per thread, so they run on the caller;
  // the kernel tests cover the parallel split.
  kernels::ThreadPool pool{2};
  std::unique_ptr<server::ScanBackend> backend =
      server::make_cpu_native_backend(pool, pool.max_parallelism());
  server::ValidationLimits limits;
  // Tiny minimum, unlike the server's, so that fuzz-sized buffers are recycled between inputs: a
  // decoder that trusted a reused buffer's old bytes or capacity would show here.
  std::shared_ptr<wire::BufferPool> buffers =
      std::make_shared<wire::BufferPool>(std::size_t{1} << 20, 16);

  ServerHarness() {
    // Far below the server's default, so no single input can spend seconds in a kernel; the size
    // checks are the same code whatever the limit.
    limits.max_tensor_bytes = std::int64_t{1} << 20;
  }

  // Runs the backend on a validated scan into an output of exactly the validated size, so that
  // ASan catches a kernel writing past what validation promised. A validated scan that the
  // backend refuses would reach the client as an internal error: abort.
  void scan_or_abort(const server::ValidatedScan& scan, const void* input) const {
    std::unique_ptr<char[]> output(new char[scan.bytes == 0 ? 1 : scan.bytes]);
    server::ScanJob job;
    job.dtype = scan.dtype;
    job.view = scan.view;
    job.input = input;
    job.output = output.get();
    const kernels::KernelStatus status = backend->run(job);
    if (!status.ok()) {
      std::fprintf(stderr, "cpu-native refused a validated request: %s\n",
                   status.message().c_str());
      std::abort();
    }
  }
};

// gRPC hands a handler a message as a chain of slices of its read buffers, and decoders must
// reassemble fields that straddle them: cut the bytes into slices of `piece` bytes.
inline grpc::ByteBuffer as_slices(const std::uint8_t* data, std::size_t size, std::size_t piece) {
  std::vector<grpc::Slice> slices;
  for (std::size_t offset = 0; offset < size; offset += piece) {
    slices.emplace_back(data + offset, std::min(piece, size - offset));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace scan::fuzz
