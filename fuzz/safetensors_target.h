// The safetensors header fuzz target, shared by the libFuzzer binary (clang builds) and the
// mutation smoke test that runs in every ctest.
#pragma once

#include <cstddef>
#include <cstdint>

namespace seekserve {

// Parses `data` as a safetensors file; when it is accepted, checks what the parser promises
// (every tensor inside the data section, sizes consistent, no overlaps) and aborts otherwise.
void fuzz_safetensors_one_input(const uint8_t* data, size_t size);

}  // namespace seekserve
