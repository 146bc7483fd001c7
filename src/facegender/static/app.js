// The facegender page: send one photo to POST /v1/predict and draw what comes back.
// Plain browser JS, no build step and no CDN. Boxes are placed in percent of the image's own
// size (result.width/height are of the EXIF-rotated image, as the browser displays it).
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  file: $("file"), drop: $("drop"), status: $("status"), stage: $("stage"), photo: $("photo"),
  boxes: $("boxes"), faces: $("faces"), details: $("details"), raw: $("raw"), model: $("model"),
  video: $("video"), camStart: $("camera-start"), camSnap: $("camera-snap"), camStop: $("camera-stop"),
};
let photoUrl = null;
let photoBlob = null;
let stream = null;

function setState(state, text) {
  document.body.dataset.state = state;
  els.status.textContent = text;
}

function pct(v, total) { return `${(100 * v) / total}%`; }

function render(result) {
  els.boxes.replaceChildren();
  els.faces.replaceChildren();
  const n = result.faces.length;
  result.faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    const p = face.female_probability;
    const conf = face.gender === "female" ? p : 1 - p;
    const box = document.createElement("div");
    box.className = `box ${face.gender}${y < 0.08 * result.height ? " below" : ""}`;
    Object.assign(box.style, {
      left: pct(x, result.width), top: pct(y, result.height),
      width: pct(w, result.width), height: pct(h, result.height),
    });
    const tag = document.createElement("span");
    tag.textContent = `${i + 1}: ${face.gender} ${(100 * conf).toFixed(0)}%`;
    box.append(tag);
    els.boxes.append(box);

    const li = document.createElement("li");
    li.className = "face";
    li.dataset.gender = face.gender;
    li.dataset.femaleProbability = String(p);
    li.innerHTML =
      `<strong>${face.gender}</strong> · P(female) ${p.toFixed(3)} · P(male) ${(1 - p).toFixed(3)}` +
      ` <span class="muted">(detector score ${face.score.toFixed(2)})</span>` +
      `<div class="bar"><div class="f" style="width:${100 * p}%"></div>` +
      `<div class="m" style="width:${100 * (1 - p)}%"></div></div>`;
    const why = document.createElement("button");
    why.type = "button";
    why.className = "quiet explain";
    why.textContent = "Why? Show heat map";
    why.addEventListener("click", () => explainFace(i, li, why));
    li.append(why);
    els.faces.append(li);
  });
  const what = n === 0 ? "No face found." : `${n} face${n > 1 ? "s" : ""} found.`;
  setState("done", `${what} (${result.width}×${result.height} px)`);
}

// On demand: POST /v1/explain for one face; the answer's overlay_png is the photo with that
// face's occlusion heat map (red: supported the answer, blue: argued against it).
async function explainFace(i, li, button) {
  if (!photoBlob) return;
  button.disabled = true;
  button.textContent = "Computing heat map…";
  const form = new FormData();
  form.append("file", photoBlob, "photo");
  try {
    const resp = await fetch(`/v1/explain?face=${i}&values=false`, { method: "POST", body: form });
    const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    const face = resp.ok && body.faces && body.faces[0];
    if (!face) throw new Error(body.error || `HTTP ${resp.status}`);
    let img = li.querySelector("img.heat");
    if (!img) {
      img = document.createElement("img");
      img.className = "heat";
      img.alt = `heat map of face ${i + 1}: red supported the answer, blue argued against it`;
      li.append(img);
    }
    img.src = `data:image/png;base64,${face.overlay_png}`;
    button.textContent = "Heat map: red supported the answer, blue argued against it";
  } catch (err) {
    button.disabled = false;
    button.textContent = `Heat map failed (${err.message}); try again`;
  }
}

async function upload(blob, name) {
  photoBlob = blob;
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(blob);
  els.photo.src = photoUrl;
  els.stage.hidden = false;
  els.boxes.replaceChildren();
  els.faces.replaceChildren();
  setState("busy", `Looking for faces in ${name}`);
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const resp = await fetch("/v1/predict", { method: "POST", body: form });
    const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    els.raw.textContent = JSON.stringify(body, null, 2);
    els.details.hidden = false;
    if (!resp.ok) {
      els.stage.hidden = true;
      setState("error", `Error ${resp.status}: ${body.error || "request failed"}`);
      return;
    }
    render(body);
  } catch (err) {
    setState("error", `Network error: ${err.message}`);
  }
}

function pick(files) {
  const f = files && files[0];
  if (f) upload(f, f.name || "photo");
}

els.file.addEventListener("change", () => { pick(els.file.files); els.file.value = ""; });
["dragenter", "dragover"].forEach((ev) =>
  els.drop.addEventListener(ev, (e) => { e.preventDefault(); els.drop.classList.add("over"); }));
["dragleave", "drop"].forEach((ev) =>
  els.drop.addEventListener(ev, (e) => { e.preventDefault(); els.drop.classList.remove("over"); }));
els.drop.addEventListener("drop", (e) => pick(e.dataTransfer.files));
els.drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); els.file.click(); }
});
els.photo.addEventListener("error", () => {
  // The server may read formats the browser cannot show (e.g. TIFF): keep the list, drop the view.
  if (els.photo.src) els.stage.hidden = true;
});

// Webcam snapshot, where the browser offers it (https or localhost only).
function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  els.video.hidden = els.camSnap.hidden = els.camStop.hidden = true;
  els.camStart.hidden = false;
}
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
  els.camStart.hidden = false;
  els.camStart.addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      els.video.srcObject = stream;
      els.video.hidden = els.camSnap.hidden = els.camStop.hidden = false;
      els.camStart.hidden = true;
    } catch (err) {
      setState("error", `Webcam unavailable: ${err.message}`);
    }
  });
  els.camSnap.addEventListener("click", () => {
    const c = document.createElement("canvas");
    c.width = els.video.videoWidth;
    c.height = els.video.videoHeight;
    c.getContext("2d").drawImage(els.video, 0, 0);
    c.toBlob((blob) => blob && upload(blob, "webcam.jpg"), "image/jpeg", 0.92);
  });
  els.camStop.addEventListener("click", stopCamera);
}

fetch("/v1/model").then((r) => r.json()).then((m) => {
  const val = (m.metrics || {}).validation || {};
  const acc = typeof val.accuracy === "number" ? ` · validation accuracy ${(100 * val.accuracy).toFixed(1)}%` : "";
  els.model.textContent = `model ${m.name} v${m.version}${acc}`;
}).catch(() => { els.model.textContent = ""; });
