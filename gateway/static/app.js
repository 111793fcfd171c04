// The semsearch page: search by words or by example, browse results, add pictures. No framework, no build.
"use strict";

const PAGE = 24;
const DEBOUNCE_MS = 250;
const UPLOAD_PARALLEL = 2;
const $ = (id) => document.getElementById(id);

const state = {
  mode: "idle",          // "idle" | "text" | "image" | "similar"
  q: "",
  queryFile: null,       // the example image of an image search
  similarTo: null,       // the hit a "more like this" started from
  hits: [],
  offset: 0,
  hasMore: false,
  current: -1,           // index of the hit shown in the viewer
  stats: null,
  collection: "",        // the collection (or alias) every call names; "" = the index's alias "default"
  seq: 0,                // only the newest search may paint
  controller: null,
};

// ---- HTTP ------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Check your connection.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, friendly(response.status, body), response.headers.get("Retry-After"));
  }
  return body;
}

function friendly(status, body) {
  const detail = body && body.message ? body.message : "";
  if (status === 503) return "The search service is unavailable right now. It usually comes back by itself in a few seconds.";
  if (status === 504) return "The search took too long. Please try again.";
  if (status === 429) return "The server is busy. Please try again in a moment.";
  if (status === 401) return "This action needs the access token.";
  if (status >= 500) return "Something went wrong on the server.";
  return detail || `Request failed (${status}).`;
}

function authHeaders() {
  const token = sessionStorage.getItem("semsearch-token") || $("upload-token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// ---- searching -------------------------------------------------------------------------------------

// Adds the chosen collection to a query string; every call that reads or writes a collection goes through it.
function inCollection(params = new URLSearchParams()) {
  if (state.collection) params.set("collection", state.collection);
  return params;
}

function filterParams(params) {
  inCollection(params);
  const label = $("label-filter").value;
  if (label) params.append("label", label);
  return addFilters(params);  // filters.js
}

async function runSearch(append = false) {
  if (state.controller) state.controller.abort();
  if (state.mode === "recent") state.mode = "idle";  // facts.js: a search or filter leaves the upload's view
  if (state.mode === "idle") return showIdle();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;
  const offset = append ? state.hits.length : 0;
  const params = filterParams(new URLSearchParams({ k: String(PAGE), offset: String(offset) }));
  let request = append ? nextPage(controller.signal) : null;  // paging.js: by the cursor, when there is one
  if (request) {
    // the next page of the same search
  } else if (state.mode === "text") {
    params.set("q", state.q);
    request = api(`/api/search?${params}`, { signal: controller.signal });
  } else if (state.mode === "similar") {
    request = api(`/api/images/${state.similarTo.id}/similar?${params}`, { signal: controller.signal });
  } else {
    const form = new FormData();
    form.append("file", state.queryFile);
    if (state.q) params.set("q", state.q);  // words combined with the example image (example.js)
    request = api(`/api/search/image?${params}`, { method: "POST", body: form, signal: controller.signal });
  }
  setBusy(true, append);
  try {
    const result = await request;
    if (seq !== state.seq) return;
    state.hits = append ? state.hits.concat(result.hits) : result.hits;
    state.hasMore = result.has_more && result.hits.length > 0;
    rememberNext(result);
    hideAlert();
    healed();
    render(result, append);
  } catch (err) {
    if (err.name === "AbortError" || seq !== state.seq) return;
    state.hasMore = false;  // no stale "Load more" while the search is failing
    $("load-more").hidden = true;
    showAlert(err.message, () => runSearch(append));
    healLater(err, () => runSearch(append), seq);
    if (!append) { state.hits = []; render(null, false); }
  } finally {
    if (seq === state.seq) setBusy(false, append);
  }
}

function setBusy(busy, append) {
  const grid = $("results");
  grid.setAttribute("aria-busy", String(busy));
  if (busy && !append && state.hits.length === 0) {
    $("empty").hidden = true;
    grid.replaceChildren(...Array.from({ length: 12 }, () => el("div", { className: "skeleton", "aria-hidden": "true" })));
    $("status-text").textContent = "Searching…";
  }
  $("load-more").disabled = busy;
}

let debounceTimer = 0;
function onType() {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(startTextSearch, DEBOUNCE_MS);
}

function startTextSearch() {
  clearTimeout(debounceTimer);
  const q = $("q").value.trim();
  if (state.mode === "image") { if (q !== state.q) { state.q = q; runSearch(); } return; }  // words change the example
  if (state.mode === "text" && q === state.q) return;
  if (!q) {
    if (state.mode !== "text") return;
    state.mode = "idle";
  } else {
    state.mode = "text";
  }
  state.q = q;
  state.queryFile = null;
  state.similarTo = null;
  syncUrl();
  runSearch();
}

function searchByImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    showAlert("That file is not an image. Drop a JPEG, PNG, WebP, GIF, BMP or TIFF file.");
    return;
  }
  state.mode = "image";
  state.queryFile = file;
  state.similarTo = null;
  state.q = "";
  $("q").value = "";
  examplePlaceholder();
  syncUrl();
  runSearch();
}

