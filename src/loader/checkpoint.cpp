#include "loader/checkpoint.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

namespace seekserve {

namespace fs = std::filesystem;

namespace {

Result<std::vector<std::string>> shard_names_from_index(const std::string& index_path) {
  SS_ASSIGN_OR_RETURN(std::string text, read_text_file(index_path));
  auto root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return data_loss(index_path + ": not valid JSON");
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    return data_loss(index_path + ": missing \"weight_map\" object");
  std::vector<std::string> shards;
  for (const auto& [tensor, file] : root["weight_map"].items()) {
    if (!file.is_string())
      return data_loss(index_path + ": weight_map entry for '" + tensor + "' is not a file name");
    const std::string name = file.get<std::string>();
    if (name.find('/') != std::string::npos || name == ".." || name.empty())
      return data_loss(index_path + ": shard name '" + name + "' must be a plain file name");
    if (std::find(shards.begin(), shards.end(), name) == shards.end()) shards.push_back(name);
  }
  return shards;
}

}  // namespace

Result<std::shared_ptr<Checkpoint>> Checkpoint::open(const std::string& dir) {
  auto checkpoint = std::make_shared<Checkpoint>();
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  std::vector<std::string> shard_names;
  if (fs::exists(index_path)) {
    SS_ASSIGN_OR_RETURN(shard_names, shard_names_from_index(index_path.string()));
  } else if (fs::exists(single_path)) {
    shard_names.push_back("model.safetensors");
  } else {
    return not_found(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  std::map<std::string, std::string> owner;  // tensor name -> shard path, to catch duplicates
  for (const auto& name : shard_names) {
    const std::string path = (fs::path(dir) / name).string();
    SS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(path));
    for (const auto& [tensor, _] : file->header().tensors) {
      auto [it, inserted] = owner.emplace(tensor, path);
      if (!inserted)
        return data_loss(path + ": tensor '" + tensor + "' is also stored in " + it->second);
    }
    checkpoint->files_.push_back(std::move(file));
  }
  return checkpoint;
}

TensorRef Checkpoint::find(const std::string& name) const {
  for (const auto& file : files_)
    if (const TensorEntry* e = file->find(name)) return {e, file.get()};
  return {};
}

size_t Checkpoint::tensor_count() const {
  size_t n = 0;
  for (const auto& file : files_) n += file->header().tensors.size();
  return n;
}

}  // namespace seekserve
