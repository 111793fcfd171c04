// The viewer shows the display rendition (about 1600 px on the long side, kept by the index), not the
// original: a 12 MP JPEG is some 2.8 MB, too much to show on a phone. "Open original" links the full file.
"use strict";

// Where a hit's display rendition is; older answers carry no display_url, so it is derived from image_url.
function displayUrl(hit) {
  if (hit.display_url) return hit.display_url;
  const [path, query] = hit.image_url.split("?");
  return `${path}/display${query ? `?${query}` : ""}`;
}

// Swaps the viewer's thumbnail for the rendition once loaded, while stillShown() says the hit is on screen.
function loadDisplay(hit, stillShown) {
  const img = document.getElementById("viewer-img");
  const full = new Image();
  full.onload = () => { if (stillShown()) img.src = full.src; };
  // A gateway without the display route (404) still shows the picture: the original, as before.
  full.onerror = () => { full.onerror = null; full.src = hit.image_url; };
  full.src = displayUrl(hit);
}
