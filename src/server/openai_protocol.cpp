#include "server/openai_protocol.h"

namespace seekserve {

using nlohmann::ordered_json;

std::string error_body(const ApiError& e) {
  ordered_json j;
  j["error"]["message"] = e.message;
  j["error"]["type"] = e.type;
  j["error"]["param"] = e.param.empty() ? ordered_json(nullptr) : ordered_json(e.param);
  j["error"]["code"] = e.code.empty() ? ordered_json(nullptr) : ordered_json(e.code);
  return j.dump();
}

ApiError api_error(const Status& status, const std::string& param) {
  ApiError e;
  e.message = status.message();
  e.param = param;
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange: e.http_status = 400; break;
    case StatusCode::kNotFound: e.http_status = 404; e.type = "not_found_error"; break;
    case StatusCode::kResourceExhausted:
      e.http_status = 503; e.type = "server_overloaded"; e.code = "server_overloaded"; break;
    case StatusCode::kUnavailable: e.http_status = 503; e.type = "service_unavailable"; break;
    default: e.http_status = 500; e.type = "internal_error"; break;
  }
  return e;
}

namespace {

// Field readers that name the parameter in their errors.
struct Reader {
  const ordered_json& body;
  ApiError* error;

  bool fail(const std::string& param, const std::string& message) {
    error->http_status = 400;
    error->param = param;
    error->message = message;
    return false;
  }
  bool has(const char* key) const { return body.contains(key) && !body[key].is_null(); }

  bool number(const char* key, float lo, float hi, float* out) {
    if (!has(key)) return true;
    if (!body[key].is_number()) return fail(key, std::string("'") + key + "' must be a number");
    const double v = body[key].get<double>();
    if (!(v >= lo && v <= hi)) return fail(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    *out = static_cast<float>(v);
    return true;
  }
  bool integer(const char* key, int64_t lo, int64_t hi, int64_t* out) {
    if (!has(key)) return true;
    if (!body[key].is_number_integer()) return fail(key, std::string("'") + key + "' must be an integer");
    const int64_t v = body[key].get<int64_t>();
    if (v < lo || v > hi) return fail(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    *out = v;
    return true;
  }
  bool boolean(const char* key, bool* out) {
    if (!has(key)) return true;
    if (!body[key].is_boolean()) return fail(key, std::string("'") + key + "' must be true or false");
    *out = body[key].get<bool>();
    return true;
  }
};

}  // namespace

Result<CompletionParams> parse_completion_request(const std::string& text, Endpoint endpoint, const SamplingParams& defaults,
                                                  ApiError* error) {
  const ordered_json body = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    error->message = "the request body is not valid JSON";
    return invalid_argument(error->message);
  }
  if (!body.is_object()) {
    error->message = "the request body must be a JSON object";
    return invalid_argument(error->message);
  }
  Reader r{body, error};
  CompletionParams p;
  p.endpoint = endpoint;
  p.sampling = defaults;
  auto bad = [&]() { return invalid_argument(error->message); };

