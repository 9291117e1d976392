// t2i web page: plain JS on the native API (/t2i/v1) and the A1111 routes (/sdapi/v1).
"use strict";
const $ = (id) => document.getElementById(id);
// recipes: name (or a checkpoint's title) -> its description (fields, defaults, family);
// checkpoints: title -> its /sdapi/v1/sd-models entry, described when first picked.
// initImage / controlImage: the picked files as data URLs.
const state = { recipes: {}, checkpoints: {}, samplers: [], schedulers: [], initImage: null,
  controlImage: null, controlnets: [], pngInfo: null };
const AXES = ["", "seed", "steps", "cfg_scale", "sampler", "schedule", "size", "strength",
  "recipe", "prompt_sr", "negative_prompt", "eta", "top_k", "top_p", "temperature"];
const NUMERIC = ["steps", "width", "height", "cfg_scale", "batch_size", "seed", "top_k",
  "top_p", "temperature"];

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : text;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function init() {
  const [recipes, samplers, schedulers, vaes, options, controlnets, modules] = await Promise.all([
    api("/t2i/v1/recipes"), api("/sdapi/v1/samplers"), api("/sdapi/v1/schedulers"),
    api("/sdapi/v1/sd-vae"), api("/sdapi/v1/options"), api("/controlnet/model_list"),
    api("/controlnet/module_list")]);
  // the VAE folder's VAEs (--vae-dir), for Stable Diffusion checkpoints; hidden when none
  for (const v of vaes) $("vae").add(new Option(v.model_name, v.model_name));
  $("vae-box").hidden = !vaes.length;
  if (vaes.some((v) => v.model_name === options.sd_vae)) $("vae").value = options.sd_vae;
  // the ControlNet folder's models (--controlnet-dir), for models that take them
  state.controlnets = controlnets.model_list;
  for (const c of state.controlnets) $("controlnet-model").add(new Option(c, c));
  for (const m of modules.module_list) $("controlnet-module").add(new Option(m, m));
  state.samplers = samplers;
  state.schedulers = schedulers;
  const group = (label) => {
    const g = document.createElement("optgroup");
    g.label = label;
    $("recipe").append(g);
    return g;
  };
  const recipeGroup = group("Recipes");
  for (const r of recipes.recipes) {
    state.recipes[r.name] = r;
    const opt = new Option(r.name + (r.error ? " (needs options)" : ""), r.name);
    opt.title = r.description || "";
    recipeGroup.append(opt);
  }
  const checkpoints = recipes.checkpoints || [];
  const folderGroup = checkpoints.length ? group("Models folder") : null;
  for (const c of checkpoints) {
    state.checkpoints[c.title] = c;
    const opt = new Option(c.title, c.title);
    opt.title = `${c.format}: ${c.filename} (recipe ${c.recipe})`;
    folderGroup.append(opt);
  }
  $("recipe").value = recipes.current;
  for (const s of schedulers) $("schedule").add(new Option(s.label, s.name));
  for (let i = 0; i < 3; i++) addAxisRow("XYZ"[i]);
  applyRecipe();
  $("recipe").addEventListener("change", applyRecipe);
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", () => api("/sdapi/v1/interrupt", { method: "POST" }));
  $("skip").addEventListener("click", () => api("/sdapi/v1/skip", { method: "POST" }));
  imageInput("init_image", "init-preview", "clear-init", "initImage");
  imageInput("controlnet-image", "controlnet-preview", "clear-controlnet", "controlImage");
  setupPngInfo();
}

function addAxisRow(name) {
  const row = document.createElement("div");
  row.className = "axis";
  const select = document.createElement("select");
  select.id = `axis-${name.toLowerCase()}-field`;
  for (const a of AXES) select.add(new Option(a ? a : `${name}: nothing`, a));
  const input = document.createElement("input");
  input.id = `axis-${name.toLowerCase()}-values`;
  input.placeholder = `${name} values`;
  row.append(select, input);
  $("axes").append(row);
}

// The description of the picked model: a recipe's came with the page, a checkpoint's is asked
// for when it is first picked (its recipe built with it; listing loads no checkpoint).
async function describe(name) {
  if (!state.recipes[name] && state.checkpoints[name]) {
    try {
      state.recipes[name] = await api(`/t2i/v1/model-info?name=${encodeURIComponent(name)}`);
    } catch (e) {
      state.recipes[name] = { name, fields: [], family: "", error: e.message };
    }
  }
  return state.recipes[name];
}

