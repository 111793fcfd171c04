// A failed search retries by itself: backoff 1, 2, 4, 8, then every 15 s, with a countdown in the alert.
// app.js calls healLater() when a search fails, healed() when one succeeds and healNow() when its stats get
// through again; "Try again" stays for the impatient.
"use strict";

const HEAL_STEPS_S = [1, 2, 4, 8, 15];
// Worth retrying: no answer at all, overload, and the gateway's "a backend is down" or "too slow" answers.
const HEAL_STATUSES = new Set([0, 429, 502, 503, 504]);

const heal = { attempt: 0, timer: 0, ticker: 0, fire: null };

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
  const asked = Number(err.retryAfter);  // the Retry-After of a 503 or 429, in seconds, when there is one
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
  heal.fire = () => {
    healClearTimers();
    if (stale()) return;
    healShowCountdown("Retrying…");
    retry();
  };
  heal.timer = setTimeout(heal.fire, waitMs);
  return true;
}

// A search got through: back to the first step next time.
function healed() {
  heal.attempt = 0;
  healClearTimers();
  healShowCountdown("");
}

// Something says the backend is back (the footer's stats answered, the browser is online again): retry a
// pending search now instead of waiting out the countdown.
function healNow() {
  if (!heal.timer) return;
  clearTimeout(heal.timer);
  heal.timer = setTimeout(heal.fire, 0);
}

window.addEventListener("online", healNow);
