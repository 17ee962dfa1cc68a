/* Conversations kept in the browser (localStorage), as trees so that edits and regenerations branch.
 *
 * A conversation holds its messages as a flat list of nodes, each naming its parent; `leaf` is the
 * message at the end of the branch on screen. Editing a message or regenerating a reply adds a
 * sibling node and moves `leaf` to it, so earlier branches stay one click away.
 * Export and import use one JSON shape: {"format": "tokenyard-conversations", "version": 1,
 * "conversations": [...]}; imports are validated field by field and never trusted as markup.
 */
(function (global) {
  "use strict";

  const STORAGE_KEY = "tokenyard.conversations.v1";
  const FORMAT = "tokenyard-conversations";
  const ROLES = ["user", "assistant"];

  function newId(prefix) {
    const bytes = new Uint8Array(8);
    global.crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function create(model, system) {
    const now = Date.now();
    return { id: newId("c-"), title: "", created: now, updated: now, model: model || "", system: system || "", messages: [], leaf: null };
  }

  function find(conv, id) {
    return conv.messages.find((m) => m.id === id) || null;
  }

  /** The messages from the root to `leafId` (default: the conversation's leaf). */
  function path(conv, leafId) {
    const out = [];
    let node = find(conv, leafId === undefined ? conv.leaf : leafId);
    while (node && out.length <= conv.messages.length) { // bounded: an imported parent cycle ends here
      out.push(node);
      node = node.parent ? find(conv, node.parent) : null;
    }
    return out.reverse();
  }

  function siblings(conv, node) {
    return conv.messages.filter((m) => m.parent === node.parent && m.role === node.role);
  }

  /** Show the branch through `nodeId`: follow the newest child at each step down to a leaf. */
  function selectBranch(conv, nodeId) {
    let node = find(conv, nodeId);
    for (;;) {
      const children = conv.messages.filter((m) => m.parent === node.id);
      if (!children.length) break;
      node = children[children.length - 1];
    }
    conv.leaf = node.id;
  }

  function add(conv, parentId, role, content) {
    const node = { id: newId("m-"), parent: parentId, role, content, created: Date.now() };
    conv.messages.push(node);
    conv.leaf = node.id;
    conv.updated = node.created;
    if (!conv.title && role === "user") conv.title = content.trim().split("\n")[0].slice(0, 80);
    return node;
  }

  function matches(conv, query) {
    const q = query.trim().toLowerCase();
    if (!q) return true;
    return conv.title.toLowerCase().includes(q) || conv.messages.some((m) => m.content.toLowerCase().includes(q));
  }

  // --- persistence ------------------------------------------------------------------------------

  function loadAll() {
    try {
      const parsed = JSON.parse(global.localStorage.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(parsed) ? parsed.map(validate).filter(Boolean) : [];
    } catch (_err) {
      return [];
    }
  }

  function saveAll(conversations) {
    try {
      global.localStorage.setItem(STORAGE_KEY, JSON.stringify(conversations));
      return null;
    } catch (err) {
      return "Could not save conversations in this browser: " + err.message;
    }
  }

  // --- import and export ------------------------------------------------------------------------

  function exportJson(conversations) {
    return JSON.stringify({ format: FORMAT, version: 1, exported: new Date().toISOString(), conversations }, null, 2);
  }

  const str = (value, fallback) => (typeof value === "string" ? value : fallback);
  const num = (value, fallback) => (typeof value === "number" && Number.isFinite(value) ? value : fallback);

  function validateMessage(raw) {
    if (!raw || typeof raw !== "object" || !ROLES.includes(raw.role) || typeof raw.content !== "string") return null;
    if (typeof raw.id !== "string" || !raw.id) return null;
    const node = { id: raw.id, parent: typeof raw.parent === "string" ? raw.parent : null, role: raw.role, content: raw.content, created: num(raw.created, 0) };
    if (raw.stats && typeof raw.stats === "object") {
      node.stats = {};
      for (const key of ["tokens", "promptTokens", "ttftMs", "tokensPerSecond", "totalMs"]) {
        if (typeof raw.stats[key] === "number") node.stats[key] = raw.stats[key];
      }
      for (const key of ["finishReason", "requestId", "responseId", "model"]) {
        if (typeof raw.stats[key] === "string") node.stats[key] = raw.stats[key];
      }
      if (raw.stats.stopped === true) node.stats.stopped = true;
    }
    if (raw.vote === "up" || raw.vote === "down") node.vote = raw.vote;
    if (typeof raw.error === "string") node.error = raw.error;
    return node;
  }

  /** A clean copy of `raw` if it is a conversation, else null. */
  function validate(raw) {
    if (!raw || typeof raw !== "object" || !Array.isArray(raw.messages) || typeof raw.id !== "string") return null;
    const messages = raw.messages.map(validateMessage);
    if (messages.some((m) => m === null)) return null;
    const ids = new Set(messages.map((m) => m.id));
    if (ids.size !== messages.length || messages.some((m) => m.parent !== null && !ids.has(m.parent))) return null;
    const conv = {
      id: raw.id,
      title: str(raw.title, ""),
      created: num(raw.created, Date.now()),
      updated: num(raw.updated, Date.now()),
      model: str(raw.model, ""),
      system: str(raw.system, ""),
      messages,
      leaf: typeof raw.leaf === "string" && ids.has(raw.leaf) ? raw.leaf : messages.length ? messages[messages.length - 1].id : null,
    };
    if (path(conv).length > messages.length) return null; // a parent cycle
    return conv;
  }

  /** Parse an export (or one conversation, or a list); returns {conversations, skipped} or throws. */
  function parseImport(text) {
    const data = JSON.parse(text);
    let items;
    if (Array.isArray(data)) items = data;
    else if (data && data.format === FORMAT && Array.isArray(data.conversations)) items = data.conversations;
    else if (data && Array.isArray(data.messages)) items = [data];
    else throw new Error("this file is not a tokenyard conversation export");
    const conversations = items.map(validate).filter(Boolean);
    return { conversations, skipped: items.length - conversations.length };
  }

  /** Add imported conversations to `existing`; one whose id is taken gets a new id (nothing is overwritten). */
  function merge(existing, imported) {
    const taken = new Set(existing.map((c) => c.id));
    for (const conv of imported) {
      if (taken.has(conv.id)) conv.id = newId("c-");
      taken.add(conv.id);
      existing.push(conv);
    }
    return existing;
  }

  global.TYConversations = { create, find, path, siblings, selectBranch, add, matches, loadAll, saveAll, exportJson, parseImport, merge, validate };
})(window);
