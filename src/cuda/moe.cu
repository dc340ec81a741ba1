// DeepSeek mixture of experts on the GPU (declared in deepseek_kernels.h): router logits in
// float32, the routing rules of layers/moe.cpp one warp per token, pairs grouped by expert, and
// expert matmuls that read each selected expert once per group of its tokens. Everything stays
// on the device, so decode steps with MoE layers are captured in CUDA graphs like dense ones.
#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include "cuda/deepseek_kernels.h"
#include "cuda/kernel_support.cuh"

namespace seekserve::cuda {

using namespace detail;

namespace {

// Grid (experts / 8, token groups of kRouterTokens): warp w dots expert row blockIdx.x * 8 + w with its
// tokens, lanes over 8-element chunks of K.
constexpr int kRouterTokens = 2;  // more blocks at batch 32 (32 blocks of 8 tokens were latency-bound)
__global__ void __launch_bounds__(256) router_logits_kernel(const float* router, int64_t E, int64_t K, const bf16* x, int64_t n,
                                                           float* logits) {
  dependency_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * 8 + warp, t0 = static_cast<int64_t>(blockIdx.y) * kRouterTokens;
  if (e >= E) return;
  float acc[kRouterTokens] = {};
  for (int64_t c = lane; c < K / 8; c += 32) {
    const float4 w0 = reinterpret_cast<const float4*>(router + e * K)[2 * c];
    const float4 w1 = reinterpret_cast<const float4*>(router + e * K)[2 * c + 1];
    const float w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int tt = 0; tt < kRouterTokens; ++tt) {
      if (t0 + tt >= n) break;
      float xf[8];
      bf16x8_to_float(reinterpret_cast<const uint4*>(x + (t0 + tt) * K)[c], xf);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[tt] = fmaf(w[j], xf[j], acc[tt]);
    }
  }
#pragma unroll
  for (int tt = 0; tt < kRouterTokens; ++tt) {
    const float v = warp_sum(acc[tt]);
    if (lane == 0 && t0 + tt < n) logits[(t0 + tt) * E + e] = v;
  }
}

// The better of two (value, index) candidates: higher value, then lower index.
__device__ __forceinline__ void keep_better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, i, offset);
    keep_better(v, i, ov, oi);
  }
}

constexpr int kRoutePerLane = kMaxRoutedExperts / 32;
constexpr int kRouteWarps = 8;

// One warp per token. Lane l holds experts l, l + 32, ...; the group scores are made by lane g
// for group g from a copy of the ranking scores in shared memory.
__global__ void __launch_bounds__(kRouteWarps * 32) moe_route_kernel(MoeRouteParams p) {
  dependency_wait();
  __shared__ float choice_s[kRouteWarps][kMaxRoutedExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t >= p.n_tokens) return;
  const int E = static_cast<int>(p.n_experts);
  const float* l = p.logits + t * E;
  float score[kRoutePerLane], choice[kRoutePerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kRoutePerLane; ++i) {
    const int e = lane + 32 * i;
    score[i] = e < E ? l[e] : -INFINITY;
    mx = fmaxf(mx, score[i]);
  }
  if (p.sigmoid) {
#pragma unroll
    for (int i = 0; i < kRoutePerLane; ++i) score[i] = 1.0f / (1.0f + expf(-score[i]));
  } else {
    mx = warp_max(mx);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kRoutePerLane; ++i) {
      score[i] = lane + 32 * i < E ? expf(score[i] - mx) : 0.0f;
      sum += score[i];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int i = 0; i < kRoutePerLane; ++i) score[i] /= sum;
  }
