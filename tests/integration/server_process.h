// A scan-server running as a child process on loopback, for tests that need what only a separate
// process shows: its memory (peak RSS), its exit status, being killed.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifndef SCAN_SERVER_BINARY
#error "SCAN_SERVER_BINARY must name the scan-server executable"
#endif

extern char** environ;

namespace scan::testing {

class ServerProcess {
 public:
  // Starts scan-server with `args` on a free loopback port (or on `port` when non-zero, e.g. to
  // restart a replica where it was) and waits until it reports the port it serves on.
  explicit ServerProcess(std::vector<std::string> args, int port = 0) {
    directory_ = std::filesystem::temp_directory_path() /
                 ("scan-server-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(directory_);
    const std::string port_file = (directory_ / "port").string();
    std::vector<std::string> argv = {SCAN_SERVER_BINARY, "--listen",
                                     "127.0.0.1:" + std::to_string(port), "--port-file", port_file,
                                     "--metrics-listen", "", "--log-level", "warn",
                                     // Tests start many servers; warm start is tested apart.
                                     "--warm-start", "false"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> pointers;
    for (auto& arg : argv) pointers.push_back(arg.data());
    pointers.push_back(nullptr);
    // The server's output goes to a file, not to the test's stdout: a server outliving a crashed
    // test would otherwise hold ctest's pipe open and stall the whole run.
    const std::string log = (directory_ / "server.log").string();
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT, 0644);
    posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
    const int spawned =
        posix_spawn(&pid_, SCAN_SERVER_BINARY, &files, nullptr, pointers.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    if (spawned != 0) {
      pid_ = -1;
      return;
    }
    // Up to 30 s: under TSan, on two busy cores, a restart has taken over 10 s.
    for (int attempt = 0; attempt < 600 && port_ == 0; ++attempt) {
      std::ifstream(port_file) >> port_;
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  ~ServerProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(directory_);
  }

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool running() const { return pid_ > 0 && port_ > 0; }
  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  void signal(int number) const { kill(pid_, number); }

  // Waits up to `limit` for the process to exit; its exit status, or -1 on timeout or signal.
  int wait_exit(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  void kill_now() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    reaped_ = true;
  }

  // Peak resident set size so far, in bytes (VmHWM).
  std::int64_t peak_rss_bytes() const { return status_field_kib("VmHWM:") * 1024; }
  std::int64_t rss_bytes() const { return status_field_kib("VmRSS:") * 1024; }

 private:
  std::int64_t status_field_kib(const std::string& field) const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string name;
    std::int64_t value = 0;
    while (status >> name) {
      if (name == field) {
        status >> value;
        return value;
      }
      status.ignore(1 << 20, '\n');
    }
    return -1;
  }

  std::filesystem::path directory_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool reaped_ = false;
};

}  // namespace scan::testing
