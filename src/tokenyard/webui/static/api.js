/* The gateway's OpenAI API as the pages use it: JSON calls, streamed chat, and errors in words.
 *
 * Keys travel only in the Authorization header (never in a URL). Every failure, whether an HTTP
 * status with OpenAI's {"error": {...}} body, an error event inside a stream, or a network
 * failure, becomes an ApiError whose `message` is a sentence a person can act on.
 */
(function (global) {
  "use strict";

  class ApiError extends Error {
    constructor(message, status, code, retryAfter) {
      super(message);
      this.status = status || 0;
      this.code = code || null;
      this.retryAfter = retryAfter || null;
    }
  }

  function seconds(retryAfter) {
    return retryAfter ? " Try again in " + retryAfter + " s." : "";
  }

  /** One sentence for an OpenAI error body, its status and the Retry-After header. */
  function describe(status, error, retryAfter) {
    const detail = (error && error.message) || "";
    const code = (error && error.code) || null;
    const type = (error && error.type) || null;
    let words;
    if (status === 401) words = "Invalid or missing API key. Check the key in Settings. (" + detail + ")";
    else if (status === 403) words = "Access denied: " + detail;
    else if (code === "quota_exceeded") words = "Quota used up for this period: " + detail;
    else if (status === 429) words = "Too many requests: rate limited or every worker busy." + seconds(retryAfter) + " (" + detail + ")";
    else if (code === "content_filtered") words = "Blocked by the content filter: " + detail;
    else if (code === "content_filter") words = "The reply was stopped by the content filter.";
    else if (code === "model_loading") words = "The model is still loading." + seconds(retryAfter) + " (" + detail + ")";
    else if (status === 503) words = "No worker is available for this model right now. (" + detail + ")";
    else if (code === "logs_disabled") words = detail;
    else if (status === 404) words = "Model not found, or this key may not use it. (" + detail + ")";
    else if (code === "context_length_exceeded") words = "The conversation is too long for this model: " + detail;
    else if (code === "timeout" || status === 504) words = "The request took too long and was stopped: " + detail;
    else if (status >= 500) words = "The server failed while answering: " + (detail || "status " + status);
    else words = detail || "The request failed with status " + status + (type ? " (" + type + ")" : "") + ".";
    return new ApiError(words, status, code, retryAfter);
  }

  function headers(apiKey) {
    const out = { "Content-Type": "application/json" };
    if (apiKey) out.Authorization = "Bearer " + apiKey;
    return out;
  }

  async function failure(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_err) {
      body = null;
    }
    const error = body && body.error ? body.error : { message: response.statusText || "" };
    return describe(response.status, error, response.headers.get("Retry-After"));
  }

  async function send(path, apiKey, options) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: headers(apiKey), credentials: "omit", cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError("Could not reach the server: " + err.message, 0, "network_error");
    }
    if (!response.ok) throw await failure(response);
    return response;
  }

  async function getJson(path, apiKey) {
    return (await send(path, apiKey, { method: "GET" })).json();
  }

  async function postJson(path, apiKey, body) {
    return (await send(path, apiKey, { method: "POST", body: JSON.stringify(body) })).json();
  }

  /** Yields each parsed `data:` event of a server-sent event stream until [DONE]. */
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      if (done) return;
    }
  }

  /**
   * Stream one chat completion. `onDelta(text)` gets each piece of content as it arrives.
   * Resolves to {usage, finishReason, responseId, requestId}; rejects with ApiError, or an
   * AbortError when `signal` aborts (which closes the connection: the server stops generating).
   */
  async function streamChat(body, apiKey, signal, onDelta) {
    const response = await send("/v1/chat/completions", apiKey, {
      method: "POST",
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
    const result = { usage: null, finishReason: null, responseId: null, requestId: response.headers.get("X-Request-ID") };
    for await (const event of events(response)) {
      if (event.error) throw describe(0, event.error, null); // mid-stream: no status, the code says what happened
      if (event.id) result.responseId = event.id;
      if (event.usage) result.usage = event.usage;
      const choice = event.choices && event.choices[0];
      if (!choice) continue;
      if (choice.delta && typeof choice.delta.content === "string" && choice.delta.content) onDelta(choice.delta.content);
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
    return result;
  }

  global.TYApi = { ApiError, describe, getJson, postJson, streamChat };
})(window);
