// A ScanServer running in the test's own process on an ephemeral loopback port, with a client
// connected to it: what the in-process integration suites share.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "app/server.h"
#include "scan/client/scan_client.h"

namespace scan::testing {

// Loopback, an ephemeral port, no metrics endpoint (metrics_test.cc and metrics_endpoint_test.cc
// cover it), a short grace period, and no GPU (these suites pin CPU backends or fakes; a GPU
// machine would route AUTO there).
inline server::ServerConfig loopback_config() {
  server::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics_listen = "";
  config.shutdown_grace_seconds = 5;
  config.drain_delay_seconds = 0;  // draining is tested against real processes (resilience_test)
  config.gpu = "off";
  // Each test starts its own servers: paging in a full buffer pool for each would cost seconds
  // (warm start has tests of its own).
  config.warm_start = false;
  return config;
}

class InProcessServer {
 public:
  // Starts `config` with `router` and `gpus` (the default backends for `config` when `router` is
  // null); check started().
  explicit InProcessServer(const server::ServerConfig& config,
                           std::unique_ptr<server::Router> router = nullptr,
                           kernels::GpuInventory gpus = {}) {
    server::ServingBackends backends{std::move(router), std::move(gpus)};
    if (!backends.router) backends = server::compose_backends(config);
    server_ = std::make_unique<server::ScanServer>(config, std::move(backends));
    if (!server_->start()) return;
    target_ = "127.0.0.1:" + std::to_string(server_->port());
    client_ = std::make_unique<client::Client>(target_);
  }
  ~InProcessServer() { stop(); }
  InProcessServer(const InProcessServer&) = delete;
  InProcessServer& operator=(const InProcessServer&) = delete;

  bool started() const { return client_ != nullptr; }
  server::ScanServer& server() { return *server_; }
  client::Client& client() { return *client_; }
  const std::string& target() const { return target_; }

  // Drops the client, then shuts the server down and waits for it.
  void stop() {
    client_.reset();
    if (server_) {
      server_->shutdown();
      server_->wait();
    }
  }

 private:
  std::unique_ptr<server::ScanServer> server_;
  std::string target_;
  std::unique_ptr<client::Client> client_;
};

}  // namespace scan::testing
