#include "scan/client/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace scan::client {

std::unique_ptr<SystemSharedMemory> SystemSharedMemory::create(const std::string& key,
                                                               std::size_t bytes,
                                                               std::string* error) {
  const int fd = shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "shm_open " + key + ": " + std::strerror(errno);
    return nullptr;
  }
  const std::size_t length = bytes == 0 ? 1 : bytes;  // mmap refuses empty mappings
  void* mapping = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(length)) == 0) {
    mapping = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  const int saved = errno;
  close(fd);
  if (mapping == MAP_FAILED) {
    shm_unlink(key.c_str());
    *error = "cannot size or map " + key + ": " + std::strerror(saved);
    return nullptr;
  }
  return std::unique_ptr<SystemSharedMemory>(new SystemSharedMemory(key, mapping, length));
}

std::string SystemSharedMemory::unique_key(const std::string& suffix) {
  static std::atomic<int> counter{0};
  return "/scan-" + std::to_string(getpid()) + "-" + std::to_string(counter.fetch_add(1)) + "-" +
         suffix;
}

SystemSharedMemory::~SystemSharedMemory() {
  munmap(mapping_, bytes_);
  shm_unlink(key_.c_str());
}

std::string local_host_id() {
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  char ipc[128] = {};
  const ssize_t length = readlink("/proc/self/ns/ipc", ipc, sizeof ipc - 1);
  return boot_id + "/" +
         (length > 0 ? std::string(ipc, static_cast<std::size_t>(length)) : std::string("?"));
}

bool server_shares_system_memory(const v1::GetServerInfoResponse& info) {
  bool accepted = false;
  for (const int kind : info.shared_memory_kinds()) {
    accepted = accepted || kind == v1::SHARED_MEMORY_KIND_SYSTEM;
  }
  return accepted && !info.host_id().empty() && info.host_id() == local_host_id();
}

v1::SharedMemoryReference shared_memory_reference(const std::string& region, std::int64_t offset,
                                                  std::int64_t byte_size) {
  v1::SharedMemoryReference reference;
  reference.set_region(region);
  reference.set_offset(offset);
  reference.set_byte_size(byte_size);
  return reference;
}

}  // namespace scan::client