function searchSimilar(hit) {
  state.mode = "similar";
  state.similarTo = hit;
  state.queryFile = null;
  state.q = "";
  $("q").value = "";
  examplePlaceholder();
  syncUrl();
  closeViewer();
  runSearch();
}

function clearExample() {
  state.mode = "idle";
  state.queryFile = null;
  state.similarTo = null;
  state.q = "";
  $("q").value = "";
  examplePlaceholder();
  syncUrl();
  runSearch();
  $("q").focus();
}

function syncUrl() {
  const params = inCollection();
  if (state.mode === "text") params.set("q", state.q);
  if (state.mode === "similar") params.set("similar", String(state.similarTo.id));
  const label = $("label-filter").value;
  if (label) params.set("label", label);
  addFilters(params);  // filters.js
  const url = params.toString() ? `?${params}` : location.pathname;
  history.replaceState(history.state, "", url + location.hash);  // the hash is a view's (duplicates.js)
}

// ---- rendering -------------------------------------------------------------------------------------

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function card(hit, index) {
  const label = hit.label || "Unlabelled";
  const score = hit.score.toFixed(3);
  const img = el("img", { src: hit.thumbnail_url, alt: `${label}, score ${score}`, loading: "lazy", decoding: "async" });
  img.addEventListener("error", () => img.classList.add("broken"), { once: true });
  const button = el("button", { type: "button", className: "card", "data-index": String(index), "data-id": String(hit.id),
    title: `${label} — score ${score}` }, [
    img,
    el("span", { className: "score", "aria-hidden": "true" }, [score]),
    el("span", { className: "label", "aria-hidden": "true" }, [label]),
  ]);
  button.addEventListener("click", () => openViewer(index));
  decorateCard(button, hit);  // tags.js
  return button;
}

function render(result, append) {
  const grid = $("results");
  if (append) {
    const start = grid.children.length;
    grid.append(...state.hits.slice(start).map((hit, i) => card(hit, start + i)));
  } else {
    grid.replaceChildren(...state.hits.map(card));
  }
  $("load-more").hidden = !state.hasMore;
  renderStatus(result);
  afterRender();  // tags.js
  if (state.hits.length === 0) {
    showEmpty(result ? "No matches" : "Nothing to show",
      result ? "Try other words, another label, or add more pictures." : "Results will appear here once the search works again.");
  } else {
    $("empty").hidden = true;
  }
}

