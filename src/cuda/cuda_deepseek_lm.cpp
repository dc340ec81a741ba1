#include "cuda/cuda_deepseek_lm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "cuda/cuda_causal_lm.h"
#include "cuda/deepseek_kernels.h"
#include "layers/mla.h"
#include "layers/moe.h"
#include "layers/swiglu_mlp.h"
#include "models/model_loader.h"

namespace seekserve::cuda {

namespace {

class CudaDeepseekLM final : public CudaCausalLM {
 public:
  explicit CudaDeepseekLM(DeepseekConfig config)
      : config_(std::move(config)),
        rope_(make_rope_frequencies(config_.rope, config_.mla.qk_rope_head_dim)),
        fp8_expert_gemms_(std::getenv("SEEKSERVE_CUDA_FP8_EXPERT_KERNELS") == nullptr) {
    if (const char* v = std::getenv("SEEKSERVE_CUDA_MOE_GEMM_MIN_TOKENS")) moe_gemm_min_tokens_override_ = std::max(1, std::atoi(v));
    if (const char* v = std::getenv("SEEKSERVE_CUDA_MLA_GEMM_MIN_TOKENS")) mla_gemm_min_tokens_ = std::max(1, std::atoi(v));
  }
  ~CudaDeepseekLM() override {
    if (host_ids_pinned_) cudaFreeHost(host_ids_pinned_);
    if (host_padded_) cudaFreeHost(host_padded_);
  }

  Status bind(ConfigReader& reader, WeightBinder& binder);

  KvLayout kv_layout() const override {
    KvLayout layout{config_.n_layers, config_.mla.kv_lora_rank, config_.mla.qk_rope_head_dim};
    layout.element_bytes = 2;
    layout.on_device = true;
    return layout;
  }

 private:
  struct Layer {
    DeviceBuffer<float> input_norm, post_attention_norm;  // [hidden]
    // Everything that reads the normed input, in one matrix: [q_a (q_rank) | kv_a (R + P)] rows,
    // or [q (H * (nope + rope)) | kv_a (R + P)] without a q LoRA (V2-Lite).
    DeviceMatrix in_proj;
    DeviceBuffer<float> q_a_norm, kv_a_norm;  // [q_rank], [R]
    DeviceMatrix q_b;                         // [H * (nope + rope), q_rank]
    DeviceMatrix w_uk_t;                      // [H * R, nope]: head h rows = W_uk[h]^T
    DeviceMatrix w_uv;                        // [H * V, R]
    DeviceMatrix o;                           // [hidden, H * V]
    DeviceMatrix gate_up, down;               // dense layers: [2I, hidden], [hidden, I]
    // MoE layers:
    DeviceBuffer<float> router;               // [E, hidden] float32
    DeviceBuffer<float> correction_bias;      // [E] (V3) or empty
    DeviceMatrix experts_gate_up;             // [E * 2I_e, hidden]: expert e's gate rows, then its up rows
    DeviceMatrix experts_down;                // [E * hidden, I_e]
    DeviceMatrix shared_gate_up, shared_down; // shared experts as one MLP (may be empty)
    int64_t moe_index = -1;                   // which MoE layer (routing ids slice), -1: dense
  };

