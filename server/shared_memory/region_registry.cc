#include "shared_memory/region_registry.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "shared_memory/fault_guard.h"

namespace scan::server::shared_memory {
namespace {

bool add_without_overflow(std::int64_t a, std::int64_t b, std::int64_t* sum) {
  return !__builtin_add_overflow(a, b, sum);
}

std::int64_t object_size(int fd) {
  struct stat info = {};
  if (fstat(fd, &info) != 0) return -1;
  return static_cast<std::int64_t>(info.st_size);
}

std::string first_line(const char* path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

}  // namespace

bool valid_region_name(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!allowed) return false;
  }
  return true;
}

bool valid_system_key(const std::string& key) {
  if (key.size() < 2 || key.size() > 255 || key[0] != '/') return false;
  for (std::size_t at = 1; at < key.size(); ++at) {
    if (key[at] == '/' || key[at] == '\0') return false;
  }
  return key != "/." && key != "/..";
}

std::string host_identity() {
  char ipc[128] = {};
  const ssize_t length = readlink("/proc/self/ns/ipc", ipc, sizeof ipc - 1);
  return first_line("/proc/sys/kernel/random/boot_id") + "/" +
         (length > 0 ? std::string(ipc, static_cast<std::size_t>(length)) : std::string("?"));
}

Region::~Region() {
  if (mapping_ != nullptr) {
    if (hooks_.unmapping) hooks_.unmapping(mapping_, mapping_bytes_);
    unwatch_range(watch_slot_);
    munmap(mapping_, mapping_bytes_);
  }
  if (fd_ >= 0) close(fd_);
}

bool Region::intact() const {
  if (fd_ < 0) return true;  // device memory: its owner cannot shrink it under us
  std::int64_t end = 0;
  return add_without_overflow(spec_.offset, spec_.byte_size, &end) && object_size(fd_) >= end;
}

std::uint64_t Region::faults() const { return faults_in(watch_slot_); }

RegionUse::RegionUse(std::shared_ptr<Region> region, char* data, std::size_t bytes)
    : region_(std::move(region)), data_(data), bytes_(bytes) {
  region_->in_flight_.fetch_add(1, std::memory_order_relaxed);
  faults_at_start_ = region_->faults();
}

RegionUse& RegionUse::operator=(RegionUse&& other) noexcept {
  if (this != &other) {
    release();
    region_ = std::move(other.region_);
    data_ = other.data_;
    bytes_ = other.bytes_;
    faults_at_start_ = other.faults_at_start_;
  }
  return *this;
}

RegionUse::~RegionUse() { release(); }

void RegionUse::release() {
  if (region_ != nullptr) region_->in_flight_.fetch_sub(1, std::memory_order_relaxed);
  region_.reset();
}

Error RegionUse::check_intact(const std::string& field) const {
  if (region_ == nullptr) return {};
  if (region_->faults() != faults_at_start_ || !region_->intact()) {
    return {ErrorCode::kDataLoss,
            fmt::format("{}: region '{}' ({}) was truncated by its owner while this request used "
                        "it; the result is lost. Unregister the region and register it again",
                        field, region_->spec().name, region_->spec().key)};
  }
  return {};
}

bool partially_aliased(const RegionUse& a, const RegionUse& b) {
  if (!a || !b) return false;
  const Region& first = *a.region_;
  const Region& second = *b.region_;
  if (first.device() != second.device() || first.device_ != second.device_ ||
      first.inode_ != second.inode_) {
    return false;
  }
  // Offsets within the object.
  const auto start_of = [](const RegionUse& use) {
    return use.region_->spec().offset + (use.data_ - use.region_->data());
  };
  const std::int64_t a_start = start_of(a), b_start = start_of(b);
  const auto a_end = a_start + static_cast<std::int64_t>(a.bytes_);
  const auto b_end = b_start + static_cast<std::int64_t>(b.bytes_);
  const bool overlap = a_start < b_end && b_start < a_end;
  const bool in_place = a.data_ == b.data_ && a.bytes_ == b.bytes_;
  return overlap && !in_place;
}

Registry::Registry(RegistryLimits limits, MappingHooks hooks)
    : limits_(limits), hooks_(std::move(hooks)) {}

Registry::~Registry() { clear(); }

namespace {

// The checks every region kind shares: its name and range.
Error check_name_and_range(const RegionSpec& spec) {
  if (!valid_region_name(spec.name)) {
    return {ErrorCode::kInvalidArgument,
            "name: must be 1 to 128 characters of [A-Za-z0-9._-], got '" +
                spec.name.substr(0, 160) + "'"};
  }
  if (spec.offset < 0) {
    return {ErrorCode::kInvalidArgument, fmt::format("offset: {} is negative", spec.offset)};
  }
  if (spec.byte_size <= 0) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("byte_size: {} must be positive", spec.byte_size)};
  }
  std::int64_t end = 0;
  if (!add_without_overflow(spec.offset, spec.byte_size, &end)) {
    return {ErrorCode::kInvalidArgument, "byte_size: offset + byte_size overflows"};
  }
  return {};
}

}  // namespace

