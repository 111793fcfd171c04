// "Load more" asks for the next page by the cursor (`next`) of the page before: the gateway then neither
// embeds the words again nor needs the example image re-uploaded, and the index returns that page alone.
"use strict";

let pagingNext = null;  // the newest page's cursor; null when there is none (an older gateway: offset paging)

// The request for the next page by cursor, or null when the page must ask by offset.
function nextPage(signal) {
  if (!pagingNext) return null;
  return api(`/api/search/next?${new URLSearchParams({ cursor: pagingNext })}`, { signal });
}

// Keeps the cursor of a page that arrived (a new search's first page replaces it).
function rememberNext(result) {
  pagingNext = result && result.next ? result.next : null;
}
