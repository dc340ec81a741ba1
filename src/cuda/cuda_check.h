// Checked CUDA calls and owned device memory.
//
// A failing CUDA call other than an allocation leaves the context unusable (errors are sticky),
// so it ends the process with the call, file and line; allocations report out-of-memory as a
// Status so loading a model that does not fit is an ordinary error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "core/status.h"

namespace seekserve::cuda {

[[noreturn]] void fail(const char* expr, cudaError_t error, const char* file, int line);

#define SS_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    const cudaError_t ss_cuda_error_ = (expr);                                           \
    if (ss_cuda_error_ != cudaSuccess) ::seekserve::cuda::fail(#expr, ss_cuda_error_, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here.
#define SS_CUDA_CHECK_LAUNCH() SS_CUDA_CHECK(cudaGetLastError())

// Whether a CUDA device can be used (driver present, at least one device).
bool device_present();

// Grow-only device array of T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      ptr_ = std::exchange(other.ptr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Makes room for n elements (contents are lost when it grows).
  Status reserve(size_t n) {
    if (n <= size_) return Status::Ok();
    release();
    void* p = nullptr;
    const cudaError_t error = cudaMalloc(&p, n * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      return resource_exhausted("cudaMalloc of " + std::to_string(n * sizeof(T)) + " bytes failed: " + cudaGetErrorString(error));
    }
    ptr_ = static_cast<T*>(p);
    size_ = n;
    return Status::Ok();
  }
  T* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace seekserve::cuda
