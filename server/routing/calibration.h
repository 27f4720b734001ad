// Startup calibration: time each backend on a few representative sizes and fit its cost model,
// so that the router's choice between backends rests on measurement on this very machine.
#pragma once

#include <vector>

#include "backends/backend.h"
#include "routing/cost_model.h"

namespace scan::server {

struct CalibrationResult {
  CostModel model;
  std::vector<CostSample> samples;
};

// MM-Rec-shaped float32 tensors (outer = batch x heads, seq_len, head_dim) from launch-bound
// (1 KiB) to bandwidth-bound (4 MiB) sizes: what CPU backends are timed on.
std::vector<kernels::ScanShape> cpu_calibration_shapes();
// The CPU sizes plus 16 and 64 MiB: a GPU's fixed cost (launches, synchronisation) dominates up to
// a few MiB, and only large tensors show the throughput of its copy pipeline.
std::vector<kernels::ScanShape> gpu_calibration_shapes();

// Runs `backend` on `shapes` (float32, scanned along the middle dim) and returns the fitted model
// with the median time of each size. The CPU sizes take well under a second on one core.
CalibrationResult calibrate(
    ScanBackend& backend, const std::vector<kernels::ScanShape>& shapes = cpu_calibration_shapes());

// Runs `backend` once on a small tensor of every dtype, for every path that calibration's float32
// does not take (16-bit conversion, float64): their first request then costs what later ones do.
void warm_every_dtype(ScanBackend& backend);

}  // namespace scan::server