  bool capturable(const StepShape& shape) const override { return !moe_uses_gemms(shape.n); }
  // MoE layers of at least moe_gemm_min_tokens() tokens (prefill, large batches) run their experts
  // as cuBLASLt GEMMs over rows gathered by expert; that needs the expert counts on the host (a
  // synchronization per layer), so such steps are not captured in graphs.
  // FP8 experts (--dtype fp8) run block-scaled GEMMs there, an expert's rows quantized together:
  // V3 8 layers, 8 x 512-token prefill, 7,450 vs 4,665 tok/s through the grouped kernels (H200,
  // 2026-11-30). SEEKSERVE_CUDA_FP8_EXPERT_KERNELS=1 keeps the grouped kernels at every size.
  // The FP8 grouped kernels run on tensor cores and hold on longer: at 128 tokens (V3, 4 pairs an
  // expert) they take 38.7 ms against the GEMMs' 70.2; at 2,048 the GEMMs win (6,955 vs 4,725 tok/s).
  bool moe_uses_gemms(int64_t n) const {
    return n_moe_layers_ > 0 && (!fp8_experts_ || fp8_expert_gemms_) && n >= moe_gemm_min_tokens();
  }
  int64_t moe_gemm_min_tokens() const {
    if (moe_gemm_min_tokens_override_ > 0) return moe_gemm_min_tokens_override_;
    return fp8_experts_ ? kFp8MoeGemmMinTokens : kMoeGemmMinTokens;
  }
  int64_t fp8_activation_rows(const StepShape& shape) const override {
    if (n_moe_layers_ == 0) return shape.n;
    const int64_t pairs = shape.n * config_.moe.top_k;  // the experts' down inputs: a row a pair
    return moe_uses_gemms(shape.n) ? pairs + (kMoePadRows - 1) * config_.moe.n_routed_experts : pairs;  // plus padding
  }
  Status prepare_step(const StepShape& shape) override;
  void enqueue_layers(const StepShape& shape, const StepInputs& in, const LayerObserver& observer) override;
  void queue_routing_copy(const StepShape& shape) override;
  void report_routing(const RoutingObserver& on_routing, const StepShape& shape) override;
  void attention(const Layer& layer, int64_t i, const StepShape& shape, const StepInputs& in);
  void moe(const Layer& layer, int64_t n);
  // Attention of one prefill chunk of >= mla_gemm_min_tokens_ tokens through cuBLASLt, in the
  // absorbed form: scores = [q_latent | q_pe] [c_kv | k_pe]^T over the sequence's gathered cache
  // rows, a masked softmax, then probabilities x c_kv — tensor cores instead of the decode
  // kernel's CUDA cores, whose per-token cache reads made long prompts quadratic.
  int64_t mla_gemm_min_tokens_ = 32;  // SEEKSERVE_CUDA_MLA_GEMM_MIN_TOKENS overrides (tests)
  static constexpr int64_t kMlaScoreBudget = int64_t{64} << 20;  // scores a query chunk may hold (floats)
  void mla_prefill_with_gemms(const StepSegment& seg, int64_t seq, const float* q, int64_t q_stride, const bf16* c_kv_pool,
                              const bf16* k_pe_pool, const StepShape& shape, const StepInputs& in);
  static int64_t padded_keys(int64_t L) { return (L + 63) / 64 * 64; }
  int64_t query_chunk(int64_t n, int64_t L_pad) const {
    return std::max<int64_t>(1, std::min<int64_t>(n, kMlaScoreBudget / (config_.mla.n_heads * L_pad)));
  }
  // The routed experts as GEMMs (moe_uses_gemms): expert_out_ rows in the padded layout. False
  // (nothing computed) when an FP8 expert's shape has no block-scaled algorithm.
  bool expert_gemms(const Layer& layer, const MoeGroups& groups, const int32_t* ids, int64_t n);
  bool expert_fp8_gemms(const Layer& layer, const MoeGroups& groups);

  DeepseekConfig config_;
  RopeFrequencies rope_;
  std::vector<Layer> layers_;
  int64_t n_moe_layers_ = 0;
  int64_t mlp_width_ = 0;  // widest dense MLP (dense layers, shared experts)
  bool fp8_experts_ = false;  // routed experts held as FP8 (W8A8)