  if (r.has("model")) {
    if (!body["model"].is_string()) return r.fail("model", "'model' must be a string"), bad();
    p.model = body["model"].get<std::string>();
  }
  if (endpoint == Endpoint::kChatCompletions) {
    if (!r.has("messages") || !body["messages"].is_array() || body["messages"].empty())
      return r.fail("messages", "'messages' must be a non-empty array"), bad();
    for (const auto& m : body["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        return r.fail("messages", "each message needs a string 'role'"), bad();
      if (m.contains("content") && !m["content"].is_null() && !m["content"].is_string()) {
        // Content parts: only text parts are supported; join them.
        if (!m["content"].is_array()) return r.fail("messages", "'content' must be a string or an array of parts"), bad();
        for (const auto& part : m["content"])
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
            return r.fail("messages", "only text content parts are supported"), bad();
      }
    }
    p.messages = body["messages"];
    for (auto& m : p.messages)
      if (m.contains("content") && m["content"].is_array()) {
        std::string joined;
        for (const auto& part : m["content"]) joined += part["text"].get<std::string>();
        m["content"] = joined;
      }
    if (r.has("tools")) {
      if (!body["tools"].is_array()) return r.fail("tools", "'tools' must be an array"), bad();
      p.tools = body["tools"];
    }
    if (r.has("chat_template_kwargs")) {
      if (!body["chat_template_kwargs"].is_object()) return r.fail("chat_template_kwargs", "'chat_template_kwargs' must be an object"), bad();
      p.template_kwargs = body["chat_template_kwargs"];
    }
  } else {
    if (!r.has("prompt")) return r.fail("prompt", "'prompt' is required"), bad();
    const auto& prompt = body["prompt"];
    if (prompt.is_string()) {
      p.prompt_text = prompt.get<std::string>();
    } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
      p.prompt_text = prompt[0].get<std::string>();
    } else if (prompt.is_array() && !prompt.empty() && std::all_of(prompt.begin(), prompt.end(), [](const auto& v) { return v.is_number_integer(); })) {
      for (const auto& v : prompt) p.prompt_ids.push_back(v.get<int32_t>());
    } else {
      return r.fail("prompt", "'prompt' must be a string or an array of token ids (batched prompts are not supported)"), bad();
    }
  }