#pragma unroll
  for (int i = 0; i < kRoutePerLane; ++i) {
    const int e = lane + 32 * i;
    choice[i] = e < E ? score[i] + (p.correction_bias ? p.correction_bias[e] : 0.0f) : -INFINITY;
    if (e < E) choice_s[warp][e] = choice[i];
  }
  __syncwarp();
  if (p.group_limited && p.topk_group < p.n_group) {
    const int per = E / static_cast<int>(p.n_group);
    float group = -INFINITY;
    if (lane < p.n_group) {
      float a = -INFINITY, b = -INFINITY;
      for (int k = 0; k < per; ++k) {
        const float v = choice_s[warp][lane * per + k];
        if (v > a) {
          b = a;
          a = v;
        } else if (v > b) {
          b = v;
        }
      }
      group = p.group_top2 && per >= 2 ? a + b : a;
    }
    unsigned kept = 0;
    for (int64_t g = 0; g < p.topk_group; ++g) {
      float v = -INFINITY;
      int i = 1 << 30;
      if (lane < p.n_group && !((kept >> lane) & 1u)) {
        v = group;
        i = lane;
      }
      warp_argmax(v, i);
      kept |= 1u << i;
    }
#pragma unroll
    for (int i = 0; i < kRoutePerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < E && !((kept >> (e / per)) & 1u)) choice[i] = -INFINITY;
    }
  }
  // Top-k by repeated warp argmax over the experts not yet taken; the weights are the unbiased
  // scores of the chosen.
  float chosen_weight = 0.0f, sum = 0.0f;
  int chosen_id = 0;
  unsigned taken = 0;  // bit k: expert lane + 32 k
  for (int64_t j = 0; j < p.top_k; ++j) {
    float v = -INFINITY;
    int i = 1 << 30;
#pragma unroll
    for (int k = 0; k < kRoutePerLane; ++k)
      if (lane + 32 * k < E && !((taken >> k) & 1u)) keep_better(v, i, choice[k], lane + 32 * k);
    warp_argmax(v, i);
    float w = 0.0f;
#pragma unroll
    for (int k = 0; k < kRoutePerLane; ++k)
      if (lane + 32 * k == i) {
        w = score[k];
        taken |= 1u << k;
      }
    w = warp_sum(w);  // only the owner contributed
    sum += w;
    if (lane == j) {
      chosen_id = i;
      chosen_weight = w;
    }
  }
  if (lane < p.top_k) {
    float w = chosen_weight;
    if (p.normalize) w /= sum + 1e-20f;
    if (p.scale) w *= p.routed_scaling_factor;
    p.ids[t * p.top_k + lane] = chosen_id;
    p.weights[t * p.top_k + lane] = w;
  }
}

// One block: counts per expert, offsets, the active list, then each pair's place.
__global__ void __launch_bounds__(1024) moe_group_kernel(const int32_t* ids, int64_t n_pairs, int64_t E, MoeGroups g) {
  dependency_wait();
  __shared__ int count[kMaxRoutedExperts], cursor[kMaxRoutedExperts];
  for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) atomicAdd(&count[ids[p]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int at = 0, padded = 0, active = 0;
    for (int e = 0; e < E; ++e) {
      g.offsets[e] = at;
      cursor[e] = at;
      if (g.padded) g.padded[e] = padded;
      if (count[e] > 0) g.active[active++] = e;
      at += count[e];
      padded += (count[e] + kMoePadRows - 1) / kMoePadRows * kMoePadRows;
    }
    g.offsets[E] = at;
    if (g.padded) g.padded[E] = padded;
    *g.n_active = active;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) g.sorted[atomicAdd(&cursor[ids[p]], 1)] = static_cast<int32_t>(p);
}

// The CUDA-core version (kept to compare: SEEKSERVE_CUDA_MOE_GEMV=1). Grid (row groups of 8 * kGemvExpertRowsPerWarp, active experts): warp w takes rows
// blockIdx.x * 8 * kGemvExpertRowsPerWarp + 8 r + w of the expert (with kSwiGLU: gate row and up row
// side by side) and its pairs 8 at a time. (Measured on the H200, V2-Lite shapes: 4 rows a warp
// to amortize the block's chain of index loads was slower at batch 1 and mixed at batch 32;
// loading 2 or 4 chunks a lane before use changed nothing.)
constexpr int kExpertTokens = 8, kGemvExpertRowsPerWarp = 1, kGemvExpertRowsPerBlock = 8 * kGemvExpertRowsPerWarp;