  // Activations, grow-only.
  int64_t act_tokens_ = 0;
  DeviceBuffer<float> proj_, q_, gate_up_, router_logits_, route_weights_, expert_out_, partial_;
  DeviceBuffer<bf16> normed_, q_normed_, q_latent_, out_latent_, attn_v_, act_, gate_up_bf16_, expert_act_;
  DeviceBuffer<int32_t> route_ids_;  // [MoE layers, n * top_k]: every layer's choice survives the step
  DeviceBuffer<int32_t> groups_;     // offsets [E + 1] | sorted [n * top_k] | active [E] | n_active [1]
  std::vector<int32_t> host_ids_;
  int32_t* host_ids_pinned_ = nullptr;
  size_t host_ids_capacity_ = 0;
  // GEMM path: token rows gathered by expert (padded), their gate|up and SwiGLU rows, and where
  // each pair's row landed; padded offsets copied to the host.
  static constexpr int64_t kMoeGemmMinTokens = 65, kFp8MoeGemmMinTokens = 512;
  int64_t moe_gemm_min_tokens_override_ = 0;  // SEEKSERVE_CUDA_MOE_GEMM_MIN_TOKENS (tests, measurements)
  bool fp8_expert_gemms_;             // false with SEEKSERVE_CUDA_FP8_EXPERT_KERNELS
  int64_t gemm_rows_ = 0;
  DeviceBuffer<bf16> gathered_, expert_gate_up_rows_;
  DeviceBuffer<int32_t> row_of_pair_;
  int32_t* host_padded_ = nullptr;
  // MLA prefill through GEMMs: gathered keys, c_kv transposed, queries, scores, probabilities.
  DeviceBuffer<bf16> mla_keys_, mla_c_kv_t_, mla_queries_, mla_probs_;
  DeviceBuffer<float> mla_scores_;
};

Status CudaDeepseekLM::bind(ConfigReader& reader, WeightBinder& binder) {
  const DeepseekConfig& c = config_;
  const MlaConfig& m = c.mla;
  const MoeConfig& e = c.moe;
  if (binder.options().dtype != ComputeDType::kBF16 && binder.options().dtype != ComputeDType::kFP8)
    return unimplemented("--device cuda computes DeepSeek models in bf16 or fp8 (W8A8): pass --dtype bf16 or --dtype fp8");
  if (!mla_attention_supported(m.kv_lora_rank, m.qk_rope_head_dim) || m.qk_nope_head_dim % 2 != 0)
    return unimplemented("--device cuda: MLA with kv_lora_rank " + std::to_string(m.kv_lora_rank) + " and rope dim " +
                         std::to_string(m.qk_rope_head_dim) + " is not built (kv_lora_rank <= 512, even dims)");
  if (c.hidden_size % 16 != 0 || (e.n_routed_experts > 0 && e.moe_intermediate_size % 16 != 0))
    return unimplemented("--device cuda: hidden_size and moe_intermediate_size must be multiples of 16");
  if (e.n_routed_experts > kMaxRoutedExperts || e.top_k > 32 || e.n_group > 32)
    return unimplemented("--device cuda: at most 256 routed experts, 32 per token and 32 groups");
  read_common_info(reader, &info_);
  SS_RETURN_IF_ERROR(reader.status());
  SS_RETURN_IF_ERROR(bind_embeddings(binder, c.tie_word_embeddings, c.rms_norm_eps));
  const int64_t E = e.n_routed_experts;
  int64_t expert_elements = 0;  // routed experts, all layers
  layers_.resize(static_cast<size_t>(c.n_layers));
  mlp_width_ = c.intermediate_size;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    Layer& layer = layers_[static_cast<size_t>(i)];
    const std::vector<float> in_norm = binder.vector(p + ".input_layernorm.weight", c.hidden_size, 1.0f);
    const std::vector<float> post_norm = binder.vector(p + ".post_attention_layernorm.weight", c.hidden_size, 1.0f);
    const MlaWeights attn = bind_mla(binder, p + ".self_attn", m);
    SS_RETURN_IF_ERROR(binder.status());
    SS_RETURN_IF_ERROR(upload({&in_norm}, &layer.input_norm));
    SS_RETURN_IF_ERROR(upload({&post_norm}, &layer.post_attention_norm));
    SS_RETURN_IF_ERROR(upload({m.q_lora_rank > 0 ? &attn.q_a_proj : &attn.q_proj, &attn.kv_a_proj}, &layer.in_proj));
    SS_RETURN_IF_ERROR(upload({&attn.q_a_norm}, &layer.q_a_norm));
    SS_RETURN_IF_ERROR(upload({&attn.kv_a_norm}, &layer.kv_a_norm));
    if (m.q_lora_rank > 0) SS_RETURN_IF_ERROR(upload({&attn.q_b_proj}, &layer.q_b));
    SS_RETURN_IF_ERROR(upload({&attn.w_uk_t}, &layer.w_uk_t));
    SS_RETURN_IF_ERROR(upload({&attn.w_uv}, &layer.w_uv));
    SS_RETURN_IF_ERROR(upload({&attn.o_proj}, &layer.o));
    if (!c.is_moe_layer(i)) {
      const MlpWeights mlp = bind_mlp(binder, p + ".mlp", c.hidden_size, c.intermediate_size);
      SS_RETURN_IF_ERROR(binder.status());
      SS_RETURN_IF_ERROR(upload({&mlp.gate, &mlp.up}, &layer.gate_up));
      SS_RETURN_IF_ERROR(upload({&mlp.down}, &layer.down));
      continue;
    }
    const MoeWeights moe = bind_moe(binder, p + ".mlp", e);
    SS_RETURN_IF_ERROR(binder.status());
    layer.moe_index = n_moe_layers_++;
    std::vector<float> router(static_cast<size_t>(E * c.hidden_size));
    for (int64_t r = 0; r < E; ++r) moe.router.row_to_f32(r, router.data() + r * c.hidden_size);
    SS_RETURN_IF_ERROR(upload({&router}, &layer.router));
    SS_RETURN_IF_ERROR(upload({&moe.correction_bias}, &layer.correction_bias));
    std::vector<const Weight*> gate_up, down;
    for (const MlpWeights& expert : moe.experts) {
      gate_up.push_back(&expert.gate);
      gate_up.push_back(&expert.up);
      down.push_back(&expert.down);
    }
    SS_RETURN_IF_ERROR(upload(gate_up, &layer.experts_gate_up, /*stacked_experts=*/true));
    SS_RETURN_IF_ERROR(upload(down, &layer.experts_down, /*stacked_experts=*/true));
    fp8_experts_ = layer.experts_gate_up.is_fp8() && layer.experts_down.is_fp8();
    info_.expert_bytes += device_bytes(layer.experts_gate_up) + device_bytes(layer.experts_down);
    expert_elements += layer.experts_gate_up.rows * layer.experts_gate_up.cols + layer.experts_down.rows * layer.experts_down.cols;
    if (e.n_shared_experts > 0) {
      SS_RETURN_IF_ERROR(upload({&moe.shared.gate, &moe.shared.up}, &layer.shared_gate_up));
      SS_RETURN_IF_ERROR(upload({&moe.shared.down}, &layer.shared_down));
      mlp_width_ = std::max(mlp_width_, moe.shared.down.cols);
    }
  }
  info_.weight_bytes = uploaded_bytes_;  // as held on the device (bf16, or FP8 + scales), whatever the checkpoint format
  const int64_t active_expert_elements = E > 0 ? expert_elements * e.top_k / E : 0;
  info_.matmul_flops_per_token = 2 * (uploaded_elements_ - head_elements_ - expert_elements + active_expert_elements);
  info_.n_routed_experts = E;
  info_.n_moe_layers = n_moe_layers_;
  // q.k over the latent and rotary parts, p.v over the latent, per head and layer.
  info_.attention_flops_per_pair = m.n_heads * (4 * m.kv_lora_rank + 2 * m.qk_rope_head_dim) * c.n_layers;
  SS_RETURN_IF_ERROR(upload_rope_tables(rope_));
  return Status::Ok();
}

Status CudaDeepseekLM::prepare_step(const StepShape& shape) {
  const DeepseekConfig& c = config_;
  const MlaConfig& m = c.mla;
  const MoeConfig& e = c.moe;
  const int64_t n = shape.n;
  if (n > act_tokens_) {
    const auto N = static_cast<size_t>(n);
    const int64_t H = m.n_heads, QD = m.q_head_dim(), R = m.kv_lora_rank;
    const auto pairs = N * static_cast<size_t>(e.top_k);
    SS_RETURN_IF_ERROR(normed_.reserve(N * c.hidden_size));
    SS_RETURN_IF_ERROR(proj_.reserve(N * layers_[0].in_proj.rows));
    if (m.q_lora_rank > 0) {
      SS_RETURN_IF_ERROR(q_normed_.reserve(N * m.q_lora_rank));
      SS_RETURN_IF_ERROR(q_.reserve(N * H * QD));
    }
    SS_RETURN_IF_ERROR(q_latent_.reserve(N * H * R));
    SS_RETURN_IF_ERROR(out_latent_.reserve(N * H * R));
    SS_RETURN_IF_ERROR(attn_v_.reserve(N * H * m.v_head_dim));
    SS_RETURN_IF_ERROR(gate_up_.reserve(std::min<size_t>(N, kGemvMaxTokens) * 2 * mlp_width_));
    if (n > kGemvMaxTokens) SS_RETURN_IF_ERROR(gate_up_bf16_.reserve(N * 2 * mlp_width_));
    SS_RETURN_IF_ERROR(act_.reserve(N * mlp_width_));
    if (n_moe_layers_ > 0) {
      SS_RETURN_IF_ERROR(router_logits_.reserve(N * e.n_routed_experts));
      SS_RETURN_IF_ERROR(route_weights_.reserve(pairs));
      SS_RETURN_IF_ERROR(route_ids_.reserve(pairs * n_moe_layers_));
      SS_RETURN_IF_ERROR(groups_.reserve(pairs + 3 * e.n_routed_experts + 3));
      // Rows of the GEMM path: every pair plus each expert's padding (at most kMoePadRows - 1).
      const auto rows = moe_uses_gemms(n) ? pairs + static_cast<size_t>((kMoePadRows - 1) * e.n_routed_experts) : pairs;
      SS_RETURN_IF_ERROR(expert_act_.reserve(rows * e.moe_intermediate_size));
      SS_RETURN_IF_ERROR(expert_out_.reserve(rows * c.hidden_size));
      if (moe_uses_gemms(n)) {
        SS_RETURN_IF_ERROR(gathered_.reserve(rows * c.hidden_size));
        SS_RETURN_IF_ERROR(expert_gate_up_rows_.reserve(rows * 2 * e.moe_intermediate_size));
        SS_RETURN_IF_ERROR(row_of_pair_.reserve(pairs));
        if (!host_padded_) SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_padded_), (e.n_routed_experts + 1) * sizeof(int32_t)));
        gemm_rows_ = static_cast<int64_t>(rows);
      }
    }
    act_tokens_ = n;
    drop_graphs();
  }
  for (const StepSegment& seg : segments_) {  // MLA prefill through GEMMs (grow-only; not in graphs)
    if (shape.decode() || seg.n < mla_gemm_min_tokens_) continue;
    const int64_t L_pad = padded_keys(seg.first_position + seg.n), rows = query_chunk(seg.n, L_pad) * m.n_heads;
    const int64_t W = m.kv_lora_rank + m.qk_rope_head_dim;
    SS_RETURN_IF_ERROR(mla_keys_.reserve(static_cast<size_t>(L_pad * W)));
    SS_RETURN_IF_ERROR(mla_c_kv_t_.reserve(static_cast<size_t>(m.kv_lora_rank * L_pad)));
    SS_RETURN_IF_ERROR(mla_queries_.reserve(static_cast<size_t>(rows * W)));
    SS_RETURN_IF_ERROR(mla_scores_.reserve(static_cast<size_t>(rows * L_pad)));
    SS_RETURN_IF_ERROR(mla_probs_.reserve(static_cast<size_t>(rows * L_pad)));
  }
  const int64_t splits = mla_splits(n, m.n_heads, shape.table_stride * shape.block_size);
  const auto need = static_cast<size_t>(splits > 1 ? mla_partial_floats(n, m.n_heads, splits, m.kv_lora_rank) : 0);
  if (need > partial_.size()) {
    SS_RETURN_IF_ERROR(partial_.reserve(need));
    drop_graphs();
  }
  return Status::Ok();
}

