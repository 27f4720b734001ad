// scan-bench-tcp-echo: the raw TCP floor. Reads a message (8-byte little-endian length, then the
// bytes) in full and writes it back the same way, one thread per connection: the bytes of a unary
// Scan, moved by the kernel and nothing else. scan-bench --protocol tcp is its client.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

namespace {

// Receives (send_flags < 0) or sends exactly `size` bytes.
bool transfer(int fd, char* data, std::size_t size, int send_flags) {
  while (size > 0) {
    const ssize_t done =
        send_flags < 0 ? recv(fd, data, size, 0) : send(fd, data, size, send_flags | MSG_NOSIGNAL);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    data += done;
    size -= static_cast<std::size_t>(done);
  }
  return true;
}

void serve(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string buffer;
  std::uint64_t length = 0;
  while (transfer(fd, reinterpret_cast<char*>(&length), sizeof length, -1)) {
    buffer.resize(length);
    if (!transfer(fd, buffer.data(), length, -1)) break;
    // MSG_MORE holds the header back until the body follows, as one gRPC frame would go out.
    if (!transfer(fd, reinterpret_cast<char*>(&length), sizeof length, MSG_MORE) ||
        !transfer(fd, buffer.data(), length, 0)) {
      break;
    }
  }
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string port_file;
  for (int index = 1; index + 1 < argc; index += 2) {
    const std::string arg = argv[index];
    if (arg == "--port") {
      port = std::atoi(argv[index + 1]);
    } else if (arg == "--port-file") {
      port_file = argv[index + 1];
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "Usage: scan-bench-tcp-echo [--port N] [--port-file FILE]\n");
    return 2;
  }
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  socklen_t size = sizeof address;
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 128) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    std::perror("scan-bench-tcp-echo");
    return 1;
  }
  if (!port_file.empty()) std::ofstream(port_file) << ntohs(address.sin_port) << "\n";
  std::fprintf(stderr, "scan-bench-tcp-echo: listening on 127.0.0.1:%d\n", ntohs(address.sin_port));
  while (true) {
    const int fd = accept(listener, nullptr, nullptr);
    if (fd >= 0) std::thread(serve, fd).detach();
  }
}