function renderStatus(result) {
  const chip = $("query-chip");
  chip.hidden = state.mode !== "image" && state.mode !== "similar";
  if (!chip.hidden) {
    const img = $("query-chip-img");
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    if (state.mode === "image") {
      img.dataset.url = URL.createObjectURL(state.queryFile);
      img.src = img.dataset.url;
      $("query-chip-text").textContent = exampleLabel();
    } else {
      img.dataset.url = "";
      img.src = state.similarTo.thumbnail_url;
      $("query-chip-text").textContent = `More like #${state.similarTo.id}${state.similarTo.label ? ` (${state.similarTo.label})` : ""}`;
    }
  }
  if (!result) { $("status-text").textContent = ""; return; }
  const n = state.hits.length;
  const t = result.timings;
  const parts = [`${n} result${n === 1 ? "" : "s"}`];
  if (t.embed_ms > 0) parts.push(`embed ${t.embed_ms.toFixed(0)} ms`);
  parts.push(`search ${t.search_ms.toFixed(0)} ms`);
  if (result.truncated) parts.push("query cut to the model's length");
  $("status-text").textContent = parts.join(" · ");
}

function showEmpty(title, text) {
  $("empty").hidden = false;
  $("empty-title").textContent = title;
  $("empty-text").textContent = text;
}

function showIdle() {
  state.hits = [];
  state.seq++;
  $("results").replaceChildren();
  $("results").setAttribute("aria-busy", "false");
  $("load-more").hidden = true;
  $("query-chip").hidden = true;
  $("status-text").textContent = "";
  const count = state.stats ? state.stats.count : null;
  showEmpty("Search your pictures", count === 0
    ? "The collection is empty. Add pictures to get started."
    : `Type what you are looking for${count ? ` among ${count.toLocaleString()} pictures` : ""}, drop an image onto the search bar, or add pictures.`);
}

let retryAction = null;
function showAlert(message, retry = null) {
  $("alert-text").textContent = message;
  retryAction = retry;
  $("alert-retry").hidden = !retry;
  $("alert").hidden = false;
}

function hideAlert() { $("alert").hidden = true; }

// ---- viewer ----------------------------------------------------------------------------------------