Error Registry::check_room(const std::string& owner, const RegionSpec& spec) const {
  if (regions_.count({owner, spec.name}) != 0) {
    return {ErrorCode::kAlreadyExists,
            "name: a region named '" + spec.name + "' is registered already"};
  }
  if (total_regions_ >= limits_.max_regions) {
    return {ErrorCode::kResourceExhausted,
            fmt::format("name: the server holds {} regions, its limit "
                        "(--shared-memory-max-regions); unregister one first",
                        total_regions_)};
  }
  if (spec.byte_size > limits_.max_bytes - total_bytes_) {
    return {ErrorCode::kResourceExhausted,
            fmt::format("byte_size: {} more bytes would pass the {} the server may map "
                        "(--shared-memory-max-bytes; {} mapped now)",
                        spec.byte_size, limits_.max_bytes, total_bytes_)};
  }
  return {};
}

Error Registry::admit(const std::string& owner, std::shared_ptr<Region> region) {
  const std::lock_guard<std::mutex> lock(mutex_);
  // Checked again: another registration may have taken the name or the room meanwhile.
  if (Error error = check_room(owner, region->spec()); !error.ok()) return error;
  if (region->mapping_ != nullptr) {
    // From here on the mapping is announced, and the region's end will announce its unmapping.
    region->hooks_ = hooks_;
    if (hooks_.mapped) hooks_.mapped(region->mapping_, region->mapping_bytes_);
  }
  total_bytes_ += region->spec().byte_size;
  ++total_regions_;
  regions_.emplace(std::make_pair(owner, region->spec().name), std::move(region));
  return {};
}

Error Registry::add(const std::string& owner, const RegionSpec& spec) {
  if (Error error = check_name_and_range(spec); !error.ok()) return error;
  if (!valid_system_key(spec.key)) {
    return {ErrorCode::kInvalidArgument,
            "key: must be a POSIX shared-memory name, \"/\" then 1 to 254 characters without "
            "\"/\", got '" +
                spec.key.substr(0, 300) + "'"};
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (Error error = check_room(owner, spec); !error.ok()) return error;
  }
  const std::int64_t end = spec.offset + spec.byte_size;

  if (!install_fault_guard()) {
    return {ErrorCode::kFailedPrecondition, "key: cannot install the server's SIGBUS guard"};
  }
  auto region = std::shared_ptr<Region>(new Region());
  region->spec_ = spec;
  region->spec_.device = -1;
  region->writable_ = true;
  region->fd_ = shm_open(spec.key.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (region->fd_ < 0 && (errno == EACCES || errno == EROFS)) {
    region->writable_ = false;
    region->fd_ = shm_open(spec.key.c_str(), O_RDONLY | O_CLOEXEC, 0);
  }
  if (region->fd_ < 0) {
    const int error = errno;
    return {error == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kInvalidArgument,
            fmt::format("key: cannot open shared-memory object '{}': {}", spec.key,
                        std::strerror(error))};
  }
  struct stat identity = {};
  if (fstat(region->fd_, &identity) == 0) {
    region->device_ = static_cast<std::uint64_t>(identity.st_dev);
    region->inode_ = static_cast<std::uint64_t>(identity.st_ino);
  }
  const std::int64_t size = object_size(region->fd_);
  if (size < end) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("byte_size: offset {} + byte_size {} = {} passes the end of '{}' ({} "
                        "bytes)",
                        spec.offset, spec.byte_size, end, spec.key, size)};
  }
  // mmap offsets must be page aligned: map from the page holding `offset`.
  const auto page = static_cast<std::int64_t>(sysconf(_SC_PAGESIZE));
  const std::int64_t map_offset = spec.offset / page * page;
  region->mapping_bytes_ = static_cast<std::size_t>(end - map_offset);
  void* mapping =
      mmap(nullptr, region->mapping_bytes_, PROT_READ | (region->writable_ ? PROT_WRITE : 0),
           MAP_SHARED, region->fd_, map_offset);
  if (mapping == MAP_FAILED) {
    const int error = errno;
    return {ErrorCode::kResourceExhausted,
            fmt::format("key: cannot map '{}': {}", spec.key, std::strerror(error))};
  }
  region->mapping_ = mapping;
  region->data_ = static_cast<char*>(mapping) + (spec.offset - map_offset);
  region->watch_slot_ = watch_range(mapping, region->mapping_bytes_);
  if (region->watch_slot_ < 0) {
    return {ErrorCode::kResourceExhausted, "name: every truncation guard slot is taken"};
  }
  return admit(owner, std::move(region));
}

