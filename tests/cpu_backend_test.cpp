// The optimized CPU matmul against the reference on random inputs of awkward sizes, for every
// weight format and every instruction set this CPU has: relative error, NaN checks, and
// sentinels around the outputs that must stay untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "backend/cpu_backend.h"
#include "core/dtype.h"
#include "test_support.h"

namespace seekserve {
namespace {

Weight random_weight(WeightFormat format, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = dist(rng);
  Weight w = weight_from_f32(values, rows, cols);
  if (format == WeightFormat::kBF16) return weight_to_bf16(w);
  if (format == WeightFormat::kI8Row) return weight_to_i8(w);
  if (format == WeightFormat::kF32) return w;
  // FP8 with 128x128 block scales, as DeepSeek-V3's checkpoints store them.
  const int64_t srows = (rows + 127) / 128, scols = (cols + 127) / 128;
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows * cols));
  auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(srows * scols));
  for (float& s : *scales) s = std::uniform_real_distribution<float>(0.001f, 0.01f)(rng);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      (*bytes)[static_cast<size_t>(r * cols + c)] = f32_to_fp8_e4m3(values[static_cast<size_t>(r * cols + c)] / (*scales)[static_cast<size_t>((r / 128) * scols + c / 128)]);
  Weight f;
  f.format = WeightFormat::kF8Block;
  f.rows = rows;
  f.cols = cols;
  f.data = bytes->data();
  f.scale_inv = scales->data();
  f.storage = std::make_shared<std::pair<std::shared_ptr<const void>, std::shared_ptr<const void>>>(bytes, scales);
  return f;
}

TEST(CpuBackendTest, MatmulMatchesReferenceForEveryFormatAndIsa) {
  std::mt19937 rng(7);
  ReferenceBackend reference;
  const CpuIsa best = detect_cpu_isa();
  std::printf("this CPU: %s\n", cpu_isa_name(best));
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16}) {
    if (isa > best) continue;
    for (int threads : {1, 2}) {
      CpuBackend cpu(threads, isa);
      for (WeightFormat format : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kF8Block, WeightFormat::kI8Row}) {
        for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 33}, {37, 131}, {130, 257}, {300, 1000}, {64, 64}}) {
          const Weight w = random_weight(format, rows, cols, rng);
          for (int64_t n : {1, 3, 4, 9, 12, 13, 40}) {  // 12 and up: the panel (GEMM) kernels
            SCOPED_TRACE(std::string(cpu_isa_name(isa)) + " " + weight_format_name(format) + " " + std::to_string(rows) + "x" +
                         std::to_string(cols) + " n=" + std::to_string(n) + " threads=" + std::to_string(threads));
            const int64_t x_stride = cols + 3, y_stride = rows + 5;
            std::vector<float> x(static_cast<size_t>(n * x_stride));
            for (float& v : x) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
            std::vector<float> want(static_cast<size_t>(n * y_stride), -7.0f), got(want.size(), -7.0f);
            reference.matmul(w, x.data(), x_stride, n, want.data(), y_stride);
            cpu.matmul(w, x.data(), x_stride, n, got.data(), y_stride);
            double diff = 0.0, ref = 0.0;
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t r = 0; r < rows; ++r) {
                const float a = got[static_cast<size_t>(t * y_stride + r)], b = want[static_cast<size_t>(t * y_stride + r)];
                ASSERT_TRUE(std::isfinite(a));
                diff += (a - b) * static_cast<double>(a - b);
                ref += b * static_cast<double>(b);
              }
              for (int64_t r = rows; r < y_stride; ++r) ASSERT_EQ(got[static_cast<size_t>(t * y_stride + r)], -7.0f) << "sentinel overwritten";
            }
            EXPECT_LE(std::sqrt(diff / std::max(ref, 1e-30)), 1e-5);
          }
        }
      }
    }
  }
}

