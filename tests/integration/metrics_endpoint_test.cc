// The metrics port as an attacker, a port scanner and a careless client meet it: every method and
// path, malformed and oversized requests, slow and silent senders, floods and tokens. After each
// attack the process still serves gRPC and scrapes. (The civetweb exposer this replaced died of
// SIGSEGV on the first 404 or 405.)
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "app/server.h"
#include "metrics/metrics_http.h"
#include "scan/client/host_tensor.h"
#include "scan/client/scan_client.h"

namespace scan {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t wrote = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (wrote <= 0) return false;  // the server may close a hostile connection mid-send
    sent += static_cast<std::size_t>(wrote);
  }
  return true;
}

// Everything the server sends until it closes or `limit` passes.
std::string read_reply(int fd, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  std::string reply;
  const auto deadline = Clock::now() + limit;
  char buffer[65536];
  while (Clock::now() < deadline) {
    pollfd ready{fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (poll(&ready, 1, static_cast<int>(std::max<long>(left, 1))) <= 0) break;
    const ssize_t got = recv(fd, buffer, sizeof buffer, 0);
    if (got <= 0) break;
    reply.append(buffer, static_cast<std::size_t>(got));
  }
  return reply;
}

// Sends `request` on a new connection (HTTP/1.0 closes after the reply) and returns the reply.
std::string http_exchange(int port, const std::string& request) {
  const int fd = connect_to(port);
  if (fd < 0) return "";
  send_all(fd, request);
  shutdown(fd, SHUT_WR);
  std::string reply = read_reply(fd);
  close(fd);
  return reply;
}

std::string request_line(const std::string& method, const std::string& path,
                         const std::string& headers = "") {
  return method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
}

int status_of(const std::string& reply) {
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.size() < 12) return -1;
  return std::stoi(reply.substr(9, 3));
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void start(const std::string& metrics_token_file = "") {
    server::ServerConfig config;
    config.drain_delay_seconds = 0;  // no drain to wait for in-process
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.metrics_auth_token_file = metrics_token_file;
    config.worker_threads = 2;
    config.warm_start = false;
    config.gpu = "off";
    server_ = std::make_unique<server::ScanServer>(config, server::compose_backends(config));
    ASSERT_TRUE(server_->start());
    port_ = server_->metrics_port();
    ASSERT_GT(port_, 0);
  }

  // The process is alive and both of its ports still work.
  void expect_still_serving() {
    EXPECT_EQ(status_of(http_exchange(port_, request_line("GET", "/metrics"))), 200);
    client::Client client("127.0.0.1:" + std::to_string(server_->port()));
    const client::HostTensor gamma =
        client::random_gamma(kernels::DType::kFloat32, {3, 37}, 0.5, 1.0, std::random_device{}());
    client::ScanOptions options;
    options.dim = 1;
    client::ScanResult result;
    ASSERT_TRUE(client.Scan(gamma, options, &result).ok());
    EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());
  }

  std::unique_ptr<server::ScanServer> server_;
  int port_ = 0;
};

