// A failed search retries by itself: backoff 1, 2, 4, 8, then every 15 s, with a countdown in the alert.
// app.js calls healLater() when a search fails and healed() when one succeeds; "Try again" stays for the impatient.
"use strict";

const HEAL_STEPS_S = [1, 2, 4, 8, 15];
// Worth retrying: no answer at all, overload, and the gateway's "a backend is down" or "too slow" answers.
const HEAL_STATUSES = new Set([0, 429, 502, 503, 504]);

const heal = { attempt: 0, timer: 0, ticker: 0 };

function healClearTimers() {
  clearTimeout(heal.timer);
  clearInterval(heal.ticker);
  heal.timer = heal.ticker = 0;
}

function healShowCountdown(text) {
  const node = document.getElementById("alert-countdown");
  node.textContent = text;
  node.hidden = !text;
}

// Schedules retry() after the next backoff step, unless another search (seq) has started by then.
function healLater(err, retry, seq) {
  healClearTimers();
  if (!HEAL_STATUSES.has(err.status)) { healShowCountdown(""); return false; }
  const step = HEAL_STEPS_S[Math.min(heal.attempt, HEAL_STEPS_S.length - 1)];
  const asked = Number(err.retryAfter);  // a 429's Retry-After, in seconds, when the server says
  let left = Math.max(step, Number.isFinite(asked) ? Math.min(asked, 60) : 0);
  heal.attempt++;
  const waitMs = left * 1000;
  const stale = () => seq !== state.seq;
  const tick = () => {
    if (stale()) { healClearTimers(); healShowCountdown(""); return; }
    healShowCountdown(`Retrying in ${left} s…`);
    left--;
  };
  tick();
  heal.ticker = setInterval(tick, 1000);
  heal.timer = setTimeout(() => {
    healClearTimers();
    if (stale()) return;
    healShowCountdown("Retrying…");
    retry();
  }, waitMs);
  return true;
}

// A search got through: back to the first step next time.
function healed() {
  heal.attempt = 0;
  healClearTimers();
  healShowCountdown("");
}

// The browser says the network is back: do not wait for the countdown.
window.addEventListener("online", () => {
  if (!heal.timer) return;
  clearTimeout(heal.timer);
  heal.timer = setTimeout(() => document.getElementById("alert-retry").click(), 0);
});