template <bool kSwiGLU>
__global__ void __launch_bounds__(256) moe_gemv_kernel(const bf16* w, int64_t M, int64_t K, const bf16* x, int64_t x_per_pair_div,
                                                      MoeGroups g, bf16* act, float* out) {
  dependency_wait();
  if (static_cast<int>(blockIdx.y) >= *g.n_active) return;
  constexpr int kOuts = kSwiGLU ? 2 : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t e = g.active[blockIdx.y];
  const int chunks = static_cast<int>(K / 8);
  const int begin = g.offsets[e], end = g.offsets[e + 1];
  const int div = static_cast<int>(x_per_pair_div);
  for (int chunk = begin; chunk < end; chunk += kExpertTokens) {
    const int count = min(kExpertTokens, end - chunk);
    int pair[kExpertTokens];
    const uint4* xr[kExpertTokens];
#pragma unroll
    for (int tt = 0; tt < kExpertTokens; ++tt) {
      pair[tt] = tt < count ? g.sorted[chunk + tt] : 0;
      xr[tt] = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(pair[tt] / div) * K);
    }
    for (int r = 0; r < kGemvExpertRowsPerWarp; ++r) {
      const int64_t row = static_cast<int64_t>(blockIdx.x) * kGemvExpertRowsPerBlock + 8 * r + warp;
      if (row >= M) break;
      const uint4* wr[kOuts];
#pragma unroll
      for (int o = 0; o < kOuts; ++o) wr[o] = reinterpret_cast<const uint4*>(w + ((e * kOuts + o) * M + row) * K);
      float acc[kOuts][kExpertTokens] = {};
#pragma unroll 2
      for (int c = lane; c < chunks; c += 32) {
        float wf[kOuts][8];
#pragma unroll
        for (int o = 0; o < kOuts; ++o) bf16x8_to_float(__ldcs(wr[o] + c), wf[o]);
#pragma unroll
        for (int tt = 0; tt < kExpertTokens; ++tt) {
          if (tt >= count) break;
          float xf[8];
          bf16x8_to_float(xr[tt][c], xf);
#pragma unroll
          for (int o = 0; o < kOuts; ++o)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[o][tt] = fmaf(wf[o][j], xf[j], acc[o][tt]);
        }
      }
      store_expert_row<kSwiGLU>(acc, pair, count, M, row, act, out);
    }
  }
}

// Expert matmuls on tensor cores, weights streamed once: block = (16-row tile of one expert,
// active expert), 4 warps splitting K (warp w takes the 16-wide k-steps w, w + 4, ...), each
// mma.sync m16n8k16 multiplying the tile's 16 rows (A: weights, loaded from global memory
// straight into fragments, every 32-byte sector used whole) by 8 of the expert's tokens (B:
// their input rows, L1/L2-resident). A decode step with one token wastes 7/8 of each mma, which
// costs nothing against the weight stream; at batch 32 the 3-4 tokens an expert gets share every
// weight load. kSwiGLU: gate rows r and up rows I + r side by side, act = silu(gate) * up.
//
// K is taken in blocks of 64 (four k-steps), warp w taking blocks w, w + 4, ..., kExpertInFlight
// of them loaded before any is multiplied. Within a block the channels are dealt to the fragments
// permuted (as fp8.cu's expert kernel does): lane (gid, tig) reads channels [16 tig, 16 tig + 16)
// of its rows and of its token's row as two 16-byte loads, and word 2s + j of them (a bf16 pair)
// is its fragment register j of k-step s. A and B use the same permutation, so a block's sum is
// the same set of products. (Before, four-byte loads at the fragments' own positions: a V2-Lite
// bf16 batch-32 step 13.3 -> 9.6 ms with this layout on the H200, and the FP8 kernel's V3 batch-32
// step 17.5 -> 12.2 ms.) A K that is not a multiple of 64 finishes with k-steps of 16 at the
// natural positions.
constexpr int kExpertWarps = 4, kExpertInFlight = 2;

__device__ __forceinline__ uint32_t load_pair(const bf16* p) { return __ldcs(reinterpret_cast<const unsigned int*>(p)); }

