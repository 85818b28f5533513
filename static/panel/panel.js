/*
 * The control panel's behaviour: draw the server-built Plotly figures, keep the page current
 * from live events, run controls without leaving the page, count down to the next cycle.
 *
 * Pages are rendered on the server; live events either patch a value in place (progress bars,
 * brain state, chart points) or ask for a fresh copy of a page section: the page is fetched
 * again and the sections with the same ids are swapped in (debounced, one fetch at a time).
 */
(function () {
  "use strict";

  const live = window.plasticityLive;
  const page = document.body.dataset.page;
  // No request may leave the machine: plotly-basic.min.js is vendored with every absolute URL
  // removed (project/vendor.py); no logo link, and topojson would be looked for under /static/.
  const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: false, topojsonURL: "/static/vendor/topojson/" };
  const MAX_CHART_POINTS = 5000;

  // ------------------------------------------------------------------ charts

  function renderCharts(root) {
    if (!window.Plotly) return;
    root.querySelectorAll("[data-figure]").forEach((el) => {
      const source = document.getElementById(el.dataset.figure);
      if (!source) return;
      const figure = JSON.parse(source.textContent);
      window.Plotly.react(el, figure.data, figure.layout, PLOT_CONFIG);
    });
  }

  // ------------------------------------------------------------------ section refresh

  const pending = new Set();
  let refreshTimer = null;
  let refreshing = false;

  function refresh(ids) {
    ids.forEach((id) => { if (document.getElementById(id)) pending.add(id); });
    if (pending.size && !refreshTimer) refreshTimer = setTimeout(refreshNow, 250);
  }

  async function refreshNow() {
    refreshTimer = null;
    if (refreshing) { refreshTimer = setTimeout(refreshNow, 250); return; }
    const ids = [...pending];
    pending.clear();
    refreshing = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      if (!response.ok || response.redirected) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const id of ids) {
        const fresh = doc.getElementById(id);
        const current = document.getElementById(id);
        if (!fresh || !current) continue;
        // A copy, so the fetched page stays whole: when one section holds another (a task's row inside
        // the tasks table), moving the inner one out would swap the outer one in without it.
        const copy = fresh.cloneNode(true);
        current.replaceWith(copy);
        renderCharts(copy);
      }
      tickCountdowns();
      document.dispatchEvent(new CustomEvent("panel:refreshed", { detail: ids }));
    } catch (err) {
      console.warn("section refresh failed", err);
    } finally {
      refreshing = false;
    }
  }

  function throttled(fn, ms) {
    let last = 0;
    let timer = null;
    return function (...args) {
      const wait = last + ms - Date.now();
      if (wait <= 0) { last = Date.now(); fn(...args); return; }
      if (!timer) timer = setTimeout(() => { timer = null; last = Date.now(); fn(...args); }, wait);
    };
  }

  // ------------------------------------------------------------------ controls

  function toast(text, isError) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-async")) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const token = form.querySelector("[name=csrfmiddlewaretoken]");
      // The attribute, not form.action: a control named "action" (the loop's stop/start field)
      // shadows the form's action property with itself.
      const response = await fetch(form.getAttribute("action") || window.location.href, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" },
      });
      let data = {};
      try { data = await response.json(); } catch (err) { data = {}; }
      const message = data.message || (response.ok ? "Done." : `Refused (HTTP ${response.status}).`);
      toast(message, !response.ok);
      // A form with a [data-form-error] slot shows a refusal there too, next to what was refused.
      const slot = form.querySelector("[data-form-error]");
      if (slot) {
        slot.textContent = response.ok ? "" : message;
        slot.hidden = response.ok;
        const field = slot.closest(".field");
        if (field) field.classList.toggle("has-error", !response.ok);
      }
      if (response.ok && form.hasAttribute("data-reset")) form.reset();
      if (response.ok && form.dataset.refresh) refresh(form.dataset.refresh.split(/\s+/));
    } catch (err) {
      toast(`Network error: ${err}`, true);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });

  // ------------------------------------------------------------------ new task (/tasks/new/)
  // Without script the two steps are plain form posts. With it, choosing a file uploads it with
  // fetch and the server's step 2 card (preview and choices) is swapped in without a reload; the
  // output kind's "detected" option names what the chosen target makes, and the metrics that do
  // not suit that kind are disabled.

  function fileSize(bytes) {
    return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MiB` : `${Math.round(bytes / 1024)} KiB`;
  }

  function taskChoicesSync(form) {
    const target = form.querySelector("[data-target-select]");
    const kindSelect = form.querySelector("[data-kind-select]");
    const metric = form.querySelector("[data-metric-select]");
    if (!target || !kindSelect || !metric) return;
    const option = target.selectedOptions[0];
    const detected = option ? option.dataset.kind : "";
    const auto = kindSelect.querySelector('option[value=""]');
    if (auto) auto.textContent = detected ? `Detected: ${detected}` : "Detected from the target";
    const kind = kindSelect.value || detected;
    const binary = !!option && option.dataset.distinct === "2";
    metric.querySelectorAll("option[data-kind]").forEach((o) => {
      o.disabled = !!kind && (o.dataset.kind !== kind || (o.hasAttribute("data-binary-only") && !binary));
    });
    metric.querySelectorAll("optgroup[data-kind]").forEach((g) => { g.hidden = !!kind && g.dataset.kind !== kind; });
    if (metric.selectedOptions[0] && metric.selectedOptions[0].disabled) metric.value = "";
  }

  async function taskUpload(form) {
    const input = form.querySelector("input[type=file]");
    const slot = form.querySelector("[data-form-error]");
    const fail = (text) => {
      if (!slot) { toast(text, true); return; }
      slot.textContent = text;
      slot.hidden = false;
      slot.closest(".field").classList.add("has-error");
    };
    const file = input && input.files[0];
    if (!file) { fail("Choose a .csv or .npz file to upload."); return; }
    const limit = parseInt(form.dataset.maxBytes || "0", 10);
    if (limit && file.size > limit) {
      fail(`The file is ${fileSize(file.size)}; the limit is ${form.dataset.maxSize}. Upload fewer rows (more can be ` +
           "appended to the task later) or compress the arrays (numpy.savez_compressed).");
      return;
    }
    const button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; button.textContent = "Uploading…"; }
    try {
      const token = form.querySelector("[name=csrfmiddlewaretoken]");
      const response = await fetch(form.getAttribute("action"), {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { "X-CSRFToken": token ? token.value : "" },
      });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("task-new");
      const current = document.getElementById("task-new");
      if (!fresh || !current) { fail(`Refused (HTTP ${response.status}).`); return; }
      current.replaceWith(fresh);
      // Step 2's address (?upload=<token>): a reload shows the same preview.
      if (response.redirected) history.replaceState(null, "", response.url);
      const choices = fresh.querySelector("form[data-task-choices]");
      if (choices) taskChoicesSync(choices);
      const first = fresh.querySelector(".has-error input, .has-error select, input[name=name]");
      if (first) first.focus();
    } catch (err) {
      fail(`Network error: ${err}`);
    } finally {
      if (button && button.isConnected) { button.disabled = false; button.textContent = "Upload and preview"; }
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-task-upload")) return;
    event.preventDefault();
    taskUpload(form);
  });

  document.addEventListener("change", (event) => {
    const el = event.target;
    if (!(el instanceof HTMLElement)) return;
    const upload = el.closest("form[data-task-upload]");
    if (upload && el instanceof HTMLInputElement && el.type === "file") {
      if (el.files.length) upload.requestSubmit();
      return;
    }
    const choices = el.closest("form[data-task-choices]");
    if (choices) taskChoicesSync(choices);
  });

  document.querySelectorAll("form[data-task-choices]").forEach(taskChoicesSync);

  // ------------------------------------------------------------------ countdown

  function duration(seconds) {
    if (seconds < 120) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    return minutes < 120 ? `${minutes} min ${seconds % 60} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function tickCountdowns() {
    document.querySelectorAll("[data-countdown]").forEach((el) => {
      const at = parseInt(el.dataset.countdown, 10);
      if (!at) { el.textContent = "—"; return; }
      const seconds = Math.round((at - Date.now()) / 1000);
      el.textContent = seconds > 0 ? `in ${duration(seconds)}` : "due now";
    });
  }

  // ------------------------------------------------------------------ runs

  function setRunProgress(payload) {
    const id = payload.run_id;
    if (typeof payload.progress === "number") {
      document.querySelectorAll(`[data-run-progress="${id}"]`).forEach((el) => { el.value = payload.progress; });
      document.querySelectorAll(`[data-run-pct="${id}"]`).forEach((el) => {
        el.textContent = `${Math.round(payload.progress * 100)}%`;
      });
    }
    if (payload.message) {
      document.querySelectorAll(`[data-run-message="${id}"]`).forEach((el) => { el.textContent = payload.message; });
    }
    if (payload.status) {
      document.querySelectorAll(`[data-run-status="${id}"]`).forEach((el) => {
        el.textContent = payload.status;
        el.className = el.className.replace(/\bs-\w+/g, "").trim() + ` s-${payload.status}`;
      });
    }
  }

  // ------------------------------------------------------------------ hormones

  function hormoneChart(onChange) {
    const el = document.querySelector("[data-hormone-chart]");
    if (!el || !window.Plotly) return;
    const params = JSON.parse(document.getElementById(el.dataset.hormoneChart).textContent);
    const traceOf = (name) => (el.data || []).findIndex((t) => t.meta === name && t.mode === "lines");
    const lastX = (index) => { const xs = el.data[index].x; return xs.length ? xs[xs.length - 1] : 0; };
    const levelNow = (p, now) => p.baseline + (p.level - p.baseline) * Math.pow(2, -((now - p.at) / 1000) / p.half_life_s);
    const show = (name, level) => {
      document.querySelectorAll(`[data-hormone-level="${name}"]`).forEach((c) => { c.textContent = level.toFixed(3); });
      document.querySelectorAll(`[data-hormone-meter="${name}"]`).forEach((m) => { m.value = level; });
    };

    live.on("hormone.changed", (message) => {
      const p = message.payload;
      const at = Date.parse(message.at) || Date.now();
      const known = params[p.name];
      if (known && at < known.at) return;  // older than what the page already shows
      params[p.name] = Object.assign({}, known || { baseline: p.level, half_life_s: 600 }, { level: p.level, at });
      const index = traceOf(p.name);
      if (index >= 0 && at >= lastX(index)) {
        window.Plotly.extendTraces(el, { x: [[at, at]], y: [[p.level - p.delta, p.level]] }, [index], MAX_CHART_POINTS);
      }
      show(p.name, p.level);
      if (onChange) onChange(message);
    });

    setInterval(() => {
      const now = Date.now();
      const xs = [];
      const ys = [];
      const indices = [];
      for (const [name, p] of Object.entries(params)) {
        const index = traceOf(name);
        const level = levelNow(p, now);
        show(name, level);
        if (index < 0 || now <= lastX(index)) continue;
        xs.push([now]); ys.push([level]); indices.push(index);
      }
      if (indices.length) window.Plotly.extendTraces(el, { x: xs, y: ys }, indices, MAX_CHART_POINTS);
    }, 5000);
  }

  // ------------------------------------------------------------------ pages

  function overviewPage() {
    const inFlight = () => document.getElementById("in-flight");
    live.on("run.created", () => refresh(["in-flight", "loop"]));
    live.on("run.progress", (m) => {
      const table = inFlight();
      if (table && !table.querySelector(`[data-run-row="${m.payload.run_id}"]`)) refresh(["in-flight"]);
    });
    live.on("run.finished", () => refresh(["in-flight", "finished", "promotions", "models", "fleet"]));
    // The Models tile counts the Models table's rows: whatever refreshes the table refreshes the tile.
    live.on("version.activated", () => refresh(["models", "fleet", "promotions"]));
    live.on("serving.switched", () => refresh(["switches", "models", "fleet"]));
    live.on("task.created", () => refresh(["models", "fleet"]));
    live.on("cycle.finished", () => refresh(["loop"]));
    live.on("config.changed", () => refresh(["loop"]));
    live.on("brain.state", (m) => {
      const p = m.payload;
      const fmt = { created_at: (v) => String(v).slice(0, 19).replace("T", " "), cpu_percent: (v) => v.toFixed(1),
        memory_percent: (v) => v.toFixed(1), memory_used_mb: (v) => v.toFixed(0),
        fleet_health: (v) => (v === null ? "—" : v.toFixed(3)) };
      document.querySelectorAll("[data-brain]").forEach((el) => {
        const key = el.dataset.brain;
        if (key in p) el.textContent = fmt[key] ? fmt[key](p[key]) : p[key];
      });
      for (const [name, level] of Object.entries(p.hormones || {})) {
        document.querySelectorAll(`[data-brain-hormone="${name}"]`).forEach((el) => { el.textContent = level.toFixed(3); });
      }
      if (!document.querySelector("[data-brain]")) refresh(["brain"]);
    });
    hormoneChart();
  }

  function modelPage() {
    const modelId = parseInt(document.getElementById("model-summary").dataset.modelId, 10);
    const mine = (m) => m.payload && m.payload.model_id === modelId;
    live.on("version.activated", (m) => { if (mine(m)) refresh(["model-summary", "model-charts", "versions"]); });
    live.on("run.created", (m) => { if (mine(m)) refresh(["model-runs"]); });
    live.on("run.finished", (m) => { if (mine(m)) refresh(["model-runs"]); });
  }

  function runPage() {
    const head = document.getElementById("run-head");
    const runId = parseInt(head.dataset.runId, 10);
    const refreshLog = throttled(() => refresh(["run-log"]), 2000);
    // No curve chart on the page (a queued run's "no data yet", or a search's trial views): the
    // section is fetched again, so the chart or the new trials appear.
    const refreshCurves = throttled(() => refresh(["run-curves"]), 3000);
    live.on("run.progress", (m) => {
      if (m.payload.run_id !== runId) return;
      const chart = document.getElementById("curve-chart");
      if (!chart) { refreshCurves(); refreshLog(); return; }
      let step = parseInt(chart.dataset.curveLen || "0", 10);
      let lastT = parseFloat(chart.dataset.curveLastT || "0") || 0;
      const points = (m.payload.points || []).filter((p) => (p.t || 0) > lastT);
      if (points.length && window.Plotly && chart.data) {
        const lx = []; const ly = []; const sx = []; const sy = [];
        for (const p of points) {
          step += 1;
          if (typeof p.train_loss === "number") { lx.push(step); ly.push(p.train_loss); }
          if (typeof p.val_score === "number") { sx.push(step); sy.push(p.val_score); }
          lastT = Math.max(lastT, p.t || 0);
        }
        window.Plotly.extendTraces(chart, { x: [lx, sx], y: [ly, sy] }, [0, 1], MAX_CHART_POINTS);
        chart.dataset.curveLen = String(step);
        chart.dataset.curveLastT = String(lastT);
      }
      refreshLog();
    });
    live.on("run.finished", (m) => {
      if (m.payload.run_id === runId) refresh(["run-head", "run-progress", "run-result", "run-log", "run-curves"]);
    });
  }

  function tasksPage() {
    const again = () => refresh(["tasks-table", "tasks-chart"]);
    live.on("serving.switched", again);
    live.on("version.activated", again);
    live.on("dataset.appended", again);
  }

  function hormonesPage() {
    const events = throttled(() => refresh(["hormone-events"]), 1000);
    hormoneChart(events);
  }

  function taskPage() {
    const head = document.getElementById("task-head");
    const slug = head ? head.dataset.task : "";
    const mine = (m) => m.payload && m.payload.task === slug;
    const again = () => refresh(["task-head", "task-data", "task-serving", "task-implementations", "task-datasets"]);
    live.on("serving.switched", (m) => { if (mine(m)) again(); });
    live.on("version.activated", (m) => { if (mine(m)) again(); });
    live.on("dataset.appended", (m) => { if (mine(m)) again(); });
    live.on("serving.input_drift", (m) => { if (mine(m)) refresh(["drift"]); });
  }

  function configPage() {
    live.on("config.changed", () => refresh(["loop"]));
    live.on("cycle.finished", () => refresh(["loop", "decisions"]));
  }

  function start() {
    renderCharts(document);
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    if (!live) return;
    live.on("run.progress", (m) => setRunProgress(m.payload));
    live.on("run.finished", (m) => setRunProgress(m.payload));
    const pages = { overview: overviewPage, model: modelPage, run: runPage, tasks: tasksPage,
      hormones: hormonesPage, config: configPage, task: taskPage };
    if (pages[page]) pages[page]();
  }

  window.plasticityPanel = { refresh, renderCharts, toast };
  start();
})();
