// Predicted service time of a backend as a function of tensor size: fixed cost plus bytes over
// throughput. The router compares predictions to pick a backend; calibration fits them.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string>
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

// Where a backend's current model comes from.
enum class CostSource { kUnknown, kCalibrated, kConfigured, kObserved };
const char* cost_source_name(CostSource source);

// A backend's cost model as it evolves while serving. It starts from the startup calibration and
// follows the service times actually observed: each power-of-two size bucket keeps an EWMA of the
// sizes and times seen in it, and the model is refitted over those points plus the calibration
// samples of buckets not yet observed (so sizes never served keep their measured anchor). Why:
// calibration runs on an idle machine for a fraction of a second, while production sees warm
// caches, contention and sizes calibration never tried. A configured model is pinned: the operator
// said what to assume, so observations do not move it. Thread-safe.
class CostTracker {
 public:
  // Starts over from `model` (fitted from `calibration`, which may be empty).
  void reset(CostModel model, std::vector<CostSample> calibration, CostSource source);
  CostModel model() const;
  CostSource source() const;
  // Feeds one observed service time of a tensor of `element_bytes` wide elements; returns true
  // when the model changed.
  bool observe(double bytes, double seconds, std::size_t element_bytes = 4);
  // Predicted service time: the model, scaled by what was observed at this size and element
  // width (16-bit tensors run at other speeds per byte than 32- and 64-bit ones, differently on
  // each backend, and a straight line fits no backend at every size). Unobserved sizes: the model.
  double predict_seconds(double bytes, std::size_t element_bytes = 4) const;

  static constexpr double kSmoothing = 0.25;        // weight of the newest observation in a bucket
  static constexpr double kFallingSmoothing = 0.5;  // ... when it is faster than the estimate
  static constexpr int kAveragedObservations = 3;   // the first ones of a bucket: plain mean
  static constexpr int kBuckets = 24;               // sizes 2^10 .. 2^33 bytes, ends clamped

 private:
  struct Bucket {
    double bytes = 0;
    double seconds = 0;
    long count = 0;
  };
  static int bucket_of(double bytes);
  static int width_of(std::size_t element_bytes) { return element_bytes == 2 ? 0 : 1; }

  mutable std::mutex mutex_;
  CostModel model_;
  CostSource source_ = CostSource::kUnknown;
  std::vector<CostSample> calibration_;
  // By element width (16-bit, wider), then size.
  std::array<std::array<Bucket, kBuckets>, 2> buckets_{};
};

}  // namespace scan::server
