// The page of `resnetlab serve`: choose or drop an image, see its top-5 classes (POST /v1/predict) and,
// when the server can explain, what the model looked at (POST /v1/explain). No framework, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), input = $("file"), results = $("results"), errorBox = $("error");
  const statusLine = $("status"), latency = $("latency"), camBox = $("cam-control"), showCam = $("show-cam");
  const preview = $("preview"), previewBox = $("preview-box"), previewName = $("preview-name");
  const overlay = $("overlay"), overlayBox = $("overlay-box");

  const MB = 1024 * 1024;
  let model = null;        // GET /v1/model
  let maxMb = 8;           // limits.max_body_mb
  let current = null;      // the File shown now
  let previewUrl = null;   // its object URL
  let ticket = 0;          // the latest upload: answers to older ones are dropped

  // --- errors in plain words ------------------------------------------------------------------
  function plainWords(status, type) {
    if (type === "too_many_pixels") {
      const px = model && model.limits && model.limits.max_pixels;
      return "That image has too many pixels" + (px ? `: the server takes at most ${(px / 1e6).toLocaleString()} million.` : ".");
    }
    if (type === "too_many_files") return "Too many files at once: choose one image.";
    if (status === 413 || type === "too_large") return `That file is too big: the server takes at most ${maxMb} MB.`;
    if (status === 415 || status === 422 || type === "not_an_image" || type === "bad_image") {
      return "That file is not an image the server can read.";
    }
    if (status === 408 || type === "timeout") return "The server took too long to answer. Please try again.";
    if (status === 503 || type === "busy") return "The server is busy right now. Please try again in a moment.";
    if (status === 404) return "This server does not offer that.";
    return `Something went wrong on the server (HTTP ${status}).`;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  // fetch, then the JSON body; a 4xx/5xx or an unreachable server throws an Error with plain words
  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error("Could not reach the server. Is it still running?");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const err = (body && body.error) || {};
      let text = plainWords(response.status, err.type);
      if (err.message) text += ` The server said: ${err.message}`;
      throw new Error(text);
    }
    if (body === null) throw new Error("The server's answer could not be read.");
    return body;
  }

  // --- the model --------------------------------------------------------------------------------
  async function loadModel() {
    try {
      model = await call("/v1/model");
    } catch (e) {
      $("model-info").textContent = "The model's details could not be loaded.";
      return;
    }
    const parts = [model.name, model.backend, model.precision].filter(Boolean);
    if (Array.isArray(model.classes)) parts.push(`${model.classes.length} classes`);
    $("model-info").textContent = "Model: " + parts.join(" · ");
    if (model.digest) $("model-info").title = model.digest;
    if (model.limits && model.limits.max_body_mb) {
      maxMb = model.limits.max_body_mb;
      $("max-mb").textContent = String(maxMb);
    }
    camBox.hidden = model.explain !== true;
  }

  // --- showing ----------------------------------------------------------------------------------
  function pixelatedIfSmall(img) {
    img.classList.toggle("pixelated", img.naturalWidth > 0 && img.naturalWidth < 160);
  }

  function clearResults() {
    results.replaceChildren();
    latency.textContent = "";
  }

  function hideOverlay() {
    overlayBox.hidden = true;
    overlay.removeAttribute("src");
  }

  function showResults(answer, clientMs) {
    const first = (answer.predictions || [])[0];
    const top = (first && first.top) || [];
    const items = top.map(({ class: name, prob }) => {
      const li = document.createElement("li");
      li.className = "result";
      const row = document.createElement("div");
      row.className = "row";
      const label = document.createElement("span");
      label.className = "class-name";
      label.textContent = String(name);
      const value = document.createElement("span");
      value.className = "prob";
      value.dataset.prob = String(prob);
      value.textContent = `${(prob * 100).toFixed(1)} %`;
      row.append(label, value);
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, prob)) * 100}%`;
      bar.append(fill);
      li.append(row, bar);
      return li;
    });
    results.replaceChildren(...items);
    statusLine.textContent = top.length ? "" : "The server returned no classes.";
    const server = answer.timing_ms && answer.timing_ms.total;
    latency.textContent = `${clientMs.toFixed(1)} ms` + (typeof server === "number" ? ` (server ${server.toFixed(1)} ms)` : "");
  }

  // --- uploading --------------------------------------------------------------------------------
  function form(file) {
    const data = new FormData();
    data.append("file", file, file.name || "image");
    return data;
  }

  async function predict(file, mine) {
    const started = performance.now();
    const answer = await call("/v1/predict?topk=5", { method: "POST", body: form(file) });
    if (mine !== ticket) return;
    showResults(answer, performance.now() - started);
  }

  async function explain(file, mine) {
    const answer = await call("/v1/explain?format=json", { method: "POST", body: form(file) });
    if (mine !== ticket || !showCam.checked) return;
    overlay.src = "data:image/png;base64," + answer.overlay_png_base64;
    const target = answer.target && answer.target.class;
    overlay.alt = "Heat map over the image: the warmer areas mattered more" +
      (target !== undefined ? ` for “${target}”.` : ".");
    overlayBox.hidden = false;
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.alt = `Your image: ${file.name || "dropped image"}`;
    preview.src = previewUrl;
    previewName.textContent = file.name || "";
    previewBox.hidden = false;
  }

  async function handle(file) {
    if (!file) return;
    const mine = ++ticket;
    current = file;
    clearError();
    clearResults();
    hideOverlay();
    if (file.size > maxMb * MB) {
      previewBox.hidden = true;
      statusLine.textContent = "";
      showError(`That file is too big: the server takes at most ${maxMb} MB (this one is ${(file.size / MB).toFixed(1)} MB).`);
      current = null;
      return;
    }
    showPreview(file);
    statusLine.textContent = "Classifying…";
    results.setAttribute("aria-busy", "true");
    try {
      await predict(file, mine);
      if (showCam.checked && !camBox.hidden && mine === ticket) await explain(file, mine);
    } catch (e) {
      if (mine !== ticket) return;
      clearResults();
      hideOverlay();
      previewBox.hidden = true;
      statusLine.textContent = "Choose another image.";
      showError(e.message);
      current = null;
    } finally {
      if (mine === ticket) results.setAttribute("aria-busy", "false");
    }
  }

  // --- events -------------------------------------------------------------------------------------
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    input.value = "";  // choosing the same file again still counts as a change
    handle(file);
  });

  drop.addEventListener("click", (e) => {
    if (e.target.closest("label")) return;  // the label opens the chooser itself
    input.click();
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "dragend"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) handle(files[0]);
  });
  // a file dropped beside the zone is not opened by the browser in place of the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  showCam.addEventListener("change", async () => {
    if (!showCam.checked) {
      hideOverlay();
      return;
    }
    if (!current) return;
    const mine = ticket, file = current;
    try {
      await explain(file, mine);
    } catch (e) {
      if (mine === ticket) showError(e.message);
    }
  });

  preview.addEventListener("load", () => pixelatedIfSmall(preview));
  preview.addEventListener("error", () => { previewBox.hidden = true; });
  overlay.addEventListener("load", () => pixelatedIfSmall(overlay));

  loadModel();
})();
