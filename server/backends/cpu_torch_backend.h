// The LibTorch backend ("cpu-torch"): torch::cumprod, the MM-Rec reference behaviour. The factory
// keeps LibTorch's slow-to-compile headers out of every other translation unit.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace scan::server {

std::unique_ptr<ScanBackend> make_cpu_torch_backend();

}  // namespace scan::server