// Decode steps over int8 experts take one pool run for every selected expert's gate/up rows and
// one for their down rows; the result must be bit for bit the per-expert dispatch's (same
// quantized activations, integer dots, scales and accumulation order), and both the
// reference's up to float rounding. 5 tokens (beyond the fused path) checks the fallback.
TEST(CpuBackendTest, FusedInt8MoeDecodeMatchesThePerExpertDispatchExactly) {
  CpuBackend fused(2);
  if (!fused.vnni()) GTEST_SKIP() << "the fused path needs AVX-512 VNNI";
  ::setenv("SEEKSERVE_CPU_MOE_PER_EXPERT", "1", 1);
  CpuBackend per_expert(2);
  ::unsetenv("SEEKSERVE_CPU_MOE_PER_EXPERT");
  std::mt19937 rng(21);
  const int64_t E = 8, D = 200, I = 72, K = 3;
  std::vector<MlpWeights> experts(static_cast<size_t>(E));
  for (MlpWeights& e : experts) {
    e.gate = random_weight(WeightFormat::kI8Row, I, D, rng);
    e.up = random_weight(WeightFormat::kI8Row, I, D, rng);
    e.down = random_weight(WeightFormat::kI8Row, D, I, rng);
  }
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t n : {1, 3, 4, 5}) {
    SCOPED_TRACE("tokens " + std::to_string(n));
    std::vector<float> x(static_cast<size_t>(n * D)), start(x.size());
    for (float& v : x) v = dist(rng);
    for (float& v : start) v = dist(rng);
    std::vector<int32_t> ids(static_cast<size_t>(n * K));
    std::vector<float> weights(ids.size());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < K; ++j) {  // distinct experts per token; some shared between tokens
        ids[static_cast<size_t>(t * K + j)] = static_cast<int32_t>((t + 2 * j) % E);
        weights[static_cast<size_t>(t * K + j)] = 0.2f + 0.1f * static_cast<float>(j);
      }
    auto run = [&](Backend& backend) {
      std::vector<float> out = start;
      backend.moe_experts(testing::moe_args(x, n, D, K, ids, weights, experts, out.data()));
      return out;
    };
    ReferenceBackend reference;
    const std::vector<float> got = run(fused), want = run(per_expert), ref = run(reference);
    EXPECT_EQ(got, want);
    EXPECT_LE(testing::relative_l2(got.data(), ref.data(), ref.size()), 1e-5);
  }
}

// Weights quantized to int8 at load (rows over threads, rounding without lround) keep
// std::lround's rule, half away from zero, on exact ties too.
TEST(WeightTest, Int8QuantizationRoundsAsLround) {
  const int64_t rows = 600, cols = 4096;  // enough rows to be split over threads
  std::vector<float> values(static_cast<size_t>(rows * cols));
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 30.0f);
  for (float& v : values) v = dist(rng);
  // Row 0: amax 127 makes the scale exactly 1, so these hit ties and near-ties as they are.
  const std::vector<float> ties = {127.0f, 0.5f, -0.5f, 1.5f, -2.5f, 126.5f, 0.49999997f, -0.49999997f, 2.5000002f, -126.5f};
  std::fill_n(values.begin(), cols, 0.0f);
  std::copy(ties.begin(), ties.end(), values.begin());
  const Weight q = weight_to_i8(weight_from_f32(values, rows, cols));
  const auto* got = static_cast<const int8_t*>(q.data);
  int64_t mismatches = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(values[static_cast<size_t>(r * cols + c)]));
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    EXPECT_EQ(q.scale_inv[r], scale);
    for (int64_t c = 0; c < cols; ++c) {
      const long want = std::clamp(std::lround(values[static_cast<size_t>(r * cols + c)] / scale), -127L, 127L);
      mismatches += got[r * cols + c] != want;
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(got[1], 1);
  EXPECT_EQ(got[2], -1);
  EXPECT_EQ(got[4], -3);
  EXPECT_EQ(got[6], 0);
}

