// The CUDA kernels against the CPU reference on random inputs of awkward sizes (relative error,
// NaN/inf checks, sentinels around outputs), and the dense fixture models on the GPU against the
// transformers goldens at the bf16 tolerances of the numerics note. Every test skips cleanly
// when no CUDA device is present (CI has none).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>

#include "backend/reference_backend.h"
#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_causal_lm.h"
#include "cuda/cuda_device.h"
#include "cuda/kernels.h"
#include "cuda/lt_gemm.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "model/weight_binder.h"
#include "models/model_loader.h"
#include "cuda_test_support.h"
#include "test_support.h"

namespace seekserve::cuda {
namespace {

TEST_F(CudaTest, GemvAndGemmMatchTheReferenceMatmul) {
  ReferenceBackend reference;
  LtGemm gemm;
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {37, 131}, {300, 1000}, {1536, 1536}, {129, 8960}}) {
    const std::vector<float> w = random(static_cast<size_t>(M * K), 0.05f);
    const Weight weight = weight_to_bf16(weight_from_f32(w, M, K));
    const std::vector<float> bias = random(static_cast<size_t>(M));
    auto d_w = upload(to_bf16_host(w));
    auto d_bias = upload(bias);
    for (int64_t n : {1, 3, 8, 13, 40}) {
      if (n > kGemvMaxTokens && K % 8 != 0) continue;  // cuBLASLt needs aligned rows; the model's are
      SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(K) + " n=" + std::to_string(n));
      const std::vector<float> x = random(static_cast<size_t>(n * K));
      std::vector<float> want(static_cast<size_t>(n * M));
      reference.matmul(weight, x.data(), K, n, want.data(), M);
      auto d_x = upload(to_bf16_host(x));
      for (bool with_bias : {false, true}) {
        // Accumulate onto a known start; sentinels after the output must stay.
        const std::vector<float> start = random(static_cast<size_t>(n * M));
        auto d_y = upload(start, 64, kSentinel);
        if (n <= kGemvMaxTokens) {
          gemv(d_w.data(), M, K, d_x.data(), n, with_bias ? d_bias.data() : nullptr, true, d_y.data(), M, nullptr);
        } else {
          gemm.run(d_w.data(), M, K, d_x.data(), n, true, d_y.data(), nullptr);
          if (with_bias) add_bias(d_bias.data(), n, M, d_y.data(), nullptr);
        }
        std::vector<float> got = download(d_y, static_cast<size_t>(n * M + 64));
        for (size_t i = static_cast<size_t>(n * M); i < got.size(); ++i) ASSERT_EQ(got[i], kSentinel) << "sentinel overwritten";
        got.resize(static_cast<size_t>(n * M));
        std::vector<float> expect = want;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < M; ++r)
            expect[static_cast<size_t>(t * M + r)] += start[static_cast<size_t>(t * M + r)] + (with_bias ? bias[static_cast<size_t>(r)] : 0.0f);
        EXPECT_LE(rel_error(got, expect), 1e-5);
      }
      if (n > kGemvMaxTokens) {  // bf16 output: one rounding of the float32 result
        DeviceBuffer<bf16> d_half;
        ASSERT_TRUE(d_half.reserve(static_cast<size_t>(n * M)).ok());
        gemm.run(d_w.data(), M, K, d_x.data(), n, d_half.data(), nullptr);
        std::vector<float> half;
        for (bf16 v : download(d_half, static_cast<size_t>(n * M))) half.push_back(bf16_value(v));
        EXPECT_LE(rel_error(half, want), 4e-3) << "bf16 output";
      }
    }
  }
}