function openViewer(index) {
  const dialog = $("viewer");
  if (index < 0 || index >= state.hits.length) return;
  state.current = index;
  const hit = state.hits[index];
  const label = hit.label || "Unlabelled";
  $("viewer-title").textContent = label;
  const img = $("viewer-img");
  img.src = hit.thumbnail_url;  // shows at once; the display rendition replaces it when loaded
  loadDisplay(hit, () => state.current === index);
  img.alt = `${label}, ${hit.width} by ${hit.height} pixels`;
  $("viewer-original").href = hit.image_url;
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index === state.hits.length - 1;
  const rows = [["Score", hit.score.toFixed(4)], ["Size", `${hit.width} × ${hit.height}`], ["Label", label],
    ["Source", hit.source || "—"], ["Id", String(hit.id)]];
  $("viewer-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, [k]), el("dd", {}, [v])]));
  api(`/api/images/${hit.id}?${inCollection()}`).then((meta) => {
    if (state.current !== index) return;
    if (meta.file_name) {
      $("viewer-meta").append(el("dt", {}, ["File"]), el("dd", {}, [meta.file_name]),
        el("dt", {}, ["Bytes"]), el("dd", {}, [meta.size_bytes.toLocaleString()]));
    }
    showFacts(meta);  // facts.js
  }).catch(() => {});
  if (!dialog.open) dialog.showModal();
  $("viewer-similar").focus();
}

function closeViewer() {
  const dialog = $("viewer");
  if (!dialog.open) return;
  dialog.close();
}

function onViewerClosed() {
  // After the browser's own focus restore (to the card that opened the viewer): land on the card shown last.
  setTimeout(() => {
    const cardNode = $("results").querySelector(`[data-index="${state.current}"]`);
    if (cardNode && !$("viewer").open) cardNode.focus();
  }, 0);
}

async function deleteCurrent() {
  const hit = state.hits[state.current];
  if (!hit || !confirm(`Delete picture #${hit.id}? This cannot be undone.`)) return;
  try {
    await api(`/api/images/${hit.id}?${inCollection()}`, { method: "DELETE", headers: authHeaders() });
  } catch (err) {
    if (err.status === 401) { $("token-field").hidden = false; openUploader(); }
    showAlert(err.message);
    return;
  }
  state.hits.splice(state.current, 1);
  closeViewer();
  render({ timings: { embed_ms: 0, search_ms: 0 } }, false);
  refreshStats();
}

// ---- keyboard --------------------------------------------------------------------------------------

function columns() {
  const grid = $("results");
  return getComputedStyle(grid).gridTemplateColumns.split(" ").length || 1;
}

function onGridKey(event) {
  const target = event.target.closest(".card");
  if (!target) return;
  const index = Number(target.dataset.index);
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[event.key];
  let next = null;
  if (step !== undefined) next = index + step;
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = state.hits.length - 1;
  if (next === null) return;
  event.preventDefault();
  next = Math.max(0, Math.min(state.hits.length - 1, next));
  $("results").querySelector(`[data-index="${next}"]`).focus();
}

function onViewerKey(event) {
  if (event.key === "ArrowRight") { event.preventDefault(); openViewer(state.current + 1); }
  if (event.key === "ArrowLeft") { event.preventDefault(); openViewer(state.current - 1); }
}

// ---- collection facts ------------------------------------------------------------------------------

async function refreshStats() {
  try {
    const stats = await api(`/api/stats?${inCollection()}`);
    state.stats = stats;
    const provider = (stats.providers[0] || "?").replace("ExecutionProvider", "");
    const where = stats.collection ? ` in ${stats.collection}` : "";
    const text = `${countText(stats)}${where} · model ` +  // health.js
      `${stats.model_name} (${stats.dim}-d, ${stats.precision}) · ${provider} · ${stats.backend}`;
    const children = [text, " · "];
    const recall = recallNote(stats);  // health.js
    if (recall) children.push(recall, " · ");
    children.push(stats.semantic ? el("span", { className: "ok" }, ["semantic"])
      : el("span", { className: "warn" }, ["random-weight model: results carry no meaning"]));
    $("footer-text").replaceChildren(...children);
    $("demo-banner").hidden = stats.semantic;
    $("token-field").hidden = !stats.write_token_required;
    healNow();  // the backend answers again: a failed search need not wait for its countdown
    if (state.mode === "idle") showIdle();
  } catch (err) {
    state.stats = null;
    $("footer-text").replaceChildren(el("span", { className: "bad" }, [err.status === 503
      ? "A backend service is unavailable — retrying…" : "The server is not answering — retrying…"]));
    if (state.mode === "idle") {
      showEmpty("Search is unavailable", "The search service cannot be reached right now. This page retries by itself.");
    }
    setTimeout(refreshStats, 3000);
  }
  refreshLabels();
  refreshTagList();  // filters.js
}

// The collection select appears only when the index holds more than one collection.
async function refreshCollections() {
  let collections;
  try {
    collections = await api("/api/collections");
  } catch { return; /* the footer already tells the story */ }
  const select = $("collection-select");
  select.hidden = collections.length < 2;
  if (select.hidden) return;
  const option = (c) => el("option", { value: c.name, title: c.model_id || "no model yet" },
    [`${c.name}${c.aliases.length ? ` (${c.aliases.join(", ")})` : ""} · ${c.count.toLocaleString()}`]);
  select.replaceChildren(...collections.map(option));
  const chosen = collections.find((c) => c.name === state.collection || c.aliases.includes(state.collection || "default"));
  if (chosen) select.value = chosen.name;
  else if (state.collection) {  // an unknown name from the URL: keep it visible so the error makes sense
    select.append(el("option", { value: state.collection }, [state.collection]));
    select.value = state.collection;
  }
}

function chooseCollection() {
  state.collection = $("collection-select").value;
  $("label-filter").value = "";  // labels belong to a collection
  syncUrl();
  refreshStats();
  runSearch();
}

async function refreshLabels() {
  try {
    const labels = await api(`/api/labels?${inCollection()}`);
    const select = $("label-filter");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, ["All labels"]),
      ...labels.map((l) => el("option", { value: l.label }, [`${l.label} (${l.count.toLocaleString()})`])));
    select.value = labels.some((l) => l.label === chosen) ? chosen : "";
  } catch { /* the footer already tells the story */ }
}