TEST(CpuBackendTest, SiluMulMatchesReference) {
  if (detect_cpu_isa() < CpuIsa::kAvx512) GTEST_SKIP() << "the vectorized SiLU needs AVX-512";
  std::mt19937 rng(5);
  ReferenceBackend reference;
  CpuBackend cpu(2);
  for (int64_t n : {1, 17, 100003}) {  // 100003: split over the pool, with a ragged end
    std::vector<float> gate(static_cast<size_t>(n)), up(gate.size());
    for (float& v : gate) v = std::normal_distribution<float>(0.0f, 4.0f)(rng);
    for (float& v : up) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
    gate[0] = 100.0f, gate[static_cast<size_t>(n - 1)] = -100.0f;  // e^-g overflows / underflows
    std::vector<float> want(gate.size()), got(gate.size());
    reference.silu_mul(gate.data(), up.data(), n, want.data());
    cpu.silu_mul(gate.data(), up.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(got[static_cast<size_t>(i)])) << i;
      ASSERT_NEAR(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)], 1e-6f * (1.0f + std::fabs(want[static_cast<size_t>(i)]))) << i;
    }
    cpu.silu_mul(gate.data(), up.data(), n, gate.data());  // in place, as the MoE layer calls it
    EXPECT_EQ(gate, got);
  }
}

TEST(CpuBackendTest, RmsNormAndAddMatchReference) {
  if (detect_cpu_isa() < CpuIsa::kAvx512) GTEST_SKIP() << "the vectorized operators need AVX-512";
  std::mt19937 rng(6);
  ReferenceBackend reference;
  CpuBackend cpu(2);
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{{1, 7}, {3, 1536}, {100, 1000}}) {  // 100 x 1000: rows over the pool
    const int64_t stride = dim + 5;
    std::vector<float> x(static_cast<size_t>(rows * stride)), w(static_cast<size_t>(dim));
    for (float& v : x) v = std::normal_distribution<float>(0.0f, 3.0f)(rng);
    for (float& v : w) v = std::normal_distribution<float>(1.0f, 0.1f)(rng);
    std::vector<float> want(x.size(), -7.0f), got(x.size(), -7.0f);
    reference.rms_norm(x.data(), stride, w.data(), rows, dim, 1e-6f, want.data(), stride);
    cpu.rms_norm(x.data(), stride, w.data(), rows, dim, 1e-6f, got.data(), stride);
    EXPECT_LE(testing::relative_l2(got.data(), want.data(), want.size()), 1e-6);
    for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(got[static_cast<size_t>(r * stride + dim)], -7.0f) << "wrote past the row";
    cpu.rms_norm(x.data(), stride, w.data(), rows, dim, 1e-6f, x.data(), stride);  // in place
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < dim; ++c) ASSERT_EQ(x[static_cast<size_t>(r * stride + c)], got[static_cast<size_t>(r * stride + c)]);
    std::vector<float> y_want = x, y_got = x;
    reference.add(want.data(), static_cast<int64_t>(want.size()), y_want.data());
    cpu.add(want.data(), static_cast<int64_t>(want.size()), y_got.data());
    EXPECT_EQ(y_got, y_want);  // one addition per element: exact
  }
  std::vector<float> big_x(300000, 1.5f), big_y(300000, 2.0f);  // add over the pool
  cpu.add(big_x.data(), 300000, big_y.data());
  for (float v : big_y) ASSERT_EQ(v, 3.5f);
}

