// Words typed while an example image is set change that image's search ("like this picture, but at night"):
// POST /api/search/image sends them as q, and the gateway's query language combines them with the image.
"use strict";

const EXAMPLE_PLACEHOLDER = "Add words to the example, e.g. at night, or -people";

// The search box says what typing does now: describe a picture, or change the example.
function examplePlaceholder() {
  const box = document.getElementById("q");
  if (box.dataset.plain === undefined) box.dataset.plain = box.placeholder;
  box.placeholder = state.mode === "image" ? EXAMPLE_PLACEHOLDER : box.dataset.plain;
}

// The chip's words for an image search, with the words that change it.
function exampleLabel() {
  return state.q ? `Similar to your image, with “${state.q}”` : "Similar to your image";
}
