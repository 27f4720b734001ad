// Scan over system shared memory end to end, in-process server and real POSIX objects: results
// for every dtype (in place and into another range), a region reused by many requests, every
// bad-input class with its status and field, the opt-in flag, limits, truncation by the owner
// (no crash, a precise status) and unregistering under a running request.
#include "scan/client/shared_memory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "in_process_server.h"
#include "scan/client/host_tensor.h"
#include "scan/wire/dtype.h"

namespace scan::testing {
namespace {

using client::SystemSharedMemory;
using kernels::DType;

server::ServerConfig shared_memory_config() {
  server::ServerConfig config = loopback_config();
  config.allow_shared_memory = true;
  return config;
}

std::unique_ptr<SystemSharedMemory> make_object(std::size_t bytes) {
  std::string error;
  auto object =
      SystemSharedMemory::create(SystemSharedMemory::unique_key("integration"), bytes, &error);
  EXPECT_NE(object, nullptr) << error;
  return object;
}

grpc::Status register_object(client::Client& client, const std::string& name,
                             const SystemSharedMemory& object, std::int64_t offset = 0,
                             std::int64_t bytes = -1) {
  v1::RegisterSharedMemoryRequest request;
  request.set_name(name);
  request.set_kind(v1::SHARED_MEMORY_KIND_SYSTEM);
  request.set_key(object.key());
  request.set_offset(offset);
  request.set_byte_size(bytes < 0 ? static_cast<std::int64_t>(object.size()) - offset : bytes);
  return client.RegisterSharedMemory(request);
}

// A Scan request for `tensor`'s dtype and shape with its bytes at `in` and the result at `out`.
v1::ScanRequest reference_request(const client::HostTensor& tensor, int dim,
                                  const v1::SharedMemoryReference& in,
                                  const v1::SharedMemoryReference* out) {
  v1::ScanRequest request;
  request.set_dim(dim);
  request.set_backend(v1::BACKEND_PREFERENCE_CPU);
  v1::Tensor* gamma = request.mutable_gamma();
  gamma->set_dtype(v1::to_wire_dtype(tensor.dtype));
  for (const std::int64_t size : tensor.shape) gamma->add_shape(size);
  *gamma->mutable_shared_memory() = in;
  if (out != nullptr) *request.mutable_output() = *out;
  return request;
}

grpc::Status scan(client::Client& client, v1::ScanRequest request, v1::ScanResponse* response) {
  std::chrono::microseconds round_trip{0};
  return client.Scan(&request, std::chrono::seconds(30), response, &round_trip);
}

void expect_code(const grpc::Status& status, grpc::StatusCode code, const std::string& field) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_NE(status.error_message().find(field), std::string::npos)
      << "'" << status.error_message() << "' does not name " << field;
}

TEST(SharedMemory, OffUnlessAllowed) {
  InProcessServer server(loopback_config());
  ASSERT_TRUE(server.started());
  auto object = make_object(4096);
  expect_code(register_object(server.client(), "r", *object), grpc::StatusCode::FAILED_PRECONDITION,
              "--allow-shared-memory");
  const client::HostTensor tensor = client::random_gamma(DType::kFloat32, {16}, 0.5, 1, 1);
  v1::ScanResponse response;
  expect_code(
      scan(server.client(),
           reference_request(tensor, 0, client::shared_memory_reference("r", 0, 64), nullptr),
           &response),
      grpc::StatusCode::FAILED_PRECONDITION, "gamma.shared_memory");
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(server.client().GetServerInfo(&info).ok());
  EXPECT_EQ(info.shared_memory_kinds_size(), 0);
  EXPECT_FALSE(client::server_shares_system_memory(info));
  EXPECT_EQ(info.host_id(), client::local_host_id());
}

// Fresh random decays of every dtype, through an odd-sized shape, scanned from one range into
// another and in place, against the float64 reference.
TEST(SharedMemory, EveryDtypeInPlaceAndIntoAnotherRange) {
  InProcessServer server(shared_memory_config());
  ASSERT_TRUE(server.started());
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(server.client().GetServerInfo(&info).ok());
  EXPECT_TRUE(client::server_shares_system_memory(info));
  EXPECT_GT(info.limits().max_shared_memory_regions(), 0);

  const std::vector<std::int64_t> shape = {3, 1021, 7};
  auto object = make_object(2 * 3 * 1021 * 7 * 8 + 24);
  ASSERT_TRUE(register_object(server.client(), "tensors", *object).ok());
  std::mt19937_64 seeds(std::random_device{}());
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    const client::HostTensor input = client::random_gamma(dtype, shape, 0.5, 1.0, seeds());
    const auto bytes = static_cast<std::int64_t>(input.data.size());
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(std::string(kernels::dtype_name(dtype)) + (in_place ? " in place" : ""));
      const std::int64_t in_offset = 8;  // unaligned to a page, aligned to every element
      const std::int64_t out_offset = in_place ? in_offset : in_offset + bytes + 8;
      std::memcpy(object->data() + in_offset, input.data.data(), input.data.size());
      const auto in = client::shared_memory_reference("tensors", in_offset, bytes);
      const auto out = client::shared_memory_reference("tensors", out_offset, bytes);
      v1::ScanResponse response;
      const grpc::Status status =
          scan(server.client(), reference_request(input, 1, in, &out), &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_TRUE(response.result().data().empty()) << "the result travelled over gRPC";
      EXPECT_EQ(response.result().shared_memory().offset(), out_offset);
      EXPECT_EQ(response.result().shape_size(), 3);
      client::HostTensor output{dtype, shape,
                                std::string(object->data() + out_offset, input.data.size())};
      const kernels::Comparison comparison = client::check_cumprod(input, output, 1);
      EXPECT_TRUE(comparison.ok())
          << comparison.mismatches << " mismatches, first at " << comparison.first_mismatch;
      if (!in_place) {
        EXPECT_EQ(std::memcmp(object->data() + in_offset, input.data.data(), input.data.size()), 0)
            << "the input range was written";
      }
    }
  }
  // The input from shared memory, the result back in the response.
  const client::HostTensor input = client::random_gamma(DType::kFloat32, {4, 100}, 0.5, 1, 7);
  std::memcpy(object->data(), input.data.data(), input.data.size());
  v1::ScanResponse response;
  ASSERT_TRUE(
      scan(server.client(),
           reference_request(input, 1,
                             client::shared_memory_reference(
                                 "tensors", 0, static_cast<std::int64_t>(input.data.size())),
                             nullptr),
           &response)
          .ok());
  client::HostTensor output{DType::kFloat32, input.shape, response.result().data()};
  EXPECT_TRUE(client::check_cumprod(input, output, 1).ok());
}

