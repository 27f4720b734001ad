// Startup calibration: time each backend on a few representative sizes and fit its cost model,
// so that the router's choice between backends rests on measurement on this very machine.
#pragma once

#include <cstddef>
#include <functional>
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

// What calibration's input and output are made into before they are timed, so that the path timed
// is the path served: a GPU serves pooled request buffers that are registered with CUDA
// (--gpu-register-pool) by DMA, and plain memory through its staging buffers, about twice as slow
// at 16 MiB and up. `adopt` is told of each tensor before the first run (and may return once it
// is registered), `release` before it is freed. Each is page-aligned and of whole pages.
struct CalibrationMemory {
  std::function<void(const void* data, std::size_t bytes)> adopt;
  std::function<void(const void* data, std::size_t bytes)> release;
};

// Runs `backend` on `shapes` (float32, scanned along the middle dim) and returns the fitted model
// with the median time of each size. The CPU sizes take well under a second on one core.
CalibrationResult calibrate(
    ScanBackend& backend, const std::vector<kernels::ScanShape>& shapes = cpu_calibration_shapes(),
    const CalibrationMemory& memory = {});

// Runs `backend` once on a small tensor of every dtype, for every path that calibration's float32
// does not take (16-bit conversion, float64): their first request then costs what later ones do.
void warm_every_dtype(ScanBackend& backend);

}  // namespace scan::server
