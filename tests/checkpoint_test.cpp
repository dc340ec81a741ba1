// Loading broken checkpoints and configs: each mistake is refused with a message naming the
// file and the tensor (or key), never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <fstream>

#include "core/dtype.h"

#include "models/model_loader.h"
#include "test_support.h"

namespace seekserve {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = testing::model_dir("random-qwen2");
    tensors_ = testing::read_all_tensors(source_);
    dir_ = testing::make_temp_dir("ckpt");
    fs::copy_file(source_ + "/config.json", dir_ + "/config.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  Status load() {
    LoadOptions options;
    options.path = dir_;
    auto model = load_model(options);
    return model.ok() ? Status::Ok() : model.status();
  }
  void write(const std::vector<testing::RawTensor>& tensors, const std::string& file = "model.safetensors") {
    testing::write_safetensors(dir_ + "/" + file, tensors);
  }
  testing::RawTensor& tensor(const std::string& name) {
    for (auto& t : tensors_)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  void expect_error(const std::string& fragment, StatusCode code) {
    const Status status = load();
    ASSERT_FALSE(status.ok()) << "expected: " << fragment;
    EXPECT_EQ(status.code(), code) << status.to_string();
    EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
  }

  std::string source_, dir_;
  std::vector<testing::RawTensor> tensors_;
};

TEST_F(CheckpointTest, LoadsRewrittenCopy) {
  write(tensors_);
  EXPECT_TRUE(load().ok());
}

// The same weights stored as F32 and F16 load to the same model (bf16 values are exact in both).
TEST_F(CheckpointTest, LoadsF32AndF16Checkpoints) {
  auto logits_of = [&](const std::string& dir) {
    LoadOptions options;
    options.path = dir;
    auto model = load_model(options);
    EXPECT_TRUE(model.ok()) << model.status().to_string();
    KvCache cache = (*model)->new_cache();
    const std::vector<int32_t> ids = {0, 9, 77, 300};
    ForwardRequest request;
    request.tokens = ids;
    request.logits_from = 0;
    std::vector<float> logits;
    EXPECT_TRUE((*model)->forward(request, cache, &logits).ok());
    return logits;
  };
  const std::vector<float> expected = logits_of(source_);
  for (const char* dtype : {"F32", "F16"}) {
    SCOPED_TRACE(dtype);
    std::vector<testing::RawTensor> converted = tensors_;
    for (auto& t : converted) {
      std::vector<uint8_t> bytes;
      for (size_t i = 0; i + 1 < t.bytes.size(); i += 2) {
        const float v = bf16_to_f32(static_cast<uint16_t>(t.bytes[i] | (t.bytes[i + 1] << 8)));
        uint8_t b[4];
        if (std::string(dtype) == "F32") {
          std::memcpy(b, &v, 4);
          bytes.insert(bytes.end(), b, b + 4);
        } else {
          const _Float16 h = static_cast<_Float16>(v);
          std::memcpy(b, &h, 2);
          bytes.insert(bytes.end(), b, b + 2);
        }
      }
      t.bytes = bytes;
      t.dtype = dtype;
    }
    write(converted);
    const std::vector<float> logits = logits_of(dir_);
    EXPECT_LE(testing::relative_l2(logits.data(), expected.data(), expected.size()), std::string(dtype) == "F32" ? 1e-7 : 1e-3);
  }
}

TEST_F(CheckpointTest, RejectsMissingTensorByName) {
  std::erase_if(tensors_, [](const auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  write(tensors_);
  expect_error("missing tensor 'model.layers.1.mlp.up_proj.weight'", StatusCode::kNotFound);
}

TEST_F(CheckpointTest, RejectsWrongShapeNamingFileTensorAndShapes) {
  auto& t = tensor("model.layers.0.self_attn.k_proj.weight");  // [64, 128]
  t.shape = {128, 64};
  write(tensors_);
  const Status status = load();
  ASSERT_FALSE(status.ok());
  for (const char* fragment : {"model.safetensors", "model.layers.0.self_attn.k_proj.weight", "expected shape [64, 128]", "found [128, 64]"})
    EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
}

TEST_F(CheckpointTest, RejectsWrongDtype) {
  auto& t = tensor("model.layers.2.mlp.gate_proj.weight");
  t.dtype = "I16";
  write(tensors_);
  expect_error("model.layers.2.mlp.gate_proj.weight': dtype I16 is not a weight dtype", StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, RejectsTruncatedFile) {
  write(tensors_);
  const auto path = dir_ + "/model.safetensors";
  fs::resize_file(path, fs::file_size(path) - 1000);
  expect_error("is the file truncated?", StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, RejectsFileCutInsideTheHeader) {
  write(tensors_);
  fs::resize_file(dir_ + "/model.safetensors", 100);
  expect_error("truncated", StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, RejectsUnknownArchitectureListingSupportedOnes) {
  write(tensors_);
  std::ofstream(dir_ + "/config.json") << R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 8})";
  const Status status = load();
  ASSERT_EQ(status.code(), StatusCode::kUnimplemented) << status.to_string();
  for (const std::string& arch : supported_architectures())
    EXPECT_NE(status.message().find(arch), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("MixtralForCausalLM"), std::string::npos);
}

TEST_F(CheckpointTest, RejectsInvalidConfigJson) {
  write(tensors_);
  std::ofstream(dir_ + "/config.json") << R"({"architectures": ["Qwen2ForCausalLM"], )";
  expect_error("config.json: not valid JSON", StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, RejectsConfigMissingRequiredKey) {
  write(tensors_);
  std::ofstream(dir_ + "/config.json") << R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 512})";
  expect_error("missing required key \"hidden_size\"", StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, RejectsMissingCheckpointFiles) {
  expect_error("no model.safetensors", StatusCode::kNotFound);
}

TEST_F(CheckpointTest, LoadsShardsAndRejectsBrokenIndexes) {
  // Split the tensors over two shards with an index, as Hugging Face writes them.
  std::vector<testing::RawTensor> a(tensors_.begin(), tensors_.begin() + 10), b(tensors_.begin() + 10, tensors_.end());
  write(a, "model-00001-of-00002.safetensors");
  write(b, "model-00002-of-00002.safetensors");
  nlohmann::json index;
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ + "/model.safetensors.index.json") << index.dump();
  EXPECT_TRUE(load().ok());

  // The same tensor in two shards is ambiguous.
  std::vector<testing::RawTensor> b_dup = b;
  b_dup.push_back(a.front());
  write(b_dup, "model-00002-of-00002.safetensors");
  expect_error("is also stored in", StatusCode::kDataLoss);

  // A shard named by the index but absent.
  write(b, "model-00002-of-00002.safetensors");
  index["weight_map"]["extra"] = "model-00003-of-00002.safetensors";
  std::ofstream(dir_ + "/model.safetensors.index.json") << index.dump();
  expect_error("model-00003-of-00002.safetensors: cannot open", StatusCode::kNotFound);

  // A path outside the folder is refused.
  index["weight_map"]["extra"] = "../evil.safetensors";
  std::ofstream(dir_ + "/model.safetensors.index.json") << index.dump();
  expect_error("must be a plain file name", StatusCode::kDataLoss);
}

TEST(Fp8CheckpointTest, RejectsFp8WeightWithoutScales) {
  const std::string source = testing::model_dir("random-deepseek-v3-fp8");
  auto tensors = testing::read_all_tensors(source);
  std::erase_if(tensors, [](const auto& t) { return t.name == "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"; });
  const std::string dir = testing::make_temp_dir("fp8");
  fs::copy_file(source + "/config.json", dir + "/config.json");
  testing::write_safetensors(dir + "/model.safetensors", tensors);
  LoadOptions options;
  options.path = dir;
  auto model = load_model(options);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"), std::string::npos)
      << model.status().message();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace seekserve
