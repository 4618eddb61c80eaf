// Apogee console page: polls the console's JSON API (docs/console-api.yaml) and renders
// tables and SVG charts. No library, no asset from outside the console.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90; // chart samples kept (3 minutes at POLL_MS)
const SYSTEM_SUFFIXES = ["_REPLY_TOPIC"];
const SYSTEM_PREFIXES = ["%RETRY%", "%DLQ%", "RMQ_SYS_", "rmq_sys_", "SCHEDULE_TOPIC_XXXX",
  "TBW102", "SELF_TEST_TOPIC", "BenchmarkTest", "OFFSET_MOVED_EVENT", "TRANS_CHECK_MAX_TIME_TOPIC"];

const state = {
  samples: [],        // {t, put, get, lag}
  brokerNames: new Set(),
  openGroup: null,
  openTopic: null,
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function num(v) { return el("td", { class: "num" }, v); }

function fmtTime(ms) {
  return ms > 0 ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "-";
}

async function api(path, options) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

function fillBody(table, rows) {
  const tbody = document.querySelector(`#${table} tbody`);
  tbody.replaceChildren(...rows);
}

// ---- overview ----

function roles(brokers) {
  const groups = new Map();
  for (const b of brokers) {
    if (!groups.has(b.broker_name)) groups.set(b.broker_name, []);
    groups.get(b.broker_name).push(b.broker_id);
  }
  return (b) => {
    if (b.broker_id === 0) return "master";
    const ids = groups.get(b.broker_name);
    if (!ids.includes(0) && Math.min(...ids) === b.broker_id) return "acting master";
    return "slave";
  };
}

function renderBrokers(brokers, rates) {
  const role = roles(brokers);
  fillBody("brokers", brokers.map((b) => {
    const r = rates.get(b.addr) || { put: 0, get: 0 };
    return el("tr", { "data-broker": b.addr },
      el("td", {}, b.cluster), el("td", {}, b.broker_name), num(b.broker_id),
      el("td", { class: "role" }, role(b)), el("td", {}, b.addr), el("td", {}, b.version),
      num(r.put.toFixed(1)), num(r.get.toFixed(1)),
      num(b.msg_put_total_today), num(b.msg_get_total_today));
  }));
}

function drawChart(id, series, classes) {
  const svg = document.getElementById(id);
  const w = 600, h = 200, pad = 20;
  const max = Math.max(1, ...series.flat());
  const n = Math.max(2, HISTORY);
  const parts = series.map((values, i) => {
    const pts = values.map((v, j) => {
      const x = pad + (w - 2 * pad) * (j + (n - values.length)) / (n - 1);
      const y = h - pad - (h - 2 * pad) * v / max;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    return `<polyline class="${classes[i]}" points="${pts}"/>`;
  });
  svg.innerHTML = `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#ccc"/>` +
    `<text x="${pad}" y="12">${max.toFixed(0)}</text><text x="${pad}" y="${h - 5}">0</text>` + parts.join("");
}

let lastTotals = null;

async function pollOverview() {
  const [brokers, groups] = await Promise.all([api("/api/cluster"), api("/api/groups")]);
  const now = Date.now();
  const totals = new Map(brokers.map((b) => [b.addr, {
    put: Number(b.msg_put_total_today) || 0, get: Number(b.msg_get_total_today) || 0 }]));
  const rates = new Map();
  let put = 0, get = 0;
  if (lastTotals) {
    const dt = Math.max(0.001, (now - lastTotals.t) / 1000);
    for (const [addr, v] of totals) {
      const prev = lastTotals.map.get(addr);
      if (!prev) continue;
      const r = { put: Math.max(0, v.put - prev.put) / dt, get: Math.max(0, v.get - prev.get) / dt };
      rates.set(addr, r);
      put += r.put; get += r.get;
    }
  }
  lastTotals = { t: now, map: totals };
  state.brokerNames = new Set(brokers.flatMap((b) => [b.broker_name, b.cluster]));
  const lag = groups.reduce((s, g) => s + Math.max(0, g.diff_total), 0);
  state.samples.push({ t: now, put, get, lag });
  if (state.samples.length > HISTORY) state.samples.shift();
  renderBrokers(brokers, rates);
  drawChart("tps-chart", [state.samples.map((s) => s.put), state.samples.map((s) => s.get)], ["in", "out"]);
  drawChart("lag-chart", [state.samples.map((s) => s.lag)], ["lag"]);
  if (currentView() === "groups") renderGroupList(groups);
}

// ---- topics ----

function isSystemTopic(t) {
  return SYSTEM_PREFIXES.some((p) => t.startsWith(p)) || SYSTEM_SUFFIXES.some((s) => t.endsWith(s)) ||
    state.brokerNames.has(t);
}

async function loadTopics() {
  const rows = await api("/api/topics");
  const all = document.getElementById("show-system").checked;
  fillBody("topics", rows
    .filter((r) => all || !isSystemTopic(r.topic))
    .sort((a, b) => a.topic.localeCompare(b.topic))
    .map((r) => el("tr", { class: "clickable", "data-topic": r.topic, onclick: () => openTopic(r.topic) },
      el("td", {}, r.topic), el("td", {}, r.cluster))));
  if (state.openTopic) await openTopic(state.openTopic);
}

async function openTopic(topic) {
  state.openTopic = topic;
  const d = await api(`/api/topics/${encodeURIComponent(topic)}`);
  const queues = el("table", { id: "topic-queues" },
    el("thead", {}, el("tr", {}, ["Broker", "Queue", "Min offset", "Max offset", "Last update"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.queues.map((q) => el("tr", {},
      el("td", {}, q.broker_name), num(q.queue_id), num(q.min_offset), num(q.max_offset),
      el("td", {}, fmtTime(q.last_update_timestamp))))));
  const route = el("table", {},
    el("thead", {}, el("tr", {}, ["Broker group", "Id", "Address"].map((h) => el("th", {}, h)))),
    el("tbody", {}, (d.route.brokerDatas || d.route.broker_datas || []).flatMap((b) =>
      Object.entries(b.brokerAddrs || b.broker_addrs || {}).map(([id, addr]) =>
        el("tr", {}, el("td", {}, b.brokerName || b.broker_name), num(id), el("td", {}, addr))))));
  document.getElementById("topic-detail").replaceChildren(
    el("h3", {}, `Topic ${topic}`), el("h4", {}, "Queues"), queues, el("h4", {}, "Route"), route);
}

// ---- groups ----

function renderGroupList(groups) {
  fillBody("groups", groups
    .sort((a, b) => a.group.localeCompare(b.group))
    .map((g) => el("tr", { class: "clickable", "data-group": g.group, onclick: () => openGroup(g.group) },
      el("td", {}, g.group), num(g.diff_total))));
}

async function loadGroups() {
  renderGroupList(await api("/api/groups"));
  if (state.openGroup) await openGroup(state.openGroup);
}

async function openGroup(group) {
  state.openGroup = group;
  const d = await api(`/api/groups/${encodeURIComponent(group)}`);
  const clients = (d.connections && d.connections.connectionSet) || [];
  const summary = el("table", { id: "group-summary" }, el("tbody", {},
    el("tr", {}, el("th", {}, "Lag"), el("td", { id: "group-lag", class: "num" }, d.diff_total)),
    el("tr", {}, el("th", {}, "Retry messages"), el("td", { id: "group-retry", class: "num" }, d.retry_messages)),
    el("tr", {}, el("th", {}, "Dead-letter messages"), el("td", { id: "group-dlq", class: "num" }, d.dlq_messages)),
    el("tr", {}, el("th", {}, "Clients online"), el("td", { id: "group-clients", class: "num" }, clients.length))));
  const queues = el("table", { id: "group-queues" },
    el("thead", {}, el("tr", {}, ["Topic", "Broker", "Queue", "Broker offset", "Consumer offset", "Lag", "Last consumed"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.queues.map((q) => el("tr", {},
      el("td", {}, q.topic), el("td", {}, q.broker_name), num(q.queue_id), num(q.broker_offset),
      num(q.consumer_offset), num(q.diff), el("td", {}, fmtTime(q.last_timestamp))))));
  const conns = el("table", {},
    el("thead", {}, el("tr", {}, ["Client id", "Address", "Language", "Version"].map((h) => el("th", {}, h)))),
    el("tbody", {}, clients.map((c) => el("tr", {},
      el("td", {}, c.clientId), el("td", {}, c.clientAddr), el("td", {}, c.language), num(c.version)))));
  document.getElementById("group-detail").replaceChildren(
    el("h3", {}, `Group ${group}`), summary, el("h4", {}, "Queues"), queues, el("h4", {}, "Clients"), conns,
    el("a", { href: `#/dlq/${encodeURIComponent(group)}` }, "Dead-letter messages of this group"));
}

// ---- messages ----

function messageTable(msgs, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ["Message id", "Topic", "Tags", "Keys", "Queue", "Offset", "Reconsumed", "Stored"].map((h) => el("th", {}, h)))),
    el("tbody", {}, msgs.map((m) => el("tr", { class: "clickable", "data-msg-id": m.msg_id, onclick: () => showMessage(m.offset_msg_id) },
      el("td", {}, m.msg_id), el("td", {}, m.topic), el("td", {}, m.tags || ""), el("td", {}, m.keys.join(" ")),
      num(m.queue_id), num(m.queue_offset), num(m.reconsume_times), el("td", {}, fmtTime(m.store_timestamp))))));
}

async function findByKey(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const q = new URLSearchParams({ topic: f.get("topic"), key: f.get("key") });
  const out = document.getElementById("message-results");
  try {
    const msgs = await api(`/api/messages?${q}`);
    out.replaceChildren(el("h3", {}, `${msgs.length} message(s) with key ${f.get("key")}`), messageTable(msgs, "key-results"));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function showMessage(id, topic) {
  const out = document.getElementById("message-results");
  const q = topic ? `?topic=${encodeURIComponent(topic)}` : "";
  try {
    const d = await api(`/api/messages/${encodeURIComponent(id)}${q}`);
    const m = d.message;
    const props = Object.entries(m.properties).map(([k, v]) => `${k}=${v}`).join("\n");
    out.replaceChildren(
      el("h3", {}, `Message ${m.msg_id}`),
      el("pre", { id: "message-detail" },
        `Topic: ${m.topic}\nOffset id: ${m.offset_msg_id}\nQueue: ${m.queue_id} @ ${m.queue_offset}\n` +
        `Stored: ${fmtTime(m.store_timestamp)}\nReconsume times: ${m.reconsume_times}\n` +
        `Properties:\n${props}\n\nBody (${m.body_len} bytes):\n${m.body || ""}`),
      el("h4", {}, `Retry history (${d.history.length})`), messageTable(d.history, "retry-history"));
    setView("messages");
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ---- dead letters ----

async function loadDlq(group) {
  document.querySelector("#dlq-form input[name=group]").value = group;
  const msgs = await api(`/api/dlq/${encodeURIComponent(group)}`);
  fillBody("dlq", msgs.map((m) => el("tr", { "data-msg-id": m.msg_id },
    el("td", {}, m.msg_id), el("td", {}, m.properties.RETRY_TOPIC || m.topic), el("td", {}, m.keys.join(" ")),
    num(m.reconsume_times), el("td", {}, fmtTime(m.store_timestamp)), el("td", {}, m.body || ""),
    el("td", {}, el("button", { class: "resend", onclick: () => resend(group, m.offset_msg_id) }, "Re-send")))));
  if (msgs.length === 0) notice(`No dead-letter message for ${group}.`);
}

function notice(text, isError) {
  const n = document.getElementById("dlq-notice");
  n.textContent = text;
  n.classList.toggle("error", !!isError);
}

async function resend(group, offsetId) {
  try {
    const r = await api(`/api/dlq/${encodeURIComponent(group)}/resend`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ msg_id: offsetId }),
    });
    notice(`Re-sent ${r.msg_id} to ${r.topic} (${r.status}).`);
  } catch (e) {
    notice(`Re-send failed: ${e.message}`, true);
  }
}

// ---- navigation ----

function currentView() {
  return (location.hash.replace(/^#\//, "").split("/")[0]) || "overview";
}

function setView(name) {
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === `view-${name}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
}

async function route() {
  const [view, arg] = location.hash.replace(/^#\//, "").split("/");
  const name = view || "overview";
  setView(name);
  try {
    if (name === "topics") await loadTopics();
    if (name === "groups") { if (arg) state.openGroup = decodeURIComponent(arg); await loadGroups(); }
    if (name === "dlq" && arg) await loadDlq(decodeURIComponent(arg));
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function tick() {
  try {
    await pollOverview();
    if (currentView() === "groups" && state.openGroup) await openGroup(state.openGroup);
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

document.getElementById("by-key").addEventListener("submit", findByKey);
document.getElementById("by-id").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  showMessage(f.get("id"), f.get("topic") || undefined);
});
document.getElementById("dlq-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  location.hash = `#/dlq/${encodeURIComponent(new FormData(ev.target).get("group"))}`;
});
document.getElementById("show-system").addEventListener("change", () => loadTopics().catch((e) => setStatus(e.message, true)));
window.addEventListener("hashchange", route);
route();
tick();
setInterval(tick, POLL_MS);
