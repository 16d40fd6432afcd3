// The trackline debugger: lists the events a collector stored and adds new ones as its live
// stream (GET api/stream, server-sent events) announces them. With destinations configured, a
// panel shows each destination's queue (GET api/destinations, polled), and an event's detail
// shows where it stands with each destination (GET api/events/{id}/deliveries), kept current.
//
// Every value from an event reaches the page through textContent, an attribute or a form
// field's value, never as markup: a message is data written by whoever holds a write key.
//
// Sources are key ids (a few leading characters of the write key and a keyed hash): the
// collector never stores or sends the keys themselves.
"use strict";

(() => {
  const TYPES = ["identify", "track", "page", "screen", "group", "alias"];
  /** Rows kept on the page; older ones stay in the store, reachable through the filters. */
  const MAX_ROWS = 500;
  /** Events held while paused; past this, resuming reloads the list from the store. */
  const MAX_QUEUED = 5000;
  const STATS_DELAY_MS = 250;
  const SEARCH_DELAY_MS = 200;
  /** Without a stream (an old collector, a proxy that buffers), list anyway after this. */
  const STREAM_GRACE_MS = 3000;
  /** How often the destinations panel and an open event's deliveries are read again. */
  const DESTINATIONS_MS = 1000;
  const STATUS_LABELS = {
    pending: "Pending",
    retrying: "Retrying",
    delivered: "Delivered",
    failed: "Failed",
  };

  const byId = (id) => document.getElementById(id);
  const list = byId("events");
  const pauseButton = byId("pause");
  const statusPill = byId("status");
  const search = byId("search");
  const sourceSelect = byId("source");
  const typeGroup = byId("types");
  const detail = byId("detail");

  /** The collector's root: the page is served at / and at /debugger. */
  const root = new URL(".", location.href);

  const state = {
    filters: readFilters(),
    paused: false,
    queued: [],
    overflowed: false,
    /** row id -> {id, source, message}, for the rows on the page */
    entries: new Map(),
    selected: null,
    stats: null,
    loaded: false,
    connected: false,
    generation: 0,
    /** the collector's destinations, as GET api/destinations gave them */
    destinations: [],
    deliveriesFor: null,
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function apiUrl(path, params) {
    const url = new URL(path, root);
    for (const [key, value] of Object.entries(params || {})) {
      if (value) url.searchParams.set(key, value);
    }
    return url;
  }

  const isText = (value) => typeof value === "string" && value !== "";
  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

  // -- filters ---------------------------------------------------------------------------

  function readFilters() {
    const params = new URLSearchParams(location.search);
    const type = params.get("type") || "";
    return {
      type: TYPES.includes(type) ? type : "",
      q: params.get("q") || "",
      source: params.get("source") || "",
    };
  }

  function writeFilters() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  function hasFilters() {
    return Boolean(state.filters.type || state.filters.q || state.filters.source);
  }

  let searchTimer = null;

  function setFilters(changes) {
    // Text still waiting for its pause in typing counts too, or redrawing the box loses it.
    clearTimeout(searchTimer);
    Object.assign(state.filters, { q: search.value }, changes);
    writeFilters();
    renderFilterControls();
    state.entries.clear();
    state.queued = [];
    state.overflowed = false;
    list.replaceChildren();
    updatePauseLabel();
    reload();
  }

  /** The same test the collector applies to GET api/events, for events from the stream. */
  function matches(entry) {
    const { type, q, source } = state.filters;
    const message = entry.message;
    if (type && message.type !== type) return false;
    if (source && entry.source !== source) return false;
    if (q && !JSON.stringify(message).toLowerCase().includes(q.toLowerCase())) return false;
    return true;
  }

  // -- how an event reads ----------------------------------------------------------------

  function nameOf(message) {
    switch (message.type) {
      case "track":
        return isText(message.event) ? message.event : "";
      case "page":
      case "screen":
        return [message.category, message.name].filter(isText).join(" / ");
      case "identify": {
        const traits = isObject(message.traits) ? message.traits : {};
        const who = [traits.name, traits.email].filter(isText).join(" · ");
        const keys = Object.keys(traits);
        return who || (keys.length ? `traits: ${keys.join(", ")}` : "");
      }
      case "group":
        return isText(message.groupId) ? message.groupId : "";
      case "alias":
        return `${message.previousId} → ${message.userId}`;
      default:
        return "";
    }
  }

  /** A collector with a read token answers 401 once this browser's login ran out: the
   *  page itself then answers with the login form. */
  function loginExpired(response) {
    if (response.status !== 401) return false;
    location.reload();
    return true;
  }

  function receivedOf(message) {
    return isText(message.receivedAt) ? message.receivedAt : message.timestamp;
  }

  function ago(iso) {
    const moment = Date.parse(iso);
    if (Number.isNaN(moment)) return "";
    const seconds = Math.round((Date.now() - moment) / 1000);
    if (seconds < 5) return "just now";
    if (seconds < 60) return `${seconds}s ago`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m ago`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `${hours}h ago`;
    const days = Math.floor(hours / 24);
    if (days < 30) return `${days}d ago`;
    return new Date(moment).toLocaleDateString();
  }

  function exact(message) {
    const received = receivedOf(message);
    const moment = Date.parse(received);
    const lines = [];
    if (!Number.isNaN(moment)) lines.push(new Date(moment).toString());
    lines.push(`receivedAt ${received}`);
    if (isText(message.timestamp)) lines.push(`timestamp ${message.timestamp}`);
    return lines.join("\n");
  }

  function buildRow(entry) {
    const message = entry.message;
    const item = el("li");
    item.dataset.id = String(entry.id);
    const row = el("button", "row");
    row.type = "button";
    row.addEventListener("click", () => select(entry.id));

    const badge = el("span", "badge", String(message.type));
    badge.dataset.type = String(message.type);

    const name = nameOf(message);
    const nameCell = el("span", name ? "name" : "name none", name || "(no name)");
    nameCell.title = name;

    const user = el("span", "user");
    if (isText(message.userId)) {
      user.textContent = message.userId;
      user.title = `userId ${message.userId}`;
    } else {
      user.append(el("span", "anon", "anon "), String(message.anonymousId));
      user.title = `anonymousId ${message.anonymousId}`;
    }

    const source = el("span", "source", String(entry.source));
    source.title = "source: the write key's id";

    const time = el("time", "time", ago(receivedOf(message)));
    time.dateTime = receivedOf(message);
    time.title = exact(message);

    row.append(badge, nameCell, user, source, time);
    if (state.selected && state.selected.id === entry.id) row.setAttribute("aria-current", "true");
    item.append(row);
    return item;
  }

  // -- the list --------------------------------------------------------------------------

  /** Put one new event in its place (newest first) and trim the oldest. */
  function place(entry) {
    if (state.entries.has(entry.id)) return;
    state.entries.set(entry.id, entry);
    const item = buildRow(entry);
    item.classList.add("fresh");
    let next = null;
    for (const child of list.children) {
      if (Number(child.dataset.id) < entry.id) {
        next = child;
        break;
      }
    }
    list.insertBefore(item, next);
    while (list.children.length > MAX_ROWS) {
      state.entries.delete(Number(list.lastElementChild.dataset.id));
      list.lastElementChild.remove();
    }
  }

  function renderAll() {
    const newest = [...state.entries.values()].sort((a, b) => b.id - a.id).slice(0, MAX_ROWS);
    state.entries = new Map(newest.map((entry) => [entry.id, entry]));
    list.replaceChildren(...newest.map(buildRow));
    updateEmpty();
  }

  function updateEmpty() {
    const rows = state.entries.size;
    const storeEmpty = state.stats ? state.stats.events === 0 : !hasFilters();
    byId("empty").hidden = !(state.loaded && rows === 0 && storeEmpty);
    byId("no-match").hidden = !(state.loaded && rows === 0 && !storeEmpty);
    const more = byId("more");
    more.hidden = rows < MAX_ROWS;
    more.textContent = `Showing the newest ${MAX_ROWS} events${hasFilters() ? " that match" : ""}.`;
  }

  function updateTimes() {
    for (const time of list.querySelectorAll("time")) time.textContent = ago(time.dateTime);
  }

  /** Fetch the newest matching events and merge them with what the stream brought. */
  async function reload() {
    const generation = ++state.generation;
    const params = { ...state.filters, meta: "1", limit: String(MAX_ROWS) };
    try {
      const response = await fetch(apiUrl("api/events", params), { cache: "no-store" });
      if (loginExpired(response)) return;
      const document_ = await response.json();
      if (generation !== state.generation) return;
      if (!response.ok) {
        setStatus("error", `Error: ${document_.message || response.status}`);
        return;
      }
      for (const entry of document_.events) state.entries.set(entry.id, entry);
    } catch (error) {
      if (generation === state.generation) setStatus("error", "Cannot reach the collector");
      return;
    }
    state.loaded = true;
    renderAll();
    setStatus();
  }

  // -- live ------------------------------------------------------------------------------

  function onLive(entry) {
    scheduleStats();
    if (!matches(entry)) return;
    if (state.paused) {
      if (state.queued.length < MAX_QUEUED) state.queued.push(entry);
      else state.overflowed = true;
      updatePauseLabel();
      return;
    }
    place(entry);
    updateEmpty();
  }

  function connect() {
    const stream = new EventSource(apiUrl("api/stream", { meta: "1" }));
    // Listing after the stream opened leaves no gap: an event stored in between comes
    // through both, and the row id keeps it once.
    const fallback = setTimeout(reload, STREAM_GRACE_MS);
    stream.addEventListener("open", () => {
      clearTimeout(fallback);
      state.connected = true;
      setStatus();
      if (state.paused) state.overflowed = true;
      else reload();
      scheduleStats();
    });
    stream.addEventListener("message", (event) => {
      let entry;
      try {
        entry = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (isObject(entry) && isObject(entry.message)) onLive(entry);
    });
    stream.addEventListener("lagged", () => {
      // The collector skipped events for this page: the store has them all.
      if (state.paused) state.overflowed = true;
      else reload();
      scheduleStats();
    });
    stream.addEventListener("error", () => {
      state.connected = false;
      setStatus();
    });
  }

  function setStatus(kind, text) {
    if (kind === undefined) {
      if (!state.connected) [kind, text] = ["offline", "Reconnecting…"];
      else if (state.paused) [kind, text] = ["paused", "Paused"];
      else [kind, text] = ["live", "Live"];
    }
    statusPill.dataset.state = kind;
    statusPill.textContent = text;
  }

  function setPaused(paused) {
    state.paused = paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      const queued = state.queued;
      state.queued = [];
      if (state.overflowed) {
        state.overflowed = false;
        reload();
      } else if (queued.length) {
        for (const entry of queued) state.entries.set(entry.id, entry);
        renderAll();
      }
    }
    updatePauseLabel();
    setStatus();
  }

  function updatePauseLabel() {
    if (!state.paused) {
      pauseButton.textContent = "Pause";
      return;
    }
    const waiting = state.queued.length;
    const more = state.overflowed ? "+" : "";
    pauseButton.textContent = waiting || more ? `Resume (${waiting}${more} new)` : "Resume";
  }

  // -- counts and sources ----------------------------------------------------------------

  let statsTimer = null;

  function scheduleStats() {
    if (statsTimer === null) statsTimer = setTimeout(refreshStats, STATS_DELAY_MS);
  }

  async function refreshStats() {
    try {
      const response = await fetch(apiUrl("api/stats"), { cache: "no-store" });
      if (loginExpired(response)) return;
      if (response.ok) state.stats = await response.json();
    } catch (error) {
      // The stream's reconnection reports the outage; counts catch up after it.
    } finally {
      statsTimer = null;
    }
    renderCounts();
    renderSources();
    updateEmpty();
  }

  function renderCounts() {
    const stats = state.stats || { events: 0, by_type: {} };
    for (const button of typeGroup.children) {
      const type = button.dataset.type;
      const count = type ? stats.by_type[type] || 0 : stats.events;
      button.querySelector(".count").textContent = count.toLocaleString();
    }
  }

  function renderSources() {
    const bySource = { ...(state.stats ? state.stats.by_source : {}) };
    const chosen = state.filters.source;
    if (chosen && !(chosen in bySource)) bySource[chosen] = 0;
    const keys = Object.keys(bySource).sort();
    const current = [...sourceSelect.options].slice(1).map((option) => option.value);
    if (keys.join("\n") !== current.join("\n")) {
      const options = keys.map((key) => {
        const option = el("option");
        option.value = key;
        return option;
      });
      sourceSelect.replaceChildren(el("option", "", "All sources"), ...options);
      sourceSelect.options[0].value = "";
    }
    for (const option of [...sourceSelect.options].slice(1)) {
      option.textContent = `${option.value} (${(bySource[option.value] || 0).toLocaleString()})`;
    }
    sourceSelect.value = chosen;
  }

  function buildTypeButtons() {
    for (const type of ["", ...TYPES]) {
      const button = el("button", "chip");
      button.type = "button";
      button.dataset.type = type;
      const label = el("span", type ? "badge" : "", type || "All");
      if (type) label.dataset.type = type;
      button.append(label, el("span", "count", "0"));
      button.addEventListener("click", () => {
        setFilters({ type: state.filters.type === type ? "" : type });
      });
      typeGroup.append(button);
    }
  }

  function renderFilterControls() {
    for (const button of typeGroup.children) {
      button.setAttribute("aria-pressed", String(button.dataset.type === state.filters.type));
    }
    if (search.value !== state.filters.q) search.value = state.filters.q;
    renderSources();
  }

  // -- destinations ----------------------------------------------------------------------

  async function refreshDestinations() {
    try {
      const response = await fetch(apiUrl("api/destinations"), { cache: "no-store" });
      if (!response.ok) return;
      const rows = await response.json();
      if (Array.isArray(rows)) state.destinations = rows;
    } catch (error) {
      return; // the stream's reconnection reports the outage
    }
    renderDestinations();
    if (state.selected) refreshDeliveries(state.selected);
  }

  function destinationState(row) {
    if (!row.enabled) return "off";
    if (row.down) return "down";
    if (row.retrying) return "retrying";
    if (row.failed) return "failed";
    return "ok";
  }

  function renderDestinations() {
    const panel = byId("destinations");
    panel.hidden = state.destinations.length === 0;
    const items = state.destinations.map((row) => {
      const item = el("li", "destination");
      item.dataset.name = String(row.name);
      item.dataset.state = destinationState(row);
      const head = el("div", "destination-head");
      const kind = String(row.kind || "not configured");
      const note = row.down ? " · down" : row.enabled ? "" : " · off";
      head.append(
        el("span", "dot"),
        el("span", "destination-name", String(row.name)),
        el("span", "destination-kind", kind + note),
      );
      const counts = el("dl", "destination-counts");
      for (const key of ["delivered", "pending", "retrying", "failed"]) {
        const value = Number(row[key]) || 0;
        const term = el("dt", "", STATUS_LABELS[key]);
        const figure = el("dd", "", value.toLocaleString());
        figure.dataset.count = key;
        counts.append(term, figure);
      }
      item.append(head, counts);
      const notes = [];
      if (row.down) notes.push("down: waiting for it to answer");
      else if (!row.enabled) notes.push("disabled");
      if (isText(row.last_error)) notes.push(`last error: ${row.last_error}`);
      if (isText(row.last_success_at)) notes.push(`last success ${ago(row.last_success_at)}`);
      item.title = notes.join("\n");
      if (isText(row.last_error) && (row.retrying || row.failed || row.down)) {
        item.append(el("p", "destination-error", row.last_error));
      }
      return item;
    });
    byId("destination-list").replaceChildren(...items);
  }

  /** Why an event went nowhere, when its `integrations` says so (the collector's rules). */
  function routingNote(message) {
    const integrations = message.integrations;
    if (integrations === undefined || integrations === null) return "";
    if (!isObject(integrations)) return "integrations is not an object: routed nowhere";
    if ("All" in integrations && typeof integrations.All !== "boolean") {
      return "integrations.All is not true or false: routed nowhere";
    }
    return "";
  }

  async function refreshDeliveries(entry) {
    const section = byId("delivery");
    if (state.destinations.length === 0) {
      section.hidden = true;
      return;
    }
    const messageId = String(entry.message.messageId);
    state.deliveriesFor = messageId;
    let rows = null;
    try {
      const path = `api/events/${encodeURIComponent(messageId)}/deliveries`;
      const response = await fetch(apiUrl(path), { cache: "no-store" });
      if (response.ok) rows = await response.json();
    } catch (error) {
      rows = null;
    }
    if (state.deliveriesFor !== messageId || !Array.isArray(rows)) return;
    section.hidden = false;
    const note = byId("delivery-note");
    const table = byId("delivery-table");
    note.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    note.textContent = routingNote(entry.message) || "Not routed to any destination.";
    byId("delivery-rows").replaceChildren(
      ...rows.map((row) => {
        const line = el("tr");
        line.dataset.destination = String(row.destination);
        const status = el("span", "status-badge", STATUS_LABELS[row.status] || String(row.status));
        status.dataset.status = String(row.status);
        const statusCell = el("td");
        statusCell.append(status);
        if (isText(row.last_error)) {
          statusCell.append(el("div", "delivery-error", row.last_error));
        }
        const delivered = el("td");
        if (isText(row.delivered_at)) {
          const time = el("time", "", ago(row.delivered_at));
          time.dateTime = row.delivered_at;
          time.title = row.delivered_at;
          delivered.append(time);
        } else {
          delivered.textContent = "–";
        }
        line.append(
          el("th", "", String(row.destination)),
          statusCell,
          el("td", "attempts", String(row.attempts)),
          delivered,
        );
        line.firstChild.scope = "row";
        return line;
      }),
    );
  }

  // -- detail ----------------------------------------------------------------------------

  function select(id) {
    const entry = state.entries.get(id);
    if (!entry) return;
    state.selected = entry;
    for (const row of list.querySelectorAll(".row[aria-current]")) {
      row.removeAttribute("aria-current");
    }
    const item = list.querySelector(`li[data-id="${entry.id}"] .row`);
    if (item) item.setAttribute("aria-current", "true");

    const message = entry.message;
    const badge = byId("detail-type");
    badge.textContent = String(message.type);
    badge.dataset.type = String(message.type);
    byId("detail-title").textContent = nameOf(message) || "(no name)";
    byId("detail-id").textContent = String(message.messageId);
    byId("detail-source").textContent = String(entry.source);
    byId("detail-received").textContent = receivedOf(message);
    const context = isObject(message.context) ? message.context : {};
    const page = isObject(context.page) ? context.page : {};
    fact("page", page.url);
    fact("agent", context.userAgent);
    byId("json").textContent = JSON.stringify(message, null, 2);
    byId("delivery").hidden = true;
    refreshDeliveries(entry);
    detail.hidden = false;
    document.body.classList.add("has-detail");
    if (matchMedia("(max-width: 959px)").matches) byId("close").focus();
  }

  // A fact the detail shows only when the event has it: a browser event's page and agent.
  function fact(name, value) {
    const shown = typeof value === "string" && value !== "";
    byId(`detail-${name}`).textContent = shown ? value : "";
    byId(`detail-${name}`).hidden = !shown;
    byId(`detail-${name}-label`).hidden = !shown;
  }

  function closeDetail() {
    const selected = state.selected;
    state.selected = null;
    state.deliveriesFor = null;
    detail.hidden = true;
    document.body.classList.remove("has-detail");
    for (const row of list.querySelectorAll(".row[aria-current]")) {
      row.removeAttribute("aria-current");
    }
    if (selected) {
      const row = list.querySelector(`li[data-id="${selected.id}"] .row`);
      if (row) row.focus();
    }
  }

  async function copy(text, button) {
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch (error) {
      copied = copyBySelection(text);
    }
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  }

  /** The clipboard API exists on secure origins only; a page on a LAN address has not. */
  function copyBySelection(text) {
    const area = el("textarea", "offscreen");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.append(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    area.remove();
    return copied;
  }

  // -- start -----------------------------------------------------------------------------

  function snippet() {
    const host = root.href.replace(/\/$/, "");
    return [
      "import trackline",
      "",
      `client = trackline.Client("WRITE_KEY", host=${JSON.stringify(host)})`,
      'client.track("user-1", "Item Purchased", {"revenue": 39.95})',
      "client.shutdown()  # sends what is queued",
      "",
    ].join("\n");
  }

  function start() {
    buildTypeButtons();
    renderFilterControls();
    byId("snippet").textContent = snippet();

    search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        if (search.value !== state.filters.q) setFilters({ q: search.value });
      }, SEARCH_DELAY_MS);
    });
    sourceSelect.addEventListener("change", () => setFilters({ source: sourceSelect.value }));
    pauseButton.addEventListener("click", () => setPaused(!state.paused));
    byId("clear-filters").addEventListener("click", () => setFilters({ type: "", q: "", source: "" }));
    byId("close").addEventListener("click", closeDetail);
    byId("copy-json").addEventListener("click", (event) => {
      if (state.selected) copy(JSON.stringify(state.selected.message, null, 2), event.currentTarget);
    });
    byId("copy-snippet").addEventListener("click", (event) => copy(snippet(), event.currentTarget));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !detail.hidden) closeDetail();
    });

    setInterval(updateTimes, 5000);
    connect();
    refreshStats();
    refreshDestinations();
    setInterval(() => {
      if (!document.hidden) refreshDestinations();
    }, DESTINATIONS_MS);
  }

  start();
})();
