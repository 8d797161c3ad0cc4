// The batch page: polls the progress endpoint until nothing is in flight, then reloads once
// for the final lists. A static file, so the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  const box = document.getElementById("batch-progress");
  if (!box || box.dataset.finished === "true") return;
  async function poll() {
    try {
      const response = await fetch(box.dataset.url, {credentials: "same-origin"});
      if (response.ok) {
        const data = await response.json();
        document.getElementById("batch-bar").value = data.percent;
        document.getElementById("batch-percent").textContent = data.percent + "%";
        document.getElementById("batch-total").textContent = data.total;
        for (const row of box.querySelectorAll("tr[data-state]")) {
          const n = data.counts[row.dataset.state] || 0;
          row.querySelector(".batch-count").textContent = n;
          row.hidden = n === 0;
        }
        const limited = document.getElementById("batch-rate-limited");
        limited.hidden = !data.rate_limited_until;
        if (data.rate_limited_until) {
          const until = document.getElementById("batch-rate-limited-until");
          until.setAttribute("datetime", data.rate_limited_until);
          until.textContent = data.rate_limited_until.slice(0, 19).replace("T", " ");
        }
        if (data.finished) { window.location.reload(); return; }
      }
    } catch (error) { /* a missed poll is retried below */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
