// The near-duplicates view: scans the collection through GET /api/duplicates page by page (with progress),
// shows one group side by side, and deletes all but the picture the user keeps. Loaded after app.js, whose
// helpers ($, el, api, authHeaders, inCollection, refreshStats, runSearch, state) it uses.
"use strict";

const DUPS_PAGE = 200;  // images walked per call (the route allows 1..1000)

const dups = {
  groups: [],           // groups found so far, each {members: [...], truncated}
  at: 0,                // index of the group on screen
  next: 0,              // the cursor of the next call (after=)
  done: false,
  scanned: 0,
  total: 0,
  controller: null,     // aborts the scan when the view closes
  deleted: 0,           // pictures deleted while the view was open: the results behind it are stale
  leaving: false,       // the page is being unloaded: its dialog closing is not the user closing the view
};

function dupsSize(bytes) {
  if (!bytes) return "";
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

function dupsDescribe(m) {
  return [`#${m.id}`, m.file_name, m.width && m.height ? `${m.width} × ${m.height}` : "", dupsSize(m.size_bytes)]
    .filter(Boolean).join(", ");
}

// The picture kept by default: the most pixels, then the biggest file, then the group's first.
function dupsBest(members) {
  let best = members[0];
  for (const m of members) {
    const [a, b] = [m.width * m.height, best.width * best.height];
    if (a > b || (a === b && (m.size_bytes || 0) > (best.size_bytes || 0))) best = m;
  }
  return best;
}

// The view has an address of its own, #duplicates after the search's query string: a link or a reload opens
// it, Back closes it and Forward opens it again. The entry the button pushes is marked in history.state, so
// closing the view goes back over it rather than leaving two entries of the same page behind.
const DUPS_HASH = "#duplicates";

function dupsAddress(withView) {
  return `${location.pathname}${location.search}${withView ? DUPS_HASH : ""}`;
}

// The route is new: the entry point shows only where the gateway has it (404 or 405 means it does not).
async function dupsProbe() {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const response = await fetch(`/api/duplicates?${inCollection(new URLSearchParams({ limit: "1" }))}`);
      $("open-duplicates").hidden = response.status === 404 || response.status === 405;
      return;
    } catch {  // unreachable now (the footer says so): the button stays as it was; ask again shortly
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function dupsOpen() {
  if (location.hash !== DUPS_HASH) history.pushState({ duplicates: true }, "", dupsAddress(true));
  dupsShow();
}

function dupsShow() {
  if ($("duplicates").open) return;
  dups.deleted = 0;
  $("dups-say").textContent = "";
  $("duplicates").showModal();
  dupsOpenScan();
}

function dupsClosed() {
  if (dups.leaving) return;  // the page itself is going (a reload keeps the view's address)
  if (dups.controller) dups.controller.abort();
  dups.controller = null;
  if (dups.deleted) { refreshStats(); if (state.mode !== "idle") runSearch(); }
  if (location.hash === DUPS_HASH) {  // closed on the page, not by Back: leave the view's address too
    if (history.state && history.state.duplicates) history.back();
    else history.replaceState(history.state, "", dupsAddress(false));  // arrived by a link: nothing to go back to
  }
}

// Back, Forward, or an edited address: the view follows the URL.
function dupsFollowUrl() {
  const wanted = location.hash === DUPS_HASH && !$("open-duplicates").hidden;
  if (wanted) dupsShow();
  else if ($("duplicates").open) $("duplicates").close();
}

// Walks the collection until done or the view closes; the groups appear as they are found.
async function dupsScan() {
  const controller = new AbortController();
  dups.controller = controller;
  $("dups-continue").hidden = true;
  while (!dups.done && !controller.signal.aborted) {
    const params = inCollection(new URLSearchParams({ after: String(dups.next), limit: String(DUPS_PAGE),
      max_distance: $("dups-distance").value }));
    let page;
    try {
      page = await api(`/api/duplicates?${params}`, { signal: controller.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      $("dups-say").textContent = `The scan stopped: ${err.message}`;
      $("dups-continue").hidden = false;
      return;
    }
    if (controller.signal.aborted) return;
    dups.groups.push(...page.groups);
    Object.assign(dups, { scanned: page.scanned, total: page.total, done: page.done || page.next === null,
      next: page.next ?? dups.next });
    dupsProgress();
    if (page.groups.length && dups.groups.length === page.groups.length) dupsRender();  // the first ones
    else dupsNav();
  }
  if (!controller.signal.aborted) dupsRender();
}

function dupsProgress() {
  const bar = $("dups-progress");
  bar.max = Math.max(dups.total, 1);
  bar.value = dups.done ? bar.max : Math.min(dups.scanned, bar.max);
  const found = `${dups.groups.length} group${dups.groups.length === 1 ? "" : "s"} found`;
  $("dups-progress-text").textContent = dups.done
    ? `Scanned all ${dups.total.toLocaleString()} pictures · ${found}`
    : `Scanned ${dups.scanned.toLocaleString()} of ${dups.total.toLocaleString()} pictures · ${found}`;
}

function dupsNav() {
  const n = dups.groups.length;
  $("dups-prev").disabled = dups.at <= 0;
  $("dups-next").disabled = dups.at >= n - 1;
  $("dups-position").textContent = n ? `Group ${dups.at + 1} of ${n}${dups.done ? "" : "+"}` : "";
}

function dupsMember(m, keep, name) {
  const img = el("img", { src: m.display_url || m.thumbnail_url, alt: `Picture ${dupsDescribe(m)}`, decoding: "async" });
  img.addEventListener("error", () => { if (img.src !== new URL(m.thumbnail_url, location.href).href) img.src = m.thumbnail_url; });
  const radio = el("input", { type: "radio", name, value: String(m.id), checked: m.id === keep.id });
  radio.addEventListener("change", dupsMarkKept);
  const facts = [m.label || "Unlabelled", m.distance > 0 ? `distance ${m.distance.toFixed(3)}` : "first of the group"];
  return el("label", { className: "dup-member", "data-id": String(m.id) }, [
    el("span", { className: "dup-frame" }, [img]),
    el("span", { className: "dup-choice" }, [radio, el("span", {}, [`Keep #${m.id}`])]),
    el("span", { className: "dup-facts" }, [dupsDescribe(m).replace(/^#\d+, /, "")]),
    el("span", { className: "dup-facts" }, [facts.join(" · ")]),
    el("span", { className: "dup-fate", "aria-hidden": "true" }, [""]),
  ]);
}

function dupsMarkKept() {
  const boxes = $("dups-group").querySelectorAll(".dup-member");
  for (const box of boxes) {
    const kept = box.querySelector("input").checked;
    box.classList.toggle("kept", kept);
    box.querySelector(".dup-fate").textContent = kept ? "Kept" : "Will be deleted";
  }
  const others = boxes.length - 1;
  $("dups-delete").textContent = `Keep the chosen one, delete the ${others} other${others === 1 ? "" : "s"}`;
}

function dupsRender() {
  dupsProgress();
  dupsNav();
  const group = dups.groups[dups.at];
  $("dups-actions").hidden = !group;
  if (!group) {
    const text = dups.done ? "No near-duplicates: every picture is distinct at this distance."
      : "Scanning… groups appear here as they are found.";
    $("dups-group").replaceChildren(el("p", { className: "dups-empty" }, [text]));
    return;
  }
  const keep = dupsBest(group.members);
  const name = `keep-${dups.at}`;
  const legend = el("legend", {}, [`${group.members.length} near-copies${group.truncated ? " (more exist)" : ""}: `
    + "choose the one to keep"]);
  $("dups-group").replaceChildren(el("fieldset", { className: "dup-set" },
    [legend, el("div", { className: "dup-members" }, group.members.map((m) => dupsMember(m, keep, name)))]));
  dupsMarkKept();
}

function dupsGo(step) {
  const at = dups.at + step;
  if (at < 0 || at >= dups.groups.length) return;
  dups.at = at;
  $("dups-say").textContent = "";
  dupsRender();
}

async function dupsDelete() {
  const group = dups.groups[dups.at];
  const chosen = $("dups-group").querySelector("input:checked");
  if (!group || !chosen) return;
  const keep = Number(chosen.value);
  const doomed = group.members.filter((m) => m.id !== keep);
  if (!confirm(`Keep #${keep} and delete ${doomed.map((m) => `#${m.id}`).join(", ")}? This cannot be undone.`)) return;
  const failed = [];
  for (const m of doomed) {
    try {
      await api(`/api/images/${m.id}?${inCollection()}`, { method: "DELETE", headers: authHeaders() });
      dups.deleted++;
    } catch (err) {
      if (err.status === 404) { dups.deleted++; continue; }  // already gone: the wish is met
      failed.push({ m, err });
    }
  }
  if (failed.length) {
    group.members = group.members.filter((m) => m.id === keep || failed.some((f) => f.m.id === m.id));
    const first = failed[0].err;
    $("dups-say").textContent = `${failed.length} could not be deleted: ${first.message}`
      + (first.status === 401 ? " Enter it under “Add pictures”, then try again." : "");
    dupsRender();
    return;
  }
  dups.groups.splice(dups.at, 1);
  dups.at = Math.min(dups.at, Math.max(0, dups.groups.length - 1));
  $("dups-say").textContent = `Kept #${keep}, deleted ${doomed.length}.`;
  dupsRender();
  $(dups.groups.length ? "dups-delete" : "dups-close").focus();
}

function dupsStart() {
  $("open-duplicates").addEventListener("click", dupsOpen);
  $("duplicates").addEventListener("close", dupsClosed);
  $("dups-close").addEventListener("click", () => $("duplicates").close());
  $("duplicates").addEventListener("click", (e) => { if (e.target === $("duplicates")) $("duplicates").close(); });
  $("dups-prev").addEventListener("click", () => dupsGo(-1));
  $("dups-next").addEventListener("click", () => dupsGo(1));
  $("dups-delete").addEventListener("click", dupsDelete);
  $("dups-continue").addEventListener("click", dupsScan);
  $("dups-distance").addEventListener("change", () => { if (dups.controller) dups.controller.abort(); dupsOpenScan(); });
  window.addEventListener("popstate", dupsFollowUrl);
  window.addEventListener("pagehide", () => { dups.leaving = true; });
  window.addEventListener("pageshow", () => { dups.leaving = false; });  // back from the browser's page cache
  dupsProbe().then(() => { if (location.hash === DUPS_HASH) dupsFollowUrl(); });
}

// Starts the scan from the first picture (on opening, and when the distance changes).
function dupsOpenScan() {
  Object.assign(dups, { groups: [], at: 0, next: 0, done: false, scanned: 0, total: 0 });
  dupsRender();
  dupsScan();
}

dupsStart();
