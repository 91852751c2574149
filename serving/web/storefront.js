// The storefront: a shopper's page that shows personalization happening.
// Every action is a real event, posted to the HTTP collector (the worker's web server) as a
// site's beacon would be; the "recommended" row and the profile panel come from the API and
// refresh on their own. No framework, no build step.
// Who the visitor is comes from the server (the shop's backend), with a short-lived token for
// that visitor only: the page holds no key, and its token opens no one else's data.
"use strict";

const config = window.STREAMRANK || {};
const state = { visitor: config.visitor, item: null, profileEvents: -1, optedOut: null, category: null };
const $ = (id) => document.getElementById(id);

function headers() {
  return { "content-type": "application/json", authorization: "Bearer " + config.token };
}

// A token lives an hour: once it has expired, reload the page for a fresh one (the cookie
// keeps the visitor), at most once a minute so that a refusal for another reason cannot loop.
function renewIfExpired(reply) {
  if (reply.status !== 401) return;
  const last = Number(sessionStorage.getItem("streamrank-renewed") || 0);
  if (Date.now() - last > 60_000) {
    sessionStorage.setItem("streamrank-renewed", String(Date.now()));
    location.reload();
  }
}

async function api(path, options = {}) {
  const reply = await fetch(path, { headers: headers(), ...options });
  renewIfExpired(reply);
  if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
  return reply.json();
}

function status(text) {
  $("status").textContent = text;
}

// --- events: one beacon per action ------------------------------------------------------
async function send(type, fields) {
  const event = {
    event_id: crypto.randomUUID(),
    user_id: state.visitor,
    type,
    ts: new Date().toISOString(),
    session_id: sessionStorage.getItem("streamrank-session") || newSession(),
    ...fields,
  };
  try {
    const reply = await fetch(config.collectorUrl, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify([event]),
    });
    renewIfExpired(reply);
    status(reply.ok ? `sent: ${type}` : `the collector said ${reply.status}`);
  } catch (err) {
    status(`the collector is unreachable (${err.message})`);
  }
  refreshSoon();
}

function newSession() {
  const id = "s-" + crypto.randomUUID().slice(0, 8);
  sessionStorage.setItem("streamrank-session", id);
  return id;
}

// --- rendering --------------------------------------------------------------------------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(item, reason) {
  const node = el("article", "card");
  node.dataset.itemId = item.item_id;
  node.dataset.categories = item.categories.join("|");
  node.append(el("h4", "title", item.title));
  node.append(el("p", "categories", item.categories.join(" · ")));
  if (reason) node.append(el("p", "reason", reason));
  else if (item.price != null) node.append(el("p", "price", `$${item.price.toFixed(2)}`));
  node.tabIndex = 0;
  node.addEventListener("click", () => openItem(item));
  node.addEventListener("keydown", (e) => e.key === "Enter" && openItem(item));
  return node;
}

function fill(container, nodes) {
  container.replaceChildren(...nodes);
}

async function loadCatalog() {
  const params = new URLSearchParams({ limit: "24" });
  const query = $("q").value.trim();
  if (query) params.set("q", query);
  if (state.category) params.set("category", state.category);
  const page = await api(`/v1/items?${params}`);
  $("catalog-count").textContent = `${page.total} items`;
  fill($("grid"), page.items.map((item) => card(item)));
  if (!$("chips").childElementCount) {
    fill($("chips"), page.categories.map((c) => {
      const chip = el("button", "chip", c);
      chip.type = "button";
      chip.dataset.category = c;
      chip.addEventListener("click", () => {
        state.category = state.category === c ? null : c;
        for (const other of $("chips").children) {
          other.classList.toggle("on", other.dataset.category === state.category);
        }
        loadCatalog();
      });
      return chip;
    }));
  }
}

async function openItem(item) {
  state.item = item;
  $("item-view").hidden = false;
  $("item-title").textContent = item.title;
  $("item-categories").textContent = item.categories.join(" · ");
  $("item-price").textContent = item.price != null ? `$${item.price.toFixed(2)}` : "";
  window.scrollTo({ top: 0, behavior: "smooth" });
  send("view", { item_id: item.item_id });
  const similar = await recommend({ k: 6, context: { item_id: item.item_id } });
  fill($("similar-row"), similar.items.map((i) => card(i, i.reason)));
}

