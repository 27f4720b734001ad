// libFuzzer harness for ScanStream's reassembly, as ScanServiceImpl::serve_stream runs it: the
// first message through parse_stream_header and validate_scan_header, every later one through
// StreamAssembler (the protobuf-free chunk path and the protobuf fallback), then finish(), and,
// for a stream that completes, the cpu-native backend on the reassembled tensor.
//
// Input format: a sequence of messages, each a 2-byte little-endian length and that many bytes
// (a length past the end takes what is left), so one input is one whole conversation.
#include <grpc/grpc.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu_native_backend.h"
#include "request_validation.h"
#include "scan/kernels/thread_pool.h"
#include "stream_assembly.h"
#include "wire_codec.h"

namespace {

struct Harness {
  scan::kernels::ThreadPool pool{2};
  std::unique_ptr<scan::server::ScanBackend> backend =
      scan::server::make_cpu_native_backend(pool, pool.max_parallelism());
  scan::server::ValidationLimits limits;
  // Recycled between inputs, as in the server: leftovers of an earlier stream must not leak into
  // the next one's tensor.
  std::shared_ptr<scan::wire::BufferPool> buffers =
      std::make_shared<scan::wire::BufferPool>(std::size_t{1} << 20, 16);

  Harness() { limits.max_tensor_bytes = std::int64_t{1} << 20; }
};

// A message as gRPC hands it over: slices whose cut points vary with the message, so that the
// chunk parser's tag and length straddle slice boundaries.
grpc::ByteBuffer as_slices(const std::uint8_t* data, std::size_t size) {
  const std::size_t piece = 1 + size % 7;
  std::vector<grpc::Slice> slices;
  for (std::size_t offset = 0; offset < size; offset += piece) {
    slices.emplace_back(data + offset, std::min(piece, size - offset));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// Splits the input into messages (see the format above).
std::vector<grpc::ByteBuffer> messages_of(const std::uint8_t* data, std::size_t size) {
  std::vector<grpc::ByteBuffer> messages;
  std::size_t position = 0;
  while (position + 2 <= size) {
    std::size_t length = data[position] | (std::size_t{data[position + 1]} << 8);
    position += 2;
    length = std::min(length, size - position);
    messages.push_back(as_slices(data + position, length));
    position += length;
  }
  return messages;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  grpc_init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Harness* const harness =
      new Harness;  // never destroyed: libFuzzer exits without unwinding

  std::vector<grpc::ByteBuffer> messages = messages_of(data, size);
  if (messages.empty()) return 0;
  scan::v1::ScanRequest header;
  if (!scan::server::parse_stream_header(&messages[0], &header).ok()) return 0;
  scan::server::ValidatedScan scan;
  if (!scan::server::validate_scan_header(header, harness->limits, &scan).ok()) return 0;

  scan::wire::PooledBuffer input(harness->buffers, scan.bytes);
  scan::server::StreamAssembler assembler(&input.bytes(), scan.bytes);
  for (std::size_t index = 1; index < messages.size(); ++index) {
    if (!assembler.add(&messages[index]).ok()) return 0;
    if (assembler.received_bytes() > scan.bytes) {
      std::fprintf(stderr, "the assembler took %zu bytes for a tensor of %zu\n",
                   assembler.received_bytes(), scan.bytes);
      std::abort();
    }
  }
  if (!assembler.finish().ok()) return 0;
  if (input.bytes().size() != scan.bytes) {
    std::fprintf(stderr, "finish() accepted %zu bytes for a tensor of %zu\n", input.bytes().size(),
                 scan.bytes);
    std::abort();
  }

  // Allocated to the validated size, so ASan catches a kernel writing past it.
  std::unique_ptr<char[]> output(new char[scan.bytes == 0 ? 1 : scan.bytes]);
  scan::server::ScanJob job;
  job.dtype = scan.dtype;
  job.view = scan.view;
  job.input = input.bytes().data();
  job.output = output.get();
  const scan::kernels::KernelStatus status = harness->backend->run(job);
  if (!status.ok()) {
    std::fprintf(stderr, "cpu-native refused a reassembled stream: %s\n", status.message().c_str());
    std::abort();
  }
  return 0;
}