// Dummy weights generated on the device (--dummy-weights on a GPU) upload to the same bytes as the
// host's: a bf16 matrix of two parts, and a W8A8 FP8 matrix of two parts (the second starting on
// a block row of its own).
TEST_F(CudaTest, DummyWeightsGeneratedOnTheDeviceMatchTheHostBytes) {
  for (const ComputeDType dtype : {ComputeDType::kBF16, ComputeDType::kFP8}) {
    SCOPED_TRACE(dtype == ComputeDType::kFP8 ? "fp8" : "bf16");
    BindOptions host_options;
    host_options.dtype = dtype;
    host_options.dummy_weights = true;
    host_options.dummy_fp8 = dtype == ComputeDType::kFP8;
    BindOptions device_options = host_options;
    device_options.dummies_on_device = true;
    WeightBinder host(nullptr, host_options), device(nullptr, device_options);
    const Weight host_a = host.linear("a", 200, 384), host_b = host.linear("b", 72, 384);
    const Weight device_a = device.linear("a", 200, 384), device_b = device.linear("b", 72, 384);
    ASSERT_TRUE(device_a.dummy_on_device && device_b.dummy_on_device);
    DeviceMatrix want, got;
    ASSERT_TRUE(upload_matrix({&host_a, &host_b}, &want).ok());
    ASSERT_TRUE(upload_matrix({&device_a, &device_b}, &got).ok());
    ASSERT_EQ(got.is_fp8(), dtype == ComputeDType::kFP8);
    ASSERT_EQ(got.rows, want.rows);
    if (got.is_fp8()) {
      const size_t n = static_cast<size_t>(got.rows * got.cols);
      EXPECT_EQ(download(got.fp8, n), download(want.fp8, n));
      EXPECT_EQ(download(got.scales, got.scales.size()), download(want.scales, want.scales.size()));
    } else {
      const size_t n = static_cast<size_t>(got.rows * got.cols);
      const std::vector<bf16> g = download(got.data, n), w = download(want.data, n);
      EXPECT_EQ(std::memcmp(g.data(), w.data(), n * sizeof(bf16)), 0);
    }
  }
}

// The decode GEMV building its own input (RMSNorm of picked residual rows) and finishing with
// SwiGLU, against the reference doing norm, matmul and SwiGLU one after the other.
TEST_F(CudaTest, GemvNormPrologueAndSwigluEpilogueMatchTheReference) {
  ReferenceBackend reference;
  const float eps = 1e-6f;
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{{37, 131}, {300, 1536}, {64, 5000}, {2000, 24}}) {
    const std::vector<float> w = random(static_cast<size_t>(M * K), 0.05f);
    const Weight weight = weight_to_bf16(weight_from_f32(w, M, K));
    auto d_w = upload(to_bf16_host(w));
    for (int64_t n : {1, 3, 8}) {
      if (!gemv_builds_input(n, K)) continue;
      SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(K) + " n=" + std::to_string(n));
      // RMSNorm of residual rows picked through an index (as the final norm picks logit rows).
      const int64_t n_hidden = n + 2;
      const std::vector<float> hidden = random(static_cast<size_t>(n_hidden * K), 3.0f), norm = random(static_cast<size_t>(K));
      std::vector<int32_t> rows(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) rows[static_cast<size_t>(t)] = static_cast<int32_t>((t * 5 + 1) % n_hidden);
      std::vector<float> normed(static_cast<size_t>(n * K)), want(static_cast<size_t>(n * M));
      for (int64_t t = 0; t < n; ++t)
        reference.rms_norm(hidden.data() + rows[static_cast<size_t>(t)] * K, K, norm.data(), 1, K, eps, normed.data() + t * K, K);
      reference.matmul(weight, normed.data(), K, n, want.data(), M);
      auto d_hidden = upload(hidden);
      auto d_norm = upload(norm);
      auto d_rows = upload(rows);
      auto d_y = upload(std::vector<float>(static_cast<size_t>(n * M), 0.0f), 64, kSentinel);
      SS_CUDA_CHECK(cudaMemset(d_y.data(), 0xff, static_cast<size_t>(n * M) * 4));  // NaN poison: every output written
      gemv(d_w.data(), M, K, GemvInput::normed(d_hidden.data(), d_rows.data(), d_norm.data(), eps), n, nullptr, false, d_y.data(), M, nullptr);
      std::vector<float> got = download(d_y, static_cast<size_t>(n * M + 64));
      for (size_t i = static_cast<size_t>(n * M); i < got.size(); ++i) ASSERT_EQ(got[i], kSentinel) << "sentinel overwritten";
      got.resize(static_cast<size_t>(n * M));
      // Both sides round the normed input to bf16; the sums of squares differ in order only.
      EXPECT_LE(rel_error(got, want), 1e-4) << "rms_norm prologue";

      // Gate and up rows side by side with SwiGLU on the way out: w2 holds 2M rows (gate, up).
      const std::vector<float> w2 = random(static_cast<size_t>(2 * M * K), 0.05f);
      const Weight gate_up = weight_to_bf16(weight_from_f32(w2, 2 * M, K));
      auto d_w2 = upload(to_bf16_host(w2));
      std::vector<float> gu(static_cast<size_t>(n * 2 * M)), act(static_cast<size_t>(n * M));
      reference.matmul(gate_up, normed.data(), K, n, gu.data(), 2 * M);
      for (int64_t t = 0; t < n; ++t) reference.silu_mul(gu.data() + t * 2 * M, gu.data() + t * 2 * M + M, M, act.data() + t * M);
      DeviceBuffer<bf16> d_act;
      ASSERT_TRUE(d_act.reserve(static_cast<size_t>(n * M + 16)).ok());
      SS_CUDA_CHECK(cudaMemset(d_act.data(), 0xff, static_cast<size_t>(n * M + 16) * 2));  // NaN poison
      gemv_swiglu(d_w2.data(), M, K, GemvInput::normed(d_hidden.data(), d_rows.data(), d_norm.data(), eps), n, d_act.data(), nullptr);
      const std::vector<bf16> act_bits = download(d_act, static_cast<size_t>(n * M + 16));
      std::vector<float> got_act;
      for (size_t i = 0; i < static_cast<size_t>(n * M); ++i) got_act.push_back(bf16_value(act_bits[i]));
      for (size_t i = static_cast<size_t>(n * M); i < act_bits.size(); ++i) ASSERT_TRUE(std::isnan(bf16_value(act_bits[i]))) << "written past the end";
      EXPECT_LE(rel_error(got_act, act), 4e-3) << "swiglu epilogue";  // one bf16 rounding
    }
  }
  EXPECT_FALSE(gemv_builds_input(8, 8192));  // 128 KiB of staged input: the caller runs the kernels apart
}

