// scan-bench's statistics and report formats.
#include "bench_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scan/wire/byte_size.h"

namespace scan::bench {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(BenchReport, NearestRankPercentiles) {
  std::vector<double> latencies;
  for (int value = 1000; value >= 1; --value) latencies.push_back(value);
  const Percentiles p = percentiles(&latencies);
  EXPECT_EQ(p.count, 1000);
  EXPECT_DOUBLE_EQ(p.p50_us, 500);
  EXPECT_DOUBLE_EQ(p.p90_us, 900);
  EXPECT_DOUBLE_EQ(p.p99_us, 990);
  EXPECT_DOUBLE_EQ(p.p999_us, 999);
  EXPECT_DOUBLE_EQ(p.max_us, 1000);
  EXPECT_DOUBLE_EQ(p.mean_us, 500.5);

  std::vector<double> one = {7};
  EXPECT_DOUBLE_EQ(percentiles(&one).p999_us, 7);
  std::vector<double> none;
  EXPECT_EQ(percentiles(&none).count, 0);
}

TEST(BenchReport, SummaryCountsStatusesBackendsAndThroughput) {
  std::vector<Sample> samples;
  for (int i = 0; i < 8; ++i) samples.push_back({100.0 + i, "OK", "cpu-native", 1000});
  samples.push_back({5000, "OK", "cuda:0", 1000});
  samples.push_back({1, "RESOURCE_EXHAUSTED", "", 1000});
  const RunSummary run = summarize(samples, 2.0);
  EXPECT_EQ(run.ok, 9);
  EXPECT_EQ(run.errors, 1);
  EXPECT_DOUBLE_EQ(run.throughput_rps, 4.5);
  EXPECT_DOUBLE_EQ(run.payload_mbps, 9 * 1000 / 2.0 / 1e6);
  EXPECT_EQ(run.codes.at("OK"), 9);
  EXPECT_EQ(run.codes.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(run.backends.at("cpu-native").count, 8);
  EXPECT_DOUBLE_EQ(run.backends.at("cuda:0").p50_us, 5000);
  EXPECT_DOUBLE_EQ(run.latency.max_us, 5000) << "errors do not count as latencies";
}

TEST(BenchReport, ParsesSizesAndMixes) {
  std::int64_t bytes = 0;
  ASSERT_TRUE(wire::parse_byte_size("4Ki", &bytes));
  EXPECT_EQ(bytes, 4096);
  ASSERT_TRUE(wire::parse_byte_size("256Mi", &bytes));
  EXPECT_EQ(bytes, std::int64_t{256} << 20);
  ASSERT_TRUE(wire::parse_byte_size("12", &bytes));
  EXPECT_EQ(bytes, 12);
  for (const char* bad : {"", "Ki", "4KB", "-1", "4k", "99999999999Gi"}) {
    EXPECT_FALSE(wire::parse_byte_size(bad, &bytes)) << bad;
  }
  std::vector<MixEntry> mix;
  ASSERT_TRUE(parse_mix("4Ki:9,1Mi:1,64", &mix));
  ASSERT_EQ(mix.size(), 3u);
  EXPECT_EQ(mix[0].bytes, 4096);
  EXPECT_DOUBLE_EQ(mix[0].weight, 9);
  EXPECT_DOUBLE_EQ(mix[2].weight, 1);
  for (const char* bad : {"", "4Ki:0", "4Ki:x", "4Ki:-1", "x:1"}) {
    EXPECT_FALSE(parse_mix(bad, &mix)) << bad;
  }
}

TEST(BenchReport, JsonAndCsvCarryTheFigures) {
  RunSummary run = summarize({{1500, "OK", "echo", 4096}, {1, "UNAVAILABLE", "", 4096}}, 1.0);
  run.label = "echo \"4KiB\"";
  run.mode = "closed";
  run.concurrency = 32;
  run.connections = 16;
  const std::string json = to_json({run}, "scan-bench --bytes 4Ki");
  EXPECT_THAT(json, HasSubstr(R"("label": "echo \"4KiB\"")"));
  EXPECT_THAT(json, HasSubstr(R"("codes": {"OK": 1, "UNAVAILABLE": 1})"));
  EXPECT_THAT(json, HasSubstr(R"("p50_us": 1500.0)"));
  EXPECT_THAT(json, HasSubstr(R"("concurrency": 32, "connections": 16,)"));
  EXPECT_THAT(json, HasSubstr(R"("command": "scan-bench --bytes 4Ki")"));

  std::istringstream csv(to_csv({run, run}));
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(csv, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].rfind("label,mode,", 0), 0u);
  EXPECT_THAT(lines[1], HasSubstr(",closed,0.0,32,1.000,1,1,1.0,"));
}

TEST(BenchReport, PlotsTheCdfAlwaysAndLoadOnlyForSeveralRuns) {
  const auto dir =
      std::filesystem::temp_directory_path() /
      ("scan-bench-plot-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()));
  std::filesystem::create_directories(dir);
  const std::string prefix = (dir / "p").string();
  RunSummary a = summarize({{100, "OK", "x", 1}, {300, "OK", "x", 1}}, 1);
  RunSummary b = summarize({{200, "OK", "x", 1}}, 1);
  std::string error;
  ASSERT_TRUE(write_plot_data({a, b}, prefix, &error)) << error;
  std::ifstream cdf(prefix + "-cdf-0.dat");
  std::string first, second;
  std::getline(cdf, first);
  std::getline(cdf, second);
  EXPECT_EQ(first, "0.1000 0.500000");
  EXPECT_EQ(second, "0.3000 1.000000");
  EXPECT_TRUE(std::filesystem::exists(prefix + "-load.dat"));
  EXPECT_THAT(gnuplot_script({a, b}, prefix), HasSubstr("-load.png"));
  EXPECT_THAT(gnuplot_script({a}, prefix), Not(HasSubstr("-load.png")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace scan::bench