void CudaDeepseekLM::attention(const Layer& layer, int64_t i, const StepShape& shape, const StepInputs& in) {
  const DeepseekConfig& c = config_;
  const MlaConfig& m = c.mla;
  const int64_t n = shape.n, H = m.n_heads, R = m.kv_lora_rank, P = m.qk_rope_head_dim, N = m.qk_nope_head_dim;
  const int64_t QD = m.q_head_dim(), V = m.v_head_dim, proj_width = layer.in_proj.rows;
  float* hidden = hidden_.data();
  // [q_a | c_kv | k_pe] (or [q | c_kv | k_pe]) for every token, from one matmul of the normed input.
  normed_linear(layer.in_proj, hidden, nullptr, n, layer.input_norm.data(), c.rms_norm_eps, nullptr, normed_.data(), proj_.data());
  const int64_t q_cols = m.q_lora_rank > 0 ? 0 : H * QD;  // the full q sits before the latent without a LoRA
  MlaPrepareParams prep;
  prep.proj = proj_.data() + q_cols;
  prep.proj_stride = proj_width;
  prep.n_tokens = n;
  prep.q_rank = m.q_lora_rank;
  prep.q_norm = layer.q_a_norm.data();
  prep.q_normed = q_normed_.data();
  prep.kv_rank = R;
  prep.rope_dim = P;
  prep.kv_norm = layer.kv_a_norm.data();
  prep.eps = m.norm_eps;
  prep.cos = rope_cos_.data();
  prep.sin = rope_sin_.data();
  prep.positions = in.positions;
  prep.slots = in.slots;
  prep.c_kv_pool = cache_a(i);  // latent cache: c_kv [rows, R], k_pe [rows, P]
  prep.k_pe_pool = cache_b(i);
  mla_prepare(prep, stream_);
  const float* q = proj_.data();
  int64_t q_stride = proj_width;
  if (m.q_lora_rank > 0) {
    linear(layer.q_b, q_normed_.data(), n, nullptr, false, q_.data());
    q = q_.data();
    q_stride = H * QD;
  }
  // Absorb: q_latent[t, h] = W_uk[h]^T q_nope[t, h].
  head_matmul(layer.w_uk_t.data.data(), H, R, N, q, q_stride, QD, n, q_latent_.data(), stream_);
  MlaAttentionParams p;
  p.q_latent = q_latent_.data();
  p.q = q;
  p.q_stride = q_stride;
  p.q_head_stride = QD;
  p.q_pe_offset = N;
  p.c_kv_pool = prep.c_kv_pool;
  p.k_pe_pool = prep.k_pe_pool;
  p.block_tables = in.tables;
  p.table_stride = shape.table_stride;
  p.token_seq = in.token_seq;
  p.positions = in.positions;
  p.cos = rope_cos_.data();
  p.sin = rope_sin_.data();
  p.n_tokens = n;
  p.n_heads = H;
  p.kv_rank = R;
  p.rope_dim = P;
  p.block_size = shape.block_size;
  p.scale = m.softmax_scale;
  p.out = out_latent_.data();
  p.n_splits = mla_splits(n, H, shape.table_stride * shape.block_size);
  p.partial = partial_.data();
  if (shape.decode()) {
    mla_attention(p, stream_);
  } else {  // prefill: long chunks through GEMMs; runs of consecutive short ones through one kernel launch each
    int64_t run_begin = 0, run_n = 0;
    auto flush_run = [&] {
      if (run_n == n) return mla_attention(p, stream_);  // every chunk short: the step as a whole
      if (run_n == 0) return;
      MlaAttentionParams run = p;  // tokens [run_begin, run_begin + run_n), unsplit (partial_ is sized for the step)
      run.q_latent = p.q_latent + run_begin * H * R;
      run.q = p.q + run_begin * q_stride;
      run.token_seq = p.token_seq + run_begin;
      run.positions = p.positions + run_begin;
      run.n_tokens = run_n;
      run.out = p.out + run_begin * H * R;
      run.n_splits = 1;
      mla_attention(run, stream_);
    };
    for (size_t seq = 0; seq < segments_.size(); ++seq) {
      const StepSegment& seg = segments_[seq];
      if (seg.n < mla_gemm_min_tokens_) {
        if (run_n > 0 && seg.begin != run_begin + run_n) {  // not adjacent: a run of its own
          flush_run();
          run_n = 0;
        }
        if (run_n == 0) run_begin = seg.begin;
        run_n += seg.n;
        continue;
      }
      flush_run();
      run_n = 0;
      mla_prefill_with_gemms(seg, static_cast<int64_t>(seq), q, q_stride, prep.c_kv_pool, prep.k_pe_pool, shape, in);
    }
    flush_run();
  }
  // Un-absorb: v[t, h] = W_uv[h] out_latent[t, h]; then o_proj into the residual stream.
  head_matmul(layer.w_uv.data.data(), H, V, R, out_latent_.data(), H * R, R, n, attn_v_.data(), stream_);
  linear(layer.o, attn_v_.data(), n, nullptr, true, hidden);
}

