/*
 * Live updates of the model and run lists (/models/, /runs/), on top of panel.js.
 *
 * /runs/: panel.js already moves every visible run's status badge and progress bar; here a
 * finished run's row also gets its gain, decision and end time, a row whose new status no longer
 * matches the status filter is marked so, and runs created since the page loaded (that match the
 * filters the event can tell) are counted in a "N new runs — refresh" notice rather than
 * inserted, so rows never move under the reader's eyes.
 * /models/: the table is fetched again (with the page's own query) when a version is activated
 * or a run starts or ends.
 */
(function () {
  "use strict";

  const live = window.plasticityLive;
  const panel = window.plasticityPanel;
  if (!live || !panel) return;

  /* A gain as the server writes it (panel_format's signed_change): "+3.6 %" in a coloured span. */
  function gainCell(cell, value) {
    cell.textContent = "";
    if (typeof value !== "number" || !isFinite(value)) { cell.textContent = "—"; return; }
    const percent = Math.round(value * 1000) / 10;
    const span = document.createElement("span");
    const css = percent === 0 ? "flat" : percent > 0 ? "good" : "bad";
    span.className = `delta ${css}`;
    span.title = { good: "better", bad: "worse", flat: "no change" }[css];
    span.textContent = percent === 0 ? "0.0 %" : `${percent > 0 ? "+" : ""}${percent.toFixed(1)} %`;
    cell.appendChild(span);
  }

  function runsPage() {
    const table = document.getElementById("runs-table");
    if (!table) return;
    const filters = table.dataset;
    let fresh = 0;

    live.on("run.created", (m) => {
      const p = m.payload;
      if ((filters.filterTask && filters.filterTask !== p.task)
          || (filters.filterStrategy && filters.filterStrategy !== p.strategy)
          || (filters.filterStatus && filters.filterStatus !== p.status)
          || (filters.filterModel && parseInt(filters.filterModel, 10) !== p.model_id)) return;
      if (document.querySelector(`#runs-table [data-run-row="${p.run_id}"]`)) return;
      fresh += 1;
      const notice = document.getElementById("runs-new");
      notice.querySelector("[data-new-runs]").textContent = String(fresh);
      notice.hidden = false;
    });

    function update(m) {
      const p = m.payload;
      const row = document.querySelector(`#runs-table [data-run-row="${p.run_id}"]`);
      if (!row) return;
      row.dataset.status = p.status;
      row.classList.add("updated");
      const stale = !!filters.filterStatus && filters.filterStatus !== p.status;
      row.classList.toggle("stale", stale);
      row.title = stale ? `now ${p.status}: no longer matches the status filter` : "";
      if (m.type !== "run.finished") return;
      const gain = row.querySelector("[data-run-gain]");
      if (gain) gainCell(gain, p.gain);
      const decision = row.querySelector("[data-run-decision]");
      if (decision && p.message) {
        // As panel_format's decision_reason: the badge already says "promoted", the text need not.
        let text = p.message;
        if (text.toLowerCase().startsWith(`${p.status}:`)) text = text.slice(p.status.length + 1).trim();
        decision.textContent = text.length > 140 ? `${text.slice(0, 139)}…` : text;
      }
      const finished = row.querySelector("[data-run-finished]");
      if (finished && m.at) finished.textContent = String(m.at).slice(0, 19).replace("T", " ");
    }

    live.on("run.progress", update);
    live.on("run.finished", update);
  }

  function modelsPage() {
    const again = () => panel.refresh(["models-table"]);
    live.on("version.activated", again);
    live.on("run.created", again);
    live.on("run.finished", again);
  }

  const pages = { runs: runsPage, models: modelsPage };
  const page = document.body.dataset.page;
  if (pages[page]) pages[page]();
})();
