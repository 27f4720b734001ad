// libFuzzer harness for the shared-memory messages a client sends: a RegisterSharedMemoryRequest
// and a Scan request naming regions (gamma.shared_memory, output), as the server handles them
// (Registry::add, validate_scan_request, use_request_regions), then the cpu-native backend from
// the referenced range into the referenced or a heap output. A reference that passes the checks
// but makes the kernel touch memory outside the mapping is a bug in the checks (ASan, or a SEGV).
//
// Input: one byte `split`, then the registration (split bytes), then the Scan request. Fuzzed
// keys are validated, but what is opened is always the harness's own object, so that a fuzzer
// cannot make the harness map other objects of the machine.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "admission/request_validation.h"
#include "fuzz_harness.h"
#include "rpc/shared_memory_service.h"
#include "scan/client/shared_memory.h"
#include "scan/v1/scan.pb.h"
#include "shared_memory/region_registry.h"

namespace {

struct SharedMemoryHarness {
  static constexpr std::size_t kObjectBytes = 64 << 10;
  scan::fuzz::ServerHarness server;
  std::unique_ptr<scan::client::SystemSharedMemory> object;
  scan::server::shared_memory::Registry registry{{4, 1 << 20}};

  SharedMemoryHarness() {
    std::string error;
    object = scan::client::SystemSharedMemory::create(
        scan::client::SystemSharedMemory::unique_key("fuzz"), kObjectBytes, &error);
    if (object == nullptr) {
      std::fprintf(stderr, "shared_memory_fuzzer: %s\n", error.c_str());
      std::abort();
    }
    for (std::size_t at = 0; at < kObjectBytes; ++at) object->data()[at] = static_cast<char>(at);
    // "r": the whole object; "half": its second half.
    if (!registry.add("", {"r", object->key(), 0, kObjectBytes}).ok() ||
        !registry.add("", {"half", object->key(), kObjectBytes / 2, kObjectBytes / 2}).ok()) {
      std::abort();
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static SharedMemoryHarness* const harness = new SharedMemoryHarness;
  if (size == 0) return 0;
  const std::size_t split = std::min<std::size_t>(data[0], size - 1);
  const auto* registration_bytes = reinterpret_cast<const char*>(data + 1);
  const auto* request_bytes = registration_bytes + split;
  const std::size_t request_size = size - 1 - split;

  scan::v1::RegisterSharedMemoryRequest registration;
  if (registration.ParseFromArray(registration_bytes, static_cast<int>(split))) {
    std::string key = registration.key();
    if (scan::server::shared_memory::valid_system_key(key)) key = harness->object->key();
    const auto added = harness->registry.add(
        "", {registration.name(), key, registration.offset(), registration.byte_size()});
    // Registered regions are removed again at once, so inputs do not pile them up.
    if (added.ok()) harness->registry.remove("", registration.name());
  }

  scan::v1::ScanRequest request;
  if (!request.ParseFromArray(request_bytes, static_cast<int>(request_size))) return 0;
  scan::server::ValidatedScan scan;
  if (!scan::server::validate_scan_request(request, harness->server.limits, &scan).ok()) return 0;
  scan::server::shared_memory::RegionUse input, output;
  if (!scan::server::use_request_regions(&harness->registry, "", request, &scan, &input, &output)
           .ok()) {
    return 0;
  }
  if (!output) {
    harness->server.scan_or_abort(scan, scan.input);
    return 0;
  }
  scan::server::ScanJob job;
  job.dtype = scan.dtype;
  job.view = scan.view;
  job.input = scan.input;
  job.output = output.data();
  if (!harness->server.backend->run(job).ok()) std::abort();
  if (!input.check_intact("gamma.shared_memory").ok() || !output.check_intact("output").ok()) {
    std::abort();  // nothing truncates the harness's object
  }
  return 0;
}
