// ferroflow explore: the page. Plain JavaScript on canvases; every number comes from the server's JSON API.
// The server precomputes frames per request, so scrubbing t redraws from cached frames without a request.
"use strict";

// What tests and people inspecting the page read: errors seen, redraw times, training stream figures.
const probe = (window.__explorer = {
  errors: [],
  redrawMs: [],
  flowLoads: 0,
  trajectory: null,
  couplings: null,
  modeSeeking: null,
  runDensity: null,
  classifierFree: null,
  flow: null,
  runDensityFrames: null,
  streamlineSegments: 0,
  train: { started: false, finished: null, progressEvents: 0, snapshots: 0, firstAt: 0, lastAt: 0, run: null },
});
window.addEventListener("error", (e) => probe.errors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => probe.errors.push("unhandled rejection: " + String(e.reason)));
const consoleError = console.error.bind(console);
console.error = (...args) => {
  probe.errors.push(args.map(String).join(" "));
  consoleError(...args);
};

const $ = (id) => document.getElementById(id);
const state = {
  options: null,
  frames: null, // closed-form or run frames
  mode: "closed", // "closed" or "run"
  t: 0,
  playing: false,
  start: null, // trajectory start point
  trajectory: null,
  x1: [3, 3],
  drawn: [],
  training: null, // { controller, client }
  loss: [],
  snapshot: null,
  requestId: 0,
};
const client = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now()).replace(/[^A-Za-z0-9_-]/g, "");

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (isError ? " error" : "");
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) {
    const error = new Error(json.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return json;
}

// ---- coordinates and colours ------------------------------------------------------------------------------
const WINDOW_DEFAULT = 7;
function win() {
  return (state.frames && state.frames.window) || WINDOW_DEFAULT;
}
function toPx(canvas, x, y) {
  const w = win();
  return [((x + w) / (2 * w)) * canvas.width, (1 - (y + w) / (2 * w)) * canvas.height];
}
function toWorld(canvas, px, py) {
  const w = win();
  return [(px / canvas.width) * 2 * w - w, (1 - py / canvas.height) * 2 * w - w];
}
// A viridis-like ramp for densities and a blue-white-red ramp for divergences, as 256-entry tables.
function ramp(stops) {
  const table = [];
  for (let i = 0; i < 256; i++) {
    const s = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(s), stops.length - 2);
    const f = s - k;
    table.push(stops[k].map((c, j) => Math.round(c + f * (stops[k + 1][j] - c))));
  }
  return table;
}
const DENSITY = ramp([[255, 255, 255], [180, 222, 200], [53, 183, 121], [49, 104, 142], [68, 1, 84]]);
const DIVERGING = ramp([[33, 102, 172], [146, 197, 222], [235, 235, 235], [244, 165, 130], [178, 24, 43]]);
function divColour(value, scale) {
  const u = Math.max(0, Math.min(255, Math.round(((value / scale) * 0.5 + 0.5) * 255)));
  const c = DIVERGING[u];
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// ---- frame lookup -----------------------------------------------------------------------------------------
function frameAt(t) {
  const n = state.frames.t.length;
  const s = Math.max(0, Math.min(1, t)) * (n - 1);
  const i = Math.min(Math.floor(s), n - 2);
  return [i, s - i];
}
function lerpInto(out, a, b, w) {
  for (let k = 0; k < out.length; k++) out[k] = a[k] + w * (b[k] - a[k]);
  return out;
}
const scratch = { particles: null, field: null };
function interpolated(name, i, w) {
  const a = state.frames[name][i];
  const b = state.frames[name][i + 1];
  if (!scratch[name] || scratch[name].length !== a.length) scratch[name] = new Float32Array(a.length);
  return lerpInto(scratch[name], a, b, w);
}

// ---- drawing ----------------------------------------------------------------------------------------------
const heat = document.createElement("canvas");
function drawDensity(ctx, canvas, values, cells) {
  heat.width = cells;
  heat.height = cells;
  const hctx = heat.getContext("2d");
  const image = hctx.createImageData(cells, cells);
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const lo = max - 10;
  for (let row = 0; row < cells; row++) {
    for (let col = 0; col < cells; col++) {
      const v = values[row * cells + col];
      const u = Math.max(0, Math.min(255, Math.round(((v - lo) / (max - lo)) * 255)));
      const c = DENSITY[u];
      const p = ((cells - 1 - row) * cells + col) * 4; // rows come from the bottom
      image.data[p] = c[0];
      image.data[p + 1] = c[1];
      image.data[p + 2] = c[2];
      image.data[p + 3] = 255;
    }
  }
  hctx.putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
}
function drawArrows(ctx, canvas, field, cells, colour, scaleHint) {
  const w = win();
  const spacing = (2 * w) / cells;
  let maxNorm = 1e-9;
  for (let k = 0; k < field.length; k += 2) maxNorm = Math.max(maxNorm, Math.hypot(field[k], field[k + 1]));
  const scale = (0.9 * spacing) / (scaleHint || maxNorm);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let row = 0; row < cells; row++) {
    for (let col = 0; col < cells; col++) {
      const k = (row * cells + col) * 2;
      const x = -w + (col + 0.5) * spacing;
      const y = -w + (row + 0.5) * spacing;
      const [ax, ay] = toPx(canvas, x, y);
      const [bx, by] = toPx(canvas, x + field[k] * scale, y + field[k + 1] * scale);
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
      const angle = Math.atan2(by - ay, bx - ax);
      ctx.moveTo(bx, by);
      ctx.lineTo(bx - 3 * Math.cos(angle - 0.5), by - 3 * Math.sin(angle - 0.5));
    }
  }
  ctx.stroke();
}
// Streamlines of the field on the grid (cell-centre values, rows from the bottom), bilinearly interpolated:
// from a lattice of seeds, fixed-length steps along the direction, both ways, one stroke in all.
function drawStreamlines(ctx, canvas, field, cells, colour) {
  const w = win();
  const spacing = (2 * w) / cells;
  const sample = (x, y) => {
    const gx = Math.max(0, Math.min(cells - 1.001, (x + w) / spacing - 0.5));
    const gy = Math.max(0, Math.min(cells - 1.001, (y + w) / spacing - 0.5));
    const c0 = Math.floor(gx);
    const r0 = Math.floor(gy);
    const fx = gx - c0;
    const fy = gy - r0;
    const at = (r, c, k) => field[(r * cells + c) * 2 + k];
    const lerp = (k) =>
      (1 - fy) * ((1 - fx) * at(r0, c0, k) + fx * at(r0, c0 + 1, k)) + fy * ((1 - fx) * at(r0 + 1, c0, k) + fx * at(r0 + 1, c0 + 1, k));
    return [lerp(0), lerp(1)];
  };
  const seeds = 18;
  const step = (2 * w) / seeds / 4;
  let segments = 0;
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let i = 0; i < seeds; i++) {
    for (let j = 0; j < seeds; j++) {
      for (const direction of [1, -1]) {
        let x = -w + ((i + 0.5) * 2 * w) / seeds;
        let y = -w + ((j + 0.5) * 2 * w) / seeds;
        let [px, py] = toPx(canvas, x, y);
        ctx.moveTo(px, py);
        for (let k = 0; k < 12; k++) {
          const [vx, vy] = sample(x, y);
          const norm = Math.hypot(vx, vy);
          if (norm < 1e-9) break;
          x += (direction * step * vx) / norm;
          y += (direction * step * vy) / norm;
          if (Math.abs(x) > w || Math.abs(y) > w) break;
          [px, py] = toPx(canvas, x, y);
          ctx.lineTo(px, py);
          segments += 1;
        }
      }
    }
  }
  ctx.stroke();
  probe.streamlineSegments = segments;
}
function drawParticles(ctx, canvas, positions, divergence) {
  const colourByDiv = $("color-div").checked && divergence;
  if (!colourByDiv) ctx.fillStyle = "rgba(20,20,20,0.75)";
  for (let k = 0; k < positions.length; k += 2) {
    const [px, py] = toPx(canvas, positions[k], positions[k + 1]);
    if (colourByDiv) ctx.fillStyle = divColour(divergence[k / 2], 4);
    ctx.fillRect(px - 1, py - 1, 2.2, 2.2);
  }
}
// Trajectories of the first particles up to t, each segment coloured by div v there, batched into 16 colour
// buckets so a few hundred trajectories cost 16 strokes.
function drawTrajectories(ctx, canvas, lastFrame) {
  const buckets = Array.from({ length: 16 }, () => []);
  const count = Math.min(200, state.frames.particles[0].length / 2);
  for (let f = 0; f < lastFrame; f++) {
    const a = state.frames.particles[f];
    const b = state.frames.particles[f + 1];
    const d = state.frames.divergence[f];
    for (let p = 0; p < count; p++) {
      const u = Math.max(0, Math.min(15, Math.floor(((d[p] / 4) * 0.5 + 0.5) * 16)));
      buckets[u].push(a[2 * p], a[2 * p + 1], b[2 * p], b[2 * p + 1]);
    }
  }
  ctx.lineWidth = 1.2;
  buckets.forEach((segments, u) => {
    if (!segments.length) return;
    ctx.strokeStyle = divColour(((u + 0.5) / 16 - 0.5) * 8, 4);
    ctx.beginPath();
    for (let k = 0; k < segments.length; k += 4) {
      const [ax, ay] = toPx(canvas, segments[k], segments[k + 1]);
      const [bx, by] = toPx(canvas, segments[k + 2], segments[k + 3]);
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
    }
    ctx.stroke();
  });
}
function drawStartTrajectory(ctx, canvas) {
  const tr = state.trajectory;
  if (!tr) return;
  const upto = tr.t.findIndex((s) => s > state.t);
  const last = upto < 0 ? tr.t.length : Math.max(upto, 1);
  const scale = Math.max(1e-9, ...tr.divergence.map(Math.abs));
  ctx.lineWidth = 3;
  for (let k = 0; k + 1 < last; k++) {
    ctx.strokeStyle = divColour(tr.divergence[k], scale);
    const [ax, ay] = toPx(canvas, tr.points[2 * k], tr.points[2 * k + 1]);
    const [bx, by] = toPx(canvas, tr.points[2 * k + 2], tr.points[2 * k + 3]);
    ctx.beginPath();
    ctx.moveTo(ax, ay);
    ctx.lineTo(bx, by);
    ctx.stroke();
  }
  const [sx, sy] = toPx(canvas, tr.points[0], tr.points[1]);
  ctx.fillStyle = "#000";
  ctx.beginPath();
  ctx.arc(sx, sy, 4, 0, 2 * Math.PI);
  ctx.fill();
}
// The pushed-forward grid: each line a polyline through its points at t (interpolated between frames).
function drawPushedGrid(ctx, canvas, i, w) {
  const f = state.frames;
  if (!f.pushed_grid || !f.pushed_grid.length) return;
  const points = interpolated("pushed_grid", i, w);
  const perLine = f.grid_line_points;
  ctx.strokeStyle = "rgba(120,60,0,0.55)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let line = 0; line < 2 * f.grid_lines; line++) {
    for (let k = 0; k < perLine; k++) {
      const at = 2 * (line * perLine + k);
      const [px, py] = toPx(canvas, points[at], points[at + 1]);
      k ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
    }
  }
  ctx.stroke();
}
function drawDrawn(ctx, canvas) {
  if ($("target").value !== "drawn") return;
  ctx.fillStyle = "rgba(200,0,120,0.6)";
  for (const [x, y] of state.drawn) {
    const [px, py] = toPx(canvas, x, y);
    ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
  }
}