async function applyRecipe() {
  const name = $("recipe").value;
  $("recipe").dataset.applied = "";
  $("generate").disabled = true;
  const r = await describe(name);
  if (name !== $("recipe").value) return;  // another model was picked meanwhile
  $("generate").disabled = false;
  if (!r) return;
  const fields = new Set(r.fields || []);
  $("family").textContent = r.family_label || r.family || "";
  // Fields the recipe does not bind do not apply to its family: hide them.
  for (const el of document.querySelectorAll("[data-field]")) {
    el.hidden = !fields.has(el.dataset.field);
  }
  $("cfg-label").textContent = r.family === "generator" ? "Truncation ψ" : "CFG scale";
  $("img2img-box").hidden = !r.img2img;
  $("controlnet-box").hidden = !(state.controlnets.length && r.controlnet);
  const sampler = $("sampler");
  sampler.innerHTML = "";
  const contract = r.family;
  for (const s of state.samplers) {
    const c = s.options && s.options.model_contract;
    if (!c || c === contract) sampler.add(new Option(s.name, s.name));
  }
  const d = r.defaults || {};
  for (const f of ["steps", "width", "height", "cfg_scale", "top_k", "top_p", "temperature"]) {
    if ($(f)) $(f).value = d[f] !== undefined && d[f] !== null ? d[f] : "";
  }
  if (!$("width").value) $("width").value = 64;
  if (!$("height").value) $("height").value = 64;
  if (d.sampler) selectSampler(d.sampler);
  $("schedule").value = d.schedule || "automatic";
  if (r.error) showError(`${r.name}: ${r.error}`); else showError("");
  $("recipe").dataset.applied = name;
}

function selectSampler(name) {
  const wanted = String(name).toLowerCase();
  for (const s of state.samplers) {
    const names = [s.name, ...(s.aliases || [])].map((n) => String(n).toLowerCase());
    if (names.includes(wanted)) { $("sampler").value = s.name; return; }
  }
}

function requestFields() {
  const r = state.recipes[$("recipe").value] || { fields: [] };
  const fields = new Set(r.fields || []);
  const out = { batch_count: Number($("batch_count").value) || 1, seed: Number($("seed").value) };
  if (fields.has("negative_prompt")) out.negative_prompt = $("negative").value;
  for (const f of NUMERIC) {
    if (f === "seed" || !fields.has(f) || !$(f) || $(f).value === "") continue;
    out[f] = Number($(f).value);
  }
  if (fields.has("sampler") && $("sampler").value) out.sampler = $("sampler").value;
  if (fields.has("schedule") && $("schedule").value !== "automatic") out.schedule = $("schedule").value;
  if (state.initImage && r.img2img) {
    out.init_image = state.initImage;
    out.strength = Number($("strength").value);
  }
  return out;
}

// The ControlNet extension's unit (one) when the box is shown and enabled; in img2img a
// unit without an image steers with the init image.
function alwaysonScripts() {
  if ($("controlnet-box").hidden || !$("controlnet-enabled").checked) return null;
  const unit = {
    model: $("controlnet-model").value, module: $("controlnet-module").value,
    weight: Number($("controlnet-weight").value),
    guidance_start: Number($("controlnet-start").value),
    guidance_end: Number($("controlnet-end").value),
    control_mode: $("controlnet-control-mode").value,
    resize_mode: $("controlnet-resize-mode").value,
  };
  if (state.controlImage) unit.image = state.controlImage;
  return { controlnet: { args: [unit] } };
}

function axes() {
  const out = [];
  for (const name of ["x", "y", "z"]) {
    const field = $(`axis-${name}-field`).value;
    const values = $(`axis-${name}-values`).value.trim();
    if (field && values) out.push(`${field}=${values}`);
  }
  return out;
}

async function generate() {
  showError("");
  const body = {
    recipe: $("recipe").value, prompt: $("prompt").value, request: requestFields(), xyz: axes(),
    vae: $("vae").value, alwayson_scripts: alwaysonScripts(),
  };
  if (!body.xyz.length && $("prompt-matrix").checked) body.mode = "matrix";
  let job;
  try {
    job = await api("/t2i/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (e) { showError(e.message); return; }
  $("generate").disabled = true;
  $("status").textContent = "queued";
  follow(job.id);
}

function follow(id) {
  const events = new EventSource(`/t2i/v1/jobs/${id}/events`);
  const preview = $("preview");
  let lastStep = -1, loading = false, finished = false;
  events.addEventListener("progress", (e) => {
    const s = JSON.parse(e.data);
    $("progress").style.width = `${Math.round(100 * s.progress)}%`;
    $("status").textContent = s.status === "running"
      ? `${s.model}: batch ${s.batch + 1}/${s.batches}, step ${s.step}/${s.steps}, ETA ${s.eta.toFixed(1)} s`
      : s.status;
    if (s.step !== lastStep && s.step > 0 && !loading) {  // one preview request at a time
      lastStep = s.step;
      loading = true;
      const img = new Image();
      img.onload = () => { loading = false; if (!finished) { preview.src = img.src; preview.hidden = false; } };
      img.onerror = () => { loading = false; };
      img.src = `/t2i/v1/jobs/${id}/preview.png?step=${s.step}&batch=${s.batch}`;
    }
  });
  const finish = (e) => {
    finished = true;
    events.close();
    $("generate").disabled = false;
    preview.hidden = true;
    const s = JSON.parse(e.data);
    $("progress").style.width = "100%";
    $("status").textContent = `${s.status}: ${s.images} image(s)`;
    if (s.error) showError(s.error.detail);
    showResult(id, s);
  };
  for (const name of ["done", "error", "cancelled"]) events.addEventListener(name, finish);
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) $("generate").disabled = false; };
}

