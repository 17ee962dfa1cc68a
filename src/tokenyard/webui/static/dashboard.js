/* The operations dashboard: workers, recent traffic and per-tenant usage, refreshed every few seconds.
 *
 * The page itself is public; every number comes from /admin/... JSON, which the gateway serves only
 * with the admin key (Authorization: Bearer). The key is kept for this tab (sessionStorage), or in
 * localStorage when "remember" is ticked.
 */
(function (global) {
  "use strict";

  const Api = global.TYApi;
  const Charts = global.TYCharts;
  const KEY_NAME = "tokenyard.admin-key";
  const $ = (id) => document.getElementById(id);
  const state = { key: "", timer: null, usage: [] };

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  function showError(text) {
    $("error").textContent = text || "";
  }

  // --- workers ----------------------------------------------------------------------------------

  function kvText(w) {
    if (w.kv_usage === null || w.kv_usage === undefined) return "–";
    return Math.round(w.kv_usage * 100) + "% (" + w.kv_blocks_used + "/" + w.kv_blocks_total + ")";
  }

  function drawWorkers(workers) {
    const sorted = workers.slice().sort((a, b) => a.models[0].localeCompare(b.models[0]) || a.worker_id.localeCompare(b.worker_id));
    const rows = sorted.map((w) =>
      row([
        cell(w.models.join(", ")),
        cell(w.worker_id + " · " + w.address),
        cell(w.state + (w.reason ? ": " + w.reason : ""), "state-" + w.state),
        cell(String(w.queue_length), "num"),
        cell(String(w.num_running), "num"),
        cell(String(w.num_waiting), "num"),
        cell(kvText(w), "num"),
        cell(typeof w.tokens_per_second === "number" ? w.tokens_per_second.toFixed(1) : "–", "num"),
        cell(w.last_heartbeat_age.toFixed(1) + " s ago", "num"),
      ])
    );
    if (!rows.length) rows.push(row([cell("No worker is registered with the controller.")]));
    $("workers").tBodies[0].replaceChildren(...rows);
  }

  // --- traffic ----------------------------------------------------------------------------------

  const seconds = (v) => (v >= 10 ? v.toFixed(0) : String(Number(v.toFixed(2))));

  function drawTraffic(series) {
    const points = (pick) => series.buckets.map((b) => [b.start + series.bucket_s, pick(b)]);
    const pct = (field, p) => points((b) => b[field][p]);
    Charts.lineChart($("chart-rate"), [{ points: points((b) => b.requests_per_s) }, { points: points((b) => b.errors / series.bucket_s) }], seconds);
    Charts.legend($("legend-rate"), ["requests", "errors"]);
    Charts.lineChart($("chart-latency"), ["p50", "p90", "p99"].map((p) => ({ points: pct("latency_s", p) })), seconds);
    Charts.legend($("legend-latency"), ["p50", "p90", "p99"]);
    Charts.lineChart($("chart-ttft"), ["p50", "p90", "p99"].map((p) => ({ points: pct("ttft_s", p) })), seconds);
    Charts.legend($("legend-ttft"), ["p50", "p90", "p99"]);
    const t = series.total;
    const p = (v) => (v === null ? "–" : seconds(v) + " s");
    $("totals").textContent =
      t.requests + " requests, " + t.errors + " errors; latency p50 " + p(t.latency_s.p50) + ", p99 " + p(t.latency_s.p99) +
      "; TTFT p50 " + p(t.ttft_s.p50) + ", p99 " + p(t.ttft_s.p99);
  }

  // --- usage ------------------------------------------------------------------------------------

  /** Exact sum of decimal strings (costs), to 9 places, as a string. */
  function addDecimals(values) {
    let total = 0n;
    for (const v of values) {
      const [whole, frac = ""] = String(v).replace(/^-/, "").split(".");
      const units = BigInt(whole || "0") * 1000000000n + BigInt((frac + "000000000").slice(0, 9));
      total += String(v).startsWith("-") ? -units : units;
    }
    const sign = total < 0n ? "-" : "";
    const abs = total < 0n ? -total : total;
    const frac = String(abs % 1000000000n).padStart(9, "0").replace(/0+$/, "");
    return sign + String(abs / 1000000000n) + (frac ? "." + frac : "");
  }

  function perTenant(lines) {
    const byTenant = new Map();
    for (const line of lines) {
      const t = byTenant.get(line.tenant) || { tenant: line.tenant, calls: 0, requests: 0, prompt_tokens: 0, completion_tokens: 0, costs: [] };
      t.calls += line.calls || 0;
      t.requests += line.requests || 0;
      t.prompt_tokens += line.prompt_tokens || 0;
      t.completion_tokens += line.completion_tokens || 0;
      t.costs.push(line.cost || "0");
      byTenant.set(line.tenant, t);
    }
    return [...byTenant.values()].map((t) => ({ ...t, cost: addDecimals(t.costs) })).sort((a, b) => a.tenant.localeCompare(b.tenant));
  }

  function drawUsage(rows) {
    state.usage = rows;
    Charts.barChart($("chart-usage"), rows.map((r) => ({ label: r.tenant, value: r.prompt_tokens + r.completion_tokens })), (v) => String(Math.round(v)));
    const body = rows.map((r) =>
      row([cell(r.tenant), cell(String(r.calls), "num"), cell(String(r.requests), "num"), cell(String(r.prompt_tokens), "num"), cell(String(r.completion_tokens), "num"), cell(r.cost, "num")])
    );
    if (!body.length) body.push(row([cell("No usage in this period.")]));
    $("usage").tBodies[0].replaceChildren(...body);
  }

  async function loadUsage() {
    const query = new URLSearchParams({ group_by: "day" });
    if ($("since").value) query.set("since", $("since").value);
    if ($("until").value) query.set("until", $("until").value);
    try {
      const answer = await Api.getJson("/admin/usage?" + query, state.key);
      drawUsage(perTenant(Array.isArray(answer) ? answer : answer.data || []));
      $("usage-cost").textContent = answer.currency ? "Cost (" + answer.currency + ")" : "Cost";
      $("usage-note").textContent = "Chart: prompt + completion tokens per tenant, " + ($("since").value || "…") + " to " + ($("until").value || "today") + ".";
    } catch (err) {
      if (err.status === 401) throw err;
      $("chart-usage").replaceChildren();
      $("usage").tBodies[0].replaceChildren();
      $("usage-note").textContent = err.status === 404 ? "Usage needs the metering API (GET /admin/usage), which this gateway does not serve." : err.message;
    }
  }

  function csvField(value) {
    let text = String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text; // a spreadsheet must not read a tenant name as a formula
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function downloadCsv() {
    const header = ["tenant", "calls", "requests", "prompt_tokens", "completion_tokens", "cost", "since", "until"];
    const lines = state.usage.map((r) => [r.tenant, r.calls, r.requests, r.prompt_tokens, r.completion_tokens, r.cost, $("since").value, $("until").value]);
    const text = [header, ...lines].map((l) => l.map(csvField).join(",")).join("\r\n") + "\r\n";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    link.download = "tokenyard-usage-" + ($("since").value || "all") + "-" + ($("until").value || "today") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  // --- refresh loop -----------------------------------------------------------------------------

  async function refresh() {
    try {
      const [workers, traffic] = await Promise.all([
        Api.getJson("/admin/workers", state.key),
        Api.getJson("/admin/requests?minutes=" + $("minutes").value + "&bucket_seconds=" + ($("minutes").value > 15 ? 60 : 10), state.key),
        loadUsage(),
      ]);
      drawWorkers(workers.data);
      drawTraffic(traffic);
      showError("");
      $("status").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
    } catch (err) {
      showError(err.status === 401 ? "The admin key was refused: " + err.message : err.message);
      if (err.status === 401 || err.status === 403) stopTimer();
    }
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  function connect() {
    stopTimer();
    state.key = $("admin-key").value.trim();
    global.sessionStorage.setItem(KEY_NAME, state.key);
    if ($("remember").checked) global.localStorage.setItem(KEY_NAME, state.key);
    else global.localStorage.removeItem(KEY_NAME);
    refresh();
    state.timer = setInterval(refresh, Number($("interval").value) * 1000);
  }

  function start() {
    const today = new Date();
    $("until").value = today.toISOString().slice(0, 10);
    $("since").value = new Date(today.getTime() - 6 * 86400000).toISOString().slice(0, 10);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      connect();
    });
    $("interval").addEventListener("change", () => state.key && connect());
    $("minutes").addEventListener("change", refresh);
    $("usage-refresh").addEventListener("click", () => loadUsage().catch((err) => showError(err.message)));
    $("usage-csv").addEventListener("click", downloadCsv);
    const saved = global.sessionStorage.getItem(KEY_NAME) || global.localStorage.getItem(KEY_NAME);
    if (saved) {
      $("admin-key").value = saved;
      $("remember").checked = Boolean(global.localStorage.getItem(KEY_NAME));
      connect();
    }
  }

  global.TYDashboard = { refresh, addDecimals, csvField, perTenant };
  start();
})(window);
