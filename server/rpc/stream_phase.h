// The parts of a ScanStream conversation (see scan.proto), shared by the transport that times
// them and the metrics that count the streams cut in each.
#pragma once

namespace scan::server {

enum class StreamPhase {
  kHeader,    // waiting for the client's header
  kUpload,    // `accepted` sent: waiting for the tensor's chunks
  kCompute,   // the client has sent everything: the server is working
  kDownload,  // sending the result's header and chunks
};
constexpr int kStreamPhaseCount = 4;

constexpr const char* stream_phase_name(StreamPhase phase) {
  switch (phase) {
    case StreamPhase::kHeader:
      return "header";
    case StreamPhase::kUpload:
      return "upload";
    case StreamPhase::kCompute:
      return "compute";
    case StreamPhase::kDownload:
      return "download";
  }
  return "unknown";
}

}  // namespace scan::server