TEST(SharedMemory, OneRegionServesManyRequests) {
  InProcessServer server(shared_memory_config());
  ASSERT_TRUE(server.started());
  const std::vector<std::int64_t> shape = {2, 4, 256, 64};  // MM-Rec's short shape
  const std::size_t bytes = 2 * 4 * 256 * 64 * 4;
  auto object = make_object(2 * bytes);
  ASSERT_TRUE(register_object(server.client(), "mmrec", *object).ok());
  const auto in = client::shared_memory_reference("mmrec", 0, static_cast<std::int64_t>(bytes));
  const auto out =
      client::shared_memory_reference("mmrec", static_cast<std::int64_t>(bytes), bytes);
  for (int round = 0; round < 40; ++round) {
    const client::HostTensor input =
        client::random_gamma(DType::kFloat32, shape, 1e-6, 1 - 1e-6, 1000 + round);
    std::memcpy(object->data(), input.data.data(), bytes);
    v1::ScanResponse response;
    ASSERT_TRUE(scan(server.client(), reference_request(input, 2, in, &out), &response).ok());
    client::HostTensor output{DType::kFloat32, shape, std::string(object->data() + bytes, bytes)};
    ASSERT_TRUE(client::check_cumprod(input, output, 2).ok()) << "round " << round;
  }
  v1::ListSharedMemoryResponse regions;
  ASSERT_TRUE(server.client().ListSharedMemory(&regions).ok());
  ASSERT_EQ(regions.regions_size(), 1);
  EXPECT_EQ(regions.regions(0).name(), "mmrec");
  EXPECT_EQ(regions.regions(0).byte_size(), static_cast<std::int64_t>(2 * bytes));
  EXPECT_TRUE(regions.regions(0).writable());
  EXPECT_EQ(regions.regions(0).requests_in_flight(), 0);
  ASSERT_TRUE(server.client().UnregisterSharedMemory("mmrec").ok());
  ASSERT_TRUE(server.client().ListSharedMemory(&regions).ok());
  EXPECT_EQ(regions.regions_size(), 0);
}