void CudaDeepseekLM::mla_prefill_with_gemms(const StepSegment& seg, int64_t seq, const float* q, int64_t q_stride, const bf16* c_kv_pool,
                                            const bf16* k_pe_pool, const StepShape& shape, const StepInputs& in) {
  const MlaConfig& m = config_.mla;
  const int64_t H = m.n_heads, R = m.kv_lora_rank, P = m.qk_rope_head_dim, W = R + P, QD = m.q_head_dim();
  const int64_t L = seg.first_position + seg.n, L_pad = padded_keys(L);
  mla_gather_latent(c_kv_pool, k_pe_pool, in.tables + seq * shape.table_stride, shape.block_size, L, L_pad, R, P, mla_keys_.data(),
                    mla_c_kv_t_.data(), stream_);
  const int64_t chunk = query_chunk(seg.n, L_pad);
  for (int64_t t0 = 0; t0 < seg.n; t0 += chunk) {
    const int64_t nc = std::min(chunk, seg.n - t0), row0 = seg.begin + t0;
    mla_prefill_queries(q_latent_.data() + row0 * H * R, q + row0 * q_stride, q_stride, QD, m.qk_nope_head_dim, in.positions + row0,
                        rope_cos_.data(), rope_sin_.data(), nc, H, R, P, mla_queries_.data(), stream_);
    gemm_.run(mla_keys_.data(), L_pad, W, mla_queries_.data(), nc * H, false, mla_scores_.data(), stream_);
    mla_prefill_softmax(mla_scores_.data(), nc, H, L_pad, seg.first_position + t0, m.softmax_scale, mla_probs_.data(), stream_);
    gemm_.run(mla_c_kv_t_.data(), R, L_pad, mla_probs_.data(), nc * H, out_latent_.data() + row0 * H * R, stream_);
  }
}