// ---- uploading -------------------------------------------------------------------------------------

function openUploader() {
  const dialog = $("uploader");
  if (!dialog.open) dialog.showModal();
}

function uploadRow(file) {
  const thumb = el("img", { alt: "" });
  thumb.src = URL.createObjectURL(file);
  thumb.addEventListener("load", () => URL.revokeObjectURL(thumb.src), { once: true });
  thumb.addEventListener("error", () => { URL.revokeObjectURL(thumb.src); thumb.classList.add("broken"); }, { once: true });
  const progress = el("progress", { max: 100, value: 0 });
  progress.setAttribute("aria-label", `Uploading ${file.name}`);
  const outcome = el("span", { className: "outcome" }, ["Waiting"]);
  const info = el("div", {}, [el("div", { className: "name", title: file.name }, [file.name]), progress]);
  const row = el("li", {}, [thumb, info, outcome]);
  $("upload-list").append(row);
  return { row, info, progress, outcome };
}

function sendOne(file, label, ui) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("files", file, file.name);
    // The file's own time, kept apart from its capture time (the loader sends the same from os.stat).
    // The file's own time, when plausible: a clock set years ahead must not cost the upload (the API refuses
    // times over a day in the future), it only leaves the picture's date to its EXIF or the upload time.
    const plausible = Number.isInteger(file.lastModified) && file.lastModified >= 0
      && file.lastModified <= Date.now() + 86_400_000;
    if (plausible) form.append("last_modified", String(file.lastModified));
    if (label) form.append("label", label);
    uploadTags(form);  // facts.js
    if (state.collection) form.append("collection", state.collection);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/images");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) ui.progress.value = (e.loaded / e.total) * 95; };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* a proxy's HTML error page */ }
      const item = body && body.results ? body.results[0] : null;
      if (item && item.outcome !== "error") resolve({ ok: true, item });
      else resolve({ ok: false, status: xhr.status, message: item ? item.message : friendly(xhr.status, body) });
    };
    xhr.onerror = () => resolve({ ok: false, status: 0, message: "The server cannot be reached." });
    xhr.send(form);
  });
}

async function uploadFiles(files) {
  if (!files.length) return;
  openUploader();
  const token = $("upload-token").value.trim();
  if (token) sessionStorage.setItem("semsearch-token", token);
  const label = $("upload-label").value.trim();
  const queue = Array.from(files).map((file) => ({ file, ui: uploadRow(file) }));
  const counts = { created: 0, exists: 0, error: 0 };
  const stored = [];  // ids of the files now in the collection, shown on the page at the end
  const summary = $("upload-summary");
  summary.textContent = `Uploading ${queue.length} file${queue.length === 1 ? "" : "s"}…`;
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      job.ui.outcome.textContent = "Uploading…";
      const result = await sendOne(job.file, label, job.ui);
      job.ui.progress.remove();
      if (result.ok) {
        const kind = result.item.outcome;
        counts[kind]++;
        stored.push(result.item.id);
        job.ui.outcome.className = `outcome ${kind}`;
        job.ui.outcome.textContent = kind === "created" ? "Added" : "Already there";
        const link = el("a", { href: "#", textContent: "Find similar" });
        link.addEventListener("click", (e) => {
          e.preventDefault();
          $("uploader").close();
          searchSimilar({ id: result.item.id, label, thumbnail_url: `/images/${result.item.id}/thumb?${inCollection()}` });
        });
        job.ui.info.append(link);
      } else {
        counts.error++;
        job.ui.outcome.className = "outcome error";
        job.ui.outcome.textContent = result.status ? `Failed (${result.status})` : "Failed";
        job.ui.info.append(el("div", { className: "message" }, [result.message]));
        if (result.status === 401) $("token-field").hidden = false;
      }
    }
  };
  await Promise.all(Array.from({ length: UPLOAD_PARALLEL }, worker));
  summary.textContent = `Done: ${counts.created} added, ${counts.exists} already there, ${counts.error} failed.`;
  refreshStats();
  showUploaded(stored);  // facts.js
}

