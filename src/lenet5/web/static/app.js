// lenet5 serve: the page. Plain JavaScript, no framework, nothing loaded from elsewhere.
//
// Draw on #pad (pointer events: mouse, pen and touch) -> the canvas goes to /api/predict as raw
// grey bytes -> the server finds the digits like `lenet5 predict` and runs the network on each ->
// the page shows the number read, each digit's class shares, the stages of finding them and the
// selected digit's feature maps. The training panel starts/stops a `lenet5 train` worker on the
// server and follows it through server-sent events (/api/train/events).
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],          // summaries from /api/models
  modelId: null,       // the selected model's id
  details: null,       // /api/models/{id}: stages, kernels, classes, glyphs
  input: null,         // null | {kind: "canvas"} | {kind: "file", blob}
  generation: 0,       // bumped by Clear and by a new upload: answers about an earlier picture are dropped
  reading: null,       // the last answer: {digits: [...], steps, size}
  selected: 0,         // which digit of the reading the bars and maps show
  lastResult: null,    // that digit's result (probs, maps, ...)
  inFlight: false,
  again: false,
  throttle: null,
  roundTrips: [],      // the last round-trip times in ms
  train: freshTrainView(),
};

// --------------------------------------------------------------------------- small helpers
function decodeBytes(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits).replace("-", "−");
}

function median(values) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `The server answered ${response.status} ${response.statusText}.`);
    error.detail = body && body.detail ? body.detail : "";
    throw error;
  }
  return body;
}

function postJSON(path, body) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}

// --------------------------------------------------------------------------- colours
function lerpStops(stops, n = 256) {
  const lut = new Uint8ClampedArray(n * 3);
  for (let i = 0; i < n; i++) {
    const t = (i / (n - 1)) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) lut[3 * i + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
  }
  return lut;
}

// viridis-like for activations, blue-white-red for weights
const MAP_LUT = lerpStops([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]);
const DIVERGING_LUT = lerpStops([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]]);

