// One case per validation rule: the status code and the field named in the message.
#include "admission/request_validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "rpc/outcome_status.h"

namespace scan::server {
namespace {

using ::testing::HasSubstr;

v1::ScanRequest make_request(v1::DataType dtype, std::vector<std::int64_t> shape,
                             std::size_t element_bytes, int dim = 0) {
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(dtype);
  std::int64_t count = 1;
  for (const auto size : shape) {
    request.mutable_gamma()->add_shape(size);
    count *= size;
  }
  request.mutable_gamma()->mutable_data()->resize(static_cast<std::size_t>(count) * element_bytes);
  request.set_dim(dim);
  return request;
}

struct Validated {
  grpc::Status status;  // as the client sees it
  ValidatedScan scan;
};

Validated validate(const v1::ScanRequest& request, ValidationLimits limits = {}) {
  Validated outcome;
  outcome.status = to_status(validate_scan_request(request, limits, &outcome.scan));
  return outcome;
}

void expect_rejected(const v1::ScanRequest& request, grpc::StatusCode code,
                     const std::string& field, ValidationLimits limits = {}) {
  const auto outcome = validate(request, limits);
  EXPECT_EQ(outcome.status.error_code(), code) << outcome.status.error_message();
  EXPECT_THAT(outcome.status.error_message(), HasSubstr(field));
}

TEST(RequestValidation, AcceptsWellFormedRequestAndCollapsesShape) {
  const auto outcome = validate(make_request(v1::DATA_TYPE_FLOAT32, {2, 3, 5, 7}, 4, 2));
  ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  EXPECT_EQ(outcome.scan.dim, 2);
  EXPECT_EQ(outcome.scan.view.outer, 6);
  EXPECT_EQ(outcome.scan.view.length, 5);
  EXPECT_EQ(outcome.scan.view.inner, 7);
  EXPECT_EQ(outcome.scan.numel, 210);
  EXPECT_EQ(outcome.scan.bytes, 840u);
}

TEST(RequestValidation, NegativeDimCountsFromTheEnd) {
  for (int dim = -4; dim < 0; ++dim) {
    const auto outcome = validate(make_request(v1::DATA_TYPE_FLOAT64, {2, 3, 5, 7}, 8, dim));
    ASSERT_TRUE(outcome.status.ok());
    EXPECT_EQ(outcome.scan.dim, dim + 4);
  }
}

TEST(RequestValidation, RejectsMissingGamma) {
  v1::ScanRequest request;
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma:");
}

TEST(RequestValidation, RejectsUnspecifiedDtype) {
  expect_rejected(make_request(v1::DATA_TYPE_UNSPECIFIED, {4}, 4),
                  grpc::StatusCode::INVALID_ARGUMENT, "gamma.dtype");
}

TEST(RequestValidation, RejectsUnknownDtypeValue) {
  expect_rejected(make_request(static_cast<v1::DataType>(99), {4}, 4),
                  grpc::StatusCode::INVALID_ARGUMENT, "gamma.dtype: 99");
}

TEST(RequestValidation, RejectsEmptyShape) {
  expect_rejected(make_request(v1::DATA_TYPE_FLOAT32, {}, 4), grpc::StatusCode::INVALID_ARGUMENT,
                  "gamma.shape: empty");
}

TEST(RequestValidation, RejectsNegativeShapeEntryNamingItsIndex) {
  auto request = make_request(v1::DATA_TYPE_FLOAT32, {2, 3}, 4);
  request.mutable_gamma()->set_shape(1, -3);
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.shape[1]");
}

TEST(RequestValidation, RejectsElementCountOverflow) {
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  for (int axis = 0; axis < 3; ++axis) request.mutable_gamma()->add_shape(std::int64_t{1} << 30);
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.shape: the element count");
}

TEST(RequestValidation, RejectsOverflowEvenWhenAnotherDimensionIsZero) {
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  request.mutable_gamma()->add_shape(0);
  request.mutable_gamma()->add_shape(std::int64_t{1} << 40);
  request.mutable_gamma()->add_shape(std::int64_t{1} << 40);
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.shape: the element count");
}

TEST(RequestValidation, RejectsByteSizeOverflow) {
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT64);
  request.mutable_gamma()->add_shape(std::int64_t{1} << 61);
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.shape: the tensor's byte");
}

TEST(RequestValidation, RejectsDataShorterThanShape) {
  auto request = make_request(v1::DATA_TYPE_FLOAT32, {3, 5}, 4);
  request.mutable_gamma()->mutable_data()->pop_back();
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.data: holds 59 bytes");
}

TEST(RequestValidation, RejectsDataLongerThanShape) {
  auto request = make_request(v1::DATA_TYPE_BFLOAT16, {3, 5}, 2);
  request.mutable_gamma()->mutable_data()->append("xx");
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "gamma.data");
}

TEST(RequestValidation, RejectsDimAtRank) {
  expect_rejected(make_request(v1::DATA_TYPE_FLOAT32, {2, 3}, 4, 2),
                  grpc::StatusCode::INVALID_ARGUMENT, "dim: 2 is out of range");
}

TEST(RequestValidation, RejectsDimBelowMinusRank) {
  expect_rejected(make_request(v1::DATA_TYPE_FLOAT32, {2, 3}, 4, -3),
                  grpc::StatusCode::INVALID_ARGUMENT, "dim: -3");
}

TEST(RequestValidation, RejectsTensorOverTheSizeLimit) {
  ValidationLimits limits;
  limits.max_tensor_bytes = 1024;
  expect_rejected(make_request(v1::DATA_TYPE_FLOAT32, {257}, 4),
                  grpc::StatusCode::RESOURCE_EXHAUSTED, "gamma: 1028 bytes", limits);
  EXPECT_TRUE(validate(make_request(v1::DATA_TYPE_FLOAT32, {256}, 4), limits).status.ok());
}

TEST(RequestValidation, RejectsRankOverTheLimit) {
  ValidationLimits limits;
  limits.max_rank = 3;
  expect_rejected(make_request(v1::DATA_TYPE_FLOAT32, {1, 1, 1, 1}, 4),
                  grpc::StatusCode::INVALID_ARGUMENT, "gamma.shape: rank 4", limits);
}

TEST(RequestValidation, RejectsUnknownBackendPreference) {
  auto request = make_request(v1::DATA_TYPE_FLOAT32, {4}, 4);
  request.set_backend(static_cast<v1::BackendPreference>(7));
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "backend");
}

TEST(RequestValidation, RejectsUnknownScanOp) {
  auto request = make_request(v1::DATA_TYPE_FLOAT32, {4}, 4);
  request.set_op(static_cast<v1::ScanOp>(42));
  expect_rejected(request, grpc::StatusCode::INVALID_ARGUMENT, "op");
}

TEST(RequestValidation, AcceptsExplicitCumprodOp) {
  auto request = make_request(v1::DATA_TYPE_FLOAT32, {4}, 4);
  request.set_op(v1::SCAN_OP_CUMPROD);
  EXPECT_TRUE(validate(request).status.ok());
}

TEST(RequestValidation, AcceptsZeroElementTensor) {
  const auto outcome = validate(make_request(v1::DATA_TYPE_FLOAT16, {4, 0, 3}, 2, 1));
  ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
  EXPECT_EQ(outcome.scan.numel, 0);
  EXPECT_EQ(outcome.scan.bytes, 0u);
}

}  // namespace
}  // namespace scan::server
