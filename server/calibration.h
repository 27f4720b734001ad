// Startup calibration: time each backend on a few representative sizes and fit its cost model,
// so that the router's choice between backends rests on measurement on this very machine.
#pragma once

#include <vector>

#include "backends/backend.h"
#include "cost_model.h"

namespace scan::server {

struct CalibrationResult {
  CostModel model;
  std::vector<CostSample> samples;
};

// Runs `backend` on MM-Rec-shaped float32 tensors (1 KiB to 4 MiB, scanned along seq_len) and
// returns the fitted model with the median time of each size. Takes well under a second on one
// core.
CalibrationResult calibrate(ScanBackend& backend);

}  // namespace scan::server
