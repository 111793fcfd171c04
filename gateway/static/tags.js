// Tags on the semsearch page: each card shows its tags and date; "Select" picks several results to tag at once.
// Loaded before app.js; app.js calls decorateCard, afterRender and initTags.
"use strict";

const tagging = {
  selecting: false,
  selected: new Set(),   // ids of the chosen results
};

function shortDate(iso) {
  return iso ? iso.slice(0, 10) : "";
}

// The day a photo was taken where it was taken: taken_at is UTC, so a stated offset moves it to local time
// (01:30 at UTC+05:30 is the previous day in UTC). Without one, taken_at is the camera's clock already.
function localDay(hit) {
  const offset = hit.taken_offset_minutes;
  if (offset === null || offset === undefined) return shortDate(hit.taken_at);
  const local = new Date(Date.parse(hit.taken_at) + offset * 60000);
  return Number.isNaN(local.getTime()) ? shortDate(hit.taken_at) : local.toISOString().slice(0, 10);
}

// Adds what a hit says beyond its label: its tags, its capture date, and a dim look below the relevance cutoff.
function decorateCard(button, hit) {
  const tags = hit.tags || [];
  const img = button.querySelector("img");
  const words = [hit.label || "Unlabelled"];
  if (hit.recent) {
    button.querySelector(".score").remove();
    words.push("just added");
  } else {
    words.push(`score ${hit.score.toFixed(3)}`);
  }
  if (tags.length) words.push(`tags ${tags.join(", ")}`);
  if (hit.taken_at) {
    const day = localDay(hit);
    words.push(`taken ${day}`);
    button.dataset.taken = hit.taken_at;
    button.append(el("span", { className: "date", "aria-hidden": "true" }, [day]));
  }
  if (hit.below_cutoff) {
    button.classList.add("below-cutoff");
    words.push("less relevant");
  }
  button.dataset.tags = tags.join("\n");
  const extra = tags.filter((t) => t !== hit.label);  // the label is on the card already
  const tagLine = el("span", { className: "tags", "aria-hidden": "true" }, [extra.join(" · ")]);
  tagLine.hidden = extra.length === 0;
  button.append(tagLine);
  img.alt = words.join(", ");
  button.title = words.join(" — ");
  if (tagging.selecting) button.setAttribute("aria-pressed", String(tagging.selected.has(hit.id)));
}

function cardOf(id) {
  return document.querySelector(`#results .card[data-id="${id}"]`);
}

function refreshCard(hit) {
  const old = cardOf(hit.id);
  if (!old) return;
  const index = Number(old.dataset.index);
  const fresh = card(hit, index);
  old.replaceWith(fresh);
  return fresh;
}

function setSelecting(on) {
  tagging.selecting = on;
  if (!on) tagging.selected.clear();
  const toggle = document.getElementById("select-mode");
  toggle.setAttribute("aria-pressed", String(on));
  toggle.textContent = on ? "Done selecting" : "Select";
  document.getElementById("tag-editor").hidden = !on;
  document.getElementById("results").classList.toggle("selecting", on);
  for (const node of document.querySelectorAll("#results .card")) {
    if (on) node.setAttribute("aria-pressed", String(tagging.selected.has(Number(node.dataset.id))));
    else node.removeAttribute("aria-pressed");
  }
  updateSelectionCount();
  if (on) document.getElementById("tag-edit-status").textContent = "Choose pictures, then add or remove tags.";
}

function updateSelectionCount() {
  const n = tagging.selected.size;
  document.getElementById("selected-count").textContent = `${n} selected`;
  for (const id of ["tag-add", "tag-remove"]) document.getElementById(id).disabled = n === 0;
}

function toggleSelected(node) {
  const id = Number(node.dataset.id);
  if (tagging.selected.has(id)) tagging.selected.delete(id); else tagging.selected.add(id);
  node.setAttribute("aria-pressed", String(tagging.selected.has(id)));
  updateSelectionCount();
}

// In select mode a click (or Enter / Space) on a card picks it instead of opening the viewer.
function onSelectClick(event) {
  if (!tagging.selecting) return;
  const node = event.target.closest(".card");
  if (!node) return;
  event.stopPropagation();
  event.preventDefault();
  toggleSelected(node);
}

function selectAll(on) {
  tagging.selected.clear();
  if (on) for (const hit of state.hits) tagging.selected.add(hit.id);
  for (const node of document.querySelectorAll("#results .card")) {
    node.setAttribute("aria-pressed", String(tagging.selected.has(Number(node.dataset.id))));
  }
  updateSelectionCount();
}

function typedTags() {
  return document.getElementById("tag-edit-input").value.split(",").map((t) => t.trim()).filter(Boolean);
}

async function editTags(adding) {
  const tags = typedTags();
  const status = document.getElementById("tag-edit-status");
  if (!tags.length) {
    status.textContent = "Type one or more tags first (separate them with commas).";
    document.getElementById("tag-edit-input").focus();
    return;
  }
  const ids = [...tagging.selected];
  const body = { ids, add: adding ? tags : [], remove: adding ? [] : tags, collection: state.collection };
  let result;
  try {
    result = await api("/api/tags", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", ...authHeaders() } });
  } catch (err) {
    status.textContent = err.message;
    if (err.status === 401) { $("token-field").hidden = false; openUploader(); }
    return;
  }
  const updated = new Set(result.updated);
  for (const hit of state.hits) {
    if (!updated.has(hit.id)) continue;
    const now = new Set(hit.tags || []);
    for (const tag of tags) { if (adding) now.add(tag); else now.delete(tag); }
    hit.tags = [...now].sort();
    refreshCard(hit);
  }
  const n = result.updated.length;
  const what = tags.map((t) => `“${t}”`).join(", ");
  status.textContent = `${adding ? "Added" : "Removed"} ${what} ${adding ? "to" : "from"} ${n} picture${n === 1 ? "" : "s"}.`;
  refreshTagList();
}

// After every render: keep the selection on the cards still shown, and the tag bar only where results are.
function afterRender() {
  document.getElementById("tag-bar").hidden = state.hits.length === 0;
  const shown = new Set(state.hits.map((h) => h.id));
  for (const id of [...tagging.selected]) if (!shown.has(id)) tagging.selected.delete(id);
  if (tagging.selecting) updateSelectionCount();
  describeOrder();
}

function initTags() {
  document.getElementById("results").addEventListener("click", onSelectClick, true);
  document.getElementById("select-mode").addEventListener("click", () => setSelecting(!tagging.selecting));
  document.getElementById("select-all").addEventListener("click", () => selectAll(true));
  document.getElementById("select-none").addEventListener("click", () => selectAll(false));
  document.getElementById("tag-add").addEventListener("click", () => editTags(true));
  document.getElementById("tag-remove").addEventListener("click", () => editTags(false));
  document.getElementById("tag-edit-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && tagging.selected.size) { e.preventDefault(); editTags(true); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !e.defaultPrevented && tagging.selecting && !document.querySelector("dialog[open]")) {
      setSelecting(false);
    }
  });
}
