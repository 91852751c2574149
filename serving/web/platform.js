// The platform page: stream and serving health now, experiments, the latest backtest.
// Polls /v1/platform/summary; keeps five minutes of points for the charts.
"use strict";

const $ = (id) => document.getElementById(id);
const history = { events: [], lag: [], p99: [] };
const KEEP = 150; // points: 5 minutes at one every 2 s

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function fmt(value, digits = 0) {
  return value == null ? "–" : Number(value).toLocaleString(undefined, {
    maximumFractionDigits: digits, minimumFractionDigits: digits,
  });
}

function tile(label, value, id) {
  const node = el("div", undefined, "tile");
  node.id = id;
  node.append(el("span", value, "value"), el("span", label, "label"));
  return node;
}

function chart(canvas, points) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const values = points.filter((v) => v != null);
  const top = Math.max(1, ...values) * 1.1;
  ctx.strokeStyle = "#d0d4dc";
  ctx.beginPath();
  ctx.moveTo(0, height - 0.5);
  ctx.lineTo(width, height - 0.5);
  ctx.stroke();
  ctx.fillStyle = "#666";
  ctx.font = "11px system-ui";
  ctx.fillText(fmt(top, top < 10 ? 1 : 0), 4, 12);
  ctx.strokeStyle = "#3558d6";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  points.forEach((v, i) => {  // the newest point on the right edge
    if (v == null) return;
    const x = width - ((points.length - 1 - i) / Math.max(1, KEEP - 1)) * width;
    const y = height - (v / top) * (height - 16);
    if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    started = true;
  });
  ctx.stroke();
}

function push(series, value) {
  series.push(value);
  if (series.length > KEEP) series.shift();
}

function renderExperiments(experiments) {
  const body = $("experiments").tBodies[0];
  if (!experiments) {
    body.replaceChildren();
    $("experiments-note").textContent = "the experiment worker is not reachable";
    return;
  }
  $("experiments-note").textContent = `experiment “${experiments.experiment}”, live join`;
  body.replaceChildren(...Object.entries(experiments.arms).map(([arm, r]) => {
    const row = el("tr");
    row.append(el("td", arm), el("td", fmt(r.impressions)),
      el("td", `${fmt(r.ctr * 100, 1)} %`), el("td", `${fmt(r.cvr * 100, 1)} %`));
    return row;
  }));
}

function renderBacktest(backtest) {
  if (!backtest) {
    $("backtest-note").textContent =
      "no backtest yet: streamrank replay --namespace NAME, then streamrank backtest --namespace NAME";
    return;
  }
  const k = backtest.k;
  const columns = [`ndcg@${k}`, `recall@${k}`, `hit_rate@${k}`];
  $("backtest-what").textContent =
    `namespace ${backtest.namespace}: ${fmt(backtest.targets)} targets, ${fmt(backtest.users)} users, from ${backtest.cut}`;
  const head = el("tr");
  head.append(el("th", "ranker"), ...columns.map((c) => el("th", c)));
  $("backtest").tHead.replaceChildren(head);
  const ranked = Object.entries(backtest.overall)
    .sort((a, b) => (b[1][columns[0]] ?? 0) - (a[1][columns[0]] ?? 0));
  $("backtest").tBodies[0].replaceChildren(...ranked.map(([name, m]) => {
    const row = el("tr");
    row.append(el("td", name), ...columns.map((c) => el("td", fmt(m[c], 4))));
    return row;
  }));
  const plot = $("backtest-plot");
  plot.src = `/v1/platform/backtest.png?t=${backtest.written_at}`;
  plot.hidden = false;
}

async function poll() {
  let summary;
  try {
    const reply = await fetch("/v1/platform/summary");
    summary = await reply.json();
  } catch (err) {
    $("tiles").replaceChildren(el("p", `the API is unreachable (${err.message})`));
    return;
  }
  const { stream, serving } = summary;
  $("tiles").replaceChildren(
    tile("events/s", fmt(stream.events_per_s), "tile-events"),
    tile("lag (messages)", fmt(stream.lag_messages), "tile-lag"),
    tile("dead letters", fmt(stream.dead_letters), "tile-dlq"),
    tile("withheld (privacy)", fmt(stream.withheld), "tile-withheld"),
    tile("p99 ms (30 s)", fmt(serving.p99_ms_recent, 1), "tile-p99"),
    tile("requests/s", fmt(serving.requests_per_s, 1), "tile-rps"),
    tile("workers up", `${stream.workers_up}/${stream.workers}`, "tile-workers"),
  );
  push(history.events, stream.events_per_s);
  push(history.lag, stream.lag_messages);
  push(history.p99, serving.p99_ms_recent);
  chart($("chart-events"), history.events);
  chart($("chart-lag"), history.lag);
  chart($("chart-p99"), history.p99);
  renderExperiments(summary.experiments);
  renderBacktest(summary.backtest);
}

poll();
setInterval(poll, 2000);