TEST(CpuBackendTest, PagedAttentionMatchesReference) {
  if (detect_cpu_isa() < CpuIsa::kAvx512) GTEST_SKIP() << "the vectorized attention needs AVX-512";
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) x = dist(rng);
  };
  ReferenceBackend reference;
  CpuBackend cpu(2);
  const int64_t block = 16, n_blocks = 9, context = 100;
  std::vector<int32_t> table = {5, 2, 8, 0, 7, 1, 3};  // out of order, as a real pool hands them out
  // 7 tokens: the row-at-a-time kernel; 30: the tiled prefill kernel (cpu_attention.cpp).
  for (int64_t n_tokens : {7, 30}) {
    std::vector<int32_t> positions;
    for (int64_t t = 0; t < n_tokens; ++t) positions.push_back(static_cast<int32_t>(context - n_tokens + t));
    // GQA: 6 heads over 2 KV heads of dim 40 (not a multiple of 16), and of dim 128.
    for (const int64_t D : {40, 128}) {
      SCOPED_TRACE("tokens " + std::to_string(n_tokens) + " head_dim " + std::to_string(D));
      const int64_t H = 6, KVH = 2;
      std::vector<float> q(static_cast<size_t>(n_tokens * H * D)), k(static_cast<size_t>(n_blocks * block * KVH * D)),
          v(k.size());
      fill(q), fill(k), fill(v);
      std::vector<float> want(q.size()), got(q.size());
      GqaAttentionArgs a;
      a.q = q.data();
      a.q_stride = H * D;
      a.k_pool = k.data();
      a.v_pool = v.data();
      a.block_table = table.data();
      a.block_size = block;
      a.positions = positions.data();
      a.n_tokens = n_tokens;
      a.n_heads = H;
      a.n_kv_heads = KVH;
      a.head_dim = D;
      a.scale = 0.158f;
      a.out = want.data();
      reference.gqa_attention(a);
      a.out = got.data();
      cpu.gqa_attention(a);
      EXPECT_LE(testing::relative_l2(got.data(), want.data(), want.size()), 1e-5);
    }
    // MLA: 3 heads, latent 72, rotary 24.
    {
      const int64_t H = 3, R = 72, P = 24;
      std::vector<float> ql(static_cast<size_t>(n_tokens * H * R)), qp(static_cast<size_t>(n_tokens * H * P));
      std::vector<float> ckv(static_cast<size_t>(n_blocks * block * R)), kpe(static_cast<size_t>(n_blocks * block * P));
      fill(ql), fill(qp), fill(ckv), fill(kpe);
      std::vector<float> want(ql.size()), got(ql.size());
      MlaAttentionArgs a;
      a.q_latent = ql.data();
      a.q_pe = qp.data();
      a.c_kv_pool = ckv.data();
      a.k_pe_pool = kpe.data();
      a.block_table = table.data();
      a.block_size = block;
      a.positions = positions.data();
      a.n_tokens = n_tokens;
      a.n_heads = H;
      a.kv_lora_rank = R;
      a.rope_dim = P;
      a.scale = 0.1f;
      a.out_latent = want.data();
      reference.mla_attention(a);
      a.out_latent = got.data();
      cpu.mla_attention(a);
      EXPECT_LE(testing::relative_l2(got.data(), want.data(), want.size()), 1e-5);
    }
  }
}

// FP8 W8A8 building blocks: block-scaled e4m3 weights and per-group activation quantization,
// each value within e4m3's rounding (3 mantissa bits: half an ulp is 1/16 of the value) of the
// original, or within half the smallest subnormal step (2^-10 of the scale) near zero.
TEST(Fp8Test, BlockWeightsAndActivationGroupsRoundWithinE4m3) {
  std::mt19937 rng(3);
  auto within_e4m3 = [](float got, float want, float scale) {
    return std::fabs(got - want) <= std::max(std::fabs(want) / 16.0f, scale / 1024.0f) * 1.0001f;
  };
  const int64_t rows = 130, cols = 257;  // partial edge blocks in both directions
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
  values[5] = 37.0f;  // one block's amax far above the rest of it
  const Weight w = weight_to_fp8_block(weight_from_f32(values, rows, cols));
  ASSERT_EQ(w.format, WeightFormat::kF8Block);
  EXPECT_EQ(w.scale_cols(), 3);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    w.row_to_f32(r, row.data());
    for (int64_t c = 0; c < cols; ++c) {
      const float scale = w.scale_inv[(r / 128) * w.scale_cols() + c / 128];
      ASSERT_TRUE(within_e4m3(row[static_cast<size_t>(c)], values[static_cast<size_t>(r * cols + c)], scale)) << r << "," << c;
    }
  }
  w.row_to_f32(0, row.data());
  EXPECT_NEAR(row[5], 37.0f, 1e-4f);  // the block's amax maps to 448 exactly
  EXPECT_FLOAT_EQ(w.scale_inv[0], 37.0f / 448.0f);

  // Activations: groups of 128 each scaled by their own amax; a zero group stays zero.
  std::vector<float> x(300);
  for (float& v : x) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
  for (size_t i = 128; i < 256; ++i) x[i] = 0.0f;
  x[3] = 1000.0f;  // only the first group's scale grows
  std::vector<float> q = x;
  quantize_fp8_groups(q.data(), static_cast<int64_t>(q.size()), 128);
  for (size_t g0 = 0; g0 < x.size(); g0 += 128) {
    float amax = 0.0f;
    for (size_t i = g0; i < std::min(x.size(), g0 + 128); ++i) amax = std::max(amax, std::fabs(x[i]));
    for (size_t i = g0; i < std::min(x.size(), g0 + 128); ++i) {
      if (amax == 0.0f) ASSERT_EQ(q[i], 0.0f);
      else ASSERT_TRUE(within_e4m3(q[i], x[i], amax / 448.0f)) << i;
    }
  }
  EXPECT_NEAR(q[3], 1000.0f, 1e-3f);
  EXPECT_NE(q[4], 0.0f) << "a small value next to the big one only loses precision, it is not flushed";
}

