// A Hugging Face checkpoint folder: one model.safetensors, or shards listed by
// model.safetensors.index.json ("weight_map": tensor name -> shard file).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "loader/safetensors.h"

namespace seekserve {

// A tensor found in a checkpoint: its header entry and the file that holds its bytes.
struct TensorRef {
  const TensorEntry* entry = nullptr;
  const SafetensorsFile* file = nullptr;
  const uint8_t* data() const { return file->data(*entry); }
};

class Checkpoint {
 public:
  // Opens every shard of the checkpoint in `dir` (memory-mapped, headers validated).
  static Result<std::shared_ptr<Checkpoint>> open(const std::string& dir);

  // nullptr-free lookup: an empty optional-like ref (entry == nullptr) when absent.
  TensorRef find(const std::string& name) const;
  size_t tensor_count() const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
};

}  // namespace seekserve
