#include "cost_model.h"

namespace scan::server {

CostModel fit_cost_model(const std::vector<CostSample>& samples) {
  // Weighted least squares on relative error (weights 1 / seconds^2): a 1 KiB request mispredicted
  // by 10x matters as much as a 100 MiB one, and plain least squares would let the largest sample
  // decide the fixed cost alone.
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& sample : samples) {
    if (sample.seconds <= 0 || sample.bytes < 0) continue;
    const double weight = 1 / (sample.seconds * sample.seconds);
    sw += weight;
    sx += weight * sample.bytes;
    sy += weight * sample.seconds;
    sxx += weight * sample.bytes * sample.bytes;
    sxy += weight * sample.bytes * sample.seconds;
  }
  if (sw == 0 || sxx == 0) return {};
  const double determinant = sw * sxx - sx * sx;
  double seconds_per_byte = determinant > 0 ? (sw * sxy - sx * sy) / determinant : 0;
  double fixed = seconds_per_byte > 0 ? (sy - seconds_per_byte * sx) / sw : -1;
  if (seconds_per_byte <= 0 || fixed < 0) {
    // The line left the physical region (noise, or one distinct size): fit through the origin.
    fixed = 0;
    seconds_per_byte = sxy / sxx;
  }
  if (seconds_per_byte <= 0) return {};
  return {fixed, 1 / seconds_per_byte};
}

}  // namespace scan::server
