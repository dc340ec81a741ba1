#include "test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unistd.h>

namespace seekserve::testing {

std::string model_dir(const std::string& name) {
  for (const std::string& dir : {source_dir() + "/models/" + name, fixtures_dir() + "/models/" + name,
                                 shared_dir() + "/fixtures/models/" + name})
    if (std::filesystem::exists(dir + "/config.json")) return dir;
  return "";
}

Golden::Golden(const std::string& model) {
  auto file = SafetensorsFile::open(fixtures_dir() + "/goldens/golden_" + model + ".safetensors");
  if (file.ok()) file_ = *file;
}

std::vector<int32_t> Golden::ints(const std::string& name) const {
  const TensorEntry* e = file_->find(name);
  if (e == nullptr || e->dtype != DType::kI32) throw std::runtime_error("golden has no I32 tensor " + name);
  std::vector<int32_t> out(static_cast<size_t>(e->numel()));
  std::memcpy(out.data(), file_->data(*e), e->nbytes);
  return out;
}

std::vector<float> Golden::floats(const std::string& name) const {
  const TensorEntry* e = file_->find(name);
  if (e == nullptr || e->dtype != DType::kF32) throw std::runtime_error("golden has no F32 tensor " + name);
  std::vector<float> out(static_cast<size_t>(e->numel()));
  std::memcpy(out.data(), file_->data(*e), e->nbytes);
  return out;
}

std::vector<int64_t> Golden::shape(const std::string& name) const { return file_->find(name)->shape; }

std::vector<std::string> Golden::prompts() const {
  std::vector<std::string> out;
  for (int i = 0; file_->find("p" + std::to_string(i) + ".ids") != nullptr; ++i) out.push_back("p" + std::to_string(i));
  return out;
}

std::vector<RawTensor> read_all_tensors(const std::string& model_dir) {
  std::vector<RawTensor> out;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    auto file = SafetensorsFile::open(entry.path().string());
    if (!file.ok()) throw std::runtime_error(file.status().to_string());
    for (const auto& [name, e] : (*file)->header().tensors) {
      const uint8_t* p = (*file)->data(e);
      out.push_back({name, std::string(dtype_name(e.dtype)), e.shape, std::vector<uint8_t>(p, p + e.nbytes)});
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';  // keep the data section 8-byte aligned
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << text;
  for (const RawTensor& t : tensors) out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
}

std::string make_temp_dir(const std::string& tag) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("seekserve-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

double relative_l2(const float* a, const float* b, size_t n) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < n; ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(ref, 1e-30));
}

float top2_margin(const float* logits, int64_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (logits[i] > a) { b = a; a = logits[i]; }
    else if (logits[i] > b) { b = logits[i]; }
  }
  return a - b;
}

int64_t first_routing_flip(const RoutingRecord& ref, const RoutingRecord& got) {
  int64_t first_flip_layer = -1, first_token = -1;
  for (const auto& [where, choice] : ref.choices) {
    const auto it = got.choices.find(where);
    if (it != got.choices.end() && it->second.first == choice.first) continue;
    if (first_token < 0 || where.second < first_token) first_token = where.second;
    if (first_flip_layer >= 0 && where.first != first_flip_layer) continue;
    first_flip_layer = where.first;
    EXPECT_LT(choice.second, kRoutingNearTie) << "layer " << where.first << " token " << where.second
                                              << ": experts changed although the reference margin was wide";
  }
  return first_token;
}

}  // namespace seekserve::testing
