// The shared-memory regions clients registered (RegisterSharedMemory): POSIX shared-memory objects
// mapped into the server, bounds-checked before every use, watched for truncation by their owner
// (fault_guard.h), counted against limits, and private to the credentials that registered them.
// Knows nothing of gRPC: rpc/shared_memory_service.cc maps its errors to statuses.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace scan::server::shared_memory {

struct RegistryLimits {
  int max_regions = 64;                             // registered at once, all callers together
  std::int64_t max_bytes = std::int64_t{64} << 30;  // mapped at once, all callers together
};

// Device memory a client exported (CUDA IPC), opened by the server: `data` on GPU `device`,
// `bytes` long; `keep` holds it open (closing it when the last holder lets go).
struct DeviceMapping {
  char* data = nullptr;
  std::size_t bytes = 0;
  std::shared_ptr<void> keep;
};

// What the registry needs from the GPU side, which it does not link: told of every host mapping
// made and about to be unmapped (to register it with CUDA, so that the GPU copies straight from
// and into it, as for the server's own buffers), and how to open a CUDA IPC handle (empty: CUDA
// regions are refused). All may be empty.
struct MappingHooks {
  std::function<void(const void* data, std::size_t bytes)> mapped;
  std::function<void(const void* data, std::size_t bytes)> unmapping;
  std::function<bool(const std::string& handle, int device, DeviceMapping* mapping,
                     std::string* error)>
      open_cuda;
};

enum class ErrorCode {
  kOk,
  kInvalidArgument,
  kAlreadyExists,
  kNotFound,
  kResourceExhausted,
  kPermissionDenied,
  kFailedPrecondition,
  kDataLoss,
};

struct Error {
  ErrorCode code = ErrorCode::kOk;
  std::string message;  // starts with the field it is about
  bool ok() const { return code == ErrorCode::kOk; }
};

struct RegionSpec {
  std::string name;
  std::string key;  // shm_open name (system regions)
  std::int64_t offset = 0;
  std::int64_t byte_size = 0;
  int device = -1;  // CUDA regions: the GPU holding it; -1: a system (host) region
};

struct RegionStatus {
  RegionSpec spec;
  bool writable = false;
  int requests_in_flight = 0;
};

class RegionUse;

// One mapped region. Held (shared_ptr) by the registry while registered and by every request
// using it, so that unregistering never unmaps memory a request is reading or writing.
class Region {
 public:
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const RegionSpec& spec() const { return spec_; }
  bool writable() const { return writable_; }
  // The GPU whose memory this is (a CUDA region), or -1 (host memory).
  int device() const { return spec_.device; }
  char* data() const { return data_; }  // the region's first byte (object offset spec().offset)
  int requests_in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // Whether the object still holds the whole region (its owner may have truncated it); an
  // fstat, no memory access.
  bool intact() const;
  std::uint64_t faults() const;

 private:
  friend class Registry;
  friend class RegionUse;
  friend bool partially_aliased(const RegionUse& a, const RegionUse& b);
  Region() = default;

  RegionSpec spec_;
  bool writable_ = false;
  int fd_ = -1;
  std::uint64_t device_ = 0, inode_ = 0;  // the object's identity, whatever its name
  void* mapping_ = nullptr;
  std::size_t mapping_bytes_ = 0;
  char* data_ = nullptr;
  int watch_slot_ = -1;
  MappingHooks hooks_;
  DeviceMapping device_mapping_;  // CUDA regions
  std::atomic<int> in_flight_{0};
};

// A request's hold on a range of a region: valid pointers for as long as it lives, and, at the
// end, whether the region stayed whole while the request used it.
class RegionUse {
 public:
  RegionUse() = default;
  RegionUse(std::shared_ptr<Region> region, char* data, std::size_t bytes);
  RegionUse(RegionUse&& other) noexcept = default;
  RegionUse& operator=(RegionUse&& other) noexcept;
  RegionUse(const RegionUse&) = delete;
  RegionUse& operator=(const RegionUse&) = delete;
  ~RegionUse();

  explicit operator bool() const { return region_ != nullptr; }
  char* data() const { return data_; }
  int device() const { return region_ != nullptr ? region_->device() : -1; }
  std::size_t bytes() const { return bytes_; }
  const Region& region() const { return *region_; }
  // OK unless the owner truncated the object since this use began (the bytes read or written
  // may then be zeros from fault_guard.h, not the client's): `field` names the reference.
  Error check_intact(const std::string& field) const;

 private:
  void release();

  friend bool partially_aliased(const RegionUse& a, const RegionUse& b);

  std::shared_ptr<Region> region_;
  char* data_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint64_t faults_at_start_ = 0;
};

// Whether the two ranges share bytes of one object (through the same region or two regions of the
// same object) without being the very same bytes at the very same address: a scan from one into
// the other would overwrite input it has not read yet. The same range at the same address is an
// in-place scan, which the kernels support.
bool partially_aliased(const RegionUse& a, const RegionUse& b);

class Registry {
 public:
  explicit Registry(RegistryLimits limits, MappingHooks hooks = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // `owner`: the caller's namespace (rpc/shared_memory_service.cc derives it from credentials).
  Error add(const std::string& owner, const RegionSpec& spec);
  // A CUDA region: `handle` opened on spec.device (spec.key unused); the range offset + byte_size
  // must lie inside the allocation the handle exports.
  Error add_cuda(const std::string& owner, const RegionSpec& spec, const std::string& handle);
  bool cuda_supported() const { return static_cast<bool>(hooks_.open_cuda); }
  Error remove(const std::string& owner, const std::string& name);
  std::vector<RegionStatus> list(const std::string& owner) const;
  // Unregisters everything (shutdown); mappings go once their last request ends.
  void clear();

  // `bytes` at `offset` of the caller's region `name`, checked: the region exists, the range lies
  // inside it and the object still holds it, and (`for_writing`) the region is writable. `field`
  // ("gamma.shared_memory") prefixes the messages.
  Error use(const std::string& owner, const std::string& name, std::int64_t offset,
            std::int64_t byte_size, bool for_writing, const std::string& field,
            RegionUse* use) const;

  // Totals over every namespace, for the metrics.
  std::int64_t region_count() const;
  std::int64_t mapped_bytes() const;
  const RegistryLimits& limits() const { return limits_; }

 private:
  // Checks the name, limits and free name, then takes the region in; `region` is dropped (and so
  // unmapped) on refusal.
  Error admit(const std::string& owner, std::shared_ptr<Region> region);
  Error check_room(const std::string& owner, const RegionSpec& spec) const;  // mutex_ held

  const RegistryLimits limits_;
  const MappingHooks hooks_;
  mutable std::mutex mutex_;
  // By (owner, name).
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Region>> regions_;
  std::int64_t total_regions_ = 0;
  std::int64_t total_bytes_ = 0;
};

// Region names: 1 to 128 of [A-Za-z0-9._-]. Keys: "/" then 1 to 254 characters, none "/" or NUL.
bool valid_region_name(const std::string& name);
bool valid_system_key(const std::string& key);

// "<boot id>/<ipc namespace>": equal for processes that share POSIX shared memory.
std::string host_identity();

}  // namespace scan::server::shared_memory
