// The safetensors header parser on hand-made files: every malformed header gets one clear
// error that names the file and the tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "loader/safetensors.h"

namespace seekserve {
namespace {

std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

Status parse_error(const std::vector<uint8_t>& bytes) {
  auto result = parse_safetensors(bytes, "test.safetensors");
  return result.ok() ? Status::Ok() : result.status();
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  const Status status = parse_error(bytes);
  ASSERT_FALSE(status.ok()) << "expected an error containing: " << fragment;
  EXPECT_NE(status.message().find("test.safetensors"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
}

TEST(SafetensorsTest, ParsesValidFileWithMetadata) {
  const auto bytes = make_file(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})", 32);
  auto header = parse_safetensors(bytes, "test.safetensors");
  ASSERT_TRUE(header.ok()) << header.status().to_string();
  EXPECT_EQ(header->metadata.at("format"), "pt");
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(header->tensors.at("b").dtype, DType::kBF16);
  EXPECT_EQ(header->tensors.at("b").begin, 24u);
}

TEST(SafetensorsTest, RejectsFileShorterThanLengthPrefix) {
  expect_error(std::vector<uint8_t>{1, 2, 3}, "too short");
}

TEST(SafetensorsTest, RejectsTruncatedHeader) {
  auto bytes = make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  bytes.resize(20);  // cut inside the JSON
  expect_error(bytes, "truncated");
}

TEST(SafetensorsTest, RejectsHugeHeaderLength) {
  std::vector<uint8_t> bytes(16, 0xff);
  expect_error(bytes, "exceeds");
}

TEST(SafetensorsTest, RejectsOffsetsPastEndOfFile) {
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8), "past the end");
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
               "overlaps");
}

TEST(SafetensorsTest, RejectsUnknownDtypeNamingTensor) {
  expect_error(make_file(R"({"w":{"dtype":"F4_E2M1","shape":[2],"data_offsets":[0,1]}})", 1), "tensor 'w'");
  expect_error(make_file(R"({"w":{"dtype":"F4_E2M1","shape":[2],"data_offsets":[0,1]}})", 1), "unknown dtype");
}

TEST(SafetensorsTest, RejectsShapeThatDisagreesWithOffsets) {
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16), "needs 12 bytes");
}

TEST(SafetensorsTest, RejectsInvalidJson) {
  expect_error(make_file(R"({"w":{"dtype":"F32",)", 0), "not valid JSON");
  expect_error(make_file(R"([1,2,3])", 0), "not a JSON object");
}

TEST(SafetensorsTest, RejectsMalformedEntries) {
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0), "non-integer or negative");
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4), "begin after");
  expect_error(make_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "dtype");
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4), "data_offsets");
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})", 4), "too large");
  expect_error(make_file(R"({"w":7})", 0), "not an object");
}

TEST(SafetensorsTest, AcceptsEmptyTensorsAndEmptyFile) {
  EXPECT_TRUE(parse_error(make_file(R"({})", 0)).ok());
  EXPECT_TRUE(parse_error(make_file(R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}})", 0)).ok());
}

}  // namespace
}  // namespace seekserve
