#include "routing/cost_model.h"

#include <algorithm>
#include <cmath>

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

namespace scan::server {

const char* cost_source_name(CostSource source) {
  switch (source) {
    case CostSource::kCalibrated:
      return "calibrated";
    case CostSource::kConfigured:
      return "configured";
    case CostSource::kObserved:
      return "observed";
    case CostSource::kUnknown:
      break;
  }
  return "unknown";
}

void CostTracker::reset(CostModel model, std::vector<CostSample> calibration, CostSource source) {
  std::lock_guard<std::mutex> lock(mutex_);
  model_ = model;
  source_ = model.known() ? source : CostSource::kUnknown;
  calibration_ = std::move(calibration);
  buckets_ = {};
}

CostModel CostTracker::model() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

CostSource CostTracker::source() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return source_;
}

int CostTracker::bucket_of(double bytes) {
  int exponent = 0;
  std::frexp(bytes < 1 ? 1 : bytes, &exponent);  // bytes in [2^(exponent-1), 2^exponent)
  return std::clamp(exponent - 1 - 10, 0, kBuckets - 1);
}

bool CostTracker::observe(double bytes, double seconds, std::size_t element_bytes) {
  if (!(seconds > 0) || !(bytes >= 0)) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  if (source_ == CostSource::kConfigured) return false;
  Bucket& bucket = buckets_[width_of(element_bytes)][bucket_of(bytes)];
  // The first few observations of a size are averaged (one slow first request must not stick);
  // after that an EWMA that comes down faster than it goes up: a backend's time is what it can
  // do plus noise that only ever adds (contention, a cold cache), and a slow spell that has passed
  // should not keep traffic away for long.
  const double weight = bucket.count < kAveragedObservations
                            ? 1.0 / static_cast<double>(bucket.count + 1)
                            : (seconds < bucket.seconds ? kFallingSmoothing : kSmoothing);
  bucket.bytes += weight * (bytes - bucket.bytes);
  bucket.seconds += weight * (seconds - bucket.seconds);
  ++bucket.count;

  // The model (what metrics and GetServerInfo show) is one line through every width and size.
  std::vector<CostSample> points;
  std::array<bool, kBuckets> observed{};
  for (const auto& width : buckets_) {
    for (int index = 0; index < kBuckets; ++index) {
      if (width[index].count == 0) continue;
      points.push_back({width[index].bytes, width[index].seconds});
      observed[index] = true;
    }
  }
  for (const CostSample& sample : calibration_) {
    if (!observed[bucket_of(sample.bytes)]) points.push_back(sample);
  }
  const CostModel fitted = fit_cost_model(points);
  if (!fitted.known()) return false;
  model_ = fitted;
  source_ = CostSource::kObserved;
  return true;
}

double CostTracker::predict_seconds(double bytes, std::size_t element_bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!model_.known()) return 0;
  const double modelled = model_.predict_seconds(bytes);
  if (source_ == CostSource::kConfigured) return modelled;
  const Bucket& bucket = buckets_[width_of(element_bytes)][bucket_of(bytes)];
  if (bucket.count == 0) return modelled;
  // The observed level at this size, carried to `bytes` along the model's slope.
  const double at_bucket = model_.predict_seconds(bucket.bytes);
  return at_bucket > 0 ? modelled * (bucket.seconds / at_bucket) : modelled;
}

}  // namespace scan::server