TEST(SharedMemory, EveryBadInputGetsAPreciseStatus) {
  server::ServerConfig config = shared_memory_config();
  config.shared_memory_max_regions = 2;
  config.shared_memory_max_bytes = 1 << 20;
  InProcessServer server(config);
  ASSERT_TRUE(server.started());
  client::Client& client = server.client();
  auto object = make_object(64 << 10);
  ASSERT_TRUE(register_object(client, "r", *object).ok());

  // Registration.
  expect_code(register_object(client, "r", *object), grpc::StatusCode::ALREADY_EXISTS, "name");
  expect_code(register_object(client, "bad/name", *object), grpc::StatusCode::INVALID_ARGUMENT,
              "name");
  expect_code(register_object(client, "s", *object, 0, (64 << 10) + 1),
              grpc::StatusCode::INVALID_ARGUMENT, "byte_size");
  expect_code(register_object(client, "s", *object, 70000, 16), grpc::StatusCode::INVALID_ARGUMENT,
              "byte_size");
  v1::RegisterSharedMemoryRequest missing;
  missing.set_name("s");
  missing.set_kind(v1::SHARED_MEMORY_KIND_SYSTEM);
  missing.set_key("/scan-this-object-does-not-exist");
  missing.set_byte_size(16);
  expect_code(client.RegisterSharedMemory(missing), grpc::StatusCode::INVALID_ARGUMENT, "key");
  missing.set_key("../../etc/passwd");
  expect_code(client.RegisterSharedMemory(missing), grpc::StatusCode::INVALID_ARGUMENT, "key");
  missing.set_kind(v1::SHARED_MEMORY_KIND_UNSPECIFIED);
  expect_code(client.RegisterSharedMemory(missing), grpc::StatusCode::INVALID_ARGUMENT, "kind");
  missing.set_kind(v1::SHARED_MEMORY_KIND_CUDA);
  expect_code(client.RegisterSharedMemory(missing), grpc::StatusCode::UNIMPLEMENTED, "kind");
  expect_code(client.UnregisterSharedMemory("nope"), grpc::StatusCode::NOT_FOUND, "name");
  // Limits: two regions, 1 MiB.
  auto big = make_object(2 << 20);
  expect_code(register_object(client, "big", *big), grpc::StatusCode::RESOURCE_EXHAUSTED,
              "--shared-memory-max-bytes");
  ASSERT_TRUE(register_object(client, "second", *object, 0, 16).ok());
  expect_code(register_object(client, "third", *object, 0, 16),
              grpc::StatusCode::RESOURCE_EXHAUSTED, "--shared-memory-max-regions");

  // References in Scan requests.
  const client::HostTensor tensor = client::random_gamma(DType::kFloat32, {1000}, 0.5, 1, 3);
  const auto scan_with = [&](v1::SharedMemoryReference in, const v1::SharedMemoryReference* out) {
    v1::ScanResponse response;
    return scan(client, reference_request(tensor, 0, in, out), &response);
  };
  using client::shared_memory_reference;
  expect_code(scan_with(shared_memory_reference("r", 64 << 10, 4000), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.byte_size");
  expect_code(scan_with(shared_memory_reference("r", 70000, 4000), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.offset");
  expect_code(scan_with(shared_memory_reference("r", -4, 4000), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.offset");
  expect_code(scan_with(shared_memory_reference("r", 0, 3996), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.byte_size");
  expect_code(scan_with(shared_memory_reference("unknown", 0, 4000), nullptr),
              grpc::StatusCode::NOT_FOUND, "gamma.shared_memory.region");
  const auto overlapping = shared_memory_reference("r", 4, 4000);
  expect_code(scan_with(shared_memory_reference("r", 0, 4000), &overlapping),
              grpc::StatusCode::INVALID_ARGUMENT, "output");
  const auto out_of_range = shared_memory_reference("r", 63 << 10, 4000);
  expect_code(scan_with(shared_memory_reference("r", 0, 4000), &out_of_range),
              grpc::StatusCode::INVALID_ARGUMENT, "output.byte_size");
  const auto wrong_size = shared_memory_reference("r", 8000, 40);
  expect_code(scan_with(shared_memory_reference("r", 0, 4000), &wrong_size),
              grpc::StatusCode::INVALID_ARGUMENT, "output.byte_size");
  // A tensor must start on a multiple of its element size (the kernels load whole elements; found
  // by the shared-memory fuzzer as a misaligned load), counting the region's own offset.
  expect_code(scan_with(shared_memory_reference("r", 2, 4000), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.offset");
  const auto misaligned = shared_memory_reference("r", 8001, 4000);
  expect_code(scan_with(shared_memory_reference("r", 0, 4000), &misaligned),
              grpc::StatusCode::INVALID_ARGUMENT, "output.offset");
  ASSERT_TRUE(client.UnregisterSharedMemory("second").ok());
  ASSERT_TRUE(register_object(client, "odd", *object, 6, 8000).ok());
  expect_code(scan_with(shared_memory_reference("odd", 0, 4000), nullptr),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory.offset");
  ASSERT_TRUE(scan_with(shared_memory_reference("odd", 2, 4000), nullptr).ok());
  v1::ScanRequest both =
      reference_request(tensor, 0, shared_memory_reference("r", 0, 4000), nullptr);
  both.mutable_gamma()->set_data(tensor.data);
  v1::ScanResponse response;
  expect_code(scan(client, both, &response), grpc::StatusCode::INVALID_ARGUMENT, "gamma.data");

  // ScanStream carries bytes only.
  v1::ScanRequest header =
      reference_request(tensor, 0, shared_memory_reference("r", 0, 4000), nullptr);
  std::chrono::microseconds round_trip{0};
  expect_code(client.ScanStream(header, std::make_shared<const std::string>(), 1 << 20,
                                std::chrono::seconds(10), &response, &round_trip),
              grpc::StatusCode::INVALID_ARGUMENT, "gamma.shared_memory");

  // The server is still well after all of it.
  std::memcpy(object->data(), tensor.data.data(), tensor.data.size());
  ASSERT_TRUE(scan_with(shared_memory_reference("r", 0, 4000), nullptr).ok());
}

// The owner shrinks the object under the server: before a request it is refused with the region
// named; during one (the race below, many times) the server neither crashes nor returns bytes it
// did not compute from the client's input, and it keeps serving.
TEST(SharedMemory, TruncationByTheOwnerNeverCrashesTheServer) {
  InProcessServer server(shared_memory_config());
  ASSERT_TRUE(server.started());
  const std::size_t bytes = 16 << 20;
  const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(bytes / 4)};
  const client::HostTensor input = client::random_gamma(DType::kFloat32, shape, 0.9999, 1, 5);
  int data_lost = 0, refused = 0, completed = 0;
  for (int round = 0; round < 6; ++round) {
    auto object = make_object(2 * bytes);
    const std::string name = "shrinking-" + std::to_string(round);
    ASSERT_TRUE(register_object(server.client(), name, *object).ok());
    std::memcpy(object->data(), input.data.data(), bytes);
    const auto in = client::shared_memory_reference(name, 0, static_cast<std::int64_t>(bytes));
    const auto out = client::shared_memory_reference(name, static_cast<std::int64_t>(bytes), bytes);
    std::thread owner([&, key = object->key()] {
      std::this_thread::sleep_for(std::chrono::microseconds(300 * round));
      const int fd = shm_open(key.c_str(), O_RDWR, 0);
      if (fd >= 0) {
        EXPECT_EQ(ftruncate(fd, 4096), 0);
        close(fd);
      }
    });
    v1::ScanResponse response;
    const grpc::Status status =
        scan(server.client(), reference_request(input, 0, in, &out), &response);
    owner.join();
    switch (status.error_code()) {
      case grpc::StatusCode::OK:
        ++completed;  // the scan finished before the truncation
        break;
      case grpc::StatusCode::DATA_LOSS:
        ++data_lost;
        EXPECT_NE(status.error_message().find("truncated"), std::string::npos);
        break;
      case grpc::StatusCode::FAILED_PRECONDITION:
        ++refused;
        EXPECT_NE(status.error_message().find(name), std::string::npos);
        break;
      default:
        ADD_FAILURE() << status.error_code() << ": " << status.error_message();
    }
    // Truncated for good by now: refused before any access.
    expect_code(scan(server.client(), reference_request(input, 0, in, &out), &response),
                grpc::StatusCode::FAILED_PRECONDITION, "truncated");
    ASSERT_TRUE(server.client().UnregisterSharedMemory(name).ok());
  }
  std::printf("truncation races: %d completed, %d lost data, %d refused\n", completed, data_lost,
              refused);
  const client::HostTensor small = client::random_gamma(DType::kFloat32, {64}, 0.5, 1, 9);
  client::ScanResult result;
  client::ScanOptions options;
  ASSERT_TRUE(server.client().Scan(small, options, &result).ok()) << "the server stopped serving";
}

// Unregistering a region a request is using removes its name but not its memory: the request
// completes with the right answer.
TEST(SharedMemory, UnregisteringUnderARunningRequestIsSafe) {
  InProcessServer server(shared_memory_config());
  ASSERT_TRUE(server.started());
  const std::size_t bytes = 64 << 20;
  const std::vector<std::int64_t> shape = {16, static_cast<std::int64_t>(bytes / 64)};
  const client::HostTensor input = client::random_gamma(DType::kFloat32, shape, 0.9999, 1, 11);
  auto object = make_object(2 * bytes);
  ASSERT_TRUE(register_object(server.client(), "busy", *object).ok());
  std::memcpy(object->data(), input.data.data(), bytes);
  const auto in = client::shared_memory_reference("busy", 0, static_cast<std::int64_t>(bytes));
  const auto out = client::shared_memory_reference("busy", static_cast<std::int64_t>(bytes), bytes);
  grpc::Status scanned;
  std::thread request([&] {
    v1::ScanResponse response;
    scanned = scan(server.client(), reference_request(input, 1, in, &out), &response);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const grpc::Status unregistered = server.client().UnregisterSharedMemory("busy");
  request.join();
  EXPECT_TRUE(unregistered.ok()) << unregistered.error_message();
  if (scanned.ok()) {
    client::HostTensor output{DType::kFloat32, shape, std::string(object->data() + bytes, bytes)};
    EXPECT_TRUE(client::check_cumprod(input, output, 1).ok());
  } else {
    // Unregistered before the request looked the region up.
    expect_code(scanned, grpc::StatusCode::NOT_FOUND, "gamma.shared_memory.region");
  }
}

}  // namespace
}  // namespace scan::testing
