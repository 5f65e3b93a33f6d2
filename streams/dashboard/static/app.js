// billing dashboard: plain JavaScript, no build step, no CDN. Data only ever enters the page
// through textContent and SVG attributes (never innerHTML), so an account named <script> is text.
"use strict";

const FILTERS = ["account", "user", "provider", "charge_type", "from", "to"];
const OPTIONS = ["by", "metric"];
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const OTHER_COLOR = "#8a8f98"; // the summed smaller series; not in PALETTE, so never a series' colour
const SVG = "http://www.w3.org/2000/svg";
const fmt = new Intl.NumberFormat("en-US");
const $ = (sel) => document.querySelector(sel);
const form = () => $("#filters");

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function human(name) { return name.replace(/_tokens$/, " tokens").replace(/_/g, " "); }

function compact(n) {
  const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
  for (const [size, suffix] of units) if (Math.abs(n) >= size) return (n / size).toFixed(n % size ? 1 : 0) + suffix;
  return String(Number(n.toPrecision(6))); // an axis of cost steps by 0.1: no 0.30000000000000004
}

// Absolute URLs from location.origin: a page opened as http://user:token@host/ (HTTP Basic)
// resolves relative URLs with the credentials in them, which fetch() refuses.
const api = (path) => location.origin + path;

