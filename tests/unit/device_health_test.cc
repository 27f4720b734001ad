#include "backends/device_health.h"

#include <gtest/gtest.h>

namespace scan::server {
namespace {

using Clock = DeviceHealth::Clock;
using std::chrono::seconds;

TEST(DeviceHealth, RepeatedErrorsMarkUnhealthyAndAPassingProbeRestores) {
  DeviceHealth health(3, seconds(10));
  const Clock::time_point start{};
  EXPECT_TRUE(health.healthy());
  EXPECT_FALSE(health.record_error(start));
  EXPECT_FALSE(health.record_error(start));
  EXPECT_TRUE(health.healthy());
  EXPECT_TRUE(health.record_error(start));  // the third in a row
  EXPECT_FALSE(health.healthy());
  EXPECT_FALSE(health.record_error(start));  // already unhealthy: no second transition

  EXPECT_FALSE(health.probe_due(start + seconds(9)));
  EXPECT_TRUE(health.probe_due(start + seconds(10)));
  EXPECT_FALSE(health.record_probe(false, start + seconds(10)));
  EXPECT_FALSE(health.healthy());
  EXPECT_FALSE(health.probe_due(start + seconds(19)));  // a failed probe waits a full interval
  EXPECT_TRUE(health.record_probe(true, start + seconds(20)));
  EXPECT_TRUE(health.healthy());
  EXPECT_FALSE(health.probe_due(start + seconds(100)));  // healthy devices are not probed
}

TEST(DeviceHealth, ASuccessBetweenErrorsResetsTheCount) {
  DeviceHealth health(2, seconds(1));
  const Clock::time_point now{};
  EXPECT_FALSE(health.record_error(now));
  health.record_success();
  EXPECT_FALSE(health.record_error(now));
  EXPECT_TRUE(health.healthy());
  EXPECT_TRUE(health.record_error(now));
  EXPECT_FALSE(health.healthy());
}

}  // namespace
}  // namespace scan::server
