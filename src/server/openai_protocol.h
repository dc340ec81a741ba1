// The OpenAI API's wire format: parsing and validating /v1/chat/completions and /v1/completions
// bodies, and building response objects, stream chunks and error bodies. Pure functions over
// JSON; no I/O and no engine.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/sequence.h"

namespace seekserve {

// An error as OpenAI reports it: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;   // the offending request field, "" when none
  std::string code;    // machine-readable code, "" when none
};

std::string error_body(const ApiError& error);
// Maps an engine or loader Status to an API error (overload -> 503, out of range -> 400, ...).
ApiError api_error(const Status& status, const std::string& param = "");

enum class Endpoint { kChatCompletions, kCompletions };

struct CompletionParams {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  nlohmann::ordered_json messages;             // chat
  nlohmann::ordered_json tools;                // chat, null when absent
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs
  std::optional<std::string> prompt_text;      // completions
  std::vector<int32_t> prompt_ids;             // completions given token ids
  std::optional<int64_t> max_tokens;           // max_tokens / max_completion_tokens
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool seeded = false;                         // the request gave a seed (choice i then uses seed + i)
  int64_t n = 1;
  bool logprobs = false;
  int64_t top_logprobs = 0;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;                     // extension (vLLM's spelling)
  std::string user;
  std::optional<RequestClass> request_class;   // extension; else the API key's default
  int64_t priority = 0;                        // extension
};

// Parses and validates a request body. Unknown fields are ignored, as OpenAI does.
// `defaults` seeds the sampling parameters (the model's generation_config.json).
Result<CompletionParams> parse_completion_request(const std::string& body, Endpoint endpoint,
                                                  const SamplingParams& defaults, ApiError* error);

// One generated choice, accumulated on the HTTP side.
struct ChoiceResult {
  std::string text;            // answer text (content)
  std::string reasoning;       // reasoning_content, R1-style models
  bool has_reasoning = false;
  std::string finish_reason;   // "stop" | "length"
  nlohmann::ordered_json logprobs = nullptr;  // OpenAI's logprobs object, or null
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

nlohmann::ordered_json usage_json(const Usage& usage);

// A whole (non-streamed) response object.
nlohmann::ordered_json completion_response(const CompletionParams& p, const std::string& id, int64_t created,
                                           const std::string& model, const std::vector<ChoiceResult>& choices, const Usage& usage);

// One stream chunk for choice `index`: a delta (content and/or reasoning), a finish reason, or
// both. Empty `finish_reason` means null.
nlohmann::ordered_json stream_chunk(const CompletionParams& p, const std::string& id, int64_t created, const std::string& model,
                                    int64_t index, const std::string* role, const std::string* content,
                                    const std::string* reasoning, const nlohmann::ordered_json& logprobs,
                                    const std::string& finish_reason);
// The final usage chunk (stream_options.include_usage): no choices.
nlohmann::ordered_json usage_chunk(const CompletionParams& p, const std::string& id, int64_t created, const std::string& model,
                                   const Usage& usage);

// "data: {json}\n\n"
std::string sse_event(const nlohmann::ordered_json& j);

}  // namespace seekserve
