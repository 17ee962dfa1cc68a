/* A small, safe Markdown renderer for model replies.
 *
 * Safety by construction: text only ever reaches the page through `textContent` and element
 * names from a fixed list; no string is parsed as HTML (no innerHTML anywhere), so `<script>` or
 * `<img onerror=...>` in a reply is shown as the characters it is. Links keep only http(s) and
 * mailto targets, and images are shown as links (nothing is loaded from a reply).
 *
 * Covers what chat models write: paragraphs with line breaks, headings, fenced and inline code,
 * bold, italic, strike-through, links, block quotes, nested lists, tables and rules. An unclosed
 * code fence (a reply still streaming) renders as code up to the end.
 */
(function (global) {
  "use strict";

  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const TABLE_SEPARATOR = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
  const SAFE_PROTOCOLS = ["http:", "https:", "mailto:"];

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function safeHref(raw) {
    try {
      const url = new URL(raw, global.location.href);
      return SAFE_PROTOCOLS.includes(url.protocol) ? url.href : null;
    } catch (_err) {
      return null;
    }
  }

  /** A link to a safe target, else its label as plain text. `plainLabel`: the label is a bare URL,
   * not parsed again (it would match itself as a link for ever). */
  function link(label, href, plainLabel) {
    const target = safeHref(href);
    if (target === null) return document.createTextNode(label);
    const a = el("a", plainLabel ? label : null);
    a.href = target;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    if (!plainLabel) appendInline(a, label);
    return a;
  }

  // Inline spans, tried in order at each special character; sticky (/y), so matched in place.
  const INLINE_RULES = [
    [/(`+)([\s\S]*?[^`])\1(?!`)/y, (m) => el("code", m[2].trim() === "" ? m[2] : m[2].replace(/^ | $/g, ""))],
    [/!\[([^\]]*)\]\(\s*<?((?:[^()\s>]|\([^()\s]*\))+)>?(?:\s+"[^"]*")?\s*\)/y, (m) => link(m[1] || m[2], m[2], !m[1])],
    [/\[([^\]]+)\]\(\s*<?((?:[^()\s>]|\([^()\s]*\))+)>?(?:\s+"[^"]*")?\s*\)/y, (m) => link(m[1], m[2])],
    [/<?(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])>?/y, (m) => link(m[1], m[1], true)],
    [/(\*\*|__)(?=\S)([\s\S]*?\S)\1/y, (m) => wrap("strong", m[2])],
    [/~~(?=\S)([\s\S]*?\S)~~/y, (m) => wrap("del", m[1])],
    [/\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/y, (m) => wrap("em", m[1])],
    [/_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/y, (m) => wrap("em", m[1])],
  ];
  const INLINE_START = /[`!\[h<*_~\n\\]/;

  function wrap(tag, inner) {
    const node = el(tag, null);
    appendInline(node, inner);
    return node;
  }

  function appendInline(parent, text) {
    let plain = "";
    const flush = () => {
      if (plain) parent.appendChild(document.createTextNode(plain));
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (!INLINE_START.test(ch)) {
        plain += ch;
        i += 1;
        continue;
      }
      if (ch === "\n") {
        flush();
        parent.appendChild(el("br"));
        i += 1;
        continue;
      }
      if (ch === "\\" && i + 1 < text.length && /[\\`*_{}\[\]()#+\-.!<>~|]/.test(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      const atWordStart = i === 0 || !/\w/.test(text[i - 1]);
      let matched = false;
      for (const [pattern, build] of INLINE_RULES) {
        if (ch === "_" && !atWordStart) break;
        pattern.lastIndex = i;
        const m = pattern.exec(text);
        if (m) {
          flush();
          parent.appendChild(build(m));
          i += m[0].length;
          matched = true;
          break;
        }
      }
      if (!matched) {
        plain += ch;
        i += 1;
      }
    }
    flush();
  }

  function codeBlock(lines, language) {
    const pre = el("pre", null, "code-block");
    const code = el("code", lines.join("\n"));
    if (language) {
      code.className = "language-" + language;
      pre.dataset.language = language;
    }
    pre.appendChild(code);
    return pre;
  }

  function splitRow(line) {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  function table(header, rows) {
    const node = el("table");
    const head = el("thead");
    const tr = el("tr");
    for (const cell of splitRow(header)) tr.appendChild(wrap("th", cell));
    head.appendChild(tr);
    node.appendChild(head);
    const body = el("tbody");
    for (const row of rows) {
      const line = el("tr");
      for (const cell of splitRow(row)) line.appendChild(wrap("td", cell));
      body.appendChild(line);
    }
    node.appendChild(body);
    const scroller = el("div", null, "table-scroll");
    scroller.appendChild(node);
    return scroller;
  }

  function list(lines, start) {
    const first = ITEM.exec(lines[start]);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    let i = start;
    while (i < lines.length) {
      const m = ITEM.exec(lines[i]);
      if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
      const body = [m[3]];
      i += 1;
      while (i < lines.length) {
        const next = lines[i];
        const nested = ITEM.exec(next);
        if (next.trim() === "") {
          const after = lines[i + 1];
          if (after === undefined || !/^\s+/.test(after) || leading(after) <= indent) break;
        } else if (nested && nested[1].length <= indent) break;
        else if (!nested && leading(next) <= indent && isBlockStart(next)) break;
        body.push(next.slice(Math.min(leading(next), indent + 2)));
        i += 1;
      }
      const item = el("li");
      const inner = blocks(body);
      if (inner.firstChild && inner.firstChild.tagName === "P") {
        // A tight list item: its first paragraph's text sits directly in the <li>.
        const para = inner.firstChild;
        para.remove();
        while (para.firstChild) item.appendChild(para.firstChild);
      }
      item.appendChild(inner);
      node.appendChild(item);
    }
    return [node, i];
  }

  function leading(line) {
    return line.length - line.trimStart().length;
  }

  function isBlockStart(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  function blocks(lines) {
    const out = document.createDocumentFragment();
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (line.trim() === "") {
        i += 1;
      } else if ((m = FENCE.exec(line))) {
        const fence = m[1];
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
        i += 1;
        out.appendChild(codeBlock(body, m[2]));
      } else if ((m = HEADING.exec(line))) {
        out.appendChild(wrap("h" + m[1].length, m[2]));
        i += 1;
      } else if (RULE.test(line)) {
        out.appendChild(el("hr"));
        i += 1;
      } else if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          body.push(m[1]);
          i += 1;
        }
        const quote = el("blockquote");
        quote.appendChild(blocks(body));
        out.appendChild(quote);
      } else if (ITEM.test(line)) {
        const [node, next] = list(lines, i);
        out.appendChild(node);
        i = next;
      } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEPARATOR.test(lines[i + 1]) && lines[i + 1].includes("-")) {
        const rows = [];
        let j = i + 2;
        while (j < lines.length && lines[j].includes("|") && lines[j].trim() !== "") rows.push(lines[j++]);
        out.appendChild(table(line, rows));
        i = j;
      } else {
        const para = [];
        while (i < lines.length && lines[i].trim() !== "" && (para.length === 0 || !isBlockStart(lines[i]))) {
          para.push(lines[i]);
          i += 1;
        }
        out.appendChild(wrap("p", para.join("\n")));
      }
    }
    return out;
  }

  /** A DocumentFragment for `text`: safe to append anywhere. */
  function render(text) {
    return blocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
  }

  /** Replace `target`'s children with the rendering of `text`. */
  function renderInto(target, text) {
    target.replaceChildren(render(text));
  }

  global.TYMarkdown = { render, renderInto, safeHref };
})(window);
