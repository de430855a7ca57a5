// The examiner's console: live state from /api/events (server-sent events), commands as JSON
// POSTs. No control here deletes or edits a recording; Stop asks first and then says where it
// was saved.
"use strict";

const $ = (sel) => document.querySelector(sel);
let lang = localStorage.getItem("examrec.lang") || document.body.dataset.lang || "uk";
let status = null;
let alarmed = new Set();
let audio = null;
let countdownTimer = null;

function t(key) { return (I18N[lang] && I18N[lang][key]) || (I18N.en[key]) || key; }

function translate() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = lang === "uk" ? "EN" : "UK";
  if (status) render(status);
}

async function post(cmd, body) {
  const r = await fetch(`/api/${cmd}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Examrec-Console": "1" },
    body: JSON.stringify(body || {}),
  });
  let answer;
  try { answer = await r.json(); } catch (e) { answer = { ok: false, error: `HTTP ${r.status}` }; }
  return answer;
}

function toast(text, ms) {
  const el = $("#toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(el._timer);
  el._timer = setTimeout(() => { el.hidden = true; }, ms || 3000);
}

function beep() {
  // The alarm: three short tones (Web Audio; no sound file, nothing from the network).
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    const now = audio.currentTime;
    for (let i = 0; i < 3; i++) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 1760;
      gain.gain.setValueAtTime(0.4, now + i * 0.3);
      gain.gain.setValueAtTime(0, now + i * 0.3 + 0.18);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.3);
      osc.stop(now + i * 0.3 + 0.2);
    }
    document.body.dataset.alarms = String(Number(document.body.dataset.alarms || 0) + 1);
  } catch (e) { /* no sound device: the red tile and the list still show the fault */ }
}

function tile(stream) {
  let el = document.getElementById(`tile-${stream}`);
  if (!el) {
    el = document.createElement("div");
    el.id = `tile-${stream}`;
    el.className = "tile";
    el.dataset.stream = stream;
    el.innerHTML = `<img alt=""><div class="info"><b class="name"></b><span class="st"></span>
      <span class="drops"></span></div><div class="msg"></div>`;
    el.querySelector(".name").textContent = stream;
    $("#tiles").appendChild(el);
  }
  return el;
}

function render(st) {
  status = st;
  const state = st.state;
  const stateEl = $("#state");
  stateEl.className = `state ${state}`;
  stateEl.textContent = (state === "recording" ? "● " : "") + t(state);
  $("#stage").textContent = st.stage ? `${t("stage")} ${st.stage}` : "";
  $("#elapsed").textContent = st.elapsed || "00:00:00";
  const d = st.details || {};
  $("#candidate").textContent = [d.candidate, d.candidate_id, d.plate].filter(Boolean).join(" · ");
  $("#demo").hidden = !st.demo;

  const faultsByStream = {};
  for (const f of st.faults || []) if (f.stream && !f.recovered) faultsByStream[f.stream] = f;
  for (const s of st.streams || []) {
    const el = tile(s.stream);
    const bad = s.state === "STALLED" || s.state === "LOST" || s.health !== "ok" || faultsByStream[s.stream];
    el.className = `tile ${s.state}` + (bad ? " fault" : "");
    el.querySelector(".st").textContent = t(s.state);
    el.querySelector(".drops").textContent = s.dropped ? `${s.dropped} ${t("dropped")}` :
      (s.fps ? `${s.fps} fps` : "");   // idle: the rate of the open camera's preview
    el.querySelector(".msg").textContent = faultsByStream[s.stream] ? faultsByStream[s.stream].message : "";
  }

  // Sound level: the audio stream's last block, -60..0 dBFS across the bar.
  const db = (st.audio_dbfs === undefined || st.audio_dbfs === null) ? null : st.audio_dbfs;
  $("#sound-bar").style.width = db === null ? "0" : `${Math.max(0, Math.min(100, (db + 60) / 60 * 100))}%`;
  $("#sound-db").textContent = db === null ? "–" : `${Math.round(db)} dB`;
  const gps = st.gps;
  $("#gps").textContent = gps ? (gps.fix ? (gps.shows || "fix") : t("no_fix")) : "–";
  const pedals = st.pedals;
  $("#brake").classList.toggle("on", !!(pedals && pedals.brake_on));
  $("#clutch").classList.toggle("on", !!(pedals && pedals.clutch_on));
  $("#disk").textContent = st.disk_hours != null ? `${st.disk_hours} ${t("hours")}` :
    (st.disk_free_gb != null ? `${st.disk_free_gb} GB` : "–");
  const late = st.uploads_overdue || [];
  $("#uploads-row").hidden = late.length === 0;
  $("#uploads").textContent = String(late.length);

  renderFaults(st.faults || []);
  const last = $("#last");
  last.hidden = !st.last || state !== "idle";
  if (st.last) last.textContent = `${t("saved")}: ${st.last.session_id} · ${st.last.duration} · ${t("verify")}: ${st.last.verify}`;

  const busy = ["recording", "paused"].includes(state);
  $("#btn-start").disabled = state !== "idle";
  $("#btn-pause").disabled = state !== "recording";
  $("#btn-resume").disabled = state !== "paused";
  $("#btn-photo").disabled = !busy;
  $("#btn-stop").disabled = !busy;
  if (state !== "paused") hideCountdown();
}

function renderFaults(faults) {
  const list = $("#faults");
  const shown = new Set();
  for (const f of faults) {
    shown.add(String(f.id));
    if (!alarmed.has(f.id)) { alarmed.add(f.id); beep(); }
    if (list.querySelector(`[data-fault="${f.id}"]`)) continue;
    const li = document.createElement("li");
    li.dataset.fault = f.id;
    const when = f.t_utc ? new Date(f.t_utc).toLocaleTimeString(lang === "uk" ? "uk-UA" : "en-GB", { hour12: false }) : "";
    li.innerHTML = `<b></b><div class="what"></div><button class="small ack" type="button"></button>`;
    li.querySelector("b").textContent = `${when} ${f.device}`;
    li.querySelector(".what").textContent = f.message;
    const btn = li.querySelector("button");
    btn.textContent = t("ack");
    btn.addEventListener("click", async () => {
      const a = await post("ack", { fault: f.id });
      if (!a.ok) toast(a.error);
    });
    list.appendChild(li);
  }
  list.querySelectorAll("li").forEach((li) => { if (!shown.has(li.dataset.fault)) li.remove(); });
}

function showThumbnails(pictures) {
  // Each status push carries the cameras' pictures that are new since the last one (about two a
  // second, between exams too: the service keeps the cameras open). One stream for status and
  // pictures: five picture requests twice a second cost the recorder more than the pictures.
  for (const [stream, jpeg] of Object.entries(pictures || {})) {
    const img = tile(stream).querySelector("img");
    const next = new Image();
    next.onload = () => { img.src = next.src; img.dataset.loaded = String(Number(img.dataset.loaded || 0) + 1); };
    next.src = `data:image/jpeg;base64,${jpeg}`;
  }
}

function showCountdown(seconds) {
  const box = $("#countdown");
  let left = Math.ceil(seconds);
  $("#countdown-n").textContent = String(left);
  box.hidden = false;
  clearInterval(countdownTimer);
  countdownTimer = setInterval(() => {
    left -= 1;
    $("#countdown-n").textContent = String(Math.max(0, left));
    if (left <= 0) hideCountdown();
  }, 1000);
}

function hideCountdown() {
  clearInterval(countdownTimer);
  $("#countdown").hidden = true;
}

async function resume() {
  const a = await post("resume", {});
  hideCountdown();
  if (!a.ok) toast(`${t("refused")}: ${a.error}`);
}

function setUp() {
  translate();
  $("#lang").addEventListener("click", () => {
    lang = lang === "uk" ? "en" : "uk";
    localStorage.setItem("examrec.lang", lang);
    translate();
  });
  document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

  $("#btn-start").addEventListener("click", () => {
    if (!audio) { try { audio = new (window.AudioContext || window.webkitAudioContext)(); } catch (e) { /* none */ } }
    const form = $("#form-start");
    const defaults = (status && status.defaults) || {};
    for (const key of ["examiner", "plate", "centre"]) if (!form[key].value) form[key].value = defaults[key] || "";
    if (defaults.exam) form.exam.value = defaults.exam;
    $("#start-error").textContent = "";
    $("#dlg-start").showModal();
  });
  $("#form-start").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const details = {};
    for (const key of ["candidate", "candidate_id", "exam", "examiner", "plate", "centre"]) details[key] = form[key].value.trim();
    $("#start-go").disabled = true;
    $("#start-error").textContent = "…";
    const a = await post("start", { details });
    $("#start-go").disabled = false;
    if (a.ok) { $("#dlg-start").close(); form.candidate.value = ""; form.candidate_id.value = ""; }
    else $("#start-error").textContent = a.error;
  });

  $("#btn-pause").addEventListener("click", () => {
    const form = $("#form-pause");
    const box = $("#reasons");
    box.innerHTML = "";
    for (const r of (status && status.pause_reasons) || []) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = r;
      b.addEventListener("click", () => {
        box.querySelectorAll("button").forEach((x) => x.classList.remove("picked"));
        b.classList.add("picked");
        form.reason.value = "";
      });
      box.appendChild(b);
    }
    form.reason.value = "";
    form.plate.value = ((status && status.details) || {}).plate || "";
    $("#pause-error").textContent = "";
    $("#dlg-pause").showModal();
  });
  $("#form-pause").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const picked = $("#reasons .picked");
    const reason = form.reason.value.trim() || (picked ? picked.textContent : "");
    if (!reason) { $("#pause-error").textContent = t("need_reason"); return; }
    const a = await post("pause", { reason, plate: form.plate.value.trim() });
    if (!a.ok) { $("#pause-error").textContent = a.error; return; }
    $("#dlg-pause").close();
    showCountdown(a.banner_s || (status && status.pause_banner_s) || 3);
  });
  $("#btn-cancel-pause").addEventListener("click", resume);
  $("#btn-resume").addEventListener("click", resume);
  $("#btn-photo").addEventListener("click", async () => {
    const a = await post("photo", { role: "candidate" });
    toast(a.ok ? `${t("photo_taken")}: ${a.file}` : `${t("refused")}: ${a.error}`);
  });
  $("#btn-stop").addEventListener("click", () => $("#dlg-stop").showModal());
  $("#stop-go").addEventListener("click", async () => {
    $("#stop-go").disabled = true;
    const a = await post("stop", {});
    $("#stop-go").disabled = false;
    $("#dlg-stop").close();
    if (!a.ok) { toast(`${t("refused")}: ${a.error}`); return; }
    const s = a.saved || {};
    const dl = $("#saved-info");
    dl.innerHTML = "";
    for (const [key, value] of [["session", s.session_id], ["duration", s.duration], ["verify", s.verify], ["folder", s.folder]]) {
      const dt = document.createElement("dt"); dt.textContent = t(key);
      const dd = document.createElement("dd"); dd.textContent = value || "–"; dd.id = `saved-${key}`;
      dl.append(dt, dd);
    }
    $("#dlg-saved").showModal();
  });

  const events = new EventSource("/api/events");
  events.onmessage = (ev) => {
    const st = JSON.parse(ev.data);
    const pictures = st.thumbnails;
    delete st.thumbnails;
    render(st);
    showThumbnails(pictures);
  };
  const tick = () => { $("#clock").textContent = new Date().toLocaleTimeString(lang === "uk" ? "uk-UA" : "en-GB", { hour12: false }); };
  tick();
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", setUp);