TEST_F(MetricsEndpointTest, EveryMethodAndPathGetsAnAnswerAndNeverAFault) {
  start();
  const std::vector<std::string> methods = {"GET",     "HEAD",     "POST",    "PUT",
                                            "DELETE",  "PATCH",    "OPTIONS", "TRACE",
                                            "CONNECT", "PROPFIND", "BREW",    "get"};
  const std::vector<std::string> paths = {"/",
                                          "/metrics",
                                          "/favicon.ico",
                                          "/metrics/",
                                          "/metrics?name[]=x",
                                          "/../../etc/passwd",
                                          "*",
                                          "/%00",
                                          "http://127.0.0.1/metrics",
                                          "/" + std::string(8000, 'a')};
  for (const auto& method : methods) {
    for (const auto& path : paths) {
      const std::string reply = http_exchange(port_, request_line(method, path));
      const int status = status_of(reply);
      SCOPED_TRACE(method + " " + path.substr(0, 40) + " -> " + reply.substr(0, 40));
      EXPECT_GE(status, 200);  // an HTTP answer: never a dropped connection without one
      const bool scrape = path == "/metrics" || path == "/metrics?name[]=x";
      if (scrape && (method == "GET" || method == "HEAD")) {
        EXPECT_EQ(status, 200);
      } else if (scrape && method != "get" && method != "CONNECT") {
        EXPECT_EQ(status, 405);
        EXPECT_THAT(reply, HasSubstr("Allow: GET, HEAD"));
      } else if (path == "/" || path == "/favicon.ico" || path == "/metrics/") {
        EXPECT_TRUE(status == 404 || status == 400 || status == 405) << status;
      }
    }
  }
  const std::string head = http_exchange(port_, request_line("HEAD", "/metrics"));
  EXPECT_EQ(head.find("# TYPE"), std::string::npos) << "HEAD carries no body";
  const std::string body = http_exchange(port_, request_line("GET", "/metrics"));
  EXPECT_THAT(body, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(body, HasSubstr("# TYPE scan_requests_total counter"));
  expect_still_serving();
}

TEST_F(MetricsEndpointTest, MalformedAndOversizedRequestsAreRefusedAndTheServerLives) {
  start();
  std::mt19937 random(std::random_device{}());
  std::string noise(4096, '\0');
  for (auto& byte : noise) byte = static_cast<char>(random());
  const std::vector<std::string> attacks = {
      noise,
      "GET /metrics\r\n\r\n",           // HTTP/0.9
      "GET /metrics HTTP/9.9\r\n\r\n",  // unknown version
      "GET /metrics HTTP/1.1\r\n\r\n",  // HTTP/1.1 without Host
      "\r\n\r\n\r\n",                   // empty request line
      "GET /metrics HTTP/1.0\r\nX: " + std::string(1 << 20, 'x') + "\r\n\r\n",  // 1 MiB header
      "GET /" + std::string(1 << 20, 'p') + " HTTP/1.0\r\n\r\n",                // 1 MiB path
      [] {
        std::string many = "GET /metrics HTTP/1.0\r\n";
        for (int i = 0; i < 20000; ++i) many += "H" + std::to_string(i) + ": v\r\n";
        return many + "\r\n";
      }(),
      "POST /metrics HTTP/1.0\r\nContent-Length: 1000000000\r\n\r\n" + std::string(65536, 'b'),
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ngarbage\r\n",
      "GET /metrics HTTP/1.0\r\nContent-Length: -5\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nDELETE /metrics "
      "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  // pipelined
  };
  for (const auto& attack : attacks) {
    SCOPED_TRACE(attack.substr(0, 30));
    const std::string reply = http_exchange(port_, attack);
    const int status = status_of(reply);
    // Either refused with a status, or (when the bytes were not HTTP at all) closed.
    EXPECT_TRUE(status == -1 || status >= 200) << reply.substr(0, 80);
  }
  expect_still_serving();
}

TEST_F(MetricsEndpointTest, ScrapesAreServedWhileSlowAndSilentClientsHoldConnections) {
  start();
  std::vector<int> held;
  for (int i = 0; i < 12; ++i) {
    const int fd = connect_to(port_);
    ASSERT_GE(fd, 0);
    if (i % 3 == 0) send_all(fd, "GET /metr");  // half a request line, then nothing
    if (i % 3 == 1) send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    if (i % 3 == 2) send_all(fd, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n");
    held.push_back(fd);
  }
  // A scrape that never reads its (large) response does not block the event loop either.
  const int unread = connect_to(port_);
  send_all(unread, request_line("GET", "/metrics"));
  for (int scrape = 0; scrape < 5; ++scrape) {
    const auto began = Clock::now();
    EXPECT_EQ(status_of(http_exchange(port_, request_line("GET", "/metrics"))), 200);
    EXPECT_LT(Clock::now() - began, std::chrono::seconds(2)) << "scrape stalled by a slow client";
  }
  for (const int fd : held) close(fd);
  close(unread);
  expect_still_serving();
}

TEST_F(MetricsEndpointTest, AConnectionFloodIsCappedAndRecovers) {
  start();
  std::vector<int> flood;
  for (int i = 0; i < 300; ++i) {
    const int fd = connect_to(port_);
    if (fd >= 0) flood.push_back(fd);
  }
  for (const int fd : flood) close(fd);
  // The server notices the closed sockets on its next poll; a scrape gets through right after.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  expect_still_serving();
}

TEST_F(MetricsEndpointTest, ATokenGuardsScrapesWhenConfigured) {
  const std::string token_file = ::testing::TempDir() + "/metrics_token";
  const std::string token = "scrape-token-0123456789abcdef";
  std::ofstream(token_file) << token << "\n";
  start(token_file);
  EXPECT_EQ(status_of(http_exchange(port_, request_line("GET", "/metrics"))), 401);
  EXPECT_EQ(status_of(http_exchange(
                port_, request_line("GET", "/metrics",
                                    "Authorization: Bearer wrong-token-xxxxxxxxx\r\n"))),
            401);
  EXPECT_EQ(
      status_of(http_exchange(
          port_, request_line("GET", "/metrics", "Authorization: Bearer " + token + "x\r\n"))),
      401);
  const std::string reply = http_exchange(
      port_, request_line("GET", "/metrics", "Authorization: Bearer " + token + "\r\n"));
  EXPECT_EQ(status_of(reply), 200);
  EXPECT_THAT(reply, HasSubstr("scan_requests_total"));
  EXPECT_EQ(status_of(http_exchange(port_, request_line("POST", "/metrics"))), 405);
}

TEST(MetricsHttpServer, ClosesConnectionsThatSendNothingWithinTheIdleTimeout) {
  server::MetricsHttpLimits limits;
  limits.idle_timeout_seconds = 1;
  std::string error;
  auto endpoint = server::MetricsHttpServer::start(
      "127.0.0.1:0", [] { return std::string("up 1\n"); }, {}, limits, &error);
  ASSERT_NE(endpoint, nullptr) << error;
  const int fd = connect_to(endpoint->port());
  ASSERT_GE(fd, 0);
  send_all(fd, "GET /met");
  const auto began = Clock::now();
  read_reply(fd, std::chrono::seconds(6));  // returns when the server closes
  EXPECT_LT(Clock::now() - began, std::chrono::seconds(4));
  close(fd);
  EXPECT_EQ(status_of(http_exchange(endpoint->port(), request_line("GET", "/metrics"))), 200);
}

TEST(MetricsHttpServer, ABindFailureNamesTheAddressAndTheReason) {
  std::string error;
  auto first = server::MetricsHttpServer::start(
      "127.0.0.1:0", [] { return std::string(); }, {}, {}, &error);
  ASSERT_NE(first, nullptr) << error;
  const std::string taken = "127.0.0.1:" + std::to_string(first->port());
  EXPECT_EQ(server::MetricsHttpServer::start(
                taken, [] { return std::string(); }, {}, {}, &error),
            nullptr);
  EXPECT_THAT(error, StartsWith("cannot serve metrics on " + taken + ": bind: "));
  EXPECT_EQ(server::MetricsHttpServer::start(
                "nonexistent.invalid:9464", [] { return std::string(); }, {}, {}, &error),
            nullptr);
  EXPECT_THAT(error, HasSubstr("nonexistent.invalid:9464"));
  EXPECT_EQ(server::MetricsHttpServer::start(
                "127.0.0.1:99999", [] { return std::string(); }, {}, {}, &error),
            nullptr);
  EXPECT_THAT(error, HasSubstr("expected HOST:PORT"));
}

TEST(MetricsHttpServer, ServesIpv6AndBracketedAddresses) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(server::split_host_port("[::1]:9464", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9464);
  ASSERT_TRUE(server::split_host_port(":0", &host, &port));
  EXPECT_EQ(host, "");
  EXPECT_FALSE(server::split_host_port("localhost", &host, &port));
  EXPECT_FALSE(server::split_host_port("localhost:http", &host, &port));
  std::string error;
  auto endpoint = server::MetricsHttpServer::start(
      "[::1]:0", [] { return std::string("up 1\n"); }, {}, {}, &error);
  if (endpoint == nullptr) GTEST_SKIP() << "no IPv6 loopback here: " << error;
  EXPECT_GT(endpoint->port(), 0);
}

}  // namespace
}  // namespace scan
