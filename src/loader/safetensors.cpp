#include "loader/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace seekserve {

namespace {

using nlohmann::json;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

Result<TensorEntry> parse_entry(const std::string& name, const json& value, uint64_t data_size,
                                const std::string& label) {
  const std::string where = label + ": tensor '" + name + "'";
  if (!value.is_object()) return data_loss(where + ": header entry is not an object");
  TensorEntry entry;
  entry.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string())
    return data_loss(where + ": missing or non-string \"dtype\"");
  const auto dtype = parse_dtype(dtype_it->get<std::string>());
  if (!dtype) return unimplemented(where + ": unknown dtype \"" + dtype_it->get<std::string>() + "\"");
  entry.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array())
    return data_loss(where + ": missing or non-array \"shape\"");
  uint64_t numel = 1;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) return data_loss(where + ": shape holds a non-integer or negative");
    const uint64_t d = dim.get<uint64_t>();
    if (d > (uint64_t{1} << 62) || mul_overflows(numel, d, &numel))
      return data_loss(where + ": shape is too large");
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    return data_loss(where + ": \"data_offsets\" must be two non-negative integers");
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) return data_loss(where + ": data_offsets begin after they end");
  if (end > data_size)
    return data_loss(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") run past the end of the file (data section holds " +
                     std::to_string(data_size) + " bytes; is the file truncated?)");
  uint64_t nbytes = 0;
  if (mul_overflows(numel, static_cast<uint64_t>(dtype_size(entry.dtype)), &nbytes) ||
      nbytes != end - begin)
    return data_loss(where + ": shape " + shape_to_string(entry.shape) + " of " +
                     std::string(dtype_name(entry.dtype)) + " needs " + std::to_string(nbytes) +
                     " bytes but data_offsets span " + std::to_string(end - begin));
  entry.begin = begin;
  entry.nbytes = nbytes;
  return entry;
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Result<SafetensorsHeader> parse_safetensors(std::span<const uint8_t> bytes, const std::string& label) {
  if (bytes.size() < 8)
    return data_loss(label + ": file is " + std::to_string(bytes.size()) +
                     " bytes, too short for a safetensors header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[static_cast<size_t>(i)];
  if (header_len > kMaxSafetensorsHeaderBytes)
    return data_loss(label + ": header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  if (header_len > bytes.size() - 8)
    return data_loss(label + ": header length " + std::to_string(header_len) +
                     " runs past the end of the file (" + std::to_string(bytes.size()) +
                     " bytes; is the file truncated?)");

  const char* text = reinterpret_cast<const char*>(bytes.data() + 8);
  json root = json::parse(text, text + header_len, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return data_loss(label + ": header is not valid JSON");
  if (!root.is_object()) return data_loss(label + ": header is not a JSON object");

  SafetensorsHeader header;
  header.data_offset = 8 + header_len;
  const uint64_t data_size = bytes.size() - header.data_offset;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return data_loss(label + ": \"__metadata__\" is not an object");
      for (const auto& [k, v] : value.items())
        if (v.is_string()) header.metadata[k] = v.get<std::string>();
      continue;
    }
    SS_ASSIGN_OR_RETURN(TensorEntry entry, parse_entry(name, value, data_size, label));
    header.tensors.emplace(name, std::move(entry));
  }

  // Tensors must not share bytes: sort by start and compare each with its predecessor.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& [_, e] : header.tensors)
    if (e.nbytes > 0) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& prev = *by_offset[i - 1];
    const TensorEntry& cur = *by_offset[i];
    if (cur.begin < prev.begin + prev.nbytes)
      return data_loss(label + ": tensor '" + cur.name + "' overlaps tensor '" + prev.name + "'");
  }
  return header;
}

Result<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  SS_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  SS_ASSIGN_OR_RETURN(SafetensorsHeader header,
                      parse_safetensors({file->data(), file->size()}, path));
  return std::shared_ptr<SafetensorsFile>(new SafetensorsFile(std::move(file), std::move(header)));
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = header_.tensors.find(name);
  return it == header_.tensors.end() ? nullptr : &it->second;
}

}  // namespace seekserve