TEST_F(CudaTest, RmsNormSiluAndEmbeddingMatchTheReference) {
  ReferenceBackend reference;
  for (int64_t dim : {7, 256, 1536, 5000}) {
    const int64_t n = 5;
    const std::vector<float> x = random(static_cast<size_t>(n * dim), 3.0f), weight = random(static_cast<size_t>(dim));
    std::vector<float> want(x.size());
    reference.rms_norm(x.data(), dim, weight.data(), n, dim, 1e-6f, want.data(), dim);
    auto d_x = upload(x);
    auto d_w = upload(weight);
    DeviceBuffer<float> d_out;
    ASSERT_TRUE(d_out.reserve(x.size() + 16).ok());
    SS_CUDA_CHECK(cudaMemset(d_out.data(), 0xff, (x.size() + 16) * 4));  // NaN poison
    rms_norm(d_x.data(), nullptr, d_w.data(), n, dim, 1e-6f, d_out.data(), nullptr);
    std::vector<float> got = download(d_out, x.size());
    EXPECT_LE(rel_error(got, want), 1e-6) << "dim " << dim;

    // silu(gate) * up into bf16: gate_up rows are [gate | up].
    std::vector<float> gate_up = random(static_cast<size_t>(n * 2 * dim), 2.0f), expect(static_cast<size_t>(n * dim));
    for (int64_t t = 0; t < n; ++t)
      reference.silu_mul(gate_up.data() + t * 2 * dim, gate_up.data() + t * 2 * dim + dim, dim, expect.data() + t * dim);
    auto d_gu = upload(gate_up);
    DeviceBuffer<bf16> d_act;
    ASSERT_TRUE(d_act.reserve(static_cast<size_t>(n * dim)).ok());
    silu_mul(d_gu.data(), n, dim, d_act.data(), nullptr);
    std::vector<float> act;
    for (bf16 v : download(d_act, static_cast<size_t>(n * dim))) act.push_back(bf16_value(v));
    EXPECT_LE(rel_error(act, expect), 4e-3) << "silu_mul dim " << dim;  // one bf16 rounding

    // The same from bf16 gate/up rows (cuBLASLt's bf16 output), against the reference on the
    // rounded inputs.
    std::vector<float> rounded = gate_up;
    for (float& v : rounded) v = round_to_bf16(v);
    for (int64_t t = 0; t < n; ++t)
      reference.silu_mul(rounded.data() + t * 2 * dim, rounded.data() + t * 2 * dim + dim, dim, expect.data() + t * dim);
    auto d_gu_bf16 = upload(to_bf16_host(gate_up));
    SS_CUDA_CHECK(cudaMemset(d_act.data(), 0xff, static_cast<size_t>(n * dim) * 2));
    silu_mul(d_gu_bf16.data(), n, dim, d_act.data(), nullptr);
    act.clear();
    for (bf16 v : download(d_act, static_cast<size_t>(n * dim))) act.push_back(bf16_value(v));
    EXPECT_LE(rel_error(act, expect), 4e-3) << "silu_mul from bf16, dim " << dim;
  }
  // Embedding rows gathered by id, widened exactly.
  const int64_t vocab = 50, dim = 33;
  const std::vector<bf16> table = to_bf16_host(random(static_cast<size_t>(vocab * dim)));
  const std::vector<int32_t> ids{49, 0, 17, 17};
  auto d_table = upload(table);
  auto d_ids = upload(ids);
  DeviceBuffer<float> d_out;
  ASSERT_TRUE(d_out.reserve(ids.size() * dim).ok());
  embedding(d_table.data(), dim, d_ids.data(), static_cast<int64_t>(ids.size()), d_out.data(), nullptr);
  const std::vector<float> got = download(d_out, ids.size() * dim);
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < dim; ++c) ASSERT_EQ(got[t * dim + static_cast<size_t>(c)], bf16_value(table[static_cast<size_t>(ids[t] * dim + c)]));
}

