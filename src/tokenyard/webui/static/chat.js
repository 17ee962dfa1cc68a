/* The chat page: settings, sending, streaming, stopping, branching, votes, import and export.
 *
 * Per reply it measures time to first token (from sending to the first content chunk), tokens
 * (the server's usage count, else the number of content chunks) and tokens per second over the
 * decode (tokens after the first, divided by the time since the first). Stop aborts the fetch;
 * the closed connection makes the gateway abort the generation on its worker.
 */
(function (global) {
  "use strict";

  const C = global.TYConversations;
  const V = global.TYChatView;
  const Api = global.TYApi;
  const SETTINGS_KEY = "tokenyard.settings.v1";
  const $ = (id) => document.getElementById(id);

  const state = { conversations: [], currentId: null, query: "", streaming: null, composing: false, settings: {} };

  function current() {
    return state.conversations.find((c) => c.id === state.currentId) || null;
  }

  function notice(text, target) {
    const node = target || $("notice");
    node.textContent = text || "";
    node.hidden = !text;
  }

  // --- settings ---------------------------------------------------------------------------------

  const FIELDS = { apiKey: "api-key", system: "system", temperature: "temperature", topP: "top-p", maxTokens: "max-tokens" };

  function loadSettings() {
    try {
      state.settings = JSON.parse(global.localStorage.getItem(SETTINGS_KEY) || "{}") || {};
    } catch (_err) {
      state.settings = {};
    }
    for (const [key, id] of Object.entries(FIELDS)) {
      if (typeof state.settings[key] === "string") $(id).value = state.settings[key];
    }
  }

  function saveSettings() {
    for (const [key, id] of Object.entries(FIELDS)) state.settings[key] = $(id).value;
    state.settings.model = $("model").value || state.settings.model || "";
    global.localStorage.setItem(SETTINGS_KEY, JSON.stringify(state.settings));
  }

  function numberSetting(id) {
    const value = $(id).value.trim();
    return value === "" ? undefined : Number(value);
  }

  async function loadModels() {
    const select = $("model");
    try {
      const listing = await Api.getJson("/v1/models", $("api-key").value.trim());
      const chat = listing.data.filter((m) => m.kind !== "embed").map((m) => m.id);
      select.replaceChildren(...chat.map((id) => new Option(id, id)));
      if (chat.includes(state.settings.model)) select.value = state.settings.model;
      notice(chat.length ? "" : "No chat model is being served right now.");
    } catch (err) {
      select.replaceChildren();
      notice(err.message);
    }
  }

  // --- drawing ----------------------------------------------------------------------------------

  const actions = {
    open: (id) => {
      state.currentId = id;
      document.body.classList.remove("sidebar-open");
      redraw();
    },
    remove: (id) => {
      if (state.streaming && state.streaming.convId === id) return;
      state.conversations = state.conversations.filter((c) => c.id !== id);
      if (state.currentId === id) state.currentId = null;
      persist();
      redraw();
    },
    showBranch: (id) => {
      C.selectBranch(current(), id);
      persist();
      redraw();
    },
    copy: (node) => copyText(node.content),
    edit: (node) => {
      V.openEditor($("messages"), node, (text) => {
        if (text.trim()) generate(current(), C.add(current(), node.parent, "user", text).id);
      }, redraw);
    },
    regenerate: (node) => generate(current(), node.parent),
    vote: (node, direction) => vote(node, direction),
  };

  function redraw() {
    const streamingId = state.streaming ? state.streaming.nodeId : null;
    V.renderThread($("messages"), current(), actions, streamingId);
    V.renderList($("conversation-list"), state.conversations, state.currentId, state.query, actions);
    $("send").hidden = state.streaming !== null;
    $("stop").hidden = state.streaming === null;
  }

  function scrollToEnd() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  function persist() {
    const problem = C.saveAll(state.conversations);
    if (problem) notice(problem);
  }

  // --- generation -------------------------------------------------------------------------------

  function requestBody(conv, parentId, model) {
    const system = $("system").value.trim();
    conv.system = system;
    const history = C.path(conv, parentId).filter((m) => !(m.role === "assistant" && m.error && !m.content));
    const messages = history.map((m) => ({ role: m.role, content: m.content }));
    if (system) messages.unshift({ role: "system", content: system });
    return { model, messages, temperature: numberSetting("temperature"), top_p: numberSetting("top-p"), max_tokens: numberSetting("max-tokens") };
  }

  async function generate(conv, parentId) {
    const model = $("model").value;
    if (!model) return notice("Pick a model first (none is listed: check the API key in Settings).");
    conv.model = model;
    const reply = C.add(conv, parentId, "assistant", "");
    const controller = new AbortController();
    state.streaming = { controller, nodeId: reply.id, convId: conv.id };
    notice("");
    redraw();
    scrollToEnd();
    const started = performance.now();
    let first = null;
    let chunks = 0;
    const onDelta = (text) => {
      const now = performance.now();
      if (first === null) first = now;
      chunks += 1;
      reply.content += text;
      reply.stats = measure(started, first, now, chunks);
      V.updateMessage($("messages"), reply);
      scrollToEnd();
    };
    try {
      const result = await Api.streamChat(requestBody(conv, parentId, model), $("api-key").value.trim(), controller.signal, onDelta);
      const tokens = result.usage ? result.usage.completion_tokens : chunks;
      reply.stats = { ...measure(started, first, performance.now(), tokens), finishReason: result.finishReason || "", model };
      if (result.usage) reply.stats.promptTokens = result.usage.prompt_tokens;
      if (result.requestId) reply.stats.requestId = result.requestId;
      if (result.responseId) reply.stats.responseId = result.responseId;
    } catch (err) {
      reply.stats = { ...measure(started, first, performance.now(), chunks), model };
      if (err.name === "AbortError") reply.stats.stopped = true;
      else reply.error = err.message || String(err);
    } finally {
      state.streaming = null;
      conv.updated = Date.now();
      persist();
      redraw();
      scrollToEnd();
    }
  }

  function measure(started, first, now, tokens) {
    const stats = { tokens, totalMs: now - started };
    if (first === null) return stats;
    stats.ttftMs = first - started;
    const decodeSeconds = (now - first) / 1000;
    if (tokens > 1 && decodeSeconds > 0) stats.tokensPerSecond = (tokens - 1) / decodeSeconds;
    return stats;
  }

  function stop() {
    if (state.streaming) state.streaming.controller.abort();
  }

  function send() {
    const input = $("input");
    const text = input.value;
    if (state.streaming || !text.trim()) return;
    let conv = current();
    if (!conv) {
      conv = C.create($("model").value, $("system").value.trim());
      state.conversations.push(conv);
      state.currentId = conv.id;
    }
    input.value = "";
    const user = C.add(conv, conv.leaf, "user", text);
    generate(conv, user.id);
  }

  // --- votes, copy, import and export -------------------------------------------------------------

  function vote(node, direction) {
    node.vote = node.vote === direction ? undefined : direction;
    persist();
    redraw();
    global.TYVotes.record(node, $("api-key").value.trim()).then((problem) => notice(problem || ""));
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      notice("Copied.");
    } catch (_err) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      notice(ok ? "Copied." : "Could not copy: the browser refused access to the clipboard.");
    }
  }

  function exportAll() {
    const blob = new Blob([C.exportJson(state.conversations)], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "tokenyard-conversations-" + new Date().toISOString().slice(0, 10) + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  async function importFile(file) {
    const where = $("sidebar-notice");
    try {
      const { conversations, skipped } = C.parseImport(await file.text());
      C.merge(state.conversations, conversations);
      persist();
      redraw();
      notice("Imported " + conversations.length + " conversation(s)" + (skipped ? "; skipped " + skipped + " that were not valid." : "."), where);
    } catch (err) {
      notice("Could not import " + file.name + ": " + err.message, where);
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  function onComposerKey(event) {
    // An Enter that confirms an IME candidate (Chinese, Japanese...) must not send the message.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || state.composing || event.keyCode === 229) return;
    event.preventDefault();
    send();
  }

  function wire() {
    const input = $("input");
    input.addEventListener("keydown", onComposerKey);
    input.addEventListener("compositionstart", () => (state.composing = true));
    input.addEventListener("compositionend", () => setTimeout(() => (state.composing = false), 0));
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    $("stop").addEventListener("click", stop);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && state.streaming) {
        event.preventDefault();
        stop();
      }
    });
    $("new-chat").addEventListener("click", () => actions.open(null));
    $("search").addEventListener("input", (event) => {
      state.query = event.target.value;
      redraw();
    });
    $("export").addEventListener("click", exportAll);
    $("import-file").addEventListener("change", (event) => {
      if (event.target.files.length) importFile(event.target.files[0]).finally(() => (event.target.value = ""));
    });
    $("toggle-settings").addEventListener("click", () => {
      const panel = $("settings");
      panel.hidden = !panel.hidden;
      $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
    });
    $("open-sidebar").addEventListener("click", () => document.body.classList.add("sidebar-open"));
    $("close-sidebar").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
    for (const id of Object.values(FIELDS)) $(id).addEventListener("change", saveSettings);
    $("api-key").addEventListener("change", loadModels);
    $("model").addEventListener("change", saveSettings);
  }

  function start() {
    loadSettings();
    state.conversations = C.loadAll();
    const latest = state.conversations.slice().sort((a, b) => b.updated - a.updated)[0];
    state.currentId = latest ? latest.id : null;
    wire();
    redraw();
    loadModels();
    $("input").focus();
  }

  global.TYChat = { state, stop, send };
  start();
})(window);
