#include "cuda/kernel_bench.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <cuda_profiler_api.h>

#include "cuda/cuda_check.h"
#include "cuda/deepseek_kernels.h"
#include "cuda/device_ceilings.h"

namespace seekserve::cuda {

void profiler_window(bool open) {
  SS_CUDA_CHECK(cudaDeviceSynchronize());  // the window holds exactly the work queued inside it
  SS_CUDA_CHECK(open ? cudaProfilerStart() : cudaProfilerStop());
}

Result<MlaDecodeTiming> time_mla_decode(const MlaDecodeShape& s) {
  if (s.batch < 1 || s.context < 1 || s.block_size < 1) return invalid_argument("MLA decode benchmark: batch, context and block size must be positive");
  if (!mla_attention_supported(s.kv_rank, s.rope_dim))
    return unimplemented("MLA decode benchmark: kv_lora_rank " + std::to_string(s.kv_rank) + " with rope dim " + std::to_string(s.rope_dim) +
                         " is not built");
  const int64_t H = s.n_heads, R = s.kv_rank, P = s.rope_dim, QD = s.nope_dim + P;
  const int64_t blocks_per_seq = (s.context + s.block_size - 1) / s.block_size, n_blocks = blocks_per_seq * s.batch;
  const int64_t rows = n_blocks * s.block_size;
  // Blocks handed out in shuffled order, as a pool that has served many requests would.
  std::vector<int32_t> tables(static_cast<size_t>(n_blocks));
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), std::mt19937(3));
  std::vector<int32_t> token_seq(static_cast<size_t>(s.batch)), positions(static_cast<size_t>(s.batch), static_cast<int32_t>(s.context - 1));
  std::iota(token_seq.begin(), token_seq.end(), 0);
  std::vector<float> cos(static_cast<size_t>(s.context * P / 2)), sin(cos.size());
  for (size_t i = 0; i < cos.size(); ++i) {
    cos[i] = std::cos(0.001f * static_cast<float>(i));
    sin[i] = std::sin(0.001f * static_cast<float>(i));
  }
  const int64_t splits = mla_splits(s.batch, H, s.context);

  DeviceBuffer<bf16> c_kv, k_pe, q_latent, out;
  DeviceBuffer<float> q, d_cos, d_sin, partial;
  DeviceBuffer<int32_t> d_tables, d_seq, d_pos;
  SS_RETURN_IF_ERROR(c_kv.reserve(static_cast<size_t>(rows * R)));
  SS_RETURN_IF_ERROR(k_pe.reserve(static_cast<size_t>(rows * P)));
  SS_RETURN_IF_ERROR(q_latent.reserve(static_cast<size_t>(s.batch * H * R)));
  SS_RETURN_IF_ERROR(out.reserve(static_cast<size_t>(s.batch * H * R)));
  SS_RETURN_IF_ERROR(q.reserve(static_cast<size_t>(s.batch * H * QD)));
  SS_RETURN_IF_ERROR(d_cos.reserve(cos.size()));
  SS_RETURN_IF_ERROR(d_sin.reserve(sin.size()));
  SS_RETURN_IF_ERROR(partial.reserve(static_cast<size_t>(std::max<int64_t>(1, mla_partial_floats(s.batch, H, splits, R)))));
  SS_RETURN_IF_ERROR(d_tables.reserve(tables.size()));
  SS_RETURN_IF_ERROR(d_seq.reserve(token_seq.size()));
  SS_RETURN_IF_ERROR(d_pos.reserve(positions.size()));
  // Constant small values (0x3c3c is bf16 0.0115; 0x3c3c3c3c as float 0.0115): finite scores.
  SS_CUDA_CHECK(cudaMemset(c_kv.data(), 0x3c, static_cast<size_t>(rows * R) * 2));
  SS_CUDA_CHECK(cudaMemset(k_pe.data(), 0x3c, static_cast<size_t>(rows * P) * 2));
  SS_CUDA_CHECK(cudaMemset(q_latent.data(), 0x3c, static_cast<size_t>(s.batch * H * R) * 2));
  SS_CUDA_CHECK(cudaMemset(q.data(), 0x3c, static_cast<size_t>(s.batch * H * QD) * 4));
  SS_CUDA_CHECK(cudaMemcpy(d_cos.data(), cos.data(), cos.size() * 4, cudaMemcpyHostToDevice));
  SS_CUDA_CHECK(cudaMemcpy(d_sin.data(), sin.data(), sin.size() * 4, cudaMemcpyHostToDevice));
  SS_CUDA_CHECK(cudaMemcpy(d_tables.data(), tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  SS_CUDA_CHECK(cudaMemcpy(d_seq.data(), token_seq.data(), token_seq.size() * 4, cudaMemcpyHostToDevice));
  SS_CUDA_CHECK(cudaMemcpy(d_pos.data(), positions.data(), positions.size() * 4, cudaMemcpyHostToDevice));

  MlaAttentionParams p;
  p.q_latent = q_latent.data();
  p.q = q.data();
  p.q_stride = H * QD;
  p.q_head_stride = QD;
  p.q_pe_offset = s.nope_dim;
  p.c_kv_pool = c_kv.data();
  p.k_pe_pool = k_pe.data();
  p.block_tables = d_tables.data();
  p.table_stride = blocks_per_seq;
  p.token_seq = d_seq.data();
  p.positions = d_pos.data();
  p.cos = d_cos.data();
  p.sin = d_sin.data();
  p.n_tokens = s.batch;
  p.n_heads = H;
  p.kv_rank = R;
  p.rope_dim = P;
  p.block_size = s.block_size;
  p.scale = 1.0f / std::sqrt(static_cast<float>(QD));
  p.out = out.data();
  p.n_splits = splits;
  p.partial = partial.data();

  cudaStream_t stream;
  SS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  MlaDecodeTiming t;
  t.ms_median = median_event_ms(20, stream, [&] { mla_attention(p, stream); });
  SS_CUDA_CHECK(cudaStreamDestroy(stream));
  t.latent_bytes = static_cast<double>(s.batch * s.context * (R + P) * 2);
  t.splits = splits;
  return t;
}

}  // namespace seekserve::cuda