function redrawMain() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.frames) {
    drawDrawn(ctx, canvas);
    return;
  }
  const [i, w] = frameAt(state.t);
  const nearest = w < 0.5 ? i : i + 1;
  if ($("show-density").checked && state.frames.log_density) {
    // A run's density frames are fewer than its particle frames: the one nearest in time.
    const times = state.frames.density_t;
    const k = times ? Math.round(state.t * (times.length - 1)) : nearest;
    drawDensity(ctx, canvas, state.frames.log_density[k], state.frames.density_grid);
  }
  if ($("show-trajectories").checked) drawTrajectories(ctx, canvas, nearest);
  if ($("show-field").checked) {
    const field = interpolated("field", i, w);
    if ($("streamlines").checked) drawStreamlines(ctx, canvas, field, state.frames.grid, "rgba(30,60,160,0.6)");
    else drawArrows(ctx, canvas, field, state.frames.grid, "rgba(30,60,160,0.8)");
  }
  if ($("show-grid").checked) drawPushedGrid(ctx, canvas, i, w);
  if ($("show-particles").checked) drawParticles(ctx, canvas, interpolated("particles", i, w), state.frames.divergence[nearest]);
  drawStartTrajectory(ctx, canvas);
  drawDrawn(ctx, canvas);
}

// u_t(x | x1) = alpha' x1 + (sigma' / sigma) (x - alpha x1) for the Gaussian path x_t = alpha x1 + sigma z,
// at `points` (flat x, y pairs).
function conditionalField(coefficients, points) {
  const [alpha, sigma, dAlpha, dSigma] = coefficients;
  const gain = dSigma / sigma;
  const out = new Float32Array(points.length);
  for (let k = 0; k < points.length; k += 2) {
    out[k] = dAlpha * state.x1[0] + gain * (points[k] - alpha * state.x1[0]);
    out[k + 1] = dAlpha * state.x1[1] + gain * (points[k + 1] - alpha * state.x1[1]);
  }
  return out;
}
function redrawConditional() {
  const ids = ["cond", "marg", "diff"];
  ids.forEach((id) => {
    const c = $(id);
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, c.width, c.height);
  });
  if (!state.frames || !state.frames.coefficients || !state.frames.coefficients.length) return;
  const [i, w] = frameAt(state.t);
  const nearest = w < 0.5 ? i : i + 1;
  const cells = state.frames.grid > 20 ? 20 : state.frames.grid;
  const stride = state.frames.grid / cells;
  const marginal = interpolated("field", i, w);
  const coarse = new Float32Array(cells * cells * 2);
  const points = new Float32Array(cells * cells * 2);
  const spacing = (2 * win()) / state.frames.grid;
  for (let row = 0; row < cells; row++) {
    for (let col = 0; col < cells; col++) {
      const fineRow = Math.floor(row * stride + stride / 2);
      const fineCol = Math.floor(col * stride + stride / 2);
      const source = (fineRow * state.frames.grid + fineCol) * 2;
      const k = (row * cells + col) * 2;
      coarse[k] = marginal[source];
      coarse[k + 1] = marginal[source + 1];
      points[k] = -win() + (fineCol + 0.5) * spacing;
      points[k + 1] = -win() + (fineRow + 0.5) * spacing;
    }
  }
  // The conditional field is evaluated at the same (fine-grid) points as the marginal it is compared with.
  const conditional = conditionalField(state.frames.coefficients[nearest], points);
  const difference = conditional.map((v, k) => v - coarse[k]);
  const scale = Math.max(...[conditional, coarse].map((f) => {
    let m = 1e-9;
    for (let k = 0; k < f.length; k += 2) m = Math.max(m, Math.hypot(f[k], f[k + 1]));
    return m;
  }));
  [["cond", conditional], ["marg", coarse], ["diff", difference]].forEach(([id, field]) => {
    const c = $(id);
    const ctx = c.getContext("2d");
    drawArrows(ctx, c, field, cells, id === "diff" ? "rgba(178,24,43,0.9)" : "rgba(30,60,160,0.9)", scale);
    const [px, py] = toPx(c, state.x1[0], state.x1[1]);
    ctx.fillStyle = "#d00";
    ctx.beginPath();
    ctx.arc(px, py, 3, 0, 2 * Math.PI);
    ctx.fill();
  });
}
function redrawLnRho() {
  const c = $("lnrho");
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, c.width, c.height);
  const tr = state.trajectory;
  if (!tr) {
    ctx.fillStyle = "#666";
    ctx.fillText("click the main view to start a trajectory", 10, 20);
    return;
  }
  const exact = tr.log_density_exact || [];
  const all = tr.log_density.concat(exact, [tr.log_density_backward]).filter(Number.isFinite);
  const lo = Math.min(...all);
  const hi = Math.max(...all);
  const pad = 30;
  const X = (t) => pad + t * (c.width - 2 * pad);
  const Y = (v) => c.height - pad - ((v - lo) / Math.max(hi - lo, 1e-9)) * (c.height - 2 * pad);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad, pad, c.width - 2 * pad, c.height - 2 * pad);
  [[tr.log_density, [], "#1f4e9c", 2.5], [exact, [6, 4], "#d04010", 1.5]].forEach(([values, dash, colour, width]) => {
    ctx.setLineDash(dash);
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.beginPath();
    values.forEach((v, k) => (k ? ctx.lineTo(X(tr.t[k]), Y(v)) : ctx.moveTo(X(tr.t[k]), Y(v))));
    ctx.stroke();
  });
  ctx.setLineDash([]);
  if (Number.isFinite(tr.log_density_backward)) {
    // A run's check: the engine's backward likelihood of the end point.
    ctx.fillStyle = "#d04010";
    ctx.beginPath();
    ctx.arc(X(1), Y(tr.log_density_backward), 4, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(X(state.t), pad);
  ctx.lineTo(X(state.t), c.height - pad);
  ctx.stroke();
  ctx.fillStyle = "#333";
  ctx.fillText(hi.toFixed(2), 2, pad);
  ctx.fillText(lo.toFixed(2), 2, c.height - pad);
  ctx.fillText("t", c.width - pad + 5, c.height - pad);
}

function redraw() {
  const started = performance.now();
  redrawMain();
  redrawConditional();
  redrawLnRho();
  const ms = performance.now() - started;
  probe.redrawMs.push(ms);
  if (probe.redrawMs.length > 500) probe.redrawMs.shift();
  $("redraw").textContent = `redraw ${ms.toFixed(1)} ms`;
}

// ---- requests ---------------------------------------------------------------------------------------------
function targetSpec() {
  const kind = $("target").value;
  return kind === "drawn" ? { kind, points: state.drawn } : { kind };
}
function pathSpec() {
  return { kind: $("path").value, scheduler: $("scheduler").value, sigma: Number($("sigma").value) };
}
function gridLines() {
  return $("show-grid").checked ? 15 : 0;
}
async function computeFlow() {
  const id = ++state.requestId;
  setStatus("computing the closed-form views ...");
  try {
    const frames = await api("/api/flow", {
      target: targetSpec(),
      path: pathSpec(),
      n_particles: Number($("n-particles").value),
      grid: 40,
      density_grid: 64,
      frames: 51,
      seed: 0,
      sampler: $("flow-sampler").value,
      grid_lines: gridLines(),
    });
    if (id !== state.requestId) return;
    state.frames = frames;
    state.mode = "closed";
    probe.flowLoads += 1;
    probe.flow = { sampler: $("flow-sampler").value, gridLines: frames.grid_lines, gridFrames: frames.pushed_grid.length };
    $("main-title").textContent = `marginal field v*(x, t): ${$("target").value}${frames.exact ? "" : " (kernel density estimate)"}`;
    $("marg-caption").textContent = "v*(x, t)";
    $("diff-caption").textContent = "u_t - v*";
    setStatus(`ready (server ${frames.compute_ms.toFixed(0)} ms)`);
    if (state.start) await computeTrajectory();
    redraw();
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}
async function computeTrajectory() {
  if (!state.start || state.mode !== "closed") return;
  try {
    const tr = await api("/api/trajectory", { target: targetSpec(), path: pathSpec(), start: state.start, steps: 400, seed: 0 });
    state.trajectory = tr;
    probe.trajectory = tr;
    $("lnrho-error").textContent = `max |integrated - closed form| = ${tr.max_error.toExponential(2)}`;
    redraw();
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}
async function computeCouplings() {
  const kind = $("target").value;
  if (kind === "drawn" && !state.drawn.length) return;
  try {
    const c = await api("/api/coupling", {
      target: targetSpec(),
      n_pairs: Number($("n-pairs").value),
      epsilon: Number($("coupling-epsilon").value),
      seed: Math.floor(Math.random() * 1e9),
    });
    probe.couplings = c;
    const n = c.ot.length;
    const identity = [...Array(n).keys()];
    [
      ["coupling-independent", identity, identity, c.crossings_independent, c.cost_independent, "independent"],
      ["coupling-ot", identity, c.ot, c.crossings_ot, c.cost_ot, "exact OT"],
      ["coupling-sinkhorn", c.sinkhorn_source, c.sinkhorn_target, c.crossings_sinkhorn, c.cost_sinkhorn, `Sinkhorn eps ${c.epsilon}`],
    ].forEach(([id, rows, cols, crossings, cost, name]) => {
      const canvas = $(id);
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.strokeStyle = "rgba(60,60,60,0.5)";
      ctx.beginPath();
      for (let k = 0; k < rows.length; k++) {
        const [i, j] = [rows[k], cols[k]];
        const [ax, ay] = toPx(canvas, c.x0[2 * i], c.x0[2 * i + 1]);
        const [bx, by] = toPx(canvas, c.x1[2 * j], c.x1[2 * j + 1]);
        ctx.moveTo(ax, ay);
        ctx.lineTo(bx, by);
      }
      ctx.stroke();
      for (let k = 0; k < n; k++) {
        let [px, py] = toPx(canvas, c.x0[2 * k], c.x0[2 * k + 1]);
        ctx.fillStyle = "#1f4e9c";
        ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
        [px, py] = toPx(canvas, c.x1[2 * k], c.x1[2 * k + 1]);
        ctx.fillStyle = "#d04010";
        ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
      }
      $(id.replace("coupling", "crossings")).textContent = `${name}: ${crossings} crossings, mean |x1 - x0|^2 = ${cost.toFixed(2)}`;
    });
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}

// ---- mode seeking -----------------------------------------------------------------------------------------
// A scalar map over the window (`cells` per side, rows from the bottom) on a diverging ramp symmetric around 0
// (`signed`) or on the density ramp from 0 to its maximum.
function drawScalarMap(canvas, values, cells, signed) {
  const ctx = canvas.getContext("2d");
  heat.width = cells;
  heat.height = cells;
  const hctx = heat.getContext("2d");
  const image = hctx.createImageData(cells, cells);
  let scale = 1e-12;
  for (const v of values) scale = Math.max(scale, Math.abs(v));
  for (let row = 0; row < cells; row++) {
    for (let col = 0; col < cells; col++) {
      const v = values[row * cells + col];
      const u = signed ? Math.round(((v / scale) * 0.5 + 0.5) * 255) : Math.round((v / scale) * 255);
      const c = (signed ? DIVERGING : DENSITY)[Math.max(0, Math.min(255, u))];
      const p = ((cells - 1 - row) * cells + col) * 4;
      image.data.set([c[0], c[1], c[2], 255], p);
    }
  }
  hctx.putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
  return scale;
}
function drawSamples(canvas, points, colour) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = colour;
  for (let k = 0; k < points.length; k += 2) {
    const [px, py] = toPx(canvas, points[k], points[k + 1]);
    ctx.fillRect(px - 1, py - 1, 2, 2);
  }
}
function modeSeekingRequest() {
  const body = {
    lambda: Number($("ms-lambda").value),
    estimator: $("ms-estimator").value,
    probes: Number($("ms-probes").value),
    distribution: $("ms-distribution").value,
    schedule: $("ms-schedule").value,
    t_start: Number($("ms-t-start").value),
    t_end: Number($("ms-t-end").value),
    power: Number($("ms-power").value),
    sampler: $("ms-sampler").value,
    steps: Number($("ms-steps").value),
    n_particles: Math.min(2000, Number($("n-particles").value)),
    grid: 24,
    t: Number($("ms-t").value),
    repeats: 32,
    seed: 0,
  };
  if (state.mode === "run" && state.frames && state.frames.run) body.run = state.frames.run;
  else {
    body.target = targetSpec();
    body.path = pathSpec();
  }
  return body;
}
async function computeModeSeeking() {
  if ($("target").value === "drawn" && !state.drawn.length && state.mode !== "run") return;
  $("ms-timing").textContent = "computing ...";
  try {
    const m = await api("/api/mode_seeking", modeSeekingRequest());
    probe.modeSeeking = m;
    $("ms-field").textContent = m.field;
    drawSamples($("ms-plain"), m.plain, "rgba(20,20,20,0.7)");
    drawSamples($("ms-guided"), m.guided, "rgba(178,24,43,0.75)");
    $("ms-guided-caption").textContent = m.identical ? "guided = plain (bit for bit)" : `guided samples (${m.guided_evals} guided evals)`;
    const div = $("ms-divergence");
    drawScalarMap(div, m.divergence, m.grid, true);
    drawArrows(div.getContext("2d"), div, m.gradient, m.grid, "rgba(0,0,0,0.75)");
    drawScalarMap($("ms-spread"), m.hutchinson_std, m.grid, false);
    const s = m.spread;
    $("ms-spread-text").textContent =
      `t = ${m.t.toFixed(3)}: Hutchinson K = ${s.probes} (${s.distribution}), ${s.repeats} repeats per cell: mean std ${s.mean_std.toFixed(3)} ` +
      `(closed form ${s.mean_std_theory.toFixed(3)}), mean |mean - exact| ${s.mean_abs_error.toFixed(4)}, mean |div v| ${s.mean_abs_divergence.toFixed(3)}`;
    const tm = m.timing;
    $("ms-timing").textContent =
      `per guided step on ${tm.batch} samples (${tm.evals_per_step} eval/step): exact ${tm.exact_step_ms.toFixed(2)} ms, ` +
      `Hutchinson K=${tm.probes} ${tm.hutchinson_step_ms.toFixed(2)} ms, plain ${(tm.plain_eval_ms * tm.evals_per_step).toFixed(2)} ms; ` +
      `solves: plain ${tm.plain_solve_ms.toFixed(0)} ms, guided ${tm.guided_solve_ms.toFixed(0)} ms; server ${m.compute_ms.toFixed(0)} ms`;
  } catch (e) {
    $("ms-timing").textContent = String(e.message || e);
    probe.errors.push("mode seeking: " + String(e.message || e));
  }
}

// ---- classifier-free guidance ------------------------------------------------------------------------------
async function computeClassifierFree() {
  const body = {
    class: Number($("cfg-class").value),
    weight: Number($("cfg-weight").value),
    n_samples: Math.min(2000, Number($("n-particles").value)),
    steps: Number($("cfg-steps").value),
    sampler: "midpoint",
    seed: 0,
  };
  if (state.mode === "run" && state.frames && state.frames.run) body.run = state.frames.run;
  else {
    body.target = targetSpec();
    body.path = pathSpec();
  }
  $("cfg-text").textContent = "computing ...";
  try {
    const c = await api("/api/classifier_free", body);
    probe.classifierFree = c;
    $("cfg-field").textContent = c.field;
    $("cfg-class").max = String(c.classes - 1);
    const p = c.class_probability;
    drawSamples($("cfg-unconditional"), c.unconditional, "rgba(20,20,20,0.7)");
    drawSamples($("cfg-conditional"), c.conditional, "rgba(30,60,160,0.75)");
    drawSamples($("cfg-guided"), c.guided, "rgba(178,24,43,0.75)");
    $("cfg-unconditional-caption").textContent = `v(x, t): p(c | x) ${p[0].toFixed(3)}`;
    $("cfg-conditional-caption").textContent = `v(x, t | c), w = 0: p(c | x) ${p[1].toFixed(3)}`;
    $("cfg-guided-caption").textContent = `w = ${c.weight}: p(c | x) ${p[2].toFixed(3)}`;
    $("cfg-text").textContent =
      `class ${c.class} of ${c.classes}; p(c | x) is the mean posterior of the class under the target's ` +
      `${c.classifier_exact ? "mixture" : "kernel density estimate"} (server ${c.compute_ms.toFixed(0)} ms)`;
  } catch (e) {
    // A target without classes is an answer, not a fault of the page.
    probe.classifierFree = null;
    $("cfg-text").textContent = String(e.message || e);
  }
}

// ---- trained runs: learned density and trajectories ---------------------------------------------------------
async function computeRunDensity() {
  if (state.mode !== "run" || !state.frames.run) {
    $("run-density-text").textContent = "show a run first";
    return;
  }
  $("run-density-text").textContent = "integrating the likelihood backwards ...";
  try {
    const d = await api("/api/run_density", { run: state.frames.run, grid: 40, steps: 40 });
    probe.runDensity = d;
    const canvas = $("run-density-view");
    drawDensity(canvas.getContext("2d"), canvas, d.log_density, d.grid);
    $("run-density-text").textContent = `run ${d.run}: mass over the window ${d.mass.toFixed(3)} (server ${d.compute_ms.toFixed(0)} ms)`;
  } catch (e) {
    $("run-density-text").textContent = String(e.message || e);
  }
}
async function computeRunTrajectory() {
  if (!state.start || state.mode !== "run") return;
  try {
    const tr = await api("/api/run_trajectory", { run: state.frames.run, start: state.start, steps: 100 });
    tr.log_density_exact = null;
    state.trajectory = tr;
    probe.trajectory = tr;
    const end = tr.log_density[tr.log_density.length - 1];
    $("lnrho-error").textContent = `run: ln p at t = 1 forward ${end.toFixed(4)}, engine likelihood (backward) ${tr.log_density_backward.toFixed(4)}`;
    redraw();
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}

// The learned ln rho_t over time (traced back to the source with the exact divergence), drawn under the run's
// particles as the closed form's rho_t is.
async function computeRunDensityFrames(frames) {
  try {
    const d = await api("/api/run_density_frames", { run: frames.run, grid: 40, frames: 11, steps: 40 });
    if (state.frames !== frames) return;
    Object.assign(state.frames, { log_density: d.log_density, density_grid: d.grid, density_t: d.t });
    probe.runDensityFrames = d;
    setStatus(`run ${frames.run} ready (learned rho_t: server ${d.compute_ms.toFixed(0)} ms, mass at t = 1 ${d.mass[d.mass.length - 1].toFixed(3)})`);
    redraw();
  } catch (e) {
    // A refusal (a run whose source has no density) is an answer: said, not flagged as a fault.
    setStatus(`run ${frames.run}: no learned rho_t: ${String(e.message || e)}`, !(e.status >= 400 && e.status < 500));
  }
}
async function showRun() {
  const run = $("run").value;
  if (!run) return;
  setStatus(`loading run ${run} ...`);
  try {
    const frames = await api("/api/run_view", {
      run,
      n_particles: Number($("n-particles").value),
      grid: 40,
      frames: 51,
      seed: 0,
      sampler: $("run-sampler").value,
      grid_lines: gridLines(),
    });
    state.frames = frames;
    state.mode = "run";
    state.trajectory = null;
    probe.flowLoads += 1;
    $("main-title").textContent = `learned field v_theta(x, t): run ${run} (${frames.target})`;
    $("marg-caption").textContent = frames.coefficients.length ? "v_theta(x, t)" : "v_theta (no u_t(x | x1) for this run's source and path)";
    $("diff-caption").textContent = "u_t - v_theta";
    setStatus(`run ${run} ready (server ${frames.compute_ms.toFixed(0)} ms); its learned rho_t next ...`);
    redraw();
    await computeRunDensityFrames(frames);
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}
async function refreshOptions() {
  state.options = await api("/api/options");
  const fill = (id, values, keep) => {
    const select = $(id);
    const current = select.value;
    select.innerHTML = (keep || "") + values.map((v) => `<option value="${v}">${v}</option>`).join("");
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  fill("target", state.options.targets);
  fill("path", state.options.paths);
  fill("scheduler", state.options.schedulers);
  fill("coupling", state.options.couplings);
  fill("source", state.options.sources);
  fill("ms-schedule", state.options.schedules);
  fill("ms-sampler", state.options.samplers);
  fill("flow-sampler", state.options.flow_samplers);
  fill("run-sampler", ["midpoint", ...state.options.run_samplers.filter((v) => v !== "midpoint")]);
  fill("prediction", state.options.predictions);
  fill("run", state.options.runs, '<option value="">(none)</option>');
}

// ---- training ---------------------------------------------------------------------------------------------
function drawLoss() {
  const c = $("loss");
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, c.width, c.height);
  if (state.loss.length < 2) return;
  const logs = state.loss.map(([, l]) => Math.log10(Math.max(l, 1e-8)));
  const lo = Math.min(...logs);
  const hi = Math.max(...logs);
  const total = state.loss[state.loss.length - 1][0];
  ctx.strokeStyle = "#1f4e9c";
  ctx.beginPath();
  state.loss.forEach(([step], k) => {
    const x = 5 + (step / total) * (c.width - 10);
    const y = c.height - 5 - ((logs[k] - lo) / Math.max(hi - lo, 1e-9)) * (c.height - 10);
    k ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}
function drawSnapshot() {
  const c = $("snapshot");
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, c.width, c.height);
  if (!state.snapshot) return;
  ctx.fillStyle = "rgba(20,20,20,0.7)";
  for (let k = 0; k < state.snapshot.length; k += 2) {
    const [px, py] = toPx(c, state.snapshot[k], state.snapshot[k + 1]);
    ctx.fillRect(px - 1, py - 1, 2, 2);
  }
}
function handleEvent(name, data) {
  const t = probe.train;
  if (name === "started") {
    t.run = data.run;
    $("train-note").textContent = "";
    $("train-status").textContent = `training ${data.run} (${data.total} steps)`;
  } else if (name === "progress") {
    t.progressEvents += 1;
    const now = performance.now();
    if (!t.firstAt) t.firstAt = now;
    t.lastAt = now;
    state.loss.push([data.step, data.loss]);
    const rate = t.progressEvents > 1 ? ((t.progressEvents - 1) / ((t.lastAt - t.firstAt) / 1000)).toFixed(1) : "-";
    $("train-status").textContent = `step ${data.step}/${data.total}  loss ${data.loss.toFixed(4)}  ${data.steps_per_second.toFixed(0)} steps/s  ${rate} updates/s`;
    drawLoss();
  } else if (name === "note") {
    $("train-note").textContent = data.text;
  } else if (name === "snapshot") {
    t.snapshots += 1;
    state.snapshot = data.points;
    drawSnapshot();
  } else if (name === "finished") {
    t.finished = data;
    $("train-status").textContent = data.completed
      ? `finished ${data.run} in ${data.seconds.toFixed(1)} s: runs/${data.run}`
      : `stopped ${data.run}: ${data.message || ""}`;
  }
}
async function train() {
  if (state.training) return;
  const body = {
    client,
    target: targetSpec(),
    source: { kind: $("source").value },
    path: pathSpec(),
    coupling: $("coupling").value,
    epsilon: Number($("epsilon").value),
    width: Number($("width").value),
    depth: Number($("depth").value),
    steps: Number($("steps").value),
    batch_size: Number($("batch").value),
    learning_rate: Number($("lr").value),
    seed: 0,
    prediction: $("prediction").value,
    conditional: $("conditional").checked,
  };
  const controller = new AbortController();
  state.training = { controller };
  state.loss = [];
  Object.assign(probe.train, { started: true, finished: null, progressEvents: 0, snapshots: 0, firstAt: 0, lastAt: 0, run: null });
  $("train").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch("/api/train", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const json = await response.json();
      throw new Error(json.error || response.statusText);
    }
    // Server-sent events over a POST body: blocks separated by a blank line, `event:` and `data:` lines.
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) handleEvent(name, JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("train-status").textContent = String(e.message || e);
  } finally {
    state.training = null;
    $("train").disabled = false;
    $("stop").disabled = true;
    await refreshOptions();
    if (probe.train.finished && probe.train.finished.completed) $("run").value = probe.train.finished.run;
  }
}
async function stopTraining() {
  try {
    await api("/api/train/stop", { client });
  } catch (e) {
    $("train-status").textContent = String(e.message || e);
  }
}

// ---- interaction ------------------------------------------------------------------------------------------
function setT(t) {
  state.t = Math.max(0, Math.min(1, t));
  $("t").value = String(state.t);
  $("t-label").textContent = `t = ${state.t.toFixed(3)}`;
  redraw();
}
function play() {
  state.playing = !state.playing;
  $("play").textContent = state.playing ? "pause" : "play";
  let last = performance.now();
  const tick = (now) => {
    if (!state.playing) return;
    const next = state.t + (now - last) / 4000;
    last = now;
    setT(next > 1 ? 0 : next);
    requestAnimationFrame(tick);
  };
  if (state.playing) requestAnimationFrame(tick);
}
function canvasPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return toWorld(canvas, ((event.clientX - rect.left) / rect.width) * canvas.width, ((event.clientY - rect.top) / rect.height) * canvas.height);
}
let painting = false;
function paint(event) {
  const [x, y] = canvasPoint($("view"), event);
  for (let k = 0; k < 3 && state.drawn.length < 2000; k++) {
    state.drawn.push([x + (Math.random() - 0.5) * 0.3, y + (Math.random() - 0.5) * 0.3]);
  }
  redrawMain();
}
$("view").addEventListener("mousedown", (event) => {
  if ($("brush").checked) {
    if ($("target").value !== "drawn") $("target").value = "drawn";
    painting = true;
    paint(event);
    return;
  }
  state.start = canvasPoint($("view"), event);
  dragging = true;
  startTrajectory();
});
// Dragging the start point: one trajectory request in flight at a time, the latest point next.
let dragging = false;
let trajectoryBusy = false;
let trajectoryAgain = false;
async function startTrajectory() {
  if (trajectoryBusy) {
    trajectoryAgain = true;
    return;
  }
  trajectoryBusy = true;
  do {
    trajectoryAgain = false;
    await (state.mode === "closed" ? computeTrajectory() : computeRunTrajectory());
  } while (trajectoryAgain);
  trajectoryBusy = false;
}
$("view").addEventListener("mousemove", (event) => {
  if (painting) paint(event);
  else if (dragging) {
    state.start = canvasPoint($("view"), event);
    startTrajectory();
  }
});
window.addEventListener("mouseup", () => {
  dragging = false;
  if (painting) {
    painting = false;
    computeFlow();
    computeCouplings();
  }
});
["cond", "marg", "diff"].forEach((id) =>
  $(id).addEventListener("mousedown", (event) => {
    state.x1 = canvasPoint($(id), event);
    redrawConditional();
  }),
);
$("clear-brush").addEventListener("click", () => {
  state.drawn = [];
  redrawMain();
});
$("t").addEventListener("input", () => setT(Number($("t").value)));
$("play").addEventListener("click", play);
$("compute").addEventListener("click", computeFlow);
["target", "path", "scheduler", "sigma", "flow-sampler"].forEach((id) =>
  $(id).addEventListener("change", () => {
    if ($("target").value === "drawn" && !state.drawn.length) {
      setStatus("draw a target: tick brush and paint on the main view");
      return;
    }
    computeFlow();
    if (id === "target") computeCouplings();
  }),
);
["show-density", "show-field", "streamlines", "show-particles", "color-div", "show-trajectories"].forEach((id) => $(id).addEventListener("change", redraw));
// The grid is computed by the server with the frames: ask again with or without it.
$("show-grid").addEventListener("change", () => (state.mode === "run" ? showRun() : computeFlow()));
$("cfg-run").addEventListener("click", computeClassifierFree);
$("new-batch").addEventListener("click", computeCouplings);
$("coupling-epsilon").addEventListener("change", computeCouplings);
$("ms-run").addEventListener("click", computeModeSeeking);
$("run-density").addEventListener("click", computeRunDensity);
$("show-run").addEventListener("click", showRun);
$("train").addEventListener("click", train);
$("stop").addEventListener("click", stopTraining);
$("export").addEventListener("click", () => {
  const link = document.createElement("a");
  link.download = `ferroflow-explore-t${state.t.toFixed(3)}.png`;
  link.href = $("view").toDataURL("image/png");
  link.click();
});

(async () => {
  try {
    await refreshOptions();
    $("target").value = "8gaussians";
    await computeFlow();
    await computeCouplings();
    await computeModeSeeking();
    await computeClassifierFree();
    if (state.options.initial_run) {
      $("run").value = state.options.initial_run;
      await showRun();
    }
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
})();
