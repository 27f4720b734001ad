#include "config.h"

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

  result = parse({"--max-tensor-bytes=2Gi", "--max-message-bytes=1Gi"}, {}, &config);
  EXPECT_EQ(result.action, ParseResult::Action::kExitFailure);
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
