// The review console's only script: keyboard shortcuts, comparison views, wellness options,
// ticking all rows. Plain JS, served by the service (no build step, nothing off-site).
"use strict";
(function () {
  const body = document.body;

  // Wellness options, remembered per browser.
  for (const box of document.querySelectorAll("input[data-wellness]")) {
    const name = box.dataset.wellness;
    const key = "dhash-wellness-" + name;
    box.checked = localStorage.getItem(key) === "1";
    body.classList.toggle("wellness-" + name, box.checked);
    box.addEventListener("change", () => {
      localStorage.setItem(key, box.checked ? "1" : "0");
      body.classList.toggle("wellness-" + name, box.checked);
    });
  }

  // Tick every row of the queue page.
  const all = document.querySelector("[data-select-all]");
  if (all) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll("input[name=ids]")) box.checked = all.checked;
    });
  }
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }

  // Comparison views on the item page.
  const compare = document.getElementById("compare");
  let flicker = null;
  function mode(name) {
    if (!compare) return;
    compare.dataset.mode = name;
    for (const b of compare.querySelectorAll("[data-mode-button]")) {
      b.setAttribute("aria-pressed", String(b.dataset.modeButton === name));
    }
    const over = document.getElementById("stack-over");
    if (flicker) { clearInterval(flicker); flicker = null; }
    if (over) over.classList.remove("hidden");
    if (name === "flicker" && over) {
      flicker = setInterval(() => over.classList.toggle("hidden"), 450);
    }
  }
  if (compare) {
    for (const b of compare.querySelectorAll("[data-mode-button]")) {
      b.addEventListener("click", () => mode(b.dataset.modeButton));
    }
  }

  // Picking another candidate to compare with.
  for (const pick of document.querySelectorAll("button.pick")) {
    pick.addEventListener("click", () => {
      const id = pick.dataset.imageId;
      const figure = document.getElementById("candidate");
      const src = "/review/thumbs/" + id;
      const img = figure.querySelector("img");
      if (pick.dataset.hasThumb === "yes" && img) img.src = src;
      const over = document.getElementById("stack-over");
      if (pick.dataset.hasThumb === "yes" && over) over.src = src;
      document.getElementById("candidate-caption").textContent = pick.dataset.caption;
      for (const p of document.querySelectorAll("button.pick")) p.classList.toggle("picked", p === pick);
    });
  }

  // Keyboard shortcuts: the decision buttons carry their key; views have fixed keys.
  const form = document.getElementById("decide");
  let sent = false;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
    const key = event.key.toLowerCase();
    if (form) {
      const button = form.querySelector('button[data-key="' + key + '"]');
      if (button && !button.disabled && !sent) {
        sent = true;  // one decision per page, however fast the keys come
        event.preventDefault();
        form.requestSubmit(button);
        return;
      }
    }
    if (key === "1") mode("side");
    else if (key === "f") mode("flicker");
    else if (key === "d") mode("difference");
  });
  if (form) form.addEventListener("submit", () => { sent = true; });
})();
