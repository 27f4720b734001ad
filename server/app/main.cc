// scan-server: configuration, logging, signal handling; everything else lives in ScanServer.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "app/config.h"
#include "app/logging.h"
#include "app/server.h"

int main(int argc, char** argv) {
  using scan::server::ParseResult;

  scan::server::ServerConfig config;
  const std::vector<std::string> args(argv + 1, argv + argc);
  const ParseResult parsed =
      scan::server::parse_config(args, scan::server::process_environment(), &config);
  if (parsed.action == ParseResult::Action::kExitSuccess) {
    std::fputs(parsed.output.c_str(), stdout);
    return 0;
  }
  if (parsed.action == ParseResult::Action::kExitFailure) {
    std::fprintf(stderr, "scan-server: %s\n", parsed.output.c_str());
    return 2;
  }

  // Block the stop signals in every thread (gRPC's included, which inherit this mask) so that
  // one dedicated thread receives them synchronously and can shut down outside signal context.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  scan::server::configure_logging(config.log_level, config.log_format);
  spdlog::info("scan-server {} starting: {}", SCAN_VERSION, config.describe());

  scan::server::ScanServer server(config, scan::server::compose_backends(config));
  if (!server.start()) return 1;
  spdlog::info("serving scan.v1.ScanService on {} (port {})", config.listen, server.port());
  if (!config.port_file.empty()) std::ofstream(config.port_file) << server.port() << "\n";
  if (!config.metrics_port_file.empty()) {
    std::ofstream(config.metrics_port_file) << server.metrics_port() << "\n";
  }

  std::thread signal_waiter([&server, &stop_signals] {
    int received = 0;
    sigwait(&stop_signals, &received);
    spdlog::info("received {}: draining in-flight requests, then exiting",
                 received == SIGTERM ? "SIGTERM" : "SIGINT");
    server.shutdown();
  });
  server.wait();
  signal_waiter.join();
  spdlog::info("scan-server stopped");
  return 0;
}
