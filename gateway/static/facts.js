// The viewer's photo facts (capture time, camera, place, the file's own time, tags) and the pictures of the
// last upload shown on the page. Loaded before app.js; app.js calls showFacts, uploadTags, showUploaded, showRecent.
"use strict";

const recent = { hits: [] };

// "2021-07-04T15:30:00+02:00" as "2021-07-04 15:30 (UTC+02:00)"; without a zone, the camera's clock says so.
function describeTaken(iso) {
  const day = iso.slice(0, 10);
  const time = iso.slice(11, 16);
  const zone = iso.length > 19 ? iso.slice(19).replace(/^\.\d+/, "") : "";
  if (!zone) return `${day} ${time} (camera clock, time zone not recorded)`;
  return `${day} ${time} (UTC${zone === "Z" ? "" : zone})`;
}

function describeUtc(iso) {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

function placeLink(lat, lon) {
  const text = `${Math.abs(lat).toFixed(5)}° ${lat >= 0 ? "N" : "S"}, ${Math.abs(lon).toFixed(5)}° ${lon >= 0 ? "E" : "W"}`;
  const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`;
  const link = el("a", { href, target: "_blank", rel: "noopener noreferrer", id: "viewer-place",
    "aria-label": `${text}, on OpenStreetMap (opens in a new tab)` }, [text]);
  return link;
}

// Appends the facts of an image's metadata to the viewer's list (when it still shows that image).
function showFacts(meta) {
  const hit = state.hits[state.current];
  if (!hit || hit.id !== meta.id) return;
  const list = document.getElementById("viewer-meta");
  if (hit.recent) {  // no query, so no score: drop that row
    const first = list.querySelector("dt");
    if (first && first.textContent === "Score") { first.nextElementSibling.remove(); first.remove(); }
  }
  const facts = meta.facts || {};
  const rows = [];
  if (facts.taken_at) rows.push(["Taken", el("time", { dateTime: facts.taken_at }, [describeTaken(facts.taken_at)])]);
  const camera = [facts.camera_make, facts.camera_model].filter(Boolean);
  if (camera.length === 2 && camera[1].toLowerCase().startsWith(camera[0].toLowerCase())) camera.shift();
  if (camera.length) rows.push(["Camera", camera.join(" ")]);
  if (facts.latitude != null && facts.longitude != null) rows.push(["Place", placeLink(facts.latitude, facts.longitude)]);
  if (meta.file_modified_at) {
    rows.push(["File modified", el("span", {}, [
      el("time", { dateTime: meta.file_modified_at }, [describeUtc(meta.file_modified_at)]),
      el("span", { className: "muted" }, [" — the file's modification time, not when the picture was taken"]),
    ])]);
  }
  rows.push(["Tags", (meta.tags || []).length ? meta.tags.join(", ") : "none"]);
  if ((facts.notes || []).length) rows.push(["Ignored", facts.notes.join("; ")]);
  list.append(...rows.flatMap(([k, v]) => [el("dt", {}, [k]), el("dd", { className: "fact" }, [v])]));
  hit.tags = meta.tags || hit.tags;
}

// The upload form's tags field: one form value per tag.
function uploadTags(form) {
  const typed = document.getElementById("upload-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  for (const tag of typed) form.append("tags", tag);
}

// After an upload, the pictures it added (or found already stored) fill the results, newest first.
async function showUploaded(ids) {
  if (!ids.length) return;
  const unique = [...new Set(ids)].reverse();
  const metas = await Promise.all(unique.map((id) => api(`/api/images/${id}?${inCollection()}`).catch(() => null)));
  recent.hits = metas.filter(Boolean).map((m) => ({
    id: m.id, score: 0, label: m.label, source: m.source, width: m.width, height: m.height, tags: m.tags,
    taken_at: null, below_cutoff: false, thumbnail_url: m.thumbnail_url, image_url: m.image_url, recent: true,
  }));
  if (!recent.hits.length) return;
  if (state.controller) state.controller.abort();
  state.seq++;
  state.mode = "recent";
  state.q = "";
  state.queryFile = null;
  state.similarTo = null;
  $("q").value = "";
  syncUrl();
  showRecent();
}

function showRecent() {
  state.hits = recent.hits.slice();
  state.hasMore = false;
  $("results").setAttribute("aria-busy", "false");
  render({ timings: { embed_ms: 0, search_ms: 0 } }, false);
  const n = state.hits.length;
  $("status-text").textContent = `${n} picture${n === 1 ? "" : "s"} just added — search or pick a filter to leave this view`;
}