Error Registry::add_cuda(const std::string& owner, const RegionSpec& spec,
                         const std::string& handle) {
  if (Error error = check_name_and_range(spec); !error.ok()) return error;
  if (spec.device < 0) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("device_id: {} is not a GPU ordinal", spec.device)};
  }
  if (!hooks_.open_cuda) {
    return {ErrorCode::kFailedPrecondition,
            "kind: this server has no GPU backend to scan CUDA regions on"};
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (Error error = check_room(owner, spec); !error.ok()) return error;
  }
  DeviceMapping mapping;
  std::string why;
  if (!hooks_.open_cuda(handle, spec.device, &mapping, &why)) {
    return {ErrorCode::kInvalidArgument, "cuda_handle: " + why};
  }
  const std::int64_t end = spec.offset + spec.byte_size;
  if (end > static_cast<std::int64_t>(mapping.bytes)) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("byte_size: offset {} + byte_size {} = {} passes the end of the "
                        "exported allocation ({} bytes)",
                        spec.offset, spec.byte_size, end, mapping.bytes)};
  }
  auto region = std::shared_ptr<Region>(new Region());
  region->spec_ = spec;
  region->spec_.key.clear();
  region->writable_ = true;
  region->data_ = mapping.data + spec.offset;
  // The allocation's identity for aliasing checks: its device and address in this process.
  region->device_ = static_cast<std::uint64_t>(spec.device) + 1;
  region->inode_ = reinterpret_cast<std::uintptr_t>(mapping.data);
  region->device_mapping_ = std::move(mapping);
  return admit(owner, std::move(region));
}

Error Registry::remove(const std::string& owner, const std::string& name) {
  std::shared_ptr<Region> region;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto found = regions_.find({owner, name});
    if (found == regions_.end()) {
      return {ErrorCode::kNotFound,
              "name: no region named '" + name.substr(0, 160) + "' is registered"};
    }
    region = std::move(found->second);
    regions_.erase(found);
    --total_regions_;
    total_bytes_ -= region->spec().byte_size;
  }
  // Unmapped here, outside the lock, unless a request still holds it (then when it ends).
  region.reset();
  return {};
}

std::vector<RegionStatus> Registry::list(const std::string& owner) const {
  std::vector<RegionStatus> statuses;
  const std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [key, region] : regions_) {
    if (key.first != owner) continue;
    statuses.push_back({region->spec(), region->writable(), region->requests_in_flight()});
  }
  return statuses;
}

void Registry::clear() {
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Region>> gone;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    gone.swap(regions_);
    total_regions_ = 0;
    total_bytes_ = 0;
  }
}

Error Registry::use(const std::string& owner, const std::string& name, std::int64_t offset,
                    std::int64_t byte_size, bool for_writing, const std::string& field,
                    RegionUse* use) const {
  std::shared_ptr<Region> region;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto found = regions_.find({owner, name});
    if (found != regions_.end()) region = found->second;
  }
  if (region == nullptr) {
    return {ErrorCode::kNotFound, fmt::format("{}.region: no region named '{}' is registered",
                                              field, name.substr(0, 160))};
  }
  const std::int64_t size = region->spec().byte_size;
  if (offset < 0 || offset > size) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("{}.offset: {} lies outside region '{}' ({} bytes)", field, offset, name,
                        size)};
  }
  if (byte_size < 0 || byte_size > size - offset) {
    return {ErrorCode::kInvalidArgument,
            fmt::format("{}.byte_size: {} bytes at offset {} pass the end of region '{}' ({} "
                        "bytes)",
                        field, byte_size, offset, name, size)};
  }
  if (for_writing && !region->writable()) {
    return {
        ErrorCode::kPermissionDenied,
        fmt::format("{}.region: '{}' could only be opened for reading by the server", field, name)};
  }
  if (!region->intact()) {
    return {ErrorCode::kFailedPrecondition,
            fmt::format("{}.region: '{}' ({}) was truncated by its owner below the registered "
                        "size; unregister it and register it again",
                        field, name, region->spec().key)};
  }
  char* data = region->data() + offset;
  *use = RegionUse(std::move(region), data, static_cast<std::size_t>(byte_size));
  return {};
}

std::int64_t Registry::region_count() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return total_regions_;
}

std::int64_t Registry::mapped_bytes() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return total_bytes_;
}

}  // namespace scan::server::shared_memory