function showResult(id, s) {
  const gallery = $("gallery");
  const items = [];
  if (s.grid) items.push({ src: `/t2i/v1/jobs/${id}/grid.png`, info: s.infotexts[0] || "", grid: true });
  for (let i = 0; i < s.images; i++) {
    items.push({ src: `/t2i/v1/jobs/${id}/images/${i}.png`, info: s.infotexts[i] || "" });
  }
  for (const item of items.reverse()) {
    const box = document.createElement("figure");
    box.className = item.grid ? "item grid" : "item";
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = item.grid ? "grid" : "generated image";
    img.dataset.job = id;
    const info = document.createElement("figcaption");
    info.className = "infotext";
    info.textContent = item.info;
    const reuse = document.createElement("button");
    reuse.type = "button";
    reuse.textContent = "Reuse settings";
    reuse.className = "reuse";
    reuse.addEventListener("click", () => reuseInfotext(item.info));
    const link = document.createElement("a");
    link.href = item.src;
    link.download = "";
    link.textContent = " download";
    box.append(img, info, reuse, link);
    gallery.prepend(box);
  }
}

async function reuseInfotext(text) {
  const parsed = await api("/t2i/v1/infotext", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  applyParameters(parsed.parameters);
}

// The model an infotext names: a checkpoint by its Model hash, else a recipe by its name.
function modelOf(p) {
  const hash = p["Model hash"];
  const ckpt = hash && Object.values(state.checkpoints).find((c) => c.hash === hash);
  if (ckpt) return ckpt.title;
  return p.Model && state.recipes[p.Model] && !state.checkpoints[p.Model] ? p.Model : null;
}

async function applyParameters(p) {
  if (!p) return;
  const model = modelOf(p);
  if (model) { $("recipe").value = model; await applyRecipe(); }
  if (p.Prompt !== undefined) $("prompt").value = p.Prompt;
  if (p["Negative prompt"] !== undefined) $("negative").value = p["Negative prompt"];
  const map = { Steps: "steps", "CFG scale": "cfg_scale", Seed: "seed", "Size-1": "width",
    "Size-2": "height", "Denoising strength": "strength" };
  for (const [key, id] of Object.entries(map)) if (p[key] !== undefined) $(id).value = p[key];
  if (p.Sampler) selectSampler(p.Sampler);
  if (p["Schedule type"]) {
    for (const s of state.schedulers) if (s.label === p["Schedule type"]) $("schedule").value = s.name;
  }
}

function readBase64(file) {
  return new Promise((ok, fail) => {
    const reader = new FileReader();
    reader.onload = () => ok(String(reader.result));
    reader.onerror = fail;
    reader.readAsDataURL(file);
  });
}

// A file input whose image goes to state[key] (a data URL), shown in its preview; the
// clear button forgets it.
function imageInput(input, preview, clear, key) {
  $(input).addEventListener("change", async () => {
    const file = $(input).files[0];
    if (!file) return;
    state[key] = await readBase64(file);
    $(preview).src = state[key];
    $(preview).hidden = false;
  });
  $(clear).addEventListener("click", () => {
    state[key] = null;
    $(input).value = "";
    $(preview).hidden = true;
  });
}

function setupPngInfo() {
  const drop = $("pnginfo-drop");
  const show = async (file) => {
    try {
      const info = await api("/sdapi/v1/png-info", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: await readBase64(file) }),
      });
      state.pngInfo = info.parameters;
      $("pnginfo-text").textContent = info.info || "(no parameters in this image)";
      $("pnginfo-text").hidden = false;
      $("pnginfo-reuse").hidden = !info.info;
    } catch (e) { showError(e.message); }
  };
  drop.addEventListener("click", () => $("pnginfo-file").click());
  $("pnginfo-file").addEventListener("change", () => $("pnginfo-file").files[0] && show($("pnginfo-file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) show(e.dataTransfer.files[0]);
  });
  $("pnginfo-reuse").addEventListener("click", () => applyParameters(state.pngInfo));
}

init().catch((e) => showError(`could not load the page's data: ${e.message}`));
