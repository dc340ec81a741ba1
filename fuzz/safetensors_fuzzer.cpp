// libFuzzer entry point: clang++ -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh).
#include "safetensors_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  seekserve::fuzz_safetensors_one_input(data, size);
  return 0;
}
