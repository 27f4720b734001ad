// A POSIX shared-memory object the client creates to hand tensors to a server on the same host
// (RegisterSharedMemory, then Scan requests naming the region instead of carrying bytes), and
// the check of whether a server shares this host at all.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "scan/v1/scan.pb.h"

namespace scan::client {

class SystemSharedMemory {
 public:
  // Creates a new object `key` ("/" + name) of `bytes` bytes, mapped read-write, readable and
  // writable by this user only (the server must run as the same user, or the caller changes the
  // mode). Null with *error set when that fails. The object is unlinked when this is destroyed.
  static std::unique_ptr<SystemSharedMemory> create(const std::string& key, std::size_t bytes,
                                                    std::string* error);
  // A key unique to this process and call: "/scan-<pid>-<counter>-<suffix>".
  static std::string unique_key(const std::string& suffix);
  ~SystemSharedMemory();
  SystemSharedMemory(const SystemSharedMemory&) = delete;
  SystemSharedMemory& operator=(const SystemSharedMemory&) = delete;

  const std::string& key() const { return key_; }
  char* data() const { return static_cast<char*>(mapping_); }
  std::size_t size() const { return bytes_; }

 private:
  SystemSharedMemory(std::string key, void* mapping, std::size_t bytes)
      : key_(std::move(key)), mapping_(mapping), bytes_(bytes) {}

  std::string key_;
  void* mapping_ = nullptr;
  std::size_t bytes_ = 0;
};

// This process's "<boot id>/<ipc namespace>", to compare with GetServerInfoResponse.host_id.
std::string local_host_id();
// Whether `info`'s server shares this host's POSIX shared memory and accepts SYSTEM regions.
bool server_shares_system_memory(const v1::GetServerInfoResponse& info);

// A reference to `byte_size` bytes at `offset` of region `region`.
v1::SharedMemoryReference shared_memory_reference(const std::string& region, std::int64_t offset,
                                                  std::int64_t byte_size);

}  // namespace scan::client
