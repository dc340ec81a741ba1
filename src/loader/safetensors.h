// safetensors: an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
//
// The header is untrusted input: every length, offset and shape is checked before any pointer
// arithmetic, and every error names the file (and the tensor when there is one).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace seekserve {

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major, outermost first
  uint64_t begin = 0;          // byte offset into the data section
  uint64_t nbytes = 0;

  int64_t numel() const;
};

struct SafetensorsHeader {
  std::map<std::string, TensorEntry> tensors;
  std::map<std::string, std::string> metadata;  // the optional "__metadata__" object
  uint64_t data_offset = 0;                      // where the data section starts in the file
};

// Largest header accepted (the format's own limit is 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Parses and validates a whole file's bytes. `label` (usually the path) prefixes every error.
// Checks: header length within the file, valid JSON object, known dtypes, shapes of non-negative
// integers whose byte size matches the offsets, offsets inside the data section, no overlaps.
Result<SafetensorsHeader> parse_safetensors(std::span<const uint8_t> file_bytes,
                                            const std::string& label);

// A validated, memory-mapped safetensors file. Tensor views stay valid while it lives.
class SafetensorsFile {
 public:
  static Result<std::shared_ptr<SafetensorsFile>> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const SafetensorsHeader& header() const { return header_; }
  const TensorEntry* find(const std::string& name) const;
  // Start of a tensor's bytes (entry must come from this file's header).
  const uint8_t* data(const TensorEntry& entry) const {
    return file_->data() + header_.data_offset + entry.begin;
  }
  std::shared_ptr<const MappedFile> mapping() const { return file_; }

 private:
  SafetensorsFile(std::shared_ptr<MappedFile> file, SafetensorsHeader header)
      : file_(std::move(file)), header_(std::move(header)) {}
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
};

std::string shape_to_string(std::span<const int64_t> shape);

}  // namespace seekserve