// Rounding to e4m3 against a brute-force search over the 127 non-negative finite codes: the
// nearest code, ties to the even one, saturating at 448. Checked at every code's value, every
// midpoint between neighbours (the ties), one float either side of each midpoint, and random
// values across the whole range.
TEST(Fp8Test, RoundingToE4m3MatchesTheNearestCodeSearch) {
  auto nearest = [](float f) {
    const float a = std::fabs(f);
    int best = 0;
    for (int code = 1; code <= 0x7e; ++code) {
      const float d = std::fabs(fp8_e4m3_to_f32(static_cast<uint8_t>(code)) - a), d_best = std::fabs(fp8_e4m3_to_f32(static_cast<uint8_t>(best)) - a);
      if (d < d_best || (d == d_best && code % 2 == 0)) best = code;
    }
    return static_cast<uint8_t>((std::signbit(f) ? 0x80 : 0) | best);
  };
  std::vector<float> probes = {0.0f, -0.0f, 448.0f, 449.0f, 464.0f, 1e6f, -1e6f, 1e-30f, 1e-3f * 0.9765625f};
  for (int code = 0; code <= 0x7e; ++code) {
    const float v = fp8_e4m3_to_f32(static_cast<uint8_t>(code));
    probes.push_back(v);
    if (code == 0x7e) break;
    const float mid = (v + fp8_e4m3_to_f32(static_cast<uint8_t>(code + 1))) / 2.0f;  // exact in float
    probes.insert(probes.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)});
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 20000; ++i) probes.push_back(std::ldexp(std::uniform_real_distribution<float>(1.0f, 2.0f)(rng), i % 22 - 13));
  for (float p : probes)
    for (float f : {p, -p}) {
      const uint8_t want = std::fabs(f) >= 448.0f ? static_cast<uint8_t>((std::signbit(f) ? 0x80 : 0) | 0x7e) : nearest(f);
      ASSERT_EQ(f32_to_fp8_e4m3(f), want) << f;
    }
  EXPECT_EQ(f32_to_fp8_e4m3(std::nanf("")) & 0x7f, 0x7f);
}

TEST(ThreadPoolTest, RunsEveryTaskOnceAcrossManyRuns) {
  // Workers that sleep at once, that spin past every gap, and that spin 50 us then sleep
  // (every 16th run comes after a 2 ms pause, so they are asleep and must be woken).
  for (const int64_t spin_us : {int64_t{0}, int64_t{1000000}, int64_t{50}}) {
    SCOPED_TRACE("spin " + std::to_string(spin_us) + " us");
    ThreadPool pool(3, spin_us);
    for (int run = 0; run < 200; ++run) {
      if (run % 16 == 15) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::vector<std::atomic<int>> hits(static_cast<size_t>(run % 17 + 1));
      pool.run(static_cast<int64_t>(hits.size()), [&](int64_t t) { hits[static_cast<size_t>(t)].fetch_add(1); });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }  // the destructor stops spinning workers as well as sleeping ones
}

}  // namespace
}  // namespace seekserve
