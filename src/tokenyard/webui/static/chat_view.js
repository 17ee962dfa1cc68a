/* Drawing the chat page: the message thread and the conversation list.
 *
 * Every piece of text (the user's, the model's, imported files') enters the page through
 * textContent or the safe Markdown renderer; nothing here builds HTML from strings.
 */
(function (global) {
  "use strict";

  const C = global.TYConversations;
  let emptyNode = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function button(label, title, onClick, className) {
    const node = el("button", className || "small", label);
    node.type = "button";
    node.title = title;
    node.setAttribute("aria-label", title);
    node.addEventListener("click", onClick);
    return node;
  }

  /** "42 tokens · TTFT 120 ms · 35.2 tok/s", from a reply's measured stats. */
  function statsText(stats) {
    if (!stats) return "";
    const parts = [];
    if (typeof stats.tokens === "number") parts.push(stats.tokens + (stats.tokens === 1 ? " token" : " tokens"));
    if (typeof stats.ttftMs === "number") parts.push("TTFT " + Math.round(stats.ttftMs) + " ms");
    if (typeof stats.tokensPerSecond === "number") parts.push(stats.tokensPerSecond.toFixed(1) + " tok/s");
    if (stats.stopped) parts.push("stopped");
    else if (stats.finishReason === "length") parts.push("cut at max tokens");
    else if (stats.finishReason === "content_filter") parts.push("stopped by the content filter");
    return parts.join(" · ");
  }

  function fillBody(body, node) {
    if (node.role === "assistant") global.TYMarkdown.renderInto(body, node.content);
    else body.textContent = node.content;
  }

  function siblingNav(conv, node, actions) {
    const all = C.siblings(conv, node);
    if (all.length < 2) return null;
    const index = all.indexOf(node);
    const nav = el("span", "branch-nav");
    const prev = button("‹", "Previous version", () => actions.showBranch(all[index - 1].id));
    const next = button("›", "Next version", () => actions.showBranch(all[index + 1].id));
    prev.disabled = index === 0;
    next.disabled = index === all.length - 1;
    nav.append(prev, el("span", "branch-count", index + 1 + "/" + all.length), next);
    return nav;
  }

  function messageActions(conv, node, actions, busy) {
    const bar = el("div", "msg-actions");
    const nav = siblingNav(conv, node, actions);
    if (nav) bar.appendChild(nav);
    bar.appendChild(button("Copy", "Copy this message", () => actions.copy(node)));
    if (node.role === "user") {
      const edit = button("Edit", "Edit and branch from here", () => actions.edit(node));
      edit.disabled = busy;
      bar.appendChild(edit);
    } else {
      const again = button("Regenerate", "Regenerate this reply", () => actions.regenerate(node));
      again.disabled = busy;
      const up = button("▲", "Good reply (thumbs up)", () => actions.vote(node, "up"), node.vote === "up" ? "small voted" : "small");
      const down = button("▼", "Bad reply (thumbs down)", () => actions.vote(node, "down"), node.vote === "down" ? "small voted" : "small");
      up.setAttribute("aria-pressed", String(node.vote === "up"));
      down.setAttribute("aria-pressed", String(node.vote === "down"));
      bar.append(again, up, down);
    }
    return bar;
  }

  function message(conv, node, actions, streamingId) {
    const article = el("article", "msg msg-" + node.role);
    article.dataset.id = node.id;
    article.appendChild(el("div", "msg-role", node.role === "user" ? "You" : "Assistant"));
    const body = el("div", node.role === "assistant" ? "msg-body markdown" : "msg-body plain");
    fillBody(body, node);
    article.appendChild(body);
    const error = el("div", "msg-error", node.error || "");
    error.setAttribute("role", "alert");
    error.hidden = !node.error;
    article.appendChild(error);
    article.appendChild(el("div", "msg-stats", statsText(node.stats)));
    if (node.id === streamingId) article.classList.add("streaming");
    else article.appendChild(messageActions(conv, node, actions, streamingId !== null));
    return article;
  }

  /** Redraw the whole thread of `conv` (the branch ending at its leaf). */
  function renderThread(container, conv, actions, streamingId) {
    const nodes = conv ? C.path(conv) : [];
    const items = nodes.map((node) => message(conv, node, actions, streamingId));
    // The placeholder leaves the page while there are messages; keep it to put it back.
    emptyNode = emptyNode || container.querySelector("#empty");
    container.replaceChildren(...(items.length ? items : [emptyNode]));
  }

  /** Update just the streaming reply: its text, stats and error, without touching the rest. */
  function updateMessage(container, node) {
    const article = container.querySelector('article[data-id="' + node.id + '"]');
    if (!article) return;
    fillBody(article.querySelector(".msg-body"), node);
    article.querySelector(".msg-stats").textContent = statsText(node.stats);
    const error = article.querySelector(".msg-error");
    error.textContent = node.error || "";
    error.hidden = !node.error;
  }

  /** Replace a user message's text with an editor; `save(text)` branches, Esc or Cancel restores. */
  function openEditor(container, node, save, cancel) {
    const article = container.querySelector('article[data-id="' + node.id + '"]');
    const body = article.querySelector(".msg-body");
    const editor = el("textarea", "editor");
    editor.value = node.content;
    editor.rows = Math.min(12, Math.max(2, node.content.split("\n").length));
    const bar = el("div", "msg-actions");
    bar.append(button("Save & send", "Send the edited message as a new branch", () => save(editor.value), "small primary"));
    bar.append(button("Cancel", "Keep the message as it was", cancel));
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Escape") cancel();
      else if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        save(editor.value);
      }
    });
    body.replaceChildren(editor);
    const actionsBar = article.querySelector(".msg-actions");
    if (actionsBar) actionsBar.replaceWith(bar);
    editor.focus();
  }

  function renderList(list, conversations, currentId, query, actions) {
    const shown = conversations.filter((c) => C.matches(c, query)).sort((a, b) => b.updated - a.updated);
    const items = shown.map((conv) => {
      const item = el("li", conv.id === currentId ? "current" : "");
      item.dataset.id = conv.id;
      const open = el("button", "conversation-title", conv.title || "New chat");
      open.type = "button";
      open.title = conv.title || "New chat";
      open.addEventListener("click", () => actions.open(conv.id));
      item.append(open, button("✕", "Delete this conversation", () => actions.remove(conv.id), "small icon"));
      return item;
    });
    if (!items.length) items.push(el("li", "empty", query ? "No conversation matches." : "No conversations yet."));
    list.replaceChildren(...items);
  }

  global.TYChatView = { renderThread, updateMessage, openEditor, renderList, statsText };
})(window);
