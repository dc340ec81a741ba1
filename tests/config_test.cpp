// config.json handling: the real DeepSeek/R1-Distill configs, both spellings of RoPE settings,
// RoPE frequencies against the formulas, dummy weights for config-only folders.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "engine/generator.h"
#include "models/deepseek_v3.h"
#include "models/dense_decoder.h"
#include "model/weight_binder.h"
#include "models/model_loader.h"
#include "test_support.h"

namespace seekserve {
namespace {

namespace fs = std::filesystem;

TEST(ConfigTest, ReadsRealDeepseekV3Config) {
  auto config = load_config(testing::source_dir() + "/configs/deepseek-v3.json");
  ASSERT_TRUE(config.ok());
  const DeepseekConfig c = read_deepseek_config(*config, /*v3=*/true);
  ASSERT_TRUE(config->status().ok()) << config->status().to_string();
  EXPECT_EQ(c.n_layers, 61);
  EXPECT_EQ(c.mla.kv_lora_rank, 512);
  EXPECT_EQ(c.mla.q_lora_rank, 1536);
  EXPECT_EQ(c.moe.n_routed_experts, 256);
  EXPECT_EQ(c.moe.topk_method, MoeTopkMethod::kNoauxTc);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  // (128 + 64)^-0.5 * m^2 with m = 0.1 * ln(40) + 1 (numerics note).
  EXPECT_NEAR(c.mla.softmax_scale, 0.1352337788608801, 1e-7);
}

TEST(ConfigTest, ReadsRealV2LiteConfigWithoutQLora) {
  auto config = load_config(testing::source_dir() + "/configs/deepseek-v2-lite.json");
  ASSERT_TRUE(config.ok());
  const DeepseekConfig c = read_deepseek_config(*config, /*v3=*/false);
  ASSERT_TRUE(config->status().ok()) << config->status().to_string();
  EXPECT_EQ(c.mla.q_lora_rank, 0);
  EXPECT_EQ(c.moe.scoring, MoeScoring::kSoftmax);
  EXPECT_EQ(c.moe.topk_method, MoeTopkMethod::kGreedy);
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.mla.softmax_scale, m * m / std::sqrt(192.0), 1e-7);
}

TEST(ConfigTest, YarnFrequenciesFollowTheFormula) {
  RopeConfig rope;
  rope.theta = 10000.0;
  rope.scaling = RopeScaling::kYarn;
  rope.factor = 40.0;
  rope.original_max_positions = 4096;
  rope.mscale = 1.0;
  rope.mscale_all_dim = 1.0;
  const int64_t d = 64;
  const RopeFrequencies f = make_rope_frequencies(rope, d);
  auto dim_of = [&](double r) { return d * std::log(4096.0 / (r * 2 * std::numbers::pi)) / (2 * std::log(10000.0)); };
  const double low = std::max(std::floor(dim_of(32.0)), 0.0), high = std::min(std::ceil(dim_of(1.0)), d - 1.0);
  for (int64_t i = 0; i < d / 2; ++i) {
    const double base = std::pow(10000.0, -2.0 * static_cast<double>(i) / d);
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double expected = base / 40.0 * ramp + base * (1.0 - ramp);
    EXPECT_NEAR(f.inv_freq[static_cast<size_t>(i)], expected, 1e-6 * expected) << i;
  }
  EXPECT_FLOAT_EQ(f.attention_factor, 1.0f);  // mscale == mscale_all_dim
}

TEST(ConfigTest, Llama3FrequenciesFollowTheFormula) {
  RopeConfig rope;
  rope.theta = 500000.0;
  rope.scaling = RopeScaling::kLlama3;
  rope.factor = 8.0;
  rope.original_max_positions = 8192;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = 4.0;
  const int64_t d = 128;
  const RopeFrequencies f = make_rope_frequencies(rope, d);
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < d / 2; ++i) {
    const double base = std::pow(500000.0, -2.0 * static_cast<double>(i) / d);
    const double wavelen = 2 * std::numbers::pi / base;
    double expected = base;
    if (wavelen > 8192.0) {
      expected = base / 8.0;
      ++divided;
    } else if (wavelen >= 8192.0 / 4.0) {
      const double s = (8192.0 / wavelen - 1.0) / 3.0;
      expected = (1 - s) * base / 8.0 + s * base;
      ++blended;
    } else {
      ++kept;
    }
    EXPECT_NEAR(f.inv_freq[static_cast<size_t>(i)], expected, 2e-6 * expected) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(ConfigTest, RefusesUnknownRopeType) {
  ConfigReader config(nlohmann::json::parse(R"({"rope_scaling": {"type": "dynamic", "factor": 2.0}})"), "config.json");
  read_rope_config(config);
  ASSERT_FALSE(config.status().ok());
  EXPECT_NE(config.status().message().find("unsupported rope type \"dynamic\""), std::string::npos);
}

// transformers 5 writes rope_parameters {rope_type, rope_theta, ...} and "dtype": the same model.
TEST(ConfigTest, TransformersFiveSpellingGivesIdenticalLogits) {
  const std::string source = testing::model_dir("random-deepseek-v3");
  const std::string dir = testing::make_temp_dir("tf5");
  fs::copy_file(source + "/model.safetensors", dir + "/model.safetensors");
  std::ifstream in(source + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  nlohmann::json rope = config["rope_scaling"];
  rope["rope_type"] = rope["type"];
  rope.erase("type");
  rope["rope_theta"] = config["rope_theta"];
  config.erase("rope_scaling");
  config.erase("rope_theta");
  config["rope_parameters"] = rope;
  config["dtype"] = config["torch_dtype"];
  config.erase("torch_dtype");
  std::ofstream(dir + "/config.json") << config.dump(2);

  auto logits_of = [](const std::string& path) {
    LoadOptions options;
    options.path = path;
    auto model = load_model(options);
    EXPECT_TRUE(model.ok()) << model.status().to_string();
    KvCache cache = (*model)->new_cache();
    std::vector<int32_t> ids = {0, 5, 300, 42, 7};
    ForwardRequest request;
    request.tokens = ids;
    request.logits_from = 0;
    std::vector<float> logits;
    EXPECT_TRUE((*model)->forward(request, cache, &logits).ok());
    return logits;
  };
  EXPECT_EQ(logits_of(source), logits_of(dir));
  fs::remove_all(dir);
}

TEST(DummyWeightsTest, GeneratesFromAConfigFileAlone) {
  const std::string dir = testing::make_temp_dir("dummy");
  fs::copy_file(testing::model_dir("random-deepseek-v3-fp8") + "/config.json", dir + "/config.json");
  for (ComputeDType dtype : {ComputeDType::kBF16, ComputeDType::kF32}) {
    LoadOptions options;
    options.path = dir + "/config.json";
    options.dummy_weights = true;
    options.dtype = dtype;
    auto model = load_model(options);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    // bf16 keeps the config's FP8 format: 1 byte per linear weight plus scales.
    EXPECT_GT((*model)->info().weight_bytes, 0);
    GenerateOptions gen;
    gen.max_tokens = 6;
    gen.ignore_eos = true;
    gen.sampling.temperature = 0.0f;
    gen.logits_tail = 1;
    const std::vector<int32_t> prompt = {0, 1, 2, 3};
    auto result = generate(**model, prompt, gen);
    ASSERT_TRUE(result.ok()) << result.status().to_string();
    EXPECT_EQ(result->tokens.size(), 6u);
    for (float v : result->logits_tail[0]) ASSERT_TRUE(std::isfinite(v));
  }
  fs::remove_all(dir);
}

// Dummy weights left to a GPU (BindOptions::dummies_on_device) carry no host elements, only
// their source; the values they stand for, as row_to_f32 computes them, are bit for bit those the
// host generates: bf16 matrices, FP8 ones under --dtype fp8, tables. Under bf16 an FP8 config's
// matrices stay on the host (the uploader converts them there).
TEST(DummyWeightsTest, DeviceGeneratedWeightsStandForTheHostValues) {
  struct Case {
    ComputeDType dtype;
    bool fp8_config;
    bool on_device;  // whether the linear weight is left to the device
  };
  for (const Case c : {Case{ComputeDType::kBF16, false, true}, Case{ComputeDType::kFP8, true, true}, Case{ComputeDType::kBF16, true, false}}) {
    SCOPED_TRACE(static_cast<int>(c.dtype) * 10 + c.fp8_config);
    BindOptions host_options;
    host_options.dtype = c.dtype;
    host_options.dummy_weights = true;
    host_options.dummy_fp8 = c.fp8_config;
    BindOptions device_options = host_options;
    device_options.dummies_on_device = true;
    WeightBinder host(nullptr, host_options), device(nullptr, device_options);
    const int64_t rows = 130, cols = 384;  // a partial block row
    const Weight want = host.linear("model.layers.0.mlp.up_proj", rows, cols);
    const Weight got = device.linear("model.layers.0.mlp.up_proj", rows, cols);
    ASSERT_TRUE(host.status().ok() && device.status().ok());
    EXPECT_EQ(got.dummy_on_device, c.on_device);
    EXPECT_FALSE(got.empty());
    EXPECT_EQ(got.format, want.format);
    EXPECT_EQ(got.bytes(), want.bytes());
    EXPECT_EQ(got.data == nullptr, c.on_device);
    std::vector<float> got_row(static_cast<size_t>(cols)), want_row(static_cast<size_t>(cols));
    for (int64_t r : {int64_t{0}, int64_t{77}, rows - 1}) {
      got.row_to_f32(r, got_row.data());
      want.row_to_f32(r, want_row.data());
      ASSERT_EQ(got_row, want_row) << "row " << r;
    }
    const Weight table = device.table("model.embed_tokens.weight", 50, 64);
    const Weight host_table = host.table("model.embed_tokens.weight", 50, 64);
    EXPECT_TRUE(table.dummy_on_device);
    table.row_to_f32(49, got_row.data());
    host_table.row_to_f32(49, want_row.data());
    EXPECT_TRUE(std::equal(got_row.begin(), got_row.begin() + 64, want_row.begin()));
    // Kept float32 (the router) stays on the host.
    EXPECT_FALSE(device.linear("model.layers.0.mlp.gate", 16, cols, Keep::kF32).dummy_on_device);
  }
}

// --num-layers: the cut model computes exactly the first N layers of the full one, binds fewer
// weights, and a depth the model does not have is refused.
TEST(ConfigTest, NumLayersKeepsTheFirstLayersExactly) {
  for (const char* name : {"random-deepseek-v3", "random-qwen2"}) {
    SCOPED_TRACE(name);
    auto load = [&](int64_t num_layers) {
      LoadOptions options;
      options.path = testing::model_dir(name);
      options.num_layers = num_layers;
      return load_model(options);
    };
    auto full = load(0);
    ASSERT_TRUE(full.ok()) << full.status().to_string();
    const int64_t total = (*full)->info().n_layers, keep = total - 1;
    ASSERT_GE(keep, 1);
    auto cut = load(keep);
    ASSERT_TRUE(cut.ok()) << cut.status().to_string();
    EXPECT_EQ((*cut)->info().n_layers, keep);
    EXPECT_LT((*cut)->info().weight_bytes, (*full)->info().weight_bytes);
    auto hidden_after = [&](CausalLM& model, int64_t layer) {
      KvCache cache = model.new_cache();
      const std::vector<int32_t> ids = {0, 5, 300, 42, 7};
      ForwardRequest request;
      request.tokens = ids;
      std::vector<float> seen, logits;
      request.observer = [&](int64_t l, const float* hidden, int64_t n) {
        if (l == layer) seen.assign(hidden, hidden + n * model.info().hidden_size);
      };
      EXPECT_TRUE(model.forward(request, cache, &logits).ok());
      return seen;
    };
    const std::vector<float> want = hidden_after(**full, keep);
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(hidden_after(**cut, keep), want);

    auto too_deep = load(total + 1);
    ASSERT_FALSE(too_deep.ok());
    EXPECT_NE(too_deep.status().message().find("decoder layers"), std::string::npos) << too_deep.status().message();
  }
}

TEST(ConfigTest, ReadsEveryRealConfig) {
  // The published configs parse into consistent family configs (their weights are generated
  // only in benchmarks: they do not fit a test machine).
  for (const char* name : {"deepseek-v3.json", "deepseek-r1.json", "deepseek-v2-lite.json", "r1-distill-qwen-1.5b.json",
                           "r1-distill-llama-8b.json"}) {
    SCOPED_TRACE(name);
    auto config = load_config(testing::source_dir() + "/configs/" + name);
    ASSERT_TRUE(config.ok());
    auto arch = config_architecture(*config);
    ASSERT_TRUE(arch.ok());
    if (arch->rfind("Deepseek", 0) == 0) {
      const DeepseekConfig c = read_deepseek_config(*config, *arch == "DeepseekV3ForCausalLM");
      EXPECT_GT(c.moe.n_routed_experts, 0);
    } else {
      const DenseDecoderConfig c = read_dense_decoder_config(*config);
      EXPECT_GT(c.attention.n_heads, c.attention.n_kv_heads);  // all use grouped-query attention
    }
    EXPECT_TRUE(config->status().ok()) << config->status().to_string();
  }
}

}  // namespace
}  // namespace seekserve