async function recommend(extra = {}) {
  return api("/v1/recommendations", {
    method: "POST",
    body: JSON.stringify({ user_id: state.visitor, k: 10, ...extra }),
  });
}

function renderProfile(profile) {
  const facts = [
    ["events kept", profile.opted_out ? "none (opted out)" : String(profile.events)],
    ["viewed / clicked", `${profile.totals.view} / ${profile.totals.click}`],
    ["carted / bought", `${profile.totals.add_to_cart} / ${profile.totals.purchase}`],
    ["searches", String(profile.totals.search)],
    ["sessions", String(profile.sessions)],
  ];
  fill($("facts"), facts.flatMap(([k, v]) => [el("dt", "", k), el("dd", "", v)]));
  fill($("top-categories"), profile.top_categories.map(([name, share]) => {
    const row = el("li", "");
    row.dataset.category = name;
    const bar = el("span", "bar");
    bar.style.width = `${Math.round(share * 100)}%`;
    row.append(el("span", "label", `${name} ${Math.round(share * 100)}%`), bar);
    return row;
  }));
  const recent = [
    ...profile.recent.purchased.map((i) => ["bought", i]),
    ...profile.recent.carted.map((i) => ["carted", i]),
    ...profile.recent.viewed.map((i) => ["viewed", i]),
  ].slice(0, 8);
  fill($("recent"), recent.map(([what, item]) => el("li", "", `${what}: ${item.title}`)));
  fill($("queries"), profile.recent_queries.map((q) => el("li", "", q)));
  $("arm").textContent = `arm ${profile.experiment_arm} of “${config.experiment || "default"}”`;
  $("personalize").checked = !profile.opted_out;
}

async function refresh() {
  const [recs, profile] = await Promise.all([
    recommend(),
    api(`/v1/users/${encodeURIComponent(state.visitor)}/profile`),
  ]);
  $("strategy").textContent = `${recs.strategy} · model ${recs.model_version}`;
  $("recommended").dataset.strategy = recs.strategy;
  fill($("rec-row"), recs.items.map((i) => card(i, i.reason)));
  renderProfile(profile);
  const changed = profile.events !== state.profileEvents || profile.opted_out !== state.optedOut;
  state.profileEvents = profile.events;
  state.optedOut = profile.opted_out;
  return changed;
}

// After an action, look often until the profile shows it (the stream takes well under a
// second), then settle back to a slow refresh.
let polling = null;
function refreshSoon() {
  const until = Date.now() + 4000;
  clearInterval(polling);
  polling = setInterval(async () => {
    const changed = await refresh().catch(() => false);
    if (changed || Date.now() > until) clearInterval(polling);
  }, 250);
}

// --- wiring -----------------------------------------------------------------------------
function start() {
  state.profileEvents = -1;
  $("visitor-id").textContent = state.visitor;
  $("item-view").hidden = true;
  refresh().catch((err) => status(err.message));
}

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const query = $("q").value.trim();
  if (query) send("search", { query });
  loadCatalog();
});
$("cart").addEventListener("click", () => send("add_to_cart", { item_id: state.item.item_id }));
$("buy").addEventListener("click", () => send("purchase", { item_id: state.item.item_id }));
$("close-item").addEventListener("click", () => { $("item-view").hidden = true; });
$("new-visitor").addEventListener("click", () => {
  sessionStorage.clear();
  location.assign("/?visitor=new"); // the server picks the new visitor and signs their token
});
$("personalize").addEventListener("change", async (e) => {
  await api(`/v1/users/${encodeURIComponent(state.visitor)}/consent`, {
    method: "POST",
    body: JSON.stringify({ personalization: e.target.checked }),
  });
  status(e.target.checked ? "personalization on" : "opted out: your profile is wiped");
  refreshSoon();
});

start();
loadCatalog().catch((err) => status(err.message));
setInterval(() => refresh().catch(() => {}), 5000);
