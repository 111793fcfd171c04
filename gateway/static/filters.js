// Filters and sort of the semsearch page: capture dates, tags (any / all), camera, place, and sort by date.
// Loaded before app.js; it defines functions only, and app.js calls them (initFilters, addFilters, refreshTagList).
"use strict";

const filterState = {
  tags: new Set(),       // the tags searched for; the checkboxes mirror it
  tagCounts: [],         // the collection's tags, from /api/tags
};

// The query parameters of the chosen filters, the same in the page's URL as in the API's.
function addFilters(params) {
  for (const tag of filterState.tags) params.append("tag", tag);
  if (filterState.tags.size > 1 && document.getElementById("tags-all").checked) params.set("tags", "all");
  const fields = { taken_from: "taken-from", taken_until: "taken-until", camera: "camera-filter",
    has_location: "location-filter", sort: "sort-select", cutoff_gap: "cutoff-gap" };
  for (const [name, id] of Object.entries(fields)) {
    const value = document.getElementById(id).value.trim();
    if (value && !(name === "sort" && value === "relevance")) params.set(name, value);
  }
  return params;
}

function activeFilterCount() {
  const ids = ["taken-from", "taken-until", "camera-filter", "location-filter"];
  return ids.filter((id) => document.getElementById(id).value.trim()).length + (filterState.tags.size ? 1 : 0);
}

function filtersChanged() {
  const n = activeFilterCount();
  const button = document.getElementById("open-filters");
  button.querySelector(".count").textContent = n ? ` (${n})` : "";
  button.classList.toggle("active", n > 0);
  document.getElementById("clear-filters").disabled = n === 0;
  syncUrl();
  runSearch();
}

function toggleFilterPanel(open) {
  const button = document.getElementById("open-filters");
  const panel = document.getElementById("filter-panel");
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  button.setAttribute("aria-expanded", String(show));
  if (show) document.getElementById("taken-from").focus();
}

function clearFilters() {
  for (const id of ["taken-from", "taken-until", "camera-filter", "location-filter"]) document.getElementById(id).value = "";
  filterState.tags.clear();
  document.getElementById("tags-any").checked = true;
  renderTagChoices();
  filtersChanged();
}

// One checkbox per tag of the collection; a tag chosen in the URL but absent from the list stays listed.
function renderTagChoices() {
  const list = document.getElementById("tag-choices");
  const counts = new Map(filterState.tagCounts.map((t) => [t.tag, t.count]));
  for (const tag of filterState.tags) if (!counts.has(tag)) counts.set(tag, 0);
  const names = [...counts.keys()].sort((a, b) => a.localeCompare(b));
  list.replaceChildren(...names.map((tag, i) => {
    const box = el("input", { type: "checkbox", id: `tag-choice-${i}`, value: tag, checked: filterState.tags.has(tag) });
    box.addEventListener("change", () => {
      if (box.checked) filterState.tags.add(tag); else filterState.tags.delete(tag);
      filtersChanged();
    });
    const count = counts.get(tag) ? ` (${counts.get(tag).toLocaleString()})` : "";
    return el("li", {}, [box, el("label", { htmlFor: box.id }, [tag, el("span", { className: "muted" }, [count])])]);
  }));
  document.getElementById("tag-choices-empty").hidden = names.length > 0;
  const suggestions = document.getElementById("tag-suggestions");
  suggestions.replaceChildren(...names.map((tag) => el("option", { value: tag })));
}

async function refreshTagList() {
  try {
    filterState.tagCounts = await api(`/api/tags?${inCollection()}`);
  } catch { return; /* the footer already tells the story */ }
  renderTagChoices();
}

// Reads the filters from the page's URL (called by app.js before its first search).
function initFilters(params) {
  for (const tag of params.getAll("tag")) if (tag.trim()) filterState.tags.add(tag.trim());
  document.getElementById(params.get("tags") === "all" ? "tags-all" : "tags-any").checked = true;
  const fields = { taken_from: "taken-from", taken_until: "taken-until", camera: "camera-filter",
    has_location: "location-filter", sort: "sort-select", cutoff_gap: "cutoff-gap" };
  for (const [name, id] of Object.entries(fields)) {
    const value = params.get(name);
    const input = document.getElementById(id);
    if (value === null) continue;
    input.value = value;
    if (input.value !== value) input.value = "";  // not one of a select's options, or not a date
  }
  renderTagChoices();
  const n = activeFilterCount();
  document.getElementById("open-filters").querySelector(".count").textContent = n ? ` (${n})` : "";
  document.getElementById("open-filters").classList.toggle("active", n > 0);
  document.getElementById("clear-filters").disabled = n === 0;

  document.getElementById("open-filters").addEventListener("click", () => toggleFilterPanel());
  document.getElementById("filter-panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); toggleFilterPanel(false); document.getElementById("open-filters").focus(); }
  });
  for (const id of ["taken-from", "taken-until", "location-filter", "sort-select", "tags-any", "tags-all", "cutoff-gap"]) {
    document.getElementById(id).addEventListener("change", filtersChanged);
  }
  let cameraTimer = 0;
  document.getElementById("camera-filter").addEventListener("input", () => {
    clearTimeout(cameraTimer);
    cameraTimer = setTimeout(filtersChanged, DEBOUNCE_MS);
  });
  document.getElementById("clear-filters").addEventListener("click", clearFilters);
}

// A line in the status row saying how the results are ordered when it is not by relevance.
function describeOrder() {
  const sort = document.getElementById("sort-select").value;
  if (sort === "relevance" || state.mode === "idle" || state.mode === "recent" || !state.hits.length) return;
  const status = document.getElementById("status-text");
  status.append(` · ${sort === "date_desc" ? "newest" : "oldest"} first among the most relevant`);
}
