#include "metrics/metrics_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <utility>

namespace scan::server {

struct MetricsHttpServer::Handler {
  Render render;
  Authorize authorize;
};

namespace {

constexpr char kMetricsPath[] = "/metrics";
constexpr char kTextFormat[] = "text/plain; version=0.0.4; charset=utf-8";

MHD_Result respond(MHD_Connection* connection, unsigned int status, const std::string& body,
                   const char* content_type, const char* header = nullptr,
                   const char* header_value = nullptr) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;  // out of memory: MHD closes the connection
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (header != nullptr) MHD_add_response_header(response, header, header_value);
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

MHD_Result handle(void* context, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  std::size_t* upload_data_size, void** /*connection_state*/) {
  const auto& handler = *static_cast<const MetricsHttpServer::Handler*>(context);
  // Answered on the first call, before any body is read: MHD then closes the connection instead
  // of reading an upload nobody asked for.
  (void)upload_data_size;
  const bool readable = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                        std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  if (std::strcmp(url, kMetricsPath) != 0) {
    return respond(connection, MHD_HTTP_NOT_FOUND, "not found: only /metrics is served\n",
                   "text/plain");
  }
  if (!readable) {
    return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n",
                   "text/plain", MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  }
  if (handler.authorize && !handler.authorize(MHD_lookup_connection_value(
                               connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
    return respond(connection, MHD_HTTP_UNAUTHORIZED,
                   "unauthorized: send 'Authorization: Bearer <token>'\n", "text/plain",
                   MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  }
  std::string text;
  try {
    text = handler.render();
  } catch (const std::exception& failure) {
    spdlog::error("metrics: rendering a scrape failed: {}", failure.what());
    return respond(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot render metrics\n",
                   "text/plain");
  }
  return respond(connection, MHD_HTTP_OK, text, kTextFormat);
}

// MHD's own complaints (a client that timed out, a malformed request) are the clients' problem,
// not the operator's: debug level.
void log_mhd(void* /*context*/, const char* format, va_list arguments) {
  char line[512];
  std::vsnprintf(line, sizeof line, format, arguments);
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  spdlog::debug("metrics http: {}", text);
}

// A listening socket bound to `host:port`; -1 and *error (the system's reason) when impossible.
int listen_on(const std::string& host, int port, bool* ipv6, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int resolved =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
  if (resolved != 0) {
    *error = std::string("cannot resolve host: ") + gai_strerror(resolved);
    return -1;
  }
  int fd = -1;
  std::string reason = "no address";
  for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
    fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) {
      reason = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd, address->ai_addr, address->ai_addrlen) == 0 && listen(fd, 64) == 0) {
      *ipv6 = address->ai_family == AF_INET6;
      break;
    }
    reason = std::string("bind: ") + std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  if (fd < 0) *error = reason;
  return fd;
}

}  // namespace

bool split_host_port(const std::string& listen, std::string* host, int* port) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  std::string name = listen.substr(0, colon);
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  const std::string digits = listen.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const int value = std::stoi(digits);
  if (value > 65535) return false;
  *host = name;
  *port = value;
  return true;
}

std::unique_ptr<MetricsHttpServer> MetricsHttpServer::start(const std::string& listen,
                                                            Render render, Authorize authorize,
                                                            const MetricsHttpLimits& limits,
                                                            std::string* error) {
  std::string host;
  int port = 0;
  if (!split_host_port(listen, &host, &port)) {
    *error = "cannot serve metrics on " + listen + ": expected HOST:PORT";
    return nullptr;
  }
  bool ipv6 = false;
  std::string reason;
  const int fd = listen_on(host, port, &ipv6, &reason);
  if (fd < 0) {
    *error = "cannot serve metrics on " + listen + ": " + reason;
    return nullptr;
  }
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->handler_ = std::make_unique<Handler>(Handler{std::move(render), std::move(authorize)});
  unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
  if (ipv6) flags |= MHD_USE_IPv6;
  server->daemon_ =
      MHD_start_daemon(flags, 0, nullptr, nullptr, &handle, server->handler_.get(),  //
                       MHD_OPTION_LISTEN_SOCKET, static_cast<MHD_socket>(fd),        //
                       MHD_OPTION_CONNECTION_TIMEOUT, limits.idle_timeout_seconds,   //
                       MHD_OPTION_CONNECTION_LIMIT, limits.max_connections,          //
                       MHD_OPTION_PER_IP_CONNECTION_LIMIT, limits.max_connections_per_ip,
                       MHD_OPTION_CONNECTION_MEMORY_LIMIT, limits.connection_memory_bytes,  //
                       MHD_OPTION_EXTERNAL_LOGGER, &log_mhd, nullptr,                       //
                       MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    close(fd);
    *error = "cannot serve metrics on " + listen + ": the HTTP server did not start";
    return nullptr;
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : port;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  // MHD_stop_daemon closes the listening socket it was handed, and joins its thread.
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace scan::server