void CudaDeepseekLM::moe(const Layer& layer, int64_t n) {
  const DeepseekConfig& c = config_;
  const MoeConfig& e = c.moe;
  const int64_t E = e.n_routed_experts, K = e.top_k, D = c.hidden_size, pairs = n * K;
  float* hidden = hidden_.data();
  rms_norm(hidden, nullptr, layer.post_attention_norm.data(), n, D, c.rms_norm_eps, normed_.data(), stream_);
  router_logits(layer.router.data(), E, D, normed_.data(), n, router_logits_.data(), stream_);
  MoeRouteParams route;
  route.logits = router_logits_.data();
  route.correction_bias = layer.correction_bias.size() ? layer.correction_bias.data() : nullptr;
  route.n_tokens = n;
  route.n_experts = E;
  route.top_k = K;
  route.n_group = e.n_group;
  route.topk_group = e.topk_group;
  route.sigmoid = e.scoring == MoeScoring::kSigmoid;
  route.group_top2 = e.topk_method == MoeTopkMethod::kNoauxTc;
  route.group_limited = e.topk_method != MoeTopkMethod::kGreedy;
  // As route_tokens: V3 normalizes then scales; V2 scales only when it does not normalize.
  route.normalize = e.norm_topk_prob && (route.sigmoid || K > 1);
  route.scale = route.sigmoid || !route.normalize;
  route.routed_scaling_factor = e.routed_scaling_factor;
  route.ids = route_ids_.data() + layer.moe_index * pairs;
  route.weights = route_weights_.data();
  moe_route(route, stream_);
  MoeGroups groups;
  groups.offsets = groups_.data();
  groups.sorted = groups.offsets + E + 1;
  groups.active = groups.sorted + pairs;
  groups.n_active = groups.active + E;
  const bool gemms = moe_uses_gemms(n);
  if (gemms) groups.padded = groups.n_active + 1;
  moe_group(route.ids, pairs, E, groups, stream_);
  const bool used_gemms = gemms && expert_gemms(layer, groups, route.ids, n);
  if (!used_gemms && fp8_experts_) {  // W8A8: the tokens quantized for gate|up, then each pair's SwiGLU row for down
    const int64_t max_active = std::min(E, pairs), I = e.moe_intermediate_size;
    const MoeKernel kernel = default_moe_kernel();
    moe_fp8_gemv_swiglu(kernel, layer.experts_gate_up.fp8_weight(), I, D, quantize_activations(normed_.data(), n, D, n), K, groups,
                        max_active, expert_act_.data(), stream_);
    moe_fp8_gemv_down(kernel, layer.experts_down.fp8_weight(), D, I, quantize_activations(expert_act_.data(), pairs, I, pairs), groups,
                      max_active, expert_out_.data(), stream_);
  } else if (!used_gemms) {
    const int64_t max_active = std::min(E, pairs);
    const MoeKernel kernel = default_moe_kernel();
    moe_gemv_swiglu(kernel, layer.experts_gate_up.data.data(), e.moe_intermediate_size, D, normed_.data(), K, groups, max_active,
                    expert_act_.data(), stream_);
    moe_gemv_down(kernel, layer.experts_down.data.data(), D, e.moe_intermediate_size, expert_act_.data(), groups, max_active,
                  expert_out_.data(), stream_);
  }
  if (layer.shared_down.rows > 0)  // reads hidden before the routed outputs are added; normed_ is the router's input
    mlp(layer.shared_gate_up, layer.shared_down, layer.post_attention_norm.data(), c.rms_norm_eps, hidden, n,
        {normed_.data(), gate_up_.data(), gate_up_bf16_.data(), act_.data()}, /*input_normed=*/true);
  moe_combine(expert_out_.data(), used_gemms ? row_of_pair_.data() : nullptr, route.weights, n, K, D, hidden, stream_);
}

