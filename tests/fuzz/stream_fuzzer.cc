// libFuzzer harness for ScanStream's reassembly, as ScanServiceImpl::serve_stream runs it: the
// first message through parse_stream_header and validate_scan_header, every later one through
// StreamAssembler (the protobuf-free chunk path and the protobuf fallback), then finish(), and,
// for a stream that completes, the cpu-native backend on the reassembled tensor.
//
// Input format: a sequence of messages, each a 2-byte little-endian length and that many bytes
// (a length past the end takes what is left), so one input is one whole conversation.
#include <grpc/grpc.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "admission/request_validation.h"
#include "fuzz_harness.h"
#include "rpc/stream_assembly.h"
#include "scan/wire/codec.h"

namespace {

// Splits the input into messages (see the format above).
std::vector<grpc::ByteBuffer> messages_of(const std::uint8_t* data, std::size_t size) {
  std::vector<grpc::ByteBuffer> messages;
  std::size_t position = 0;
  while (position + 2 <= size) {
    std::size_t length = data[position] | (std::size_t{data[position + 1]} << 8);
    position += 2;
    length = std::min(length, size - position);
    // Cut points that vary with the message, so the chunk parser's tag and length straddle them.
    messages.push_back(scan::fuzz::as_slices(data + position, length, 1 + length % 7));
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
  // Never destroyed: libFuzzer exits without unwinding.
  static scan::fuzz::ServerHarness* const harness = new scan::fuzz::ServerHarness;

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

  harness->scan_or_abort(scan, input.bytes().data());
  return 0;
}