async function getJSON(path) {
  const response = await fetch(api(path), { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return body;
}

function params(names) {
  const out = new URLSearchParams();
  const data = new FormData(form());
  for (const name of names) {
    const value = (data.get(name) || "").trim();
    if (value) out.set(name, value);
  }
  return out;
}

function fillSelect(select, values, keepFirst = true) {
  while (select.options.length > (keepFirst ? 1 : 0)) select.remove(select.options.length - 1);
  for (const v of values) select.add(new Option(v.label || v, v.value || v));
}

function fillList(id, values) {
  const list = $(id);
  list.replaceChildren(...values.map((v) => el("option", { value: v })));
}

function setForm(query) {
  for (const name of [...FILTERS, ...OPTIONS]) {
    const field = form().elements[name];
    const value = query.get(name);
    if (value === null || !field) continue;
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) field.add(new Option(value, value));
    field.value = value;
  }
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

function card(label, value, detail) {
  const node = el("div", { class: "card" });
  node.append(el("div", { class: "label" }, label), el("div", { class: "value", "data-value": String(value) }, fmt.format(value)));
  if (detail) node.append(el("div", { class: "detail" }, detail));
  return node;
}

// Money arrives as exact decimal text ("1234.500000001") and is shown without ever becoming a
// float: thousands separated, cents always, sub-cent digits only when there are any.
function money(text) {
  const [whole, fraction = ""] = String(text || "0").split(".");
  const digits = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${digits}`;
}

function priced(currency, text) { return `${currency ? currency + " " : ""}${money(text)}`; }

function costCard(t) {
  const node = el("div", { class: "card", id: "card-cost" });
  const value = priced(t.currency, t.cost);
  node.append(el("div", { class: "label" }, "Cost"), el("div", { class: "value", "data-value": String(t.cost || "0") }, value));
  const unpriced = t.unpriced_charge_count || 0;
  node.append(el("div", { class: "detail", "data-unpriced": String(unpriced) }, unpriced ? `${fmt.format(unpriced)} charges without a price` : "every charge priced"));
  return node;
}

function renderCards(total) {
  const t = total || { total_tokens: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, cache_write_tokens: 0, reasoning_tokens: 0, charge_count: 0, late_charge_count: 0, rows: 0, cost: "0", unpriced_charge_count: 0 };
  const cards = [
    costCard(t),
    card("Total tokens", t.total_tokens),
    card("Prompt tokens", t.prompt_tokens, `${fmt.format(t.cached_tokens)} cached, ${fmt.format(t.cache_write_tokens || 0)} written to cache`),
    card("Completion tokens", t.completion_tokens, `${fmt.format(t.reasoning_tokens)} reasoning`),
    card("Charges", t.charge_count, `${fmt.format(t.late_charge_count)} late`),
    card("Records", t.rows, total && total.final ? "all final" : "includes provisional days"),
  ];
  cards[1].id = "card-total";
  $("#cards").replaceChildren(...cards);
}

// The chart's numbers: counts arrive as integers, cost as exact decimal text. Heights may be
// floats (pixels); what the page shows and keeps in data-value is the exact value.
function chartValue(data, raw) { return data.metric === "cost" ? priced(data.currency, raw) : fmt.format(raw); }

function renderChart(data) {
  const box = $("#chart");
  const width = Math.max(640, box.clientWidth || 960);
  const height = 320, m = { l: 64, r: 16, t: 16, b: 58 };
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, "data-series": data.series.join(",") });
  const defs = el("svg:defs");
  const hatch = el("svg:pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  hatch.append(el("svg:rect", { width: 6, height: 6, fill: "#fff", "fill-opacity": 0.35 }), el("svg:line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#fff", "stroke-width": 3 }));
  defs.append(hatch);
  svg.append(defs);
  const color = new Map(data.series.map((s, i) => [s, PALETTE[i % PALETTE.length]]));
  const max = Math.max(data.metric === "cost" ? 1e-9 : 1, ...data.days.map((d) => Number(d.total)));
  const step = Math.pow(10, Math.floor(Math.log10(max / 4)));
  const tick = [1, 2, 2.5, 5, 10].map((f) => f * step).find((s) => max / s <= 5) || step * 10;
  const top = Math.ceil(max / tick) * tick;
  const plotW = width - m.l - m.r, plotH = height - m.t - m.b;
  const y = (v) => m.t + plotH - (v / top) * plotH;
  const axis = el("svg:g", { class: "axis" });
  for (let v = 0; v <= top + tick / 2; v += tick) {
    axis.append(el("svg:line", { class: "grid", x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
    axis.append(el("svg:text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, compact(v)));
  }
  svg.append(axis);
  if (!data.days.length) svg.append(el("svg:text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, "No billing records match these filters."));
  const slot = plotW / Math.max(1, data.days.length);
  const bar = Math.min(48, slot * 0.7);
  const every = Math.ceil(data.days.length / Math.max(1, Math.floor(plotW / 56)));
  data.days.forEach((day, i) => {
    const x = m.l + slot * i + (slot - bar) / 2;
    const g = el("svg:g", { class: "day", "data-date": day.date, "data-total": String(day.total), "data-final": String(day.final), "data-revised": String(day.revised) });
    let acc = 0;
    const dayTotal = Number(day.total);
    for (const name of data.series) {
      const raw = day.stacks[name] || 0;
      const value = Number(raw);
      if (!value) continue;
      const rect = el("svg:rect", { x, width: bar, y: y(acc + value), height: Math.max(0.5, y(acc) - y(acc + value)), fill: color.get(name), "data-series": name, "data-value": String(raw) });
      rect.append(el("svg:title", {}, `${day.date} · ${name}: ${chartValue(data, raw)}`));
      g.append(rect);
      acc += value;
    }
    const other = Number(day.other || 0);
    if (other) {
      const rect = el("svg:rect", { class: "other", x, width: bar, y: y(acc + other), height: Math.max(0.5, y(acc) - y(acc + other)), fill: OTHER_COLOR, "data-other": String(day.other) });
      rect.append(el("svg:title", {}, `${day.date} · ${fmt.format(data.folded)} smaller: ${chartValue(data, day.other)}`));
      g.append(rect);
    }
    if (!day.final && dayTotal) g.append(el("svg:rect", { class: "provisional-mark", x, width: bar, y: y(dayTotal), height: y(0) - y(dayTotal), fill: "url(#hatch)" }));
    if (day.revised) g.append(el("svg:circle", { class: "revised-mark", cx: x + bar / 2, cy: y(dayTotal) - 7, r: 4, fill: "#7a3fa0" }));
    if (i % every === 0) {
      const label = el("svg:text", { class: day.final ? "day-label" : "day-label open", x: x + bar / 2, y: height - m.b + 16, "text-anchor": "middle" }, day.date.slice(5));
      g.append(label);
      if (!day.final) g.append(el("svg:text", { x: x + bar / 2, y: height - m.b + 30, "text-anchor": "middle", "font-size": 9, fill: "#b26a00" }, "open"));
    }
    g.append(el("svg:title", {}, `${day.date}: ${chartValue(data, day.total)} ${human(data.metric)}${day.final ? "" : " (provisional)"}${day.revised ? " (revised)" : ""}`));
    svg.append(g);
  });
  box.replaceChildren(svg);
  const legend = data.series.map((s) => { const li = el("li"); li.append(el("span", { class: "swatch" }), s); li.firstChild.style.background = color.get(s); return li; });
  if (data.folded) { const li = el("li", { class: "other" }); li.append(el("span", { class: "swatch" }), `other (${fmt.format(data.folded)} smaller)`); li.firstChild.style.background = OTHER_COLOR; legend.push(li); }
  const hatchLi = el("li"); hatchLi.append(el("span", { class: "swatch hatch" }), "provisional (day still open)");
  const dotLi = el("li"); dotLi.append(el("span", { class: "swatch dot" }), "revised (late charges)");
  $("#legend").replaceChildren(...legend, hatchLi, dotLi);
  $("#metric-name").textContent = human(data.metric);
  $("#by-name").textContent = human(data.by);
}

const COLUMNS = ["date", "account_id", "user_id", "provider", "charge_type"];
const NUMBERS = ["prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", "charge_count", "late_charge_count"];

function renderTable(data) {
  const rows = data.rows.map((r) => {
    const tr = el("tr", { class: [r.final ? "final" : "provisional", r.revised ? "revised" : ""].join(" ").trim() });
    for (const c of COLUMNS) tr.append(el("td", { "data-col": c }, r[c]));
    for (const c of NUMBERS) tr.append(el("td", { class: "num", "data-col": c, "data-value": String(r[c]) }, fmt.format(r[c])));
    tr.append(el("td", { class: "num", "data-col": "cost", "data-value": String(r.cost) }, money(r.cost)));
    const status = el("td", { "data-col": "status" });
    status.append(el("span", { class: `badge ${r.final ? "final" : "provisional"}` }, r.final ? "final" : "provisional"));
    if (r.revised) status.append(el("span", { class: "badge revised" }, "revised"));
    tr.append(status);
    return tr;
  });
  $("#records tbody").replaceChildren(...rows);
  const foot = el("tr");
  foot.append(el("td", { colspan: COLUMNS.length }, "Total"));
  for (const c of NUMBERS) foot.append(el("td", { class: "num", "data-col": c, "data-value": String(data.total ? data.total[c] : 0) }, fmt.format(data.total ? data.total[c] : 0)));
  foot.append(el("td", { class: "num", "data-col": "cost" }, money(data.total ? data.total.cost : "0")));
  foot.append(el("td"));
  $("#records tfoot").replaceChildren(foot);
  $("#truncated").hidden = !data.truncated;
}

function renderTop(data) {
  const table = $(`#top-${data.by}`);
  const lines = data.rows.map((r, i) => {
    const tr = el("tr", { "data-account": r.account_id, "data-cost": String(r.cost) });
    tr.append(el("td", { class: "num" }, String(i + 1)));
    if (data.by === "user") { tr.dataset.user = r.user_id; tr.append(el("td", { "data-col": "user_id" }, r.user_id)); }
    tr.append(el("td", { "data-col": "account_id" }, r.account_id));
    tr.append(el("td", { class: "num", "data-col": "cost" }, priced(r.currency, r.cost)));
    tr.append(el("td", { class: "num", "data-col": "charge_count" }, fmt.format(r.charge_count)));
    return tr;
  });
  table.tBodies[0].replaceChildren(...lines);
  const more = table.parentElement.querySelector(".top-more");
  more.textContent = `and ${fmt.format(data.count - data.rows.length)} more`;
  more.hidden = data.count <= data.rows.length;
}

async function loadState() {
  const box = $("#pipeline");
  try {
    const state = await getJSON("/api/state");
    const open = $("#open-days");
    if (!state.open_days.length) open.textContent = "none: every day is final";
    else {
      const list = el("ul");
      for (const d of state.open_days.slice(0, 6)) list.append(el("li", { "data-date": d.date }, `${d.date} (${fmt.format(d.rows)} rows)`));
      if (state.open_days.length > 6) list.append(el("li", {}, `and ${state.open_days.length - 6} more`));
      open.replaceChildren(list);
    }
    const dlq = $("#dlq");
    if (state.dlq.status !== "ok") dlq.replaceChildren(el("span", { class: "unavailable", "data-status": state.dlq.status }, "unavailable (Kafka not reachable)"));
    else if (!state.dlq.total) dlq.replaceChildren(el("span", { "data-status": "ok", "data-total": "0" }, "none"));
    else {
      const list = el("ul", { "data-status": "ok", "data-total": String(state.dlq.total) });
      for (const [reason, n] of Object.entries(state.dlq.by_reason)) list.append(el("li", { "data-reason": reason, "data-count": String(n) }, `${reason}: ${fmt.format(n)}`));
      dlq.replaceChildren(list);
    }
    box.dataset.state = "ready";
  } catch (e) {
    $("#open-days").textContent = `unavailable (${e.message})`;
    box.dataset.state = "error";
  }
}

let generation = 0; // a slow answer to an older filter must not overwrite a newer one

async function load() {
  const mine = ++generation;
  const filters = params(FILTERS);
  const all = params([...FILTERS, ...OPTIONS]);
  history.replaceState(null, "", all.toString() ? `?${all}` : location.pathname);
  $("#csv").href = api(`/api/rows.csv${filters.toString() ? `?${filters}` : ""}`);
  document.body.dataset.state = "loading";
  try {
    const [daily, table, ...tops] = await Promise.all([
      getJSON(`/api/daily?${all}`), getJSON(`/api/rows?${filters}`),
      ...["account", "user"].map((by) => getJSON(`/api/top?${filters}${filters.toString() ? "&" : ""}by=${by}`)),
    ]);
    if (mine !== generation) return;
    showError("");
    renderCards(table.total);
    renderChart(daily);
    tops.forEach(renderTop);
    renderTable(table);
    document.body.dataset.state = "ready";
  } catch (e) {
    if (mine !== generation) return;
    showError(e.status === 400 ? `Bad filter: ${e.message}` : e.message);
    document.body.dataset.state = "error";
  }
  document.body.dataset.query = all.toString();
}

function daysBefore(iso, n) {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() - n);
  return d.toISOString().slice(0, 10);
}

async function start() {
  const query = new URLSearchParams(location.search);
  try {
    const meta = await getJSON("/api/meta");
    $("#tz").textContent = meta.timezone;
    fillList("#account-list", meta.account);
    fillList("#user-list", meta.user);
    fillSelect(form().elements.provider, meta.provider);
    fillSelect(form().elements.charge_type, meta.charge_type);
    fillSelect(form().elements.metric, meta.metrics.map((m) => ({ value: m, label: human(m) })), false);
    form().elements.metric.value = "total_tokens";
    if (!query.has("from") && !query.has("to") && meta.last_date) {
      query.set("from", daysBefore(meta.last_date, 30));
      query.set("to", meta.last_date);
    }
  } catch (e) {
    showError(e.message);
  }
  setForm(query);
  form().addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  form().addEventListener("change", (ev) => { if (ev.target.tagName === "SELECT" || ev.target.type === "date") load(); });
  $("#reset").addEventListener("click", () => { location.search = ""; });
  loadState();
  await load();
}

document.addEventListener("DOMContentLoaded", start);
