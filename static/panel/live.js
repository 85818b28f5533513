/*
 * Live events over the WebSocket (/ws/live/), with replay and deduplication.
 *
 * The page is rendered with the id of the newest event at render time (body data-last-event-id).
 * The client connects with ?after=<that id>, so anything committed while the page loaded is
 * replayed; after a drop it reconnects (backing off) with the newest id it saw, and the server
 * replays what was missed. Every event is handled once: ids already seen are dropped.
 * A missing id below the newest one (a push lost, or a later commit of an earlier id) is asked
 * for again with {"replay_after": id - 1}; after GAP_GIVE_UP_MS it is taken for a rolled-back id.
 *
 *   window.plasticityLive.on("run.progress", (message) => ...);   // "*" for every event
 */
(function () {
  "use strict";

  const GAP_ASK_MS = 1500;
  const GAP_GIVE_UP_MS = 10000;
  const MAX_REMEMBERED = 10000;
  const MAX_GAP = 200;

  class LiveClient {
    constructor(path, after, port) {
      this.path = path;
      this.port = port || "";
      this.lastId = after;          // the newest id seen
      this.seen = new Set();
      this.receivedIds = [];        // ids in the order they were handled (tests read it)
      this.gaps = new Map();        // missing id -> first noticed (ms)
      this.handlers = new Map();
      this.socket = null;
      this.connected = false;
      this.connects = 0;
      this.retryMs = 500;
      this.lastAsk = 0;
      setInterval(() => this._repairGaps(), 500);
    }

    on(type, handler) {
      if (!this.handlers.has(type)) this.handlers.set(type, []);
      this.handlers.get(type).push(handler);
      return this;
    }

    /* The id to resume after: below the oldest gap still worth waiting for, else the newest. */
    cursor() {
      let cursor = this.lastId;
      for (const id of this.gaps.keys()) cursor = Math.min(cursor, id - 1);
      return cursor;
    }

    connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      // Behind `manage.py serve` the WebSockets have their own ASGI server on another port of the
      // same host (data-ws-port); otherwise they share the page's origin.
      const host = this.port ? `${location.hostname}:${this.port}` : location.host;
      const socket = new WebSocket(`${scheme}//${host}${this.path}?after=${this.cursor()}`);
      this.socket = socket;
      this._status("connecting");
      socket.onopen = () => {
        this.connected = true;
        this.connects += 1;
        this.retryMs = 500;
        this._status("live");
      };
      socket.onmessage = (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch (err) { return; }
        this.receive(message);
      };
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        this.connected = false;
        this._status(event.code === 4401 || (event.code === 1006 && this.connects === 0) ? "offline" : "connecting");
        const wait = this.retryMs;
        this.retryMs = Math.min(this.retryMs * 2, 5000);
        setTimeout(() => this.connect(), wait);
      };
    }

    /* Drop the connection now (it reconnects by itself, as after a network blip). */
    drop() {
      if (this.socket) this.socket.close();
    }

    receive(message) {
      if (message.type === "resync") {
        location.reload();
        return;
      }
      const id = message.id;
      if (typeof id !== "number" || this.seen.has(id)) return;
      this.seen.add(id);
      this.receivedIds.push(id);
      this.gaps.delete(id);
      if (id > this.lastId) {
        // Ids skipped before the first event are not gaps: the server replays every existing event
        // after the page's id, in order, so the first one it sends is the first that exists.
        const now = Date.now();
        if (this.receivedIds.length > 1 && id - this.lastId <= MAX_GAP) {
          for (let missing = this.lastId + 1; missing < id; missing++) {
            if (!this.seen.has(missing)) this.gaps.set(missing, now);
          }
        }
        this.lastId = id;
      }
      this._forget();
      this._dispatch(message);
    }

    _dispatch(message) {
      for (const key of [message.type, "*"]) {
        for (const handler of this.handlers.get(key) || []) {
          try { handler(message); } catch (err) { console.error("live handler failed", key, err); }
        }
      }
    }

    _repairGaps() {
      const now = Date.now();
      let oldest = null;
      for (const [id, since] of this.gaps) {
        if (now - since > GAP_GIVE_UP_MS) { this.gaps.delete(id); continue; }
        if (now - since > GAP_ASK_MS && (oldest === null || id < oldest)) oldest = id;
      }
      if (oldest !== null && this.connected && now - this.lastAsk > GAP_ASK_MS) {
        this.lastAsk = now;
        this.socket.send(JSON.stringify({ replay_after: oldest - 1 }));
      }
    }

    _forget() {
      if (this.seen.size <= MAX_REMEMBERED) return;
      const drop = this.receivedIds.splice(0, this.receivedIds.length - MAX_REMEMBERED / 2);
      for (const id of drop) this.seen.delete(id);
    }

    _status(state) {
      const el = document.getElementById("live-status");
      if (!el) return;
      el.dataset.state = state;
      el.textContent = { live: "live", connecting: "reconnecting…", offline: "offline" }[state] || state;
    }
  }

  const body = document.body;
  if (!body.dataset.wsPath) return;
  const client = new LiveClient(body.dataset.wsPath, parseInt(body.dataset.lastEventId || "0", 10),
                                body.dataset.wsPort);
  window.plasticityLive = client;
  // Deferred scripts (panel.js) register their handlers before DOMContentLoaded.
  document.addEventListener("DOMContentLoaded", () => client.connect());
})();
