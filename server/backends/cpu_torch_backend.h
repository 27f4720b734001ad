// The LibTorch backend ("cpu-torch"): torch::cumprod, the MM-Rec reference behaviour. The factory
// keeps LibTorch's slow-to-compile headers out of every other translation unit.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace scan::server {

// `flush_subnormals`: LibTorch runs on the calling thread (one intra-op thread), so the caller's
// flush-to-zero mode, set around each call, covers all of its arithmetic.
std::unique_ptr<ScanBackend> make_cpu_torch_backend(bool flush_subnormals = false);

}  // namespace scan::server
