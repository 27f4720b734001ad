// The shared-memory region registry on real POSIX objects: validation of names, keys and ranges,
// limits, in-flight holds across unregistering, aliasing, and truncation by the owner (SIGBUS
// caught by the fault guard, reported as lost data instead of killing the server).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "scan/client/shared_memory.h"
#include "shared_memory/region_registry.h"

namespace scan::server::shared_memory {
namespace {

using client::SystemSharedMemory;

std::unique_ptr<SystemSharedMemory> make_object(std::size_t bytes) {
  std::string error;
  auto object =
      SystemSharedMemory::create(SystemSharedMemory::unique_key("registry-test"), bytes, &error);
  EXPECT_NE(object, nullptr) << error;
  return object;
}

TEST(SharedMemoryRegistry, ValidatesNamesKeysAndRanges) {
  EXPECT_TRUE(valid_region_name("gamma-0.in_1"));
  EXPECT_FALSE(valid_region_name(""));
  EXPECT_FALSE(valid_region_name(std::string(129, 'a')));
  EXPECT_FALSE(valid_region_name("a/b"));
  EXPECT_FALSE(valid_region_name("a b"));
  EXPECT_TRUE(valid_system_key("/mmrec"));
  EXPECT_FALSE(valid_system_key("mmrec"));
  EXPECT_FALSE(valid_system_key("/"));
  EXPECT_FALSE(valid_system_key("/a/b"));
  EXPECT_FALSE(valid_system_key("/.."));
  EXPECT_FALSE(valid_system_key("/" + std::string(255, 'k')));

  auto object = make_object(8192);
  Registry registry({});
  const auto add = [&](RegionSpec spec) { return registry.add("", spec); };
  EXPECT_EQ(add({"bad name", object->key(), 0, 16}).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(add({"r", "no-slash", 0, 16}).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(add({"r", "/scan-no-such-object-here", 0, 16}).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(add({"r", object->key(), -1, 16}).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(add({"r", object->key(), 0, 0}).code, ErrorCode::kInvalidArgument);
  const Error past_end = add({"r", object->key(), 4096, 4097});
  EXPECT_EQ(past_end.code, ErrorCode::kInvalidArgument);
  EXPECT_NE(past_end.message.find("byte_size"), std::string::npos) << past_end.message;
  EXPECT_EQ(add({"r", object->key(), INT64_MAX, 2}).code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(add({"r", object->key(), 100, 8000}).ok());  // an unaligned offset
  EXPECT_EQ(add({"r", object->key(), 0, 16}).code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(registry.region_count(), 1);
  EXPECT_EQ(registry.mapped_bytes(), 8000);

  // Uses are bounded by the registered range, not the object's.
  RegionUse use;
  EXPECT_EQ(registry.use("", "r", 0, 8001, false, "gamma.shared_memory", &use).code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(registry.use("", "r", 8001, 0, false, "gamma.shared_memory", &use).code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(registry.use("", "r", -1, 1, false, "gamma.shared_memory", &use).code,
            ErrorCode::kInvalidArgument);
  const Error unknown = registry.use("", "other", 0, 1, false, "gamma.shared_memory", &use);
  EXPECT_EQ(unknown.code, ErrorCode::kNotFound);
  EXPECT_EQ(unknown.message.rfind("gamma.shared_memory.region:", 0), 0u) << unknown.message;
  ASSERT_TRUE(registry.use("", "r", 8, 16, true, "output", &use).ok());
  std::memcpy(use.data(), "0123456789abcdef", 16);
  EXPECT_EQ(std::memcmp(object->data() + 108, "0123456789abcdef", 16), 0)
      << "the region's offset 8 is the object's 108";
}

TEST(SharedMemoryRegistry, NamespacesAndLimits) {
  auto object = make_object(4096);
  Registry registry({2, 5000});
  EXPECT_TRUE(registry.add("alice", {"r", object->key(), 0, 2000}).ok());
  EXPECT_TRUE(registry.add("bob", {"r", object->key(), 0, 2000}).ok()) << "names are per owner";
  RegionUse use;
  EXPECT_EQ(registry.use("carol", "r", 0, 1, false, "gamma.shared_memory", &use).code,
            ErrorCode::kNotFound);
  EXPECT_EQ(registry.add("alice", {"s", object->key(), 0, 16}).code,
            ErrorCode::kResourceExhausted);  // region limit
  EXPECT_TRUE(registry.remove("bob", "r").ok());
  EXPECT_EQ(registry.add("alice", {"s", object->key(), 0, 3001}).code,
            ErrorCode::kResourceExhausted);  // byte limit: 2000 + 3001 > 5000
  EXPECT_TRUE(registry.add("alice", {"s", object->key(), 0, 3000}).ok());
  EXPECT_EQ(registry.remove("alice", "t").code, ErrorCode::kNotFound);
  EXPECT_EQ(registry.list("alice").size(), 2u);
  EXPECT_TRUE(registry.list("bob").empty());
}

// Unregistering removes the name at once; the mapping stays valid for a request holding it.
TEST(SharedMemoryRegistry, UnregisteringKeepsTheMappingOfARunningRequest) {
  auto object = make_object(4096);
  int mapped = 0, unmapped = 0;
  Registry registry({}, {[&](const void*, std::size_t) { ++mapped; },
                         [&](const void*, std::size_t) { ++unmapped; },
                         {}});
  ASSERT_TRUE(registry.add("", {"r", object->key(), 0, 4096}).ok());
  EXPECT_EQ(mapped, 1);
  RegionUse use;
  ASSERT_TRUE(registry.use("", "r", 0, 4096, true, "output", &use).ok());
  EXPECT_EQ(registry.list("")[0].requests_in_flight, 1);
  ASSERT_TRUE(registry.remove("", "r").ok());
  EXPECT_EQ(unmapped, 0) << "unmapped under a running request";
  std::memset(use.data(), 7, use.bytes());  // still mapped
  EXPECT_EQ(object->data()[4095], 7);
  EXPECT_TRUE(use.check_intact("output").ok());
  use = RegionUse();
  EXPECT_EQ(unmapped, 1);
}

TEST(SharedMemoryRegistry, AliasingIsRefusedButInPlaceIsNot) {
  auto object = make_object(8192);
  Registry registry({});
  ASSERT_TRUE(registry.add("", {"a", object->key(), 0, 8192}).ok());
  ASSERT_TRUE(registry.add("", {"b", object->key(), 4096, 4096}).ok());
  RegionUse in, same, shifted, other_name, disjoint;
  ASSERT_TRUE(registry.use("", "a", 4096, 1024, false, "g", &in).ok());
  ASSERT_TRUE(registry.use("", "a", 4096, 1024, true, "o", &same).ok());
  ASSERT_TRUE(registry.use("", "a", 4100, 1024, true, "o", &shifted).ok());
  ASSERT_TRUE(registry.use("", "b", 0, 1024, true, "o", &other_name).ok());  // same bytes as `in`
  ASSERT_TRUE(registry.use("", "a", 0, 1024, true, "o", &disjoint).ok());
  EXPECT_FALSE(partially_aliased(in, same));
  EXPECT_TRUE(partially_aliased(in, shifted));
  EXPECT_TRUE(partially_aliased(in, other_name)) << "another mapping of the same bytes";
  EXPECT_FALSE(partially_aliased(in, disjoint));
}

// The owner truncates the object: a check before use refuses it, and an access during use (which
// would raise SIGBUS and kill the server) reads zeros and is reported as lost data.
TEST(SharedMemoryRegistry, TruncationByTheOwnerIsCaught) {
  auto object = make_object(3 * 4096);
  Registry registry({});
  ASSERT_TRUE(registry.add("", {"r", object->key(), 0, 3 * 4096}).ok());
  RegionUse use;
  ASSERT_TRUE(registry.use("", "r", 0, 3 * 4096, true, "gamma.shared_memory", &use).ok());
  std::memset(use.data(), 1, use.bytes());

  const int fd = shm_open(object->key().c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 4096), 0);
  close(fd);

  volatile char* data = use.data();
  EXPECT_EQ(data[0], 1) << "the first page is still the object's";
  EXPECT_EQ(data[2 * 4096 + 5], 0) << "a page past the new end reads as zero, not SIGBUS";
  data[2 * 4096 + 6] = 9;  // and takes writes
  const Error lost = use.check_intact("gamma.shared_memory");
  EXPECT_EQ(lost.code, ErrorCode::kDataLoss);
  EXPECT_NE(lost.message.find("truncated"), std::string::npos) << lost.message;

  RegionUse later;
  EXPECT_EQ(registry.use("", "r", 0, 16, false, "gamma.shared_memory", &later).code,
            ErrorCode::kFailedPrecondition);
}

// CUDA regions through a stand-in opener (host memory posing as an allocation of GPU 0): the
// registry's own checks, which hold whatever opens the handle.
TEST(SharedMemoryRegistry, CudaRegionsAreBoundedByTheExportedAllocation) {
  Registry without_gpu({});
  EXPECT_FALSE(without_gpu.cuda_supported());
  EXPECT_EQ(without_gpu.add_cuda("", {"d", "", 0, 16, 0}, std::string(64, 'h')).code,
            ErrorCode::kFailedPrecondition);

  static char allocation[4096];
  int opened = 0;
  MappingHooks hooks;
  hooks.open_cuda = [&](const std::string& handle, int device, DeviceMapping* mapping,
                        std::string* error) {
    if (handle.size() != 64 || device != 0) {
      *error = "bad handle";
      return false;
    }
    ++opened;
    mapping->data = allocation;
    mapping->bytes = sizeof allocation;
    mapping->keep = std::make_shared<int>(0);
    return true;
  };
  Registry registry({}, hooks);
  EXPECT_TRUE(registry.cuda_supported());
  const std::string handle(64, 'h');
  EXPECT_EQ(registry.add_cuda("", {"d", "", 0, 16, -1}, handle).code,
            ErrorCode::kInvalidArgument);  // no device
  const Error bad = registry.add_cuda("", {"d", "", 0, 16, 0}, "short");
  EXPECT_EQ(bad.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.message.rfind("cuda_handle:", 0), 0u) << bad.message;
  const Error past = registry.add_cuda("", {"d", "", 100, 4000, 0}, handle);
  EXPECT_EQ(past.code, ErrorCode::kInvalidArgument);
  EXPECT_NE(past.message.find("allocation"), std::string::npos) << past.message;
  ASSERT_TRUE(registry.add_cuda("", {"d", "", 96, 4000, 0}, handle).ok());
  EXPECT_EQ(opened, 2);  // once per registration attempt that reached the opener
  RegionUse in, out, shifted;
  ASSERT_TRUE(registry.use("", "d", 0, 64, false, "gamma.shared_memory", &in).ok());
  EXPECT_EQ(in.device(), 0);
  EXPECT_EQ(in.data(), allocation + 96);
  EXPECT_TRUE(in.check_intact("gamma.shared_memory").ok());
  ASSERT_TRUE(registry.use("", "d", 0, 64, true, "output", &out).ok());
  ASSERT_TRUE(registry.use("", "d", 32, 64, true, "output", &shifted).ok());
  EXPECT_FALSE(partially_aliased(in, out));
  EXPECT_TRUE(partially_aliased(in, shifted));
  EXPECT_EQ(registry.list("")[0].spec.device, 0);
}

}  // namespace
}  // namespace scan::server::shared_memory