template <bool kSwiGLU>
__global__ void __launch_bounds__(kExpertWarps * 32) moe_mma_kernel(const bf16* w, int64_t M, int64_t K, const bf16* x,
                                                                    int64_t x_per_pair_div, MoeGroups g, bf16* act, float* out) {
  dependency_wait();
  if (static_cast<int>(blockIdx.y) >= *g.n_active) return;
  constexpr int kOuts = kSwiGLU ? 2 : 1;
  __shared__ float partial[kExpertWarps][kOuts][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int64_t e = g.active[blockIdx.y];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * 16;
  // This lane's two weight rows (gid, gid + 8) of each output, clamped inside the matrix.
  const bf16* wr[kOuts][2];
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = r0 + gid + 8 * h < M ? r0 + gid + 8 * h : M - 1;
      wr[o][h] = w + ((e * kOuts + o) * M + row) * K;
    }
  const int blocks = static_cast<int>(K / 64), steps = static_cast<int>(K / 16);
  const int begin = g.offsets[e], end = g.offsets[e + 1];
  const int div = static_cast<int>(x_per_pair_div);
  for (int chunk = begin; chunk < end; chunk += kExpertTokens) {
    const int count = min(kExpertTokens, end - chunk);
    // B fragments: this lane reads token gid of the chunk (zeros past the chunk's end).
    const bool has_token = gid < count;
    const bf16* xr = x + static_cast<int64_t>(has_token ? g.sorted[chunk + gid] / div : 0) * K;
    float acc[kOuts][4] = {};
    for (int b0 = warp; b0 < blocks; b0 += kExpertWarps * kExpertInFlight) {
      uint4 a[kExpertInFlight][kOuts][2][2], b[kExpertInFlight][2];  // [block][out][row gid + 8 h][half]
#pragma unroll
      for (int f = 0; f < kExpertInFlight; ++f) {
        if (b0 + f * kExpertWarps >= blocks) break;
        load_expert_words<kOuts>(wr, xr, has_token, static_cast<int64_t>(b0 + f * kExpertWarps) * 64 + 16 * tig, a[f], b[f]);
      }
#pragma unroll
      for (int f = 0; f < kExpertInFlight; ++f) {
        if (b0 + f * kExpertWarps >= blocks) break;
#pragma unroll
        for (int step = 0; step < 4; ++step)
#pragma unroll
          for (int o = 0; o < kOuts; ++o) {
            uint32_t af[4];
            expert_a_fragment(a[f][o], step, af);
            mma_bf16(acc[o], af, word_of(b[f], 2 * step), word_of(b[f], 2 * step + 1));
          }
      }
    }
    // The k-steps past the last whole block (K % 64), at the fragments' natural positions.
    for (int s = 4 * blocks + warp; s < steps; s += kExpertWarps) {
      const int64_t k = static_cast<int64_t>(s) * 16 + 2 * tig;
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
        const uint32_t af[4] = {load_pair(wr[o][0] + k), load_pair(wr[o][1] + k), load_pair(wr[o][0] + k + 8), load_pair(wr[o][1] + k + 8)};
        mma_bf16(acc[o], af, has_token ? *reinterpret_cast<const uint32_t*>(xr + k) : 0u,
                 has_token ? *reinterpret_cast<const uint32_t*>(xr + k + 8) : 0u);
      }
    }
    store_expert_tile<kSwiGLU>(partial, acc, r0, M, count, g.sorted + chunk, act, out);
  }
}

// Grid (tokens, column slices of 256): one column a thread.
__global__ void moe_combine_kernel(const float* expert_out, const int32_t* row_of_pair, const float* weights, int64_t top_k, int64_t dim,
                                   float* hidden) {
  dependency_wait();
  const int64_t t = blockIdx.x;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d < dim) {
    float v = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t p = t * top_k + j, row = row_of_pair ? row_of_pair[p] : p;
      v = fmaf(weights[p], expert_out[row * dim + d], v);
    }
    hidden[t * dim + d] += v;
  }
}

// One block per sorted position i: copies its token's row to the expert's padded segment.
__global__ void moe_gather_kernel(const bf16* x, int64_t K, const int32_t* ids, int64_t top_k, MoeGroups g, bf16* rows,
                                  int32_t* row_of_pair) {
  dependency_wait();
  const int64_t i = blockIdx.x;
  const int32_t p = g.sorted[i], e = ids[p];
  const int64_t row = g.padded[e] + (i - g.offsets[e]);
  if (threadIdx.x == 0) row_of_pair[p] = static_cast<int32_t>(row);
  const uint4* src = reinterpret_cast<const uint4*>(x + (p / top_k) * K);
  uint4* dst = reinterpret_cast<uint4*>(rows + row * K);
  for (int64_t c = threadIdx.x; c < K / 8; c += blockDim.x) dst[c] = src[c];
}

void check_multiple_of_8(int64_t K, const char* what) {
  if (K % 8 != 0) fail(what, cudaErrorInvalidValue, __FILE__, __LINE__);
}

void check_multiple_of_16(int64_t K, const char* what) {
  if (K % 16 != 0) fail(what, cudaErrorInvalidValue, __FILE__, __LINE__);
}

}  // namespace

MoeKernel default_moe_kernel() {
  static const MoeKernel kernel = std::getenv("SEEKSERVE_CUDA_MOE_GEMV") != nullptr ? MoeKernel::kCudaCores : MoeKernel::kTensorCores;
  return kernel;
}

void router_logits(const float* router, int64_t E, int64_t K, const bf16* x, int64_t n, float* logits, cudaStream_t stream) {
  if (n == 0) return;
  check_multiple_of_8(K, "router_logits: hidden size must be a multiple of 8");
  const dim3 grid(static_cast<unsigned>((E + 7) / 8), static_cast<unsigned>((n + kRouterTokens - 1) / kRouterTokens));
  launch(router_logits_kernel, grid, 256, stream, router, E, K, x, n, logits);
  SS_CUDA_CHECK_LAUNCH();
}

