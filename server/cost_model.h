// Predicted service time of a backend as a function of tensor size: fixed cost plus bytes over
// throughput. The router compares predictions to pick a backend; calibration fits them.
#pragma once

#include <vector>

namespace scan::server {

struct CostModel {
  double fixed_seconds = 0;
  double bytes_per_second = 0;  // 0: unknown (no prediction)

  bool known() const { return bytes_per_second > 0; }
  double predict_seconds(double bytes) const { return fixed_seconds + bytes / bytes_per_second; }
};

struct CostSample {
  double bytes = 0;
  double seconds = 0;
};

// Least-squares line through the samples, clamped so that both parameters stay physical
// (fixed >= 0, throughput > 0). Fewer than two distinct sizes give throughput from the mean.
CostModel fit_cost_model(const std::vector<CostSample>& samples);

}  // namespace scan::server
