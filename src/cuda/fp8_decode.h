// e4m3 to float32 with integer operations only (the FP8 GEMVs' decoding, fp8.cu), host and
// device: usable by the CPU tests, which check it against the reference conversion for all 256
// codes without a GPU.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define SS_HOST_DEVICE __host__ __device__
#else
#define SS_HOST_DEVICE
#endif

namespace seekserve::cuda {

// 2^120: what the raw decoding below leaves out of every value.
constexpr float kFp8RawScale = 0x1p120f;

// The e4m3 code in the top byte of t as a float32 equal to 2^-120 times its value, exactly: the
// code's sign goes to bit 31 and its exponent and mantissa to bits 30..20, which reads as a float32
// (exponent bias 127) of the e4m3 value (bias 7) scaled by 2^-120; e4m3 subnormals become float32
// subnormals with the same digits. (The NaN codes 0x7f / 0xff read as 480; quantized data holds none.)
SS_HOST_DEVICE inline float e4m3_top_byte_to_raw_float(uint32_t t) {
  const uint32_t bits = (t & 0x80000000u) | ((t >> 4) & 0x07F00000u);
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

}  // namespace seekserve::cuda
