// What the footer says about the index's answers: its estimated recall@10 against the target it keeps, and
// whether the picture count is an estimate. Loaded before app.js; its refreshStats calls countText and recallNote.
"use strict";

// "1,234 pictures", or "≈ 1,234 pictures" when the index estimated the count (large collections).
function countText(stats) {
  const text = `${stats.count.toLocaleString()} picture${stats.count === 1 ? "" : "s"}`;
  return stats.estimated ? `≈ ${text}` : text;
}

// Two decimals, or three where two would round a miss up to the target itself (0.979 is not "0.98").
function recallDigits(value, target) {
  const short = value.toFixed(2);
  return target !== null && value < target && Number(short) >= target ? value.toFixed(3) : short;
}

// "recall@10 ≈ 0.99 (target 0.98)"; below target in the warning style and in words, not by color alone.
// Null while the index has not measured it (small collections never are: their searches are exact).
function recallNote(stats) {
  const value = stats.recall_estimate;
  if (value === null || value === undefined) return null;
  const target = stats.recall_target ?? null;
  const shown = recallDigits(value, target);
  const when = stats.recall_measured_at ? `, ${stats.recall_measured_at.slice(0, 16).replace("T", " ")} UTC` : "";
  const title = `Estimated by the index against exact search on ${stats.recall_queries} sampled pictures${when}`;
  if (stats.recall_below_target) {
    return el("span", { className: "warn", id: "footer-recall", title }, [
      el("span", { "aria-hidden": "true" }, ["⚠ "]),
      `recall@10 ≈ ${shown}, below the target ${target.toFixed(2)}`]);
  }
  const aim = target === null ? "" : ` (target ${target.toFixed(2)})`;
  return el("span", { id: "footer-recall", title }, [`recall@10 ≈ ${shown}${aim}`]);
}
