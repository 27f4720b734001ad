// The HTTP endpoint that Prometheus scrapes. It replaces prometheus-cpp's civetweb Exposer, which
// crashed the whole process on any 404 or 405 (a stack overflow formatting the error page on its
// worker thread: civetweb#1259, prometheus-cpp#739), let one half-sent request block every scrape
// on its single worker, and could not bind at all on the GPU host. libmicrohttpd serves every
// connection from one event loop, with per-connection timeouts and memory limits, so a slow or
// hostile client costs a socket, not the endpoint.
#pragma once

#include <functional>
#include <memory>
#include <string>

struct MHD_Daemon;

namespace scan::server {

struct MetricsHttpLimits {
  // A connection that sends or reads nothing for this long is closed.
  unsigned int idle_timeout_seconds = 10;
  unsigned int max_connections = 64;
  // One address cannot take every connection: a scanner on one host leaves room for Prometheus.
  unsigned int max_connections_per_ip = 16;
  // Request line and headers of one connection; larger requests get 431 or are closed.
  std::size_t connection_memory_bytes = 32 * 1024;
};

class MetricsHttpServer {
 public:
  // Produces the exposition text of one scrape; called on the endpoint's own thread.
  using Render = std::function<std::string()>;
  // Says whether a request's Authorization header (null when absent) may scrape.
  using Authorize = std::function<bool(const char* authorization)>;

  // Listens on `listen` (HOST:PORT; [IPv6]:PORT; an empty host is every address; port 0 picks
  // one) and serves GET and HEAD of /metrics. With `authorize` set, a scrape it refuses gets 401.
  // Other paths get 404, other methods 405. Null and *error (naming the address) when the
  // address cannot be resolved or bound.
  static std::unique_ptr<MetricsHttpServer> start(const std::string& listen, Render render,
                                                  Authorize authorize,
                                                  const MetricsHttpLimits& limits,
                                                  std::string* error);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

  // Exposed for MHD's C callback; not part of the API.
  struct Handler;

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<Handler> handler_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

// Splits HOST:PORT ("[v6]:PORT" too). False when there is no port or it is not 0-65535.
bool split_host_port(const std::string& listen, std::string* host, int* port);

}  // namespace scan::server