// ---- drag and drop ---------------------------------------------------------------------------------

function imageFiles(event) {
  return Array.from(event.dataTransfer ? event.dataTransfer.files : []);
}

function wireDrop(zone, onFiles, hoverTarget = zone) {
  let depth = 0;
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; hoverTarget.classList.add("dragging"); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
  zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; hoverTarget.classList.remove("dragging"); } });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    depth = 0;
    hoverTarget.classList.remove("dragging");
    onFiles(imageFiles(e));
  });
}

// ---- start -----------------------------------------------------------------------------------------

function start() {
  $("q").addEventListener("input", onType);
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); state.q = null; startTextSearch(); });
  $("pick-query").addEventListener("click", () => $("query-file").click());
  $("query-file").addEventListener("change", (e) => { searchByImage(e.target.files[0]); e.target.value = ""; });
  $("query-chip-clear").addEventListener("click", clearExample);
  $("label-filter").addEventListener("change", () => { syncUrl(); runSearch(); });
  $("collection-select").addEventListener("change", chooseCollection);
  $("load-more").addEventListener("click", () => runSearch(true));
  $("alert-retry").addEventListener("click", () => { hideAlert(); if (retryAction) retryAction(); });
  $("results").addEventListener("keydown", onGridKey);

  // On the document, not the dialog: arrows must work wherever focus sits while the viewer is open.
  document.addEventListener("keydown", (e) => { if ($("viewer").open) onViewerKey(e); });
  $("viewer").addEventListener("close", onViewerClosed);
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) closeViewer(); });
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer-prev").addEventListener("click", () => openViewer(state.current - 1));
  $("viewer-next").addEventListener("click", () => openViewer(state.current + 1));
  $("viewer-similar").addEventListener("click", () => searchSimilar(state.hits[state.current]));
  $("viewer-delete").addEventListener("click", deleteCurrent);

  $("open-upload").addEventListener("click", openUploader);
  $("uploader-close").addEventListener("click", () => $("uploader").close());
  $("uploader").addEventListener("click", (e) => { if (e.target === $("uploader")) $("uploader").close(); });
  $("upload-files").addEventListener("change", (e) => { uploadFiles(e.target.files); e.target.value = ""; });
  wireDrop($("dropzone"), uploadFiles);
  wireDrop($("search-area"), (files) => searchByImage(files[0]));
  // Pasting an image (a screenshot, a copied picture) searches by it, as dropping does.
  document.addEventListener("paste", (e) => {
    const file = Array.from(e.clipboardData ? e.clipboardData.files : []).find((f) => f.type.startsWith("image/"));
    if (!file || $("uploader").open) return;
    e.preventDefault();
    searchByImage(file);
  });
  // A drop anywhere else must not navigate away to the file.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  const params = new URLSearchParams(location.search);
  const similar = Number(params.get("similar"));
  state.collection = params.get("collection") || "";
  if (params.get("label")) {
    $("label-filter").append(el("option", { value: params.get("label") }, [params.get("label")]));
    $("label-filter").value = params.get("label");
  }
  initFilters(params);  // filters.js
  initTags();  // tags.js
  if (params.get("q")) {
    $("q").value = params.get("q");
    startTextSearch();
  } else if (Number.isInteger(similar) && similar > 0) {
    searchSimilar({ id: similar, label: "", thumbnail_url: `/images/${similar}/thumb?${inCollection()}` });
  } else {
    showIdle();
  }
  refreshStats();
  refreshCollections();
}

start();