// Greedy ids on the device agree with the CPU argmax, ties included (lowest id wins), NaN skipped.
TEST_F(CudaTest, ArgmaxRowsMatchesTheHostArgmax) {
  for (int64_t vocab : {1, 7, 1000, 151936}) {
    const int64_t rows = 5;
    std::vector<float> logits = random(static_cast<size_t>(rows * vocab));
    if (vocab > 100) {
      logits[static_cast<size_t>(1 * vocab + 90)] = 50.0f;  // a tie between ids 90 and 17
      logits[static_cast<size_t>(1 * vocab + 17)] = 50.0f;
      logits[static_cast<size_t>(2 * vocab + 3)] = std::nanf("");
      logits[static_cast<size_t>(3 * vocab + vocab - 1)] = 80.0f;  // the very last id
      for (int64_t i = 0; i < vocab; ++i) logits[static_cast<size_t>(4 * vocab + i)] = -3.0f;  // all equal: id 0
    }
    auto d_logits = upload(logits);
    DeviceBuffer<uint64_t> d_keys;
    ASSERT_TRUE(d_keys.reserve(static_cast<size_t>(rows)).ok());
    argmax_rows(d_logits.data(), rows, vocab, d_keys.data(), nullptr);
    const std::vector<uint64_t> keys = download(d_keys, static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(argmax_key_index(keys[static_cast<size_t>(r)]), argmax(logits.data() + r * vocab, vocab)) << "vocab " << vocab << " row " << r;
  }
}

// Rotary embedding, the bf16 cache write and paged attention together, against the reference
// rope and gqa_attention over the same (bf16-rounded) keys and values in a shuffled block table.
TEST_F(CudaTest, RopeCacheAndPagedAttentionMatchTheReference) {
  ReferenceBackend reference;
  for (const auto& [n_heads, n_kv, D] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{4, 2, 32}, {8, 2, 16}, {12, 2, 128}, {32, 8, 128}, {7, 7, 64}}) {
    const int64_t block = 16, context = 137, n_new = 100;  // 37 positions cached, 100 new (two prefill tiles)
    const int64_t start = context - n_new, width = (n_heads + 2 * n_kv) * D, kv_width = n_kv * D;
    SCOPED_TRACE("heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv) + " D " + std::to_string(D));
    const int64_t n_blocks = (context + block - 1) / block + 3;
    std::vector<int32_t> table(static_cast<size_t>(n_blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    const int64_t rows = n_blocks * block;
    // Old positions: keys/values already in the cache (bf16 values).
    std::vector<float> k_cache(static_cast<size_t>(rows * kv_width), 0.0f), v_cache(k_cache.size(), 0.0f);
    const std::vector<float> old_k = random(static_cast<size_t>(start * kv_width)), old_v = random(old_k.size());
    for (int64_t p = 0; p < start; ++p) {
      const int64_t slot = kv_slot(table.data(), block, p);
      for (int64_t i = 0; i < kv_width; ++i) {
        k_cache[static_cast<size_t>(slot * kv_width + i)] = round_to_bf16(old_k[static_cast<size_t>(p * kv_width + i)]);
        v_cache[static_cast<size_t>(slot * kv_width + i)] = round_to_bf16(old_v[static_cast<size_t>(p * kv_width + i)]);
      }
    }
    // New tokens: fused q|k|v rows, rotated by the reference, then cached.
    std::vector<float> qkv = random(static_cast<size_t>(n_new * width));
    std::vector<int32_t> positions(static_cast<size_t>(n_new)), slots(static_cast<size_t>(n_new)), seq(static_cast<size_t>(n_new), 0);
    // cos/sin tables over every position (the kernels index them by position).
    std::vector<float> cos(static_cast<size_t>((context + 1) * D / 2)), sin(cos.size());
    for (int64_t pos = 0; pos <= context; ++pos)
      for (int64_t i = 0; i < D / 2; ++i) {
        const float angle = static_cast<float>(pos) * std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(D));
        cos[static_cast<size_t>(pos * D / 2 + i)] = std::cos(angle);
        sin[static_cast<size_t>(pos * D / 2 + i)] = std::sin(angle);
      }
    for (int64_t t = 0; t < n_new; ++t) {
      positions[static_cast<size_t>(t)] = static_cast<int32_t>(start + t);
      slots[static_cast<size_t>(t)] = static_cast<int32_t>(kv_slot(table.data(), block, start + t));
    }
    auto d_qkv = upload(qkv);
    auto d_k = upload(to_bf16_host(k_cache));
    auto d_v = upload(to_bf16_host(v_cache));
    auto d_cos = upload(cos);
    auto d_sin = upload(sin);
    auto d_slots = upload(slots);
    auto d_pos = upload(positions);
    auto d_seq = upload(seq);
    auto d_table = upload(table);
    rope_and_cache(d_qkv.data(), n_new, n_heads, n_kv, D, d_cos.data(), d_sin.data(), d_pos.data(), false, d_slots.data(), d_k.data(),
                   d_v.data(), nullptr);

    std::vector<float> want_qkv = qkv;
    reference.rope(want_qkv.data(), n_new, n_heads + n_kv, width, D, D, cos.data() + start * D / 2, sin.data() + start * D / 2,
                   RopePairing::kHalfSplit);
    EXPECT_LE(rel_error(download(d_qkv, qkv.size()), want_qkv), 1e-6) << "rope";
    for (int64_t t = 0; t < n_new; ++t)
      for (int64_t i = 0; i < kv_width; ++i) {
        const size_t dst = static_cast<size_t>(slots[static_cast<size_t>(t)] * kv_width + i);
        k_cache[dst] = round_to_bf16(want_qkv[static_cast<size_t>(t * width + n_heads * D + i)]);
        v_cache[dst] = round_to_bf16(want_qkv[static_cast<size_t>(t * width + (n_heads + n_kv) * D + i)]);
      }
    std::vector<float> got_k, got_v;
    for (bf16 v : download(d_k, k_cache.size())) got_k.push_back(bf16_value(v));
    for (bf16 v : download(d_v, v_cache.size())) got_v.push_back(bf16_value(v));
    EXPECT_LE(rel_error(got_k, k_cache), 4e-3) << "cached keys";
    EXPECT_EQ(got_v, v_cache) << "cached values";

    std::vector<float> want(static_cast<size_t>(n_new * n_heads * D));
    GqaAttentionArgs ref{want_qkv.data(), width, k_cache.data(), v_cache.data(), table.data(), block, positions.data(), n_new,
                         n_heads, n_kv, D, 1.0f / std::sqrt(static_cast<float>(D)), want.data()};
    reference.gqa_attention(ref);
    ASSERT_TRUE(attention_supported(D, n_heads / n_kv));
    DeviceBuffer<bf16> d_out;
    ASSERT_TRUE(d_out.reserve(want.size() + 8).ok());
    AttentionParams p;
    p.q = d_qkv.data();
    p.q_stride = width;
    p.k_pool = d_k.data();
    p.v_pool = d_v.data();
    p.block_tables = d_table.data();
    p.table_stride = n_blocks;
    p.token_seq = d_seq.data();
    p.positions = d_pos.data();
    p.n_tokens = n_new;
    p.n_heads = n_heads;
    p.n_kv_heads = n_kv;
    p.head_dim = D;
    p.block_size = block;
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    p.out = d_out.data();
    // Both decode kernels. Keys are bf16 on both sides and the output one bf16 rounding; the
    // tensor-core kernel rounds q and the probabilities to bf16 as well (as the prefill kernel).
    const auto kernels = {AttentionKernel::kCudaCores, AttentionKernel::kTensorCores};
    auto bound = [](AttentionKernel kernel) { return kernel == AttentionKernel::kTensorCores ? 2e-2 : 8e-3; };
    auto name = [](AttentionKernel kernel) { return kernel == AttentionKernel::kTensorCores ? " (tensor cores)" : " (CUDA cores)"; };
    std::vector<float> got;
    for (const AttentionKernel kernel : kernels) {
      SS_CUDA_CHECK(cudaMemset(d_out.data(), 0xff, (want.size() + 8) * 2));  // NaN poison
      attention(p, nullptr, kernel);
      got.clear();
      for (bf16 v : download(d_out, want.size())) got.push_back(bf16_value(v));
      EXPECT_LE(rel_error(got, want), bound(kernel)) << "attention" << name(kernel);
    }

    // The tensor-core prefill kernel over the same rows, as two tiles (64 + 36 rows); its q and
    // probabilities are bf16 as well, hence the wider bound.
    ASSERT_TRUE(attention_prefill_supported(D));
    const std::vector<int32_t> tiles{0, 0, 64, 0, 64, static_cast<int32_t>(n_new - 64)};
    auto d_tiles = upload(tiles);
    SS_CUDA_CHECK(cudaMemset(d_out.data(), 0xff, (want.size() + 8) * 2));  // NaN poison
    attention_prefill(p, d_tiles.data(), 2, nullptr);
    got.clear();
    for (bf16 v : download(d_out, want.size())) got.push_back(bf16_value(v));
    EXPECT_LE(rel_error(got, want), 2e-2) << "prefill attention";

    // A decode step after them: position `context`, rotated and cached inside the attention
    // kernel (fused RoPE), against the reference doing the same in three steps; each kernel
    // starts from the cache as it was (the new row unwritten).
    const std::vector<bf16> k_before = download(d_k, k_cache.size()), v_before = download(d_v, v_cache.size());
    std::vector<float> next = random(static_cast<size_t>(width));
    const float* next_cos = cos.data() + context * D / 2;
    const float* next_sin = sin.data() + context * D / 2;
    const int32_t next_pos = static_cast<int32_t>(context), next_slot = static_cast<int32_t>(kv_slot(table.data(), block, context));
    auto d_next = upload(next);
    auto d_next_pos = upload(std::vector<int32_t>{next_pos});
    auto d_next_slot = upload(std::vector<int32_t>{next_slot});
    AttentionParams dp = p;
    dp.q = d_next.data();
    dp.positions = d_next_pos.data();
    dp.n_tokens = 1;
    dp.rope_cos = d_cos.data();
    dp.rope_sin = d_sin.data();
    dp.slots = d_next_slot.data();
    reference.rope(next.data(), 1, n_heads + n_kv, width, D, D, next_cos, next_sin, RopePairing::kHalfSplit);
    for (int64_t i = 0; i < kv_width; ++i) {
      k_cache[static_cast<size_t>(next_slot * kv_width + i)] = round_to_bf16(next[static_cast<size_t>(n_heads * D + i)]);
      v_cache[static_cast<size_t>(next_slot * kv_width + i)] = round_to_bf16(next[static_cast<size_t>((n_heads + n_kv) * D + i)]);
    }
    std::vector<float> want_next(static_cast<size_t>(n_heads * D));
    GqaAttentionArgs ref_next{next.data(), width, k_cache.data(), v_cache.data(), table.data(), block, &next_pos, 1,
                              n_heads, n_kv, D, 1.0f / std::sqrt(static_cast<float>(D)), want_next.data()};
    reference.gqa_attention(ref_next);
    DeviceBuffer<float> d_partial;
    ASSERT_TRUE(d_partial.reserve(static_cast<size_t>(attention_partial_floats(1, n_heads, 5, D))).ok());
    auto d_counters = upload(std::vector<int>(static_cast<size_t>(n_kv), 0));
    for (const AttentionKernel kernel : kernels) {
      SS_CUDA_CHECK(cudaMemcpy(d_k.data(), k_before.data(), k_before.size() * 2, cudaMemcpyHostToDevice));
      SS_CUDA_CHECK(cudaMemcpy(d_v.data(), v_before.data(), v_before.size() * 2, cudaMemcpyHostToDevice));
      SS_CUDA_CHECK(cudaMemset(d_out.data(), 0xff, (want.size() + 8) * 2));
      dp.n_splits = 1;
      attention(dp, nullptr, kernel);
      got.clear();
      for (bf16 v : download(d_out, want_next.size())) got.push_back(bf16_value(v));
      EXPECT_LE(rel_error(got, want_next), bound(kernel)) << "decode attention with fused RoPE" << name(kernel);
      std::vector<float> cached_v;
      for (bf16 v : download(d_v, v_cache.size())) cached_v.push_back(bf16_value(v));
      EXPECT_EQ(cached_v, v_cache) << "value cached by the fused kernel" << name(kernel);

      // The same step with the positions cut into 5 slices (split-KV), merged afterwards.
      dp.n_splits = 5;
      dp.partial = d_partial.data();
      dp.split_counters = d_counters.data();
      for (int run = 0; run < 2; ++run) {  // the merging block leaves the counters ready for the next step
        SS_CUDA_CHECK(cudaMemset(d_out.data(), 0xff, (want.size() + 8) * 2));
        attention(dp, nullptr, kernel);
        got.clear();
        for (bf16 v : download(d_out, want_next.size())) got.push_back(bf16_value(v));
        EXPECT_LE(rel_error(got, want_next), bound(kernel)) << "split-KV decode attention, run " << run << name(kernel);
      }
      EXPECT_EQ(download(d_counters, static_cast<size_t>(n_kv)), std::vector<int>(static_cast<size_t>(n_kv), 0));
    }
  }
}

// The dense fixtures end to end on the GPU: logits against the transformers float32 goldens at
// the bf16 tolerance, argmax wherever the reference margin exceeds 0.5.
class CudaGoldenTest : public CudaModelTest {
 protected:
  void SetUp() override {
    CudaModelTest::SetUp();
    if (!IsSkipped()) model = load("cuda", ComputeDType::kBF16);
  }
  // Logits against the goldens at the bf16 tolerance; argmax where the reference margin exceeds 0.5.
  void check_logits(CausalLM& gpu, CausalLM& reference) {
    testing::Golden golden(GetParam());
    const int64_t V = gpu.info().vocab_size;
    int64_t compared = 0, prompts_compared = 0;
    for (const std::string& p : golden.prompts()) {
      SCOPED_TRACE(p);
      const std::vector<int32_t> ids = golden.ints(p + ".ids");
      const int64_t n = static_cast<int64_t>(ids.size());
      auto run = [&](CausalLM& m, testing::RoutingRecord* routing) {
        KvCache cache = m.new_cache();
        return forward_logits(m, cache, ids, routing);
      };
      testing::RoutingRecord routing, ref_routing;
      const std::vector<float> logits = run(gpu, &routing), ref_logits = run(reference, &ref_routing);
      // An MoE choice flipped by bf16 at a near-tie of the reference: from that token on the
      // outputs legitimately diverge; the tokens before it must still agree.
      const int64_t flip = testing::first_routing_flip(ref_routing, routing);
      const int64_t agreeing = flip >= 0 ? flip : n;
      prompts_compared += flip < 0;
      ASSERT_EQ(static_cast<int64_t>(logits.size()), n * V);
      const std::vector<float> head = golden.floats(p + ".logits_head");
      const std::vector<float> tail = golden.floats(p + ".logits_tail");
      if (agreeing >= std::min<int64_t>(n, 4)) {
        EXPECT_LE(testing::relative_l2(logits.data(), head.data(), head.size()), 2e-2) << "logits_head";
      }
      if (flip < 0) {
        EXPECT_LE(testing::relative_l2(logits.data() + (n * V - static_cast<int64_t>(tail.size())), tail.data(), tail.size()), 2e-2)
            << "logits_tail";
      }
      const std::vector<int32_t> argmax_want = golden.ints(p + ".argmax");
      for (int64_t t = 0; t < agreeing; ++t) {
        if (testing::top2_margin(ref_logits.data() + t * V, V) < 0.5f) continue;
        ++compared;
        EXPECT_EQ(argmax(logits.data() + t * V, V), argmax_want[static_cast<size_t>(t)]) << "position " << t;
      }
    }
    EXPECT_GT(compared, 0);
    EXPECT_GT(prompts_compared, 0) << "some prompt must keep the reference's routing throughout";
  }

  Result<std::unique_ptr<CausalLM>> model = internal_error("not loaded");
};

TEST_P(CudaGoldenTest, LogitsAndArgmaxMatchTheGoldens) {
  ASSERT_TRUE(model.ok());
  auto reference = load("cpu", ComputeDType::kF32);
  ASSERT_TRUE(reference.ok());
  check_logits(**model, **reference);
  if ((*model)->info().n_routed_experts > 0) {  // the prefill paths at every size: MoE experts and MLA attention as GEMMs
    SCOPED_TRACE("experts and attention as GEMMs");
    ::setenv("SEEKSERVE_CUDA_MOE_GEMM_MIN_TOKENS", "1", 1);
    ::setenv("SEEKSERVE_CUDA_MLA_GEMM_MIN_TOKENS", "1", 1);
    auto gemm_model = load("cuda", ComputeDType::kBF16);
    ::unsetenv("SEEKSERVE_CUDA_MOE_GEMM_MIN_TOKENS");
    ::unsetenv("SEEKSERVE_CUDA_MLA_GEMM_MIN_TOKENS");
    ASSERT_TRUE(gemm_model.ok());
    check_logits(**gemm_model, **reference);
  }
}

// The batched engine on top of the GPU model, unchanged: every golden prompt at once (decode
// steps replay captured graphs, greedy ids come back instead of logits) and each alone. The
// greedy continuation must follow the golden one until a step whose reference margin is below
// what bf16 can resolve (0.5, the argmax rule above).
TEST_P(CudaGoldenTest, EngineGreedyContinuationsFollowTheGoldens) {
  ASSERT_TRUE(model.ok());
  testing::Golden golden(GetParam());
  std::vector<Request> requests;
  for (const std::string& p : golden.prompts()) {
    Request r;
    r.prompt = golden.ints(p + ".ids");
    r.max_tokens = 24;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    requests.push_back(r);
  }
  auto run = [&](const std::vector<Request>& batch) {
    EngineConfig config;
    config.kv_budget_bytes = (*model)->kv_layout().bytes_per_token() * 16 * 512;
    auto engine = Engine::create(model->get(), config);
    EXPECT_TRUE(engine.ok());
    std::map<int64_t, size_t> index;
    for (size_t i = 0; i < batch.size(); ++i) {
      auto id = (*engine)->add_request(batch[i]);
      EXPECT_TRUE(id.ok());
      index[id.value()] = i;
    }
    std::vector<std::vector<int32_t>> tokens(batch.size());
    for (int guard = 0; (*engine)->has_work() && guard < 10000; ++guard)
      for (const TokenOutput& out : (*engine)->step())
        if (out.token >= 0) tokens[index[out.request_id]].push_back(out.token);
    return tokens;
  };
  int64_t followed = 0;
  auto check = [&](const std::vector<int32_t>& got, size_t prompt) {
    const std::string p = golden.prompts()[prompt];
    const std::vector<int32_t> want = golden.ints(p + ".greedy");
    const std::vector<float> margins = golden.floats(p + ".greedy_margin");
    ASSERT_EQ(got.size(), 24u);
    for (size_t k = 0; k < want.size() && k < got.size(); ++k) {
      if (got[k] != want[k]) {
        EXPECT_LT(margins[k], 0.5f) << p << " step " << k << ": diverged where the reference was sure";
        return;
      }
      ++followed;
    }
  };
  const auto together = run(requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    check(together[i], i);
    check(run({requests[i]})[0], i);
  }
  EXPECT_GT(followed, 0);
}

INSTANTIATE_TEST_SUITE_P(Dense, CudaGoldenTest, ::testing::Values("random-qwen2", "random-llama3", "tiny-qwen2"));
INSTANTIATE_TEST_SUITE_P(Deepseek, CudaGoldenTest,
                         ::testing::Values("tiny-deepseek-v3", "random-deepseek-v3", "random-deepseek-v3-fp8", "random-deepseek-v2-greedy",
                                           "random-deepseek-v2-group"),
                         fixture_param_name);

}  // namespace
}  // namespace seekserve::cuda