void moe_route(const MoeRouteParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return;
  if (p.n_experts > kMaxRoutedExperts || p.top_k > 32 || p.n_group > 32)
    fail("moe_route: more than 256 experts, 32 chosen or 32 groups", cudaErrorInvalidValue, __FILE__, __LINE__);
  launch(moe_route_kernel, static_cast<unsigned>((p.n_tokens + kRouteWarps - 1) / kRouteWarps), kRouteWarps * 32, stream, p);
  SS_CUDA_CHECK_LAUNCH();
}

void moe_group(const int32_t* ids, int64_t n_pairs, int64_t n_experts, const MoeGroups& groups, cudaStream_t stream) {
  launch(moe_group_kernel, 1, 1024, stream, ids, n_pairs, n_experts, groups);
  SS_CUDA_CHECK_LAUNCH();
}

void moe_gemv_swiglu(MoeKernel kernel, const bf16* w_gate_up, int64_t I, int64_t K, const bf16* x, int64_t top_k,
                     const MoeGroups& groups, int64_t max_active, bf16* act, cudaStream_t stream) {
  if (max_active == 0) return;
  check_multiple_of_16(K, "moe_gemv_swiglu: hidden size must be a multiple of 16");
  if (kernel == MoeKernel::kCudaCores) {
    const dim3 grid(static_cast<unsigned>((I + kGemvExpertRowsPerBlock - 1) / kGemvExpertRowsPerBlock), static_cast<unsigned>(max_active));
    launch(moe_gemv_kernel<true>, grid, 256, stream, w_gate_up, I, K, x, top_k, groups, act, static_cast<float*>(nullptr));
  } else {
    const dim3 grid(static_cast<unsigned>((I + 15) / 16), static_cast<unsigned>(max_active));
    launch(moe_mma_kernel<true>, grid, kExpertWarps * 32, stream, w_gate_up, I, K, x, top_k, groups, act, static_cast<float*>(nullptr));
  }
  SS_CUDA_CHECK_LAUNCH();
}

void moe_gemv_down(MoeKernel kernel, const bf16* w_down, int64_t M, int64_t I, const bf16* act, const MoeGroups& groups,
                   int64_t max_active, float* out, cudaStream_t stream) {
  if (max_active == 0) return;
  check_multiple_of_16(I, "moe_gemv_down: expert width must be a multiple of 16");
  if (kernel == MoeKernel::kCudaCores) {
    const dim3 grid(static_cast<unsigned>((M + kGemvExpertRowsPerBlock - 1) / kGemvExpertRowsPerBlock), static_cast<unsigned>(max_active));
    launch(moe_gemv_kernel<false>, grid, 256, stream, w_down, M, I, act, int64_t{1}, groups, static_cast<bf16*>(nullptr), out);
  } else {
    const dim3 grid(static_cast<unsigned>((M + 15) / 16), static_cast<unsigned>(max_active));
    launch(moe_mma_kernel<false>, grid, kExpertWarps * 32, stream, w_down, M, I, act, int64_t{1}, groups, static_cast<bf16*>(nullptr), out);
  }
  SS_CUDA_CHECK_LAUNCH();
}

void moe_gather_rows(const bf16* x, int64_t K, const int32_t* ids, int64_t n_pairs, int64_t top_k, const MoeGroups& groups,
                     int64_t n_rows, bf16* rows, int32_t* row_of_pair, cudaStream_t stream) {
  if (n_pairs == 0) return;
  check_multiple_of_8(K, "moe_gather_rows: hidden size must be a multiple of 8");
  SS_CUDA_CHECK(cudaMemsetAsync(rows, 0, static_cast<size_t>(n_rows * K) * sizeof(bf16), stream));
  launch(moe_gather_kernel, static_cast<unsigned>(n_pairs), 128, stream, x, K, ids, top_k, groups, rows, row_of_pair);
  SS_CUDA_CHECK_LAUNCH();
}

void moe_combine(const float* expert_out, const int32_t* row_of_pair, const float* weights, int64_t n, int64_t top_k, int64_t dim,
                 float* hidden, cudaStream_t stream) {
  if (n == 0) return;
  launch(moe_combine_kernel, dim3(static_cast<unsigned>(n), static_cast<unsigned>((dim + 255) / 256)), 256, stream, expert_out,
         row_of_pair, weights, top_k, dim, hidden);
  SS_CUDA_CHECK_LAUNCH();
}

}  // namespace seekserve::cuda
