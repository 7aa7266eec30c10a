// The flowtally console: a few views over /api/v1/, routed by the URL's
// hash (#/user/NAME, #/ip/ADDR, #/top, #/exporters). No library, no build:
// the chart is SVG drawn here. Every request goes to this same server.
"use strict";

const $ = (id) => document.getElementById(id);
const view = () => $("view");
const TOKEN_KEY = "flowtally-token";

// --- talking to the API ---------------------------------------------------

class ApiError extends Error {}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") query.set(k, v);
  }
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/api/v1/" + path + (query.size ? "?" + query : ""), { headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("login").hidden = false;
    throw new ApiError("This server needs its API token.");
  }
  if (!response.ok) {
    const where = body.parameter ? ` (${body.parameter})` : "";
    throw new ApiError((body.error || response.statusText) + where);
  }
  return body;
}

// --- formatting -------------------------------------------------------------

const UNITS = [["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["KB", 1e3]];

function volume(bytes) {
  for (const [name, size] of UNITS) {
    if (bytes >= size) return (bytes / size).toFixed(2) + " " + name;
  }
  return bytes + " B";
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function bytesCell(bytes) {
  return el("td", { class: "n", "data-bytes": bytes, title: bytes + " bytes" }, volume(bytes));
}

function link(hash, text) {
  return el("a", { href: hash }, text);
}

function table(id, head, rows) {
  const thead = el("tr", null, ...head.map(([name, numeric]) => el("th", numeric ? { class: "n" } : null, name)));
  return el("table", { id }, el("thead", null, thead), el("tbody", null, ...rows));
}

function card(label, value, attrs) {
  return el("div", Object.assign({ class: "card" }, attrs), el("span", { class: "muted" }, label), el("b", null, value));
}

// --- the chart ----------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

// Up and down per step as stacked bars (up on top of down).
function chart(series) {
  const width = 860, height = 240, left = 64, bottom = 28, top = 10;
  const steps = series.steps;
  const max = Math.max(1, ...steps.map((s) => s.up + s.down));
  const slot = (width - left - 10) / Math.max(1, steps.length);
  const scale = (height - bottom - top) / max;
  const root = svg("svg", { id: "usage-chart", class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "usage over time" });
  for (const f of [0, 0.5, 1]) {
    const y = height - bottom - f * max * scale;
    root.append(svg("line", { x1: left, x2: width - 10, y1: y, y2: y }));
    root.append(svg("text", { x: 4, y: y + 4 }, volume(Math.round(f * max))));
  }
  steps.forEach((s, i) => {
    const x = left + i * slot + 1, w = Math.max(1, slot - 2);
    const down = s.down * scale, up = s.up * scale;
    const when = s.start.replace("T", " ").replace(/:00\.000Z$/, "");
    root.append(svg("rect", { class: "bar down", x, y: height - bottom - down, width: w, height: down, "data-bytes": s.down },
      svg("title", {}, `${when} down ${volume(s.down)}`)));
    root.append(svg("rect", { class: "bar up", x, y: height - bottom - down - up, width: w, height: up, "data-bytes": s.up },
      svg("title", {}, `${when} up ${volume(s.up)}`)));
  });
  const every = Math.max(1, Math.ceil(steps.length / 8));
  steps.forEach((s, i) => {
    if (i % every) return;
    const label = series.step_s >= 86400 ? s.start.slice(5, 10) : s.start.slice(11, 16);
    root.append(svg("text", { x: left + i * slot, y: height - 8 }, label));
  });
  const legend = el("div", { class: "legend" }, el("span", { class: "down" }), "down", el("span", { class: "up" }), "up",
    el("span", { class: "muted" }), `per ${series.step_s >= 86400 ? "day" : series.step_s >= 3600 ? "hour" : series.step_s + " s"}`);
  return el("div", null, root, legend);
}

// Down and up per destination class as horizontal bars, biggest first.
function classChart(groups) {
  const sorted = groups.slice().sort((a, b) => b.bytes - a.bytes);
  const width = 860, left = 140, row = 26, right = 110;
  const height = Math.max(1, sorted.length) * row + 6;
  const max = Math.max(1, ...sorted.map((g) => g.bytes));
  const scale = (width - left - right) / max;
  const root = svg("svg", { id: "class-chart", class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "usage by destination class" });
  sorted.forEach((g, i) => {
    const y = 4 + i * row, down = g.bytes_down * scale, up = g.bytes_up * scale;
    root.append(svg("text", { x: 6, y: y + 15, class: "class-name" }, g.class));
    root.append(svg("rect", { class: "bar down", x: left, y, width: down, height: row - 6, "data-bytes": g.bytes_down },
      svg("title", {}, `${g.class} down ${volume(g.bytes_down)}`)));
    root.append(svg("rect", { class: "bar up", x: left + down, y, width: up, height: row - 6, "data-bytes": g.bytes_up },
      svg("title", {}, `${g.class} up ${volume(g.bytes_up)}`)));
    const cost = g.cost !== undefined ? ` · ${g.cost}` : "";
    root.append(svg("text", { x: left + down + up + 6, y: y + 15 }, volume(g.bytes) + cost));
  });
  return root;
}

// --- views ----------------------------------------------------------------------

function range() {
  return { from: $("from").value || "-7d", to: $("to").value || "now" };
}

async function userView(name) {
  const { from, to } = range();
  const tariff = $("tariff").value;
  const [usage, series, sessions, classes] = await Promise.all([
    api("usage", { by: "user", user: name, from, to, tariff }),
    api("series", { user: name, from, to }),
    api("sessions", { user: name, from, to, limit: 50 }),
    api("usage", { by: "class", user: name, from, to, tariff }),
  ]);
  const line = usage.groups.find((g) => g.user === name) || usage.totals;
  const cards = el("div", { class: "cards", id: "user-summary", "data-user": name },
    card("Down", volume(line.bytes_down), { "data-bytes": line.bytes_down }),
    card("Up", volume(line.bytes_up), { "data-bytes": line.bytes_up }),
    card("Total", volume(line.bytes), { "data-bytes": line.bytes, id: "user-bytes" }),
    card("Online", duration(line.online_s)));
  if (line.cost !== undefined) cards.append(card("Cost", `${line.cost} ${usage.currency}`));
  const rows = sessions.sessions.map((s) => el("tr", null,
    el("td", null, s.session_id), el("td", null, s.addresses.map((a) => a.net).join(", ")),
    el("td", null, s.start), el("td", null, s.stop || "open"), el("td", null, s.nas),
    el("td", null, s.terminate_cause || "")));
  view().replaceChildren(
    el("h2", null, `User ${name}`), el("p", { class: "muted" }, `${usage.from} to ${usage.to}`), cards,
    el("h2", null, "Usage over time"), chart(series),
    el("h2", null, "By destination class"), classChart(classes.groups),
    el("h2", null, "Sessions"),
    table("sessions", [["session"], ["addresses"], ["start"], ["stop"], ["NAS"], ["cause"]], rows));
}

async function ipView(text) {
  const at = $("from").value || "now";
  const who = await api("whois", { ip: text, at });
  const parts = [el("h2", null, `Address ${who.ip}`)];
  if (who.owner) {
    const o = who.owner;
    parts.push(el("p", { id: "whois", "data-user": o.user }, `At ${who.at}: `, link("#/user/" + encodeURIComponent(o.user), o.user),
      ` (session ${o.session_id} on NAS ${o.nas}), held from ${o.from} to ${o.to || "now"}`));
  } else {
    parts.push(el("p", { id: "whois" }, `At ${who.at}: nobody held this address.`));
  }
  const { from, to } = $("to").value ? range() : { from: "-7d", to: "now" };
  const usage = await api("usage", { by: "user", ip: who.ip, from, to });
  parts.push(el("h2", null, `Usage of ${who.ip}, ${usage.from} to ${usage.to}`), usersTable("ip-usage", usage.groups));
  view().replaceChildren(...parts);
}

function usersTable(id, groups) {
  const rows = groups.slice().sort((a, b) => b.bytes - a.bytes).map((g) => el("tr", null,
    el("td", { class: "user" }, g.user.startsWith("(") ? g.user : link("#/user/" + encodeURIComponent(g.user), g.user)),
    bytesCell(g.bytes_down), bytesCell(g.bytes_up), bytesCell(g.bytes), el("td", { class: "n" }, duration(g.online_s))));
  return table(id, [["user"], ["down", 1], ["up", 1], ["total", 1], ["online", 1]], rows);
}

async function topView() {
  const [now, day] = await Promise.all([api("top", { by: "user", window: "5m", limit: 20 }), api("usage", { by: "user", from: "-1d" })]);
  const rows = now.top.map((t) => el("tr", null, el("td", { class: "user" }, link("#/user/" + encodeURIComponent(t.user), t.user)),
    bytesCell(t.bytes_down), bytesCell(t.bytes_up), bytesCell(t.bytes)));
  view().replaceChildren(
    el("h2", null, "Top users, last 5 minutes of flushes"),
    el("p", { class: "muted" }, `${now.flushes} flushes${now.exact ? "" : " (approximate: some flushes had more users than kept)"}`),
    table("top-now", [["user"], ["down", 1], ["up", 1], ["total", 1]], rows),
    el("h2", null, "Top users, last 24 hours"), usersTable("top-day", day.groups));
}

async function exportersView() {
  const body = await api("exporters");
  const rows = body.exporters.map((e) => el("tr", null, el("td", null, e.exporter),
    el("td", { class: e.seconds_since === null || e.seconds_since > 300 ? "bad" : "ok" }, e.last_seen ? `${e.last_seen} (${e.seconds_since} s ago)` : "not since start"),
    el("td", { class: "n" }, String(e.datagrams)), el("td", { class: "n" }, String(e.records)), bytesCell(e.bytes),
    el("td", { class: "n" }, `${e.templates} (${e.templates_compiled} in XDP)`),
    el("td", { class: "n" }, e.estimated_loss === null ? "n/a" : `${e.estimated_loss.records} records, ${e.estimated_loss.exports} exports`)));
  view().replaceChildren(el("h2", null, "Exporters"),
    table("exporters", [["exporter"], ["last seen"], ["datagrams", 1], ["records", 1], ["bytes", 1], ["templates", 1], ["est. loss", 1]], rows));
}

// --- routing ----------------------------------------------------------------------

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}(:\d+)?$/;

function looksLikeAddress(q) {
  return IPV4.test(q) || q.includes(":") || q.startsWith("[");
}

async function route() {
  const hash = decodeURIComponent(location.hash.slice(1) || "/");
  $("status").textContent = "";
  try {
    if (hash.startsWith("/user/")) await userView(hash.slice(6));
    else if (hash.startsWith("/ip/")) await ipView(hash.slice(4));
    else if (hash === "/top") await topView();
    else if (hash === "/exporters") await exportersView();
    else view().replaceChildren(el("p", { class: "muted" }, "Search a user name, an address (who held it, at the time given), or open the top users and exporters."));
  } catch (err) {
    $("status").textContent = err instanceof ApiError ? err.message : "Error: " + err;
    view().replaceChildren();
  }
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();
  const target = (looksLikeAddress(q) ? "#/ip/" : "#/user/") + encodeURIComponent(q);
  if (location.hash === target) route(); else location.hash = target;
});

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("login").hidden = true;
  loadTariffs();
  route();
});

async function loadTariffs() {
  try {
    const body = await api("tariffs");
    $("tariff").replaceChildren(el("option", { value: "" }, "none"), ...body.tariffs.map((t) => el("option", { value: t }, t)));
  } catch (_) { /* shown by the view's own request */ }
}

window.addEventListener("hashchange", route);
loadTariffs();
route();