bool CudaDeepseekLM::expert_gemms(const Layer& layer, const MoeGroups& groups, const int32_t* ids, int64_t n) {
  const MoeConfig& e = config_.moe;
  const int64_t E = e.n_routed_experts, I = e.moe_intermediate_size, D = config_.hidden_size;
  moe_gather_rows(normed_.data(), D, ids, n * e.top_k, e.top_k, groups, gemm_rows_, gathered_.data(), row_of_pair_.data(), stream_);
  SS_CUDA_CHECK(cudaMemcpyAsync(host_padded_, groups.padded, static_cast<size_t>(E + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  SS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (fp8_experts_) return expert_fp8_gemms(layer, groups);
  const bf16* gate_up = layer.experts_gate_up.data.data();
  const bf16* down = layer.experts_down.data.data();
  for (int64_t x = 0; x < E; ++x) {  // gate|up rows of every expert that received tokens, bf16
    const int64_t row = host_padded_[x], rows = host_padded_[x + 1] - row;
    if (rows > 0) gemm_.run(gate_up + x * 2 * I * D, 2 * I, D, gathered_.data() + row * D, rows, expert_gate_up_rows_.data() + row * 2 * I, stream_);
  }
  silu_mul(expert_gate_up_rows_.data(), host_padded_[E], I, expert_act_.data(), stream_);
  for (int64_t x = 0; x < E; ++x) {
    const int64_t row = host_padded_[x], rows = host_padded_[x + 1] - row;
    if (rows > 0) gemm_.run(down + x * D * I, D, I, expert_act_.data() + row * I, rows, false, expert_out_.data() + row * D, stream_);
  }
  return true;
}

// W8A8 experts: each expert's gathered rows quantized as one GEMM operand (scales token-contiguous
// per expert), a block-scaled GEMM per weight part (gate, up; down) of every expert that received
// rows, bf16 outputs; the down outputs land in gathered_ (free by then) and become expert_out_.
bool CudaDeepseekLM::expert_fp8_gemms(const Layer& layer, const MoeGroups& groups) {
  const MoeConfig& e = config_.moe;
  const int64_t E = e.n_routed_experts, I = e.moe_intermediate_size, D = config_.hidden_size, total = host_padded_[E];
  const DeviceMatrix& gate_up = layer.experts_gate_up;
  const DeviceMatrix& down = layer.experts_down;
  for (int64_t x = 0; x < E; ++x) {
    const int64_t rows = host_padded_[x + 1] - host_padded_[x];
    if (rows == 0) continue;
    for (int o = 0; o < 2; ++o)
      if (!gemm_.fp8_available(gate_up.parts[static_cast<size_t>(2 * x + o)].rows, D, rows, 2 * I)) return false;
    if (!gemm_.fp8_available(down.parts[static_cast<size_t>(x)].rows, I, rows, D)) return false;
  }
  uint8_t* xq = fp8_scratch_values();
  float* xs = fp8_scratch_scales();
  quantize_fp8_expert_rows(gathered_.data(), total, D, groups.padded, E, xq, xs, stream_);
  for (int64_t x = 0; x < E; ++x) {
    const int64_t row = host_padded_[x], rows = host_padded_[x + 1] - row;
    if (rows == 0) continue;
    const int64_t expert_row0 = gate_up.parts[static_cast<size_t>(2 * x)].row0;
    for (int o = 0; o < 2; ++o) {  // gate into columns [0, I), up into [I, 2 I)
      const DeviceMatrix::Part& p = gate_up.parts[static_cast<size_t>(2 * x + o)];
      gemm_.run_fp8(gate_up.fp8.data() + p.row0 * D, gate_up.scales.data() + p.block_row0 * gate_up.scale_ld, p.rows, D, xq + row * D,
                    xs + row * (D / kFp8Group), rows, expert_gate_up_rows_.data() + row * 2 * I + (p.row0 - expert_row0), 2 * I, stream_);
    }
  }
  silu_mul(expert_gate_up_rows_.data(), total, I, expert_act_.data(), stream_);
  quantize_fp8_expert_rows(expert_act_.data(), total, I, groups.padded, E, xq, xs, stream_);
  for (int64_t x = 0; x < E; ++x) {
    const int64_t row = host_padded_[x], rows = host_padded_[x + 1] - row;
    if (rows == 0) continue;
    const DeviceMatrix::Part& p = down.parts[static_cast<size_t>(x)];
    gemm_.run_fp8(down.fp8.data() + p.row0 * I, down.scales.data() + p.block_row0 * down.scale_ld, p.rows, I, xq + row * I,
                  xs + row * (I / kFp8Group), rows, gathered_.data() + row * D, D, stream_);
  }
  add_bf16_rows(gathered_.data(), total, D, nullptr, false, expert_out_.data(), stream_);
  return true;
}

void CudaDeepseekLM::enqueue_layers(const StepShape& shape, const StepInputs& in, const LayerObserver& observer) {
  const DeepseekConfig& c = config_;
  const int64_t n = shape.n;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    attention(layer, i, shape, in);
    if (layer.moe_index >= 0) moe(layer, n);
    else
      mlp(layer.gate_up, layer.down, layer.post_attention_norm.data(), c.rms_norm_eps, hidden_.data(), n,
          {normed_.data(), gate_up_.data(), gate_up_bf16_.data(), act_.data()});
    if (observer) observe(observer, i + 1, hidden_.data(), n);
  }
}

void CudaDeepseekLM::queue_routing_copy(const StepShape& shape) {
  const size_t count = static_cast<size_t>(n_moe_layers_ * shape.n * config_.moe.top_k);
  if (count == 0) return;
  if (count > host_ids_capacity_) {
    if (host_ids_pinned_) SS_CUDA_CHECK(cudaFreeHost(host_ids_pinned_));
    SS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_ids_pinned_), count * 4));
    host_ids_capacity_ = count;
  }
  SS_CUDA_CHECK(cudaMemcpyAsync(host_ids_pinned_, route_ids_.data(), count * 4, cudaMemcpyDeviceToHost, stream_));
}

// Margins are not computed on the device: they are reported as NaN (unknown).
void CudaDeepseekLM::report_routing(const RoutingObserver& on_routing, const StepShape& shape) {
  const int64_t K = config_.moe.top_k, pairs = shape.n * K;
  const std::vector<float> margins(static_cast<size_t>(shape.n), NAN);
  for (int64_t i = 0; i < config_.n_layers; ++i) {
    const Layer& layer = layers_[static_cast<size_t>(i)];
    if (layer.moe_index >= 0) on_routing(i, shape.n, K, host_ids_pinned_ + layer.moe_index * pairs, margins.data());
  }
}

}  // namespace

Result<std::unique_ptr<CausalLM>> make_cuda_deepseek(DeepseekConfig config, ConfigReader& reader, WeightBinder& binder) {
  return make_bound_model<CudaDeepseekLM>(std::move(config), reader, binder);
}

}  // namespace seekserve::cuda
