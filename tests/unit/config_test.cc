#include "app/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace scan::server {
namespace {

using ::testing::HasSubstr;

ParseResult parse(std::vector<std::string> args, std::map<std::string, std::string> env,
                  ServerConfig* config) {
  return parse_config(args, env, config);
}

TEST(Config, DefaultsAreSane) {
  ServerConfig config;
  ASSERT_EQ(parse({}, {}, &config).action, ParseResult::Action::kRun);
  EXPECT_EQ(config.listen, "0.0.0.0:50051");
  EXPECT_EQ(config.max_tensor_bytes, std::int64_t{256} << 20);
  EXPECT_GT(config.effective_max_message_bytes(), config.max_tensor_bytes);
  EXPECT_GE(config.effective_worker_threads(), 1);
  EXPECT_GT(config.effective_rpc_threads(), config.effective_worker_threads());
}

TEST(Config, EnvironmentOverridesDefaultsAndFlagsOverrideEnvironment) {
  ServerConfig config;
  const auto result =
      parse({"--listen", "127.0.0.1:7000", "--log-format=json"},
            {{"SCAN_LISTEN", "127.0.0.1:6000"}, {"SCAN_WORKER_THREADS", "3"}}, &config);
  ASSERT_EQ(result.action, ParseResult::Action::kRun) << result.output;
  EXPECT_EQ(config.listen, "127.0.0.1:7000");
  EXPECT_EQ(config.worker_threads, 3);
  EXPECT_EQ(config.log_format, "json");
}

TEST(Config, ByteSuffixes) {
  ServerConfig config;
  ASSERT_EQ(parse({"--max-tensor-bytes=64Mi"}, {}, &config).action, ParseResult::Action::kRun);
  EXPECT_EQ(config.max_tensor_bytes, std::int64_t{64} << 20);
}

TEST(Config, RejectsBadValuesNamingTheFlagOrVariable) {
  ServerConfig config;
  auto result = parse({"--worker-threads", "-1"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);
  EXPECT_THAT(result.output, HasSubstr("--worker-threads"));

  result = parse({}, {{"SCAN_LOG_LEVEL", "loud"}}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);
  EXPECT_THAT(result.output, HasSubstr("SCAN_LOG_LEVEL"));

  result = parse({"--no-such-flag=1"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);
  EXPECT_THAT(result.output, HasSubstr("unknown flag --no-such-flag"));

  result = parse({"--listen"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);

  result = parse({"--max-message-bytes=3Gi"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);

  result = parse({"--max-message-bytes=1Mi", "--stream-chunk-bytes=1Mi"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);
  EXPECT_THAT(result.output, HasSubstr("--stream-chunk-bytes"));
}

TEST(Config, TensorsMayExceedOneMessageSinceTheyCanBeStreamed) {
  ServerConfig config;
  const auto result = parse({"--max-tensor-bytes=2Gi", "--max-message-bytes=64Mi"}, {}, &config);
  ASSERT_EQ(result.action, ParseResult::Action::kRun) << result.output;
  EXPECT_EQ(config.max_tensor_bytes, std::int64_t{2} << 30);
  // Tag byte + a 4-byte length varint + the payload is exactly one 64 MiB message.
  EXPECT_EQ(config.max_stream_input_chunk_bytes(), (std::int64_t{64} << 20) - 5);
}

TEST(Config, HelpListsEveryFlagWithItsEnvironmentVariable) {
  ServerConfig config;
  const auto result = parse({"--help"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitSuccess);
  for (const char* name : {"--listen", "SCAN_LISTEN", "--max-tensor-bytes", "--worker-threads",
                           "--log-level", "--log-format", "--shutdown-grace-seconds"}) {
    EXPECT_THAT(result.output, HasSubstr(name));
  }
}

}  // namespace
}  // namespace scan::server

namespace scan::server {
namespace {

TEST(Config, GpuFlagsAndCostModelOverrides) {
  ServerConfig config;
  const ParseResult parsed = parse_config(
      {"--gpu", "off", "--gpu-min-bytes", "1Mi", "--cost-model", "cuda:0=60:20,cpu-native=5:8.5"},
      {{"SCAN_GPU_LANES", "3"}}, &config);
  ASSERT_EQ(parsed.action, ParseResult::Action::kRun) << parsed.output;
  EXPECT_EQ(config.gpu, "off");
  EXPECT_EQ(config.gpu_lanes, 3);
  EXPECT_EQ(config.gpu_min_bytes, 1 << 20);
  // Parsed once, with the flags.
  const std::vector<CostOverride>& overrides = config.cost_overrides;
  ASSERT_EQ(overrides.size(), 2u);
  EXPECT_EQ(overrides[0].backend, "cuda:0");  // the ':' of the name is not the separator
  EXPECT_DOUBLE_EQ(overrides[0].fixed_seconds, 60e-6);
  EXPECT_DOUBLE_EQ(overrides[0].bytes_per_second, 20e9);
  EXPECT_DOUBLE_EQ(overrides[1].bytes_per_second, 8.5e9);

  for (const char* bad : {"cuda:0", "cuda:0=60", "=1:2", "x=1:0", "x=-1:2", "x=a:2"}) {
    ServerConfig rejected;
    EXPECT_EQ(parse_config({"--cost-model", bad}, {}, &rejected).action,
              ParseResult::Action::kExitFailure)
        << bad;
  }
  ServerConfig gpu_typo;
  EXPECT_EQ(parse_config({"--gpu", "on"}, {}, &gpu_typo).action, ParseResult::Action::kExitFailure);
}

// A switch that defaults on: its environment variable turns it off, the flag wins over the
// environment, `describe()` (the startup log line) shows it, and a non-boolean is refused.
void expect_switch_defaults_on(const std::string& flag, const std::string& variable,
                               bool ServerConfig::*member, const std::string& described) {
  SCOPED_TRACE(flag);
  ServerConfig defaults;
  ASSERT_EQ(parse_config({}, {}, &defaults).action, ParseResult::Action::kRun);
  EXPECT_TRUE(defaults.*member);
  ServerConfig from_env;
  ASSERT_EQ(parse_config({}, {{variable, "false"}}, &from_env).action, ParseResult::Action::kRun);
  EXPECT_FALSE(from_env.*member);
  EXPECT_THAT(from_env.describe(), HasSubstr(described + "=false"));
  ServerConfig from_flag;
  ASSERT_EQ(parse_config({flag, "true"}, {{variable, "false"}}, &from_flag).action,
            ParseResult::Action::kRun);
  EXPECT_TRUE(from_flag.*member);
  ServerConfig typo;
  EXPECT_EQ(parse_config({flag, "maybe"}, {}, &typo).action, ParseResult::Action::kExitFailure);
}

TEST(Config, CpuFlushSubnormalsDefaultsOnAndCanBeTurnedOff) {
  expect_switch_defaults_on("--cpu-flush-subnormals", "SCAN_CPU_FLUSH_SUBNORMALS",
                            &ServerConfig::cpu_flush_subnormals, "cpu_flush_subnormals");
}

TEST(Config, GpuRegisterPoolDefaultsOnAndCanBeTurnedOff) {
  expect_switch_defaults_on("--gpu-register-pool", "SCAN_GPU_REGISTER_POOL",
                            &ServerConfig::gpu_register_pool, "gpu_register_pool");
}

TEST(Config, GpuKeepAwakeSecondsDefaultsToTheWindowAndZeroTurnsItOff) {
  ServerConfig defaults;
  ASSERT_EQ(parse_config({}, {}, &defaults).action, ParseResult::Action::kRun);
  EXPECT_DOUBLE_EQ(defaults.gpu_keep_awake_seconds, 10);
  EXPECT_THAT(defaults.describe(), HasSubstr("gpu_keep_awake_seconds=10"));
  ServerConfig from_env;
  ASSERT_EQ(parse_config({}, {{"SCAN_GPU_KEEP_AWAKE_SECONDS", "0"}}, &from_env).action,
            ParseResult::Action::kRun);
  EXPECT_DOUBLE_EQ(from_env.gpu_keep_awake_seconds, 0);
  ServerConfig from_flag;
  ASSERT_EQ(parse_config({"--gpu-keep-awake-seconds", "2.5"},
                         {{"SCAN_GPU_KEEP_AWAKE_SECONDS", "0"}}, &from_flag)
                .action,
            ParseResult::Action::kRun);
  EXPECT_DOUBLE_EQ(from_flag.gpu_keep_awake_seconds, 2.5);
  for (const char* bad : {"-1", "soon", ""}) {
    ServerConfig rejected;
    EXPECT_EQ(parse_config({"--gpu-keep-awake-seconds", bad}, {}, &rejected).action,
              ParseResult::Action::kExitFailure)
        << bad;
  }
}

}  // namespace
}  // namespace scan::server
