// Whether admission or routing lets a request through, in the service's own terms: the layers
// between the RPC edge and the backends know nothing of gRPC, and server/rpc/ maps an Outcome to
// the status the client gets (rpc/outcome_status.h). The codes are the subset of gRPC's canonical
// codes these layers can produce, so the mapping is one to one and documented in scan.proto.
#pragma once

#include <string>
#include <utility>

namespace scan::server {

enum class Refusal {
  kInvalidArgument,     // the request itself is wrong; the message names the field
  kFailedPrecondition,  // well-formed, but this server cannot serve it (e.g. no GPU)
  kResourceExhausted,   // too big or too busy now; retry with backoff
  kUnavailable,         // nothing can serve it now; retry, perhaps on another replica
};

class Outcome {
 public:
  static Outcome accepted() { return Outcome(); }
  static Outcome refused(Refusal reason, std::string message) {
    return Outcome(reason, std::move(message));
  }
  // The request itself is wrong; `message` starts with the field it names.
  static Outcome invalid(std::string message) {
    return refused(Refusal::kInvalidArgument, std::move(message));
  }

  bool ok() const { return !refused_; }
  // Meaningful only when !ok().
  Refusal reason() const { return reason_; }
  const std::string& message() const { return message_; }

  // The same refusal with `prefix` before its message: a field path one level deeper (e.g.
  // "header." when the field sits inside a ScanStream header).
  Outcome prefixed(const std::string& prefix) const {
    return ok() ? *this : refused(reason_, prefix + message_);
  }

 private:
  Outcome() = default;
  Outcome(Refusal reason, std::string message)
      : refused_(true), reason_(reason), message_(std::move(message)) {}

  bool refused_ = false;
  Refusal reason_ = Refusal::kInvalidArgument;
  std::string message_;
};

}  // namespace scan::server