  int64_t max_tokens = -1;
  if (!r.integer("max_tokens", 1, int64_t{1} << 30, &max_tokens)) return bad();
  if (!r.integer("max_completion_tokens", 1, int64_t{1} << 30, &max_tokens)) return bad();
  if (max_tokens > 0) p.max_tokens = max_tokens;
  if (!r.number("temperature", 0.0f, 2.0f, &p.sampling.temperature)) return bad();
  if (!r.number("top_p", 1e-6f, 1.0f, &p.sampling.top_p)) return bad();
  if (!r.number("min_p", 0.0f, 1.0f, &p.sampling.min_p)) return bad();
  if (!r.number("presence_penalty", -2.0f, 2.0f, &p.sampling.presence_penalty)) return bad();
  if (!r.number("frequency_penalty", -2.0f, 2.0f, &p.sampling.frequency_penalty)) return bad();
  if (!r.number("repetition_penalty", 1e-3f, 100.0f, &p.sampling.repetition_penalty)) return bad();
  int64_t top_k = 0;
  if (!r.integer("top_k", -1, int64_t{1} << 30, &top_k)) return bad();
  p.sampling.top_k = std::max<int64_t>(top_k, 0);
  int64_t seed = 0;
  if (r.has("seed")) {
    if (!body["seed"].is_number_integer()) return r.fail("seed", "'seed' must be an integer"), bad();
    seed = body["seed"].get<int64_t>();
    p.seeded = true;
  }
  p.sampling.seed = static_cast<uint64_t>(seed);
  if (!r.integer("n", 1, 16, &p.n)) return bad();
  if (r.has("stop")) {
    const auto& stop = body["stop"];
    if (stop.is_string()) p.stop.push_back(stop.get<std::string>());
    else if (stop.is_array() && stop.size() <= 16 && std::all_of(stop.begin(), stop.end(), [](const auto& v) { return v.is_string(); }))
      for (const auto& s : stop) p.stop.push_back(s.get<std::string>());
    else return r.fail("stop", "'stop' must be a string or a list of at most 16 strings"), bad();
    std::erase_if(p.stop, [](const std::string& s) { return s.empty(); });
  }
  if (endpoint == Endpoint::kChatCompletions) {
    if (!r.boolean("logprobs", &p.logprobs)) return bad();
    if (!r.integer("top_logprobs", 0, 20, &p.top_logprobs)) return bad();
    if (p.top_logprobs > 0 && !p.logprobs) return r.fail("top_logprobs", "'top_logprobs' needs 'logprobs': true"), bad();
  } else if (r.has("logprobs")) {
    int64_t n = 0;
    if (!r.integer("logprobs", 0, 20, &n)) return bad();
    p.logprobs = true;
    p.top_logprobs = n;
  }
  if (!r.boolean("stream", &p.stream)) return bad();
  if (r.has("stream_options")) {
    if (!body["stream_options"].is_object()) return r.fail("stream_options", "'stream_options' must be an object"), bad();
    if (!p.stream) return r.fail("stream_options", "'stream_options' is only allowed with 'stream': true"), bad();
    Reader so{body["stream_options"], error};
    if (!so.boolean("include_usage", &p.include_usage)) return bad();
  }
  if (!r.boolean("ignore_eos", &p.ignore_eos)) return bad();
  if (r.has("user")) {
    if (!body["user"].is_string()) return r.fail("user", "'user' must be a string"), bad();
    p.user = body["user"].get<std::string>();
  }
  if (!r.integer("priority", -1000000, 1000000, &p.priority)) return bad();
  if (r.has("request_class")) {
    const std::string c = body["request_class"].is_string() ? body["request_class"].get<std::string>() : "";
    if (c == "interactive") p.request_class = RequestClass::kInteractive;
    else if (c == "batch") p.request_class = RequestClass::kBatch;
    else return r.fail("request_class", "'request_class' must be \"interactive\" or \"batch\""), bad();
  }
  return p;
}

ordered_json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens}, {"completion_tokens", u.completion_tokens}, {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {
bool is_chat(const CompletionParams& p) { return p.endpoint == Endpoint::kChatCompletions; }
}  // namespace

ordered_json completion_response(const CompletionParams& p, const std::string& id, int64_t created, const std::string& model,
                                 const std::vector<ChoiceResult>& choices, const Usage& usage) {
  ordered_json j;
  j["id"] = id;
  j["object"] = is_chat(p) ? "chat.completion" : "text_completion";
  j["created"] = created;
  j["model"] = model;
  j["choices"] = ordered_json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    ordered_json choice;
    choice["index"] = i;
    if (is_chat(p)) {
      ordered_json message;
      message["role"] = "assistant";
      message["content"] = c.text;
      if (c.has_reasoning) message["reasoning_content"] = c.reasoning;
      choice["message"] = message;
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = c.logprobs;
    choice["finish_reason"] = c.finish_reason;
    j["choices"].push_back(choice);
  }
  j["usage"] = usage_json(usage);
  return j;
}

ordered_json stream_chunk(const CompletionParams& p, const std::string& id, int64_t created, const std::string& model, int64_t index,
                          const std::string* role, const std::string* content, const std::string* reasoning,
                          const ordered_json& logprobs, const std::string& finish_reason) {
  ordered_json j;
  j["id"] = id;
  j["object"] = is_chat(p) ? "chat.completion.chunk" : "text_completion";
  j["created"] = created;
  j["model"] = model;
  ordered_json choice;
  choice["index"] = index;
  if (is_chat(p)) {
    ordered_json delta = ordered_json::object();
    if (role) delta["role"] = *role;
    if (content) delta["content"] = *content;
    if (reasoning) delta["reasoning_content"] = *reasoning;
    choice["delta"] = delta;
  } else {
    choice["text"] = content ? *content : "";
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish_reason.empty() ? ordered_json(nullptr) : ordered_json(finish_reason);
  j["choices"] = ordered_json::array({choice});
  if (p.include_usage) j["usage"] = nullptr;
  return j;
}

ordered_json usage_chunk(const CompletionParams& p, const std::string& id, int64_t created, const std::string& model, const Usage& usage) {
  ordered_json j;
  j["id"] = id;
  j["object"] = is_chat(p) ? "chat.completion.chunk" : "text_completion";
  j["created"] = created;
  j["model"] = model;
  j["choices"] = ordered_json::array();
  j["usage"] = usage_json(usage);
  return j;
}

std::string sse_event(const ordered_json& j) { return "data: " + j.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + "\n\n"; }

}  // namespace seekserve