// q: uint8 values (0..255) of one w×h picture, drawn through a colour table (or as grey)
function paint(canvas, q, offset, w, h, lut = null) {
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const px = image.data;
  for (let i = 0; i < w * h; i++) {
    const v = q[offset + i];
    if (lut) {
      px[4 * i] = lut[3 * v]; px[4 * i + 1] = lut[3 * v + 1]; px[4 * i + 2] = lut[3 * v + 2];
    } else {
      px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = v;
    }
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// weights (floats) -> diverging colours on a scale shared by all kernels drawn with it
function paintWeights(canvas, values, offset, w, h, absmax) {
  const q = new Uint8Array(w * h);
  const scale = absmax > 0 ? absmax : 1;
  for (let i = 0; i < w * h; i++) {
    q[i] = Math.max(0, Math.min(255, Math.round((values[offset + i] / scale) * 127.5 + 127.5)));
  }
  paint(canvas, q, 0, w, h, DIVERGING_LUT);
}

// step: {w, h, data: base64 bytes} from the server, or {w, h, pixels} (the canvas the page sent)
function paintStep(canvas, step) {
  if (!step) { clearCanvas(canvas); return; }
  paint(canvas, step.pixels || decodeBytes(step.data), 0, step.w, step.h);
}

function clearCanvas(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

// --------------------------------------------------------------------------- the drawing pad
// The drawing is kept as strokes (lists of points in canvas pixels) and redrawn whole, so that the
// pen can follow the drawing's size: MNIST's strokes are about a tenth of the digit's height, and a
// small digit drawn with a broad pen becomes a blob (a small 7 read as a 9).
const pad = $("pad");
const padCtx = pad.getContext("2d", {willReadFrequently: true});
const drawingState = {strokes: [], current: null, background: null};

// the pen's width in canvas pixels: "auto" a tenth of the drawing's height (within limits that
// scale with the canvas), or fixed thin / thick
function penWidth() {
  const choice = $("pen").value;
  if (choice === "thin") return pad.width / 56;
  if (choice === "thick") return pad.width / 10;
  let top = Infinity, bottom = -Infinity, left = Infinity, right = -Infinity;
  for (const stroke of drawingState.strokes) {
    for (const [x, y] of stroke) {
      top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
    }
  }
  const extent = Number.isFinite(top) ? Math.max(bottom - top, (right - left) / 3) : 0;
  return Math.max(pad.width / 56, Math.min(pad.width / 14, 0.11 * extent));
}

function redrawPad() {
  padCtx.fillStyle = "#fff";
  padCtx.fillRect(0, 0, pad.width, pad.height);
  const bg = drawingState.background;
  if (bg) {
    const s = Math.min(pad.width / bg.width, pad.height / bg.height);
    padCtx.drawImage(bg, (pad.width - bg.width * s) / 2, (pad.height - bg.height * s) / 2, bg.width * s, bg.height * s);
  }
  const width = penWidth();
  padCtx.strokeStyle = padCtx.fillStyle = "#111";
  padCtx.lineWidth = width;
  padCtx.lineCap = padCtx.lineJoin = "round";
  for (const stroke of drawingState.strokes) {
    padCtx.beginPath();
    if (stroke.length === 1) {
      padCtx.arc(stroke[0][0], stroke[0][1], width / 2, 0, 2 * Math.PI);
      padCtx.fillStyle = "#111";
      padCtx.fill();
      continue;
    }
    stroke.forEach(([x, y], i) => (i ? padCtx.lineTo(x, y) : padCtx.moveTo(x, y)));
    padCtx.stroke();
  }
  pad.dataset.pen = width.toFixed(1);
}

function resetPad() {
  drawingState.strokes = [];
  drawingState.current = null;
  drawingState.background = null;
  redrawPad();
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [(event.clientX - rect.left) * (pad.width / rect.width), (event.clientY - rect.top) * (pad.height / rect.height)];
}

function onPointerDown(event) {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  if (state.input && state.input.kind === "file") {  // drawing over an uploaded picture: the drawing is sent
    state.generation += 1;
  }
  state.input = {kind: "canvas"};
  drawingState.current = [padPoint(event)];
  drawingState.strokes.push(drawingState.current);
  redrawPad();
  predictSoon();
}

function onPointerMove(event) {
  if (!drawingState.current) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) drawingState.current.push(padPoint(e));
  redrawPad();
  predictSoon();
}

function onPointerUp() {
  if (!drawingState.current) return;
  drawingState.current = null;
  clearTimeout(state.throttle);
  state.throttle = null;
  predictNow();
}

function clearResult() {
  state.reading = null;
  state.lastResult = null;
  state.selected = 0;
  renderSteps(null);
  renderDigits(null);
  renderBars(null);
  renderMaps(null);
}

function clearAll() {
  resetPad();
  state.generation += 1;
  state.input = null;
  showError("");
  clearResult();
}

function showError(message, detail = "") {
  $("predict-error").textContent = message;
  $("predict-detail").textContent = detail;
}

// an uploaded or dropped picture: shown on the pad, sent to the server as the file it is. Whatever
// comes of it, the earlier result goes at once: it was about another picture.
function usePicture(file) {
  if (!file) return;
  resetPad();
  state.generation += 1;
  state.input = null;
  clearResult();
  showError("");
  if (file.size > 10 * 1024 * 1024) {
    showError(`${file.name} is larger than the 10 MB the page accepts.`);
    return;
  }
  state.input = {kind: "file", blob: file};
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    drawingState.background = img;
    redrawPad();
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);  // the server says what is wrong with it
  img.src = url;
  predictNow();
}

function setupPad() {
  resetPad();
  pad.addEventListener("pointerdown", onPointerDown);
  pad.addEventListener("pointermove", onPointerMove);
  pad.addEventListener("pointerup", onPointerUp);
  pad.addEventListener("pointercancel", onPointerUp);
  $("clear").addEventListener("click", clearAll);
  $("pen").addEventListener("change", () => { redrawPad(); if (state.input && state.input.kind === "canvas") predictNow(); });
  $("file").addEventListener("change", (e) => { usePicture(e.target.files[0]); e.target.value = ""; });
  const wrap = $("pad-wrap");
  wrap.addEventListener("dragover", (e) => { e.preventDefault(); wrap.classList.add("dragging"); });
  wrap.addEventListener("dragleave", () => wrap.classList.remove("dragging"));
  wrap.addEventListener("drop", (e) => {
    e.preventDefault();
    wrap.classList.remove("dragging");
    if (e.dataTransfer.files.length) usePicture(e.dataTransfer.files[0]);
  });
}

// --------------------------------------------------------------------------- predictions
// While drawing: at most one request in flight and one every 30 ms; the last stroke always counts.
function predictSoon() {
  if (state.throttle) return;
  state.throttle = setTimeout(() => { state.throttle = null; predictNow(); }, 30);
}

function predictNow() {
  if (!state.input || !state.modelId) return;
  if (state.inFlight) { state.again = true; return; }
  sendPrediction();
}

function requestBody() {
  if (state.input.kind === "file") {
    return {query: "", body: state.input.blob, type: state.input.blob.type || "application/x-picture"};
  }
  const rgba = padCtx.getImageData(0, 0, pad.width, pad.height).data;
  const grey = new Uint8Array(pad.width * pad.height);
  for (let i = 0; i < grey.length; i++) {  // luminance (a photo may be on the pad)
    grey[i] = (299 * rgba[4 * i] + 587 * rgba[4 * i + 1] + 114 * rgba[4 * i + 2]) / 1000;
  }
  // the server does not send a drawn canvas back: the page shows the picture it sent
  return {query: `&w=${pad.width}&h=${pad.height}`, body: grey, type: "application/octet-stream",
    canvas: {w: pad.width, h: pad.height, grey}};
}

// grey bytes (w×h) -> {w, h, pixels} at most `side` per side: the mean of each k×k block, the
// smallest whole k that fits (as the server shrinks an uploaded picture's preview)
function shrinkGrey(grey, w, h, side = 112) {
  const k = Math.ceil(Math.max(w, h) / side);
  if (k <= 1) return {w, h, pixels: grey};
  const W = Math.ceil(w / k), H = Math.ceil(h / k);
  const sum = new Uint32Array(W * H), count = new Uint32Array(W * H);
  for (let y = 0; y < h; y++) {
    const row = Math.floor(y / k) * W;
    for (let x = 0; x < w; x++) {
      const j = row + Math.floor(x / k);
      sum[j] += grey[y * w + x];
      count[j] += 1;
    }
  }
  const pixels = new Uint8Array(W * H);
  for (let j = 0; j < pixels.length; j++) pixels[j] = Math.round(sum[j] / count[j]);
  return {w: W, h: H, pixels};
}

async function sendPrediction() {
  state.inFlight = true;
  document.body.dataset.predicting = "1";  // "0" once the answer about the latest picture is shown
  state.again = false;
  const modelId = state.modelId;
  const generation = state.generation;
  const {query, body, type, canvas} = requestBody();
  const started = performance.now();
  try {
    const result = await api(`/api/predict?model=${encodeURIComponent(modelId)}${query}`,
      {method: "POST", headers: {"Content-Type": type}, body});
    const roundTrip = performance.now() - started;
    recordRoundTrip(roundTrip, result.timing);
    if (modelId !== state.modelId || generation !== state.generation) return;  // out of date: dropped
    if (state.details && result.version !== state.details.version) await loadDetails(modelId);
    if (canvas) result.steps.unshift({name: "picture", ...shrinkGrey(canvas.grey, canvas.w, canvas.h)});
    showError("");
    renderResult(result);
  } catch (err) {
    if (generation === state.generation) {  // a picture without an answer shows no old answer either
      clearResult();
      showError(err.message, err.detail || "");
    }
  } finally {
    state.inFlight = false;
    if (state.again) predictNow();
    else document.body.dataset.predicting = "0";
  }
}

function recordRoundTrip(ms, timing) {
  state.roundTrips.push(ms);
  if (state.roundTrips.length > 50) state.roundTrips.shift();
  const med = median(state.roundTrips);
  const t = $("timing");
  t.dataset.last = ms.toFixed(1);
  t.dataset.median = med.toFixed(1);
  t.dataset.count = String((Number(t.dataset.count) || 0) + 1);
  t.textContent = `round trip ${ms.toFixed(1)} ms (median ${med.toFixed(1)} ms of the last ${state.roundTrips.length}); ` +
    `server ${timing.server_ms.toFixed(1)} ms, network ${timing.network_ms.toFixed(1)} ms`;
}

function renderResult(result) {
  state.reading = result;
  if (state.selected >= result.digits.length) state.selected = 0;
  state.lastResult = result.digits[state.selected];
  renderSteps(result);
  renderDigits(result);
  renderBars(state.lastResult);
  renderMaps(state.lastResult);
  renderRBF(state.lastResult);
}

function selectDigit(index) {
  if (!state.reading || !state.reading.digits[index]) return;
  state.selected = index;
  state.lastResult = state.reading.digits[index];
  renderDigits(state.reading);
  renderBars(state.lastResult);
  renderMaps(state.lastResult);
  renderRBF(state.lastResult);
}

function className(k) {
  return state.details ? state.details.classes[k] : String(k);
}

// the digits read, left to right, as one number ("2026"); other classes (clothes) as a list
function readingText(result) {
  const names = result.digits.map((d) => className(d.prediction));
  return names.every((n) => n.length === 1) ? names.join("") : names.join(" · ");
}

// the stages of `lenet5 predict`'s reading, in the order they happen; a stage it adds later is
// shown after these, under its own name
const STEP_NAMES = {picture: "the picture", paper: "the paper's brightness", ink: "ink", mask: "ink mask",
  lines: "ruled lines found", kept: "strokes kept", box: "scaled into 20×20", input: "centred in 28×28"};
const STEP_ORDER = Object.keys(STEP_NAMES);

// the stages of finding the digits, as the server names them; on the picture, each digit's box
function renderSteps(result) {
  const steps = $("steps");
  if (!result) { steps.replaceChildren(); return; }
  const rank = (name) => (STEP_ORDER.includes(name) ? STEP_ORDER.indexOf(name) : STEP_ORDER.length);
  const ordered = [...result.steps].sort((a, b) => rank(a.name) - rank(b.name));
  steps.replaceChildren(...ordered.map((step) => {
    const c = el("canvas", {class: "pixelated", "data-step": step.name});
    paintStep(c, step);
    if (step.name === "picture") drawBoxes(c, result);
    return el("figure", {}, [c, el("figcaption", {text: STEP_NAMES[step.name] || step.name.replaceAll("_", " ")})]);
  }));
}

function drawBoxes(canvas, result) {
  const [W, H] = result.size;
  const sx = canvas.width / W, sy = canvas.height / H;
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = 1;
  result.digits.forEach((d, i) => {
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeStyle = i === state.selected ? "#2f6fdb" : "#d9822b";
    ctx.strokeRect(x0 * sx + 0.5, y0 * sy + 0.5, Math.max(1, (x1 - x0) * sx - 1), Math.max(1, (y1 - y0) * sy - 1));
  });
}

// one card per digit found: what the network saw, what it read, how sure; a click selects it
function renderDigits(result) {
  const box = $("digits");
  const predicted = $("predicted");
  if (!result) {
    box.replaceChildren();
    predicted.textContent = "";
    predicted.dataset.prediction = "";
    return;
  }
  const text = readingText(result);
  predicted.textContent = text;
  predicted.dataset.prediction = text;
  box.replaceChildren(...result.digits.map((d, i) => {
    const c = el("canvas", {class: "pixelated"});
    paintStep(c, d.input);
    const share = d.probs[d.prediction];
    const card = el("button", {type: "button", class: `digit-card${i === state.selected ? " selected" : ""}`,
      "data-index": String(i), "data-prediction": String(d.prediction), title: "show this digit's shares and maps"}, [
      c, el("span", {class: "digit-name", text: className(d.prediction)}),
      el("span", {class: "small", text: `${(100 * share).toFixed(share > 0.999 ? 1 : 0)}%`})]);
    card.addEventListener("click", () => selectDigit(i));
    return card;
  }));
  $("digits-note").textContent = result.digits.length > 1
    ? `${result.digits.length} digits found, read left to right. Digit ${state.selected + 1} is shown below.` : "";
}

function renderBars(result) {
  const bars = $("bars");
  const classes = state.details ? state.details.classes : [...Array(10).keys()].map(String);
  // an answer from the model shown before this one has no distances: its bars wait for the next
  const rbf = !!(state.details && state.details.output === "rbf" && result && result.rbf_distances);
  bars.classList.toggle("rbf", rbf);
  if (bars.children.length !== classes.length) {
    bars.replaceChildren(...classes.map((name, k) => el("div", {class: "bar-row", "data-class": String(k)}, [
      el("span", {class: "bar-label", text: name, title: name}),
      el("div", {class: "bar-track"}, [el("div", {class: "bar-fill"})]),
      el("span", {class: "bar-value", text: ""}),
    ])));
  }
  [...bars.children].forEach((row, k) => {
    row.querySelector(".bar-label").textContent = classes[k];
    const p = result ? result.probs[k] : 0;
    row.querySelector(".bar-fill").style.width = `${(100 * p).toFixed(1)}%`;
    let value = result ? `${(100 * p).toFixed(1)}%` : "";
    if (result && rbf) value += ` · d ${fmt(result.rbf_distances[k], 1)}`;
    row.querySelector(".bar-value").textContent = value;
    row.classList.toggle("top", !!result && k === result.prediction);
  });
  $("output-note").textContent = outputNote(result);
}

// what the bars mean, in words a learner can follow
function outputNote(result) {
  if (!state.details) return "";
  if (state.details.output !== "rbf") {
    return "The bars: how the network shares its belief among the classes (softmax of the output layer).";
  }
  let text = "This network does not output probabilities. Its OUTPUT layer compares F6's 84 values, seen as a " +
    "7×12 picture, with a stored picture of each digit (below) and reports the distance d: the smaller, the " +
    "closer. The nearest digit wins.";
  if (!result || !result.rbf_distances) return text;
  const order = result.rbf_distances.map((d, k) => [d, k]).sort((a, b) => a[0] - b[0]);
  const [[d0, k0], [d1, k1]] = order;
  text += ` Here the nearest is ${className(k0)} at d ${fmt(d0, 1)}; the next, ${className(k1)}, is at d ${fmt(d1, 1)}.` +
    " The bars share the evidence among the ten digits (softmax of −d).";
  if (result.rubbish_share !== undefined) {
    text += ` The paper trained it with a criterion that also has a "rubbish" class at a fixed level ` +
      `(j = ${state.details.rubbish_j}); read that way, the rubbish class would take ` +
      `${(100 * result.rubbish_share).toFixed(0)}% of this picture. That share measures the fixed level as much as ` +
      "the picture, so even a clean digit leaves about half there: it is not doubt about which digit it is.";
  }
  return text;
}

// --------------------------------------------------------------------------- the model
async function loadModels(selectId = null) {
  const data = await api("/api/models");
  state.models = data.models;
  const select = $("model-select");
  const keep = selectId || state.modelId || data.default;
  select.replaceChildren(...data.models.map((m) => el("option", {value: m.id, text: modelLabel(m)})));
  select.disabled = !data.models.length;
  $("no-model").hidden = data.models.length > 0;
  const chosen = data.models.find((m) => m.id === keep) ? keep : data.default;
  if (chosen) select.value = chosen;
  if (chosen && chosen !== state.modelId) await selectModel(chosen);
  else if (chosen) refreshModelInfo();
}

function modelLabel(m) {
  const parts = [m.name];
  if (m.preset && !m.name.includes(m.preset)) parts.push(m.preset);
  if (m.test_acc !== null && m.test_acc !== undefined) parts.push(`${(100 * m.test_acc).toFixed(1)}%`);
  return parts.join(" · ");
}

function refreshModelInfo() {
  const d = state.details;
  if (!d) { $("model-info").textContent = ""; return; }
  const dataset = d.dataset ? ` · trained on ${d.dataset}` : "";
  $("model-info").textContent = `${d.preset}, ${d.params.toLocaleString()} parameters${dataset}`;
}

async function selectModel(id) {
  state.modelId = id;
  $("model-select").value = id;
  try {
    await loadDetails(id);
  } catch (err) {
    showError(err.message, err.detail || "");
    return;
  }
  predictNow();  // the drawing stays: the new model looks at it
}

async function loadDetails(id) {
  const details = await api(`/api/models/${encodeURIComponent(id)}`);
  if (id !== state.modelId) return;
  const structureChanged = !state.details || state.details.preset !== details.preset;
  state.details = details;
  refreshModelInfo();
  if (structureChanged) buildStages(details);
  renderC1Kernels(details);
  $("rbf").hidden = details.output !== "rbf";
  if (details.output === "rbf") buildGlyphs(details);
  if (state.reading) renderDigits(state.reading);
  renderBars(state.lastResult);
}

// --------------------------------------------------------------------------- feature maps
const STAGE_TITLES = {c1: "C1", s2: "S2", c3: "C3", s4: "S4", c5: "C5", f6: "F6"};
const MAP_SCALE = {c1: 2, s2: 4, c3: 4, s4: 8};

function buildStages(details) {
  const rows = details.stages.map((stage) => {
    const shape = stage.shape;  // [C, H, W] or [F]
    const isMaps = shape.length === 3 && !(shape[1] === 1 && shape[2] === 1);
    const maps = el("div", {class: "maps", id: `maps-${stage.stage}`});
    if (isMaps) {
      const scale = MAP_SCALE[stage.stage] || 4;
      for (let i = 0; i < shape[0]; i++) {
        const c = el("canvas", {width: shape[2], height: shape[1], "data-stage": stage.stage, "data-index": String(i),
          class: "fmap"});
        c.style.width = `${shape[2] * scale}px`;
        c.style.height = `${shape[1] * scale}px`;
        c.addEventListener("mouseenter", () => showMapInfo(stage.stage, i, c));
        c.addEventListener("click", () => showMapInfo(stage.stage, i, c));  // a tap, on a phone
        maps.append(c);
      }
    } else {
      const units = shape[0] * (shape[1] || 1) * (shape[2] || 1);
      const c = el("canvas", {width: units, height: 1, "data-stage": stage.stage, class: "fmap strip"});
      c.style.width = `${Math.min(units * 5, 600)}px`;  // CSS keeps it within the panel
      c.addEventListener("mousemove", (e) => showUnitInfo(stage.stage, c, e));
      maps.append(c);
    }
    const dims = shape.length === 3 && !(shape[1] === 1 && shape[2] === 1)
      ? `${shape[0]}@${shape[1]}×${shape[2]}` : `${shape[0] * (shape[1] || 1) * (shape[2] || 1)} units`;
    const name = el("div", {class: "stage-name"}, [STAGE_TITLES[stage.stage] || stage.stage,
      el("span", {class: "small", text: `${stage.kind}`}), el("span", {class: "small", text: dims})]);
    return el("div", {class: "stage"}, [name, maps]);
  });
  const kernels = el("div", {class: "kernel-row", id: "c1-kernels"});
  rows.push(el("div", {class: "stage"}, [el("div", {class: "stage-name"}, ["C1 kernels",
    el("span", {class: "small", text: "5×5 weights"})]), kernels]));
  $("stages").replaceChildren(...rows);
}

function renderMaps(result) {
  const decoded = {};  // each stage's bytes, decoded once
  for (const canvas of document.querySelectorAll("#stages canvas.fmap")) {
    const info = result && result.maps[canvas.dataset.stage];
    if (!info) { clearCanvas(canvas); continue; }
    const q = decoded[canvas.dataset.stage] ||= decodeBytes(info.data);
    if (info.shape.length === 3) {
      const [, h, w] = info.shape;
      paint(canvas, q, Number(canvas.dataset.index) * h * w, w, h, MAP_LUT);
    } else {
      paint(canvas, q, 0, info.shape[0], 1, MAP_LUT);
    }
  }
  const active = document.querySelector("#stages canvas.active");
  if (active && active.dataset.index !== undefined) showMapInfo(active.dataset.stage, Number(active.dataset.index), active);
}

function renderC1Kernels(details) {
  const row = $("c1-kernels");
  if (row) drawKernels(row, details.kernels.c1, [...Array(details.kernels.c1.shape[0]).keys()].map((i) => [i, 0]), "map");
}

// kernels: {shape: [out, in, k, k], values, absmax}; which: [[out, in], ...]
function drawKernels(container, kernels, which, labelKind) {
  const [, nIn, kh, kw] = kernels.shape;
  container.replaceChildren(...which.map(([o, i]) => {
    const c = el("canvas", {width: kw, height: kh});
    paintWeights(c, kernels.values, (o * nIn + i) * kh * kw, kw, kh, kernels.absmax);
    const label = labelKind === "map" ? String(o) : `from ${i}`;
    return el("figure", {}, [c, el("figcaption", {text: label})]);
  }));
}

function mapRange(stage, index) {
  const info = state.lastResult && state.lastResult.maps[stage];
  if (!info) return "draw something to see its values";
  const lo = Array.isArray(info.min) ? info.min[index] : info.min;
  const hi = Array.isArray(info.max) ? info.max[index] : info.max;
  return `values ${fmt(lo)} … ${fmt(hi)}`;
}

function showMapInfo(stage, index, canvas) {
  const d = state.details;
  if (!d) return;
  for (const c of document.querySelectorAll("#stages canvas.active")) c.classList.remove("active");
  canvas.classList.add("active");
  const kind = (d.stages.find((s) => s.stage === stage) || {}).kind || "";
  $("hover-title").textContent = `${STAGE_TITLES[stage]} map ${index} · ${kind}`;
  const kernelsBox = $("hover-kernels");
  let text = mapRange(stage, index);
  if (stage === "c1") {
    text += ". Its kernel, sliding over the 28×28 input:";
    drawKernels(kernelsBox, d.kernels.c1, [[index, 0]], "map");
  } else if (stage === "c3") {
    const inputs = d.c3_connections ? d.c3_connections[index].map((on, i) => (on ? i : -1)).filter((i) => i >= 0)
      : [...Array(d.kernels.c3.shape[1]).keys()];
    text += `. Its ${inputs.length} kernels, one per S2 map it reads (${inputs.join(", ")}):`;
    drawKernels(kernelsBox, d.kernels.c3, inputs.map((i) => [index, i]), "input");
  } else {
    const source = stage === "s2" ? "C1" : "C3";
    const coef = d[`${stage}_coefficients`];
    const how = coef
      ? `trainable 2×2 subsampling of ${source} map ${index}: ${fmt(coef[index])} × sum + ${fmt(d[`${stage}_biases`][index])}, squashed`
      : `${kind.includes("Max") ? "2×2 max" : "2×2 average"} pooling of ${source} map ${index}`;
    text += `. ${how}.`;
    kernelsBox.replaceChildren();
  }
  $("hover-text").textContent = text;
}

function showUnitInfo(stage, canvas, event) {
  const info = state.lastResult && state.lastResult.maps[stage];
  const rect = canvas.getBoundingClientRect();
  const units = canvas.width;
  const unit = Math.max(0, Math.min(units - 1, Math.floor(((event.clientX - rect.left) / rect.width) * units)));
  $("hover-title").textContent = `${STAGE_TITLES[stage]} unit ${unit} of ${units}`;
  let text = mapRange(stage, 0);
  if (info) {
    const q = decodeBytes(info.data)[unit];
    const value = info.min + (q / 255) * (info.max - info.min);
    text = `value ${fmt(value)} (this layer: ${fmt(info.min)} … ${fmt(info.max)})`;
  }
  $("hover-text").textContent = text + (stage === "c5"
    ? ". C5: 120 units, each a 5×5 convolution over all 16 S4 maps." : ". F6: 84 units, fully connected to C5.");
  $("hover-kernels").replaceChildren();
}

// --------------------------------------------------------------------------- lecun1998's RBF output
function glyphBytes(rows, on = 255, off = 0) {
  const q = new Uint8Array(84);
  rows.forEach((row, y) => [...row].forEach((ch, x) => { q[y * 7 + x] = ch === "#" ? on : off; }));
  return q;
}

function buildGlyphs(details) {
  $("glyphs").replaceChildren(...details.glyphs.map((rows, d) => {
    const c = el("canvas", {width: 7, height: 12, class: "pixelated glyph"});
    paint(c, glyphBytes(rows, 20, 245), 0, 7, 12);
    return el("figure", {"data-digit": String(d)}, [c, el("figcaption", {text: `${d}: –`})]);
  }));
}

function renderRBF(result) {
  if (!result || !result.rbf_distances || !state.details || state.details.output !== "rbf") return;
  // F6's values lie in about ±1.7 (the squashing function); as a 7×12 picture, ink dark like the glyphs
  const q = new Uint8Array(84);
  result.f6_values.forEach((v, i) => { q[i] = Math.max(0, Math.min(255, Math.round(127.5 - v * 75))); });
  paint($("f6-glyph"), q, 0, 7, 12);
  const nearest = result.rbf_distances.indexOf(Math.min(...result.rbf_distances));
  for (const fig of $("glyphs").children) {
    const d = Number(fig.dataset.digit);
    fig.querySelector("figcaption").textContent = `${d}: d ${fmt(result.rbf_distances[d], 1)}`;
    fig.classList.toggle("nearest", d === nearest);
  }
}

// --------------------------------------------------------------------------- training
function freshTrainView() {
  return {epochs: [], batches: {}, progress: null, totalEpochs: null, run: null, modelId: null, state: "idle", runs: [],
    started: null};
}

async function setupTraining() {
  const status = await api("/api/train");
  $("train-preset").replaceChildren(...status.presets.map((p) => el("option", {value: p, text: p})));
  $("train-dataset").replaceChildren(...status.datasets.map((d) => el("option", {value: d, text: d})));
  $("train-form").addEventListener("submit", (e) => { e.preventDefault(); startTraining(); });
  $("train-stop").addEventListener("click", () => trainCommand("/api/train/stop", {}));
  $("train-resume").addEventListener("click", () => trainCommand("/api/train/resume", {run: $("train-run").value}));
  $("train-run").addEventListener("change", updateTrainButtons);
  $("train-use").addEventListener("click", () => { if (state.train.modelId) loadModels(state.train.modelId); });
  setRuns(status.runs);
  updateTrainButtons();
  followTraining();
  setInterval(renderElapsed, 1000);
}

// the runs this server knows (earlier ones in its runs folder too); Resume acts on the one chosen
function setRuns(runs, prefer = null) {
  state.train.runs = runs;
  const select = $("train-run");
  const keep = prefer || select.value;
  select.replaceChildren(...runs.map((r) => el("option", {value: r.id,
    text: `${r.name} · ${r.done}/${r.settings.epochs ?? "?"} epochs${r.resumable ? " · can resume" : ""}`})));
  const resumable = runs.filter((r) => r.resumable);
  const chosen = runs.find((r) => r.id === keep) || resumable[resumable.length - 1] || runs[runs.length - 1];
  if (chosen) select.value = chosen.id;
  $("train-runs").hidden = !runs.length;
}

async function refreshRuns(prefer = null) {
  try { setRuns((await api("/api/train")).runs, prefer); } catch (err) { /* the next state change tries again */ }
  updateTrainButtons();
}

function startTraining() {
  const limit = $("train-limit").value.trim();
  trainCommand("/api/train/start", {
    preset: $("train-preset").value,
    dataset: $("train-dataset").value,
    epochs: Number($("train-epochs").value) || 1,
    train_limit: limit ? Number(limit) : null,
  });
}

async function trainCommand(path, body) {
  try {
    $("train-log").textContent = "";
    await postJSON(path, body);
  } catch (err) {
    $("train-log").textContent = err.message;
    refreshRuns();
  }
}

function followTraining() {
  const source = new EventSource("/api/train/events");
  source.addEventListener("start", (e) => {
    const data = JSON.parse(e.data);
    state.train = {...freshTrainView(), run: data.run, totalEpochs: data.epochs, runs: state.train.runs,
      started: performance.now()};
    $("train-log").textContent = "";
    renderTraining();
    refreshRuns(data.run.id);  // the run going now is the one the Runs list shows
  });
  source.addEventListener("state", (e) => onTrainState(JSON.parse(e.data)));
  source.addEventListener("batches", (e) => {
    const b = JSON.parse(e.data);
    state.train.batches[b.epoch] = b.loss;
    renderTraining();
  });
  source.addEventListener("epoch", (e) => onTrainEpoch(JSON.parse(e.data)));
  source.addEventListener("progress", (e) => { state.train.progress = JSON.parse(e.data); renderElapsed(); });
  source.addEventListener("log", (e) => { $("train-log").textContent = JSON.parse(e.data).text; });
}

function onTrainState(data) {
  state.train.state = data.state;
  if (data.run) state.train.run = data.run;
  if (data.epochs) state.train.totalEpochs = data.epochs;
  const status = $("train-status");
  status.className = `train-status ${data.state}`;
  status.dataset.state = data.state;
  state.train.message = data.message;
  renderTrainStatus();
  $("train-log").textContent = data.detail ? `The worker's last words: ${data.detail}` : "";
  updateTrainButtons();
  if (!["starting", "running", "stopping"].includes(data.state)) refreshRuns();
}

async function onTrainEpoch(record) {
  const t = state.train;
  t.epochs = t.epochs.filter((r) => r.epoch !== record.epoch).concat([record]).sort((a, b) => a.epoch - b.epoch);
  if (record.kernels) drawKernels($("train-kernels"), {...record.kernels, absmax: Math.max(...record.kernels.values.map(Math.abs))},
    [...Array(record.kernels.shape[0]).keys()].map((i) => [i, 0]), "map");
  if (record.confusion) drawConfusion($("confusion"), record.confusion);
  renderTraining();
  renderTrainStatus();
  updateTrainButtons();
  if (record.model_id) {
    const first = !t.modelId;
    t.modelId = record.model_id;
    updateTrainButtons();
    // a new model on the list; the first one is chosen when there was none
    await loadModels(state.modelId ? null : record.model_id);
    if (state.modelId === record.model_id && !first) {
      await loadDetails(record.model_id);
      predictNow();
    }
  }
}

function renderTrainStatus() {
  const t = state.train;
  const last = t.epochs[t.epochs.length - 1];
  const parts = [t.message || t.state];
  if (t.run) parts.push(`${t.run.settings.preset} on ${t.run.settings.dataset}`);
  if (last) parts.push(`${last.epoch} of ${t.totalEpochs || "?"} epochs done`);
  if (last && last.test_acc !== undefined) parts.push(`test accuracy ${(100 * last.test_acc).toFixed(2)}%`);
  $("train-status").textContent = parts.join(" · ");
}

// while an epoch runs, the run's progress.json says how far it is (the page hears it twice a second at most)
function renderElapsed() {
  const t = state.train;
  const going = ["starting", "running"].includes(t.state) && t.started !== null;
  const done = t.epochs.length ? t.epochs[t.epochs.length - 1].epoch : 0;
  const p = t.progress && t.progress.epoch > done ? t.progress : null;
  const where = t.state === "starting" ? "loading the data"
    : p ? `epoch ${p.epoch}: batch ${p.batch} of ${p.batches}, loss ${p.loss.toFixed(3)}` : `epoch ${done + 1} running`;
  $("train-elapsed").textContent = going
    ? `${where} · ${Math.round((performance.now() - t.started) / 1000)} s so far`
    : "";
}

function updateTrainButtons() {
  const busy = ["starting", "running", "stopping"].includes(state.train.state);
  $("train-start").disabled = busy;
  $("train-stop").disabled = !["starting", "running"].includes(state.train.state);
  const run = state.train.runs.find((r) => r.id === $("train-run").value);
  $("train-resume").disabled = busy || !run || !run.resumable;
  $("train-run-note").textContent = run && !run.resumable && run.note ? run.note : "";
  $("train-use").disabled = !state.train.modelId;
}

function renderTraining() {
  const t = state.train;
  const batchPoints = [];
  for (const epoch of Object.keys(t.batches).map(Number).sort((a, b) => a - b)) {
    const losses = t.batches[epoch];
    losses.forEach((v, i) => { if (v !== null) batchPoints.push([epoch - 1 + (i + 1) / losses.length, v]); });
  }
  const trainLoss = t.epochs.filter((r) => r.train_loss !== undefined).map((r) => [r.epoch, r.train_loss]);
  const testLoss = t.epochs.filter((r) => r.test_loss !== undefined).map((r) => [r.epoch, r.test_loss]);
  const lossCanvas = $("chart-loss");
  const points = batchPoints.length + trainLoss.length;
  lossCanvas.dataset.points = String(points);
  drawChart(lossCanvas, [
    {name: "batch", points: batchPoints, color: "rgba(47,111,219,0.35)", width: 1},
    {name: "train", points: trainLoss, color: "#1d2330", width: 2, dots: true},
    {name: "test", points: testLoss, color: "#d9822b", width: 2, dots: true},
  ], {xMax: epochAxis(t), yMin: 0, xLabel: "epoch", yLabel: "loss"});
  const trainAcc = t.epochs.filter((r) => r.train_acc !== undefined).map((r) => [r.epoch, 100 * r.train_acc]);
  const testAcc = t.epochs.filter((r) => r.test_acc !== undefined).map((r) => [r.epoch, 100 * r.test_acc]);
  const accCanvas = $("chart-acc");
  accCanvas.dataset.points = String(trainAcc.length + testAcc.length);
  drawChart(accCanvas, [
    {name: "train", points: trainAcc, color: "#1d2330", width: 2, dots: true},
    {name: "test", points: testAcc, color: "#d9822b", width: 2, dots: true},
  ], {xMax: epochAxis(t), xMin: 0, yMax: 100, xLabel: "epoch", yLabel: "accuracy %"});
}

// the x axis grows with the run: a few epochs past the current one, never past the last
function epochAxis(t) {
  const current = Math.max(0, ...t.epochs.map((r) => r.epoch));
  const total = t.totalEpochs || current + 1;
  return Math.min(total, Math.max(current + 1, 5));
}

function niceStep(range, ticks) {
  const raw = range / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

// series: [{name, points: [[x, y]], color, width?, dots?}]
function drawChart(canvas, series, opts) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const m = {left: 48, right: 12, top: 22, bottom: 32};
  ctx.clearRect(0, 0, W, H);
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const xMin = opts.xMin ?? 0, xMax = Math.max(opts.xMax || 1, ...xs, xMin + 1);
  let yMin = opts.yMin ?? (ys.length ? Math.min(...ys) : 0), yMax = opts.yMax ?? (ys.length ? Math.max(...ys) : 1);
  if (opts.yMax === undefined) yMax = yMax + 0.05 * (yMax - yMin || 1);
  if (opts.yMin === undefined && opts.yMax !== undefined) yMin = Math.max(0, Math.floor((ys.length ? Math.min(...ys) : 0) / 10) * 10);
  if (yMax <= yMin) yMax = yMin + 1;
  const X = (x) => m.left + ((x - xMin) / (xMax - xMin)) * (W - m.left - m.right);
  const Y = (y) => H - m.bottom - ((y - yMin) / (yMax - yMin)) * (H - m.top - m.bottom);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#e3e6ea";
  ctx.fillStyle = "#667085";
  ctx.lineWidth = 1;
  const yStep = niceStep(yMax - yMin, 5);
  for (let y = Math.ceil(yMin / yStep) * yStep; y <= yMax + 1e-9; y += yStep) {
    ctx.beginPath(); ctx.moveTo(m.left, Y(y)); ctx.lineTo(W - m.right, Y(y)); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(Number(y.toFixed(3)).toString(), m.left - 5, Y(y) + 4);
  }
  const xStep = Math.max(1, niceStep(xMax - xMin, 8));
  for (let x = Math.ceil(xMin / xStep) * xStep; x <= xMax + 1e-9; x += xStep) {
    ctx.textAlign = "center"; ctx.fillText(String(x), X(x), H - m.bottom + 14);
  }
  ctx.fillText(opts.xLabel, (m.left + W - m.right) / 2, H - 4);
  ctx.save(); ctx.translate(11, (m.top + H - m.bottom) / 2); ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center"; ctx.fillText(opts.yLabel, 0, 0); ctx.restore();
  ctx.strokeStyle = "#98a2b3";
  ctx.strokeRect(m.left, m.top, W - m.left - m.right, H - m.top - m.bottom);
  let legendX = m.left;
  for (const s of series) {
    if (!s.points.length) continue;
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = s.width || 1;
    if (s.width) {
      ctx.beginPath();
      s.points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
      ctx.stroke();
    }
    if (s.dots) for (const [x, y] of s.points) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    ctx.fillRect(legendX, 8, 10, 3);
    ctx.fillStyle = "#344054"; ctx.textAlign = "left"; ctx.fillText(s.name, legendX + 13, 13);
    legendX += 20 + ctx.measureText(s.name).width + 10;
  }
}

function drawConfusion(canvas, matrix) {
  const ctx = canvas.getContext("2d");
  const n = matrix.length, pad = 26, cell = (canvas.width - pad - 4) / n;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "center";
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, j) => {
      const share = count / total;
      const v = Math.round(255 * (1 - share));
      ctx.fillStyle = i === j ? `rgb(${v},${Math.round(255 - share * 120)},${v})` : `rgb(255,${v},${v})`;
      ctx.fillRect(pad + j * cell, pad + i * cell, cell - 1, cell - 1);
      if (count) {
        ctx.fillStyle = share > 0.55 ? "#fff" : "#344054";
        ctx.fillText(String(count), pad + j * cell + cell / 2, pad + i * cell + cell / 2 + 3);
      }
    });
    ctx.fillStyle = "#667085";
    ctx.fillText(String(i), pad / 2, pad + i * cell + cell / 2 + 3);
    ctx.fillText(String(i), pad + i * cell + cell / 2, pad / 2 + 3);
  });
}

// --------------------------------------------------------------------------- start
async function main() {
  setupPad();
  renderBars(null);
  renderTraining();
  $("model-select").addEventListener("change", (e) => selectModel(e.target.value));
  try {
    await loadModels();
  } catch (err) {
    showError(`The page cannot list the models: ${err.message}`);
  }
  try {
    await setupTraining();
  } catch (err) {
    $("train-log").textContent = `training is unavailable: ${err.message}`;
  }
  document.body.dataset.ready = "1";
}

main();
