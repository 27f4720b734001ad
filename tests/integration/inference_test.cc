// KServe v2's ModelInfer against the in-process server, through the generated C++ stub: results
// against float64 for every datatype, small (inline) and large (handler threads) requests, the
// model's errors, and ModelInfer and Scan from many threads at once, each answer checked (the
// sanitizer builds run this: the pooled-buffer parsing of raw_input_contents and the zero-copy
// raw_output_contents are exercised under ASan and TSan).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "in_process_server.h"
#include "inference/grpc_service.grpc.pb.h"
#include "scan/client/host_tensor.h"

namespace scan::testing {
namespace {

using kernels::DType;

struct Datatype {
  DType dtype;
  const char* name;
};
constexpr Datatype kDatatypes[] = {{DType::kFloat32, "FP32"},
                                   {DType::kFloat64, "FP64"},
                                   {DType::kFloat16, "FP16"},
                                   {DType::kBFloat16, "BF16"}};

class InferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.started());
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel(server_.target(), grpc::InsecureChannelCredentials(), arguments));
  }

  static inference::ModelInferRequest request_for(const client::HostTensor& gamma,
                                                  const char* datatype, int dim) {
    inference::ModelInferRequest request;
    request.set_model_name("cumprod");
    auto* input = request.add_inputs();
    input->set_name("gamma");
    input->set_datatype(datatype);
    for (const std::int64_t size : gamma.shape) input->add_shape(size);
    (*request.mutable_parameters())["dim"].set_int64_param(dim);
    request.add_raw_input_contents(gamma.data);
    return request;
  }

  // Sends one request of `datatype` and checks the answer; false (with a failure) on any
  // mismatch.
  bool infer_and_check(const Datatype& datatype, const std::vector<std::int64_t>& shape, int dim,
                       std::uint64_t seed) {
    const client::HostTensor gamma = client::random_gamma(datatype.dtype, shape, 0.5, 1.0, seed);
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    const grpc::Status status =
        stub_->ModelInfer(&context, request_for(gamma, datatype.name, dim), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok() || response.raw_output_contents_size() != 1) return false;
    EXPECT_EQ(response.outputs(0).name(), "output");
    EXPECT_EQ(response.outputs(0).datatype(), datatype.name);
    const client::HostTensor result{datatype.dtype, shape, response.raw_output_contents(0)};
    const kernels::Comparison comparison = client::check_cumprod(gamma, result, dim);
    EXPECT_TRUE(comparison.ok()) << datatype.name << ": " << comparison.mismatches << " mismatches";
    return comparison.ok();
  }

  InProcessServer server_{loopback_config()};
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(InferenceTest, EveryDatatypeSmallAndLarge) {
  std::uint64_t seed = 11;
  for (const Datatype& datatype : kDatatypes) {
    EXPECT_TRUE(infer_and_check(datatype, {3, 1021}, 1, seed++));
    // Over the inline limit (1 MiB): served on the transport's handler threads.
    EXPECT_TRUE(infer_and_check(datatype, {2, 4, 1024, 64}, 2, seed++));
  }
}

TEST_F(InferenceTest, UnknownModelAndInputAreRefusedByName) {
  const client::HostTensor gamma = client::random_gamma(DType::kFloat32, {5}, 0.5, 1.0, 3);
  inference::ModelInferRequest request = request_for(gamma, "FP32", 0);
  request.set_model_name("cumsum");
  grpc::ClientContext context;
  inference::ModelInferResponse response;
  grpc::Status status = stub_->ModelInfer(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message().rfind("model_name: unknown model 'cumsum'", 0), 0u)
      << status.error_message();

  request = request_for(gamma, "FP32", 0);
  request.mutable_inputs(0)->set_name("beta");
  grpc::ClientContext second;
  status = stub_->ModelInfer(&second, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message().rfind("inputs[0].name: unknown input 'beta'", 0), 0u)
      << status.error_message();
}

TEST_F(InferenceTest, ModelInferAndScanTogetherFromManyThreads) {
  constexpr int kThreads = 8;
  constexpr int kCallsEach = 6;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int thread = 0; thread < kThreads; ++thread) {
    threads.emplace_back([&, thread] {
      for (int call = 0; call < kCallsEach; ++call) {
        const auto seed = static_cast<std::uint64_t>(1000 + thread * kCallsEach + call);
        const Datatype& datatype = kDatatypes[(thread + call) % 4];
        // Sizes on both sides of the inline limit.
        const std::vector<std::int64_t> shape = call % 2 == 0
                                                    ? std::vector<std::int64_t>{4, 97, 3}
                                                    : std::vector<std::int64_t>{2, 2048, 96};
        if (thread % 2 == 0) {
          good += infer_and_check(datatype, shape, 1, seed) ? 1 : 0;
          continue;
        }
        client::ScanOptions options;
        options.dim = 1;
        client::ScanResult result;
        client::HostTensor gamma = client::random_gamma(datatype.dtype, shape, 0.5, 1.0, seed);
        const client::HostTensor input = gamma;
        if (server_.client().Scan(std::move(gamma), options, &result).ok() &&
            client::check_cumprod(input, result.result, 1).ok()) {
          ++good;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kThreads * kCallsEach);
}

TEST_F(InferenceTest, StatisticsCountEveryScanOfTheServer) {
  EXPECT_TRUE(infer_and_check(kDatatypes[0], {8, 8}, 1, 5));
  const client::HostTensor gamma = client::random_gamma(DType::kFloat32, {8, 8}, 0.5, 1.0, 6);
  client::ScanOptions options;
  client::ScanResult result;
  ASSERT_TRUE(server_.client().Scan(gamma, options, &result).ok());
  grpc::ClientContext context;
  inference::ModelStatisticsResponse stats;
  ASSERT_TRUE(stub_->ModelStatistics(&context, {}, &stats).ok());
  ASSERT_EQ(stats.model_stats_size(), 1);
  EXPECT_EQ(stats.model_stats(0).inference_stats().success().count(), 2u);
  EXPECT_EQ(stats.model_stats(0).inference_count(), 2u);
}

}  // namespace
}  // namespace scan::testing
