// The review player of one examrec session: every camera on the session clock, the route, speed,
// pedals, stages, faults and events on one timeline. Read-only: it only reads the session's files.
//
// Time everywhere is the session timeline in seconds (a segment's PTS 0 is the session start), so
// a camera's video.currentTime is the session time of the frame it shows.
// Served by `examrec view` (http), each camera is a Media Source fed with the exact byte ranges of
// the segments' fragments (session-data.js lists them): seeks land on the right frame in any
// segment and playback runs across segment files without a jump. Opened from file:// (a copy kit),
// where browsers refuse fetch, each camera plays the segment files directly.
"use strict";

(function () {
  const D = window.REVIEW_DATA;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const AHEAD_S = 12;          // what each camera keeps appended ahead of the playhead
  const KEEP_BEHIND_S = 20;
  const HARD_SYNC_S = 0.3;     // beyond this a camera is re-seeked; below it its rate is nudged
  const USE_MSE = location.protocol !== "file:" && "MediaSource" in window;

  // ---------------------------------------------------------------- text (Ukrainian, English)
  const TEXT = {
    uk: {
      events: "Події", speed: "Швидкість", sound_on: "Звук", sound_off: "Без звуку", still: "Кадр PNG", clip_from: "[ Від", clip_to: "До ]",
      clip: "Експорт фрагмента", frame_back: "Кадр назад (,)", frame_forward: "Кадр уперед (.)",
      play_pause: "Пуск / пауза (пробіл)", lane_stages: "етапи", lane_speed: "км/год", lane_brake: "гальмо",
      lane_clutch: "зчеплення", lane_faults: "збої", lang: "English", duration: "тривалість",
      ok: "НЕ ЗМІНЕНО: запис повний і недоторканий", interrupted: "ПЕРЕРВАНО: запис неповний, ознак змін немає",
      tampered: "ЗМІНЕНО: перевірка виявила проблеми", signed: "підписано ключем", unsigned: "без підпису",
      pause_gap: "Пауза між етапами", fault_gap: "Немає зображення", no_picture: "Немає зображення",
      left_out: "не входить у цей фрагмент", clip_left_out: "Фрагмент: інші сегменти не включено",
      still_tainted: "Браузер не дає зберегти кадр зі сторінки, відкритої як файл: відкрийте запис через `examrec view`.",
      clip_needs_server: "Експорт фрагмента працює, коли запис відкрито через `examrec view`.",
      clip_range: "Позначте початок і кінець фрагмента кнопками [ Від і До ].",
      session: "Сесія", stage: "етап",
      types: { start: "початок", stop: "кінець", pause: "пауза", resume: "продовження", fault: "збій",
               recovered: "відновлено", pedal: "педаль", photo: "фото", checks: "перевірки", notice: "повідомлення",
               forced: "примусовий старт", stage: "етап", drops: "втрачені кадри", gps: "GPS", clock_check: "годинник",
               disk_full: "диск заповнено", error: "помилка", restarted: "перезапуск", repaired: "відновлено після збою" },
      pedals: { brake: "гальмо", clutch: "зчеплення" },
    },
    en: {
      events: "Events", speed: "Speed", sound_on: "Sound", sound_off: "Mute", still: "PNG still", clip_from: "[ From", clip_to: "To ]",
      clip: "Export clip", frame_back: "Frame back (,)", frame_forward: "Frame forward (.)",
      play_pause: "Play / pause (space)", lane_stages: "stages", lane_speed: "km/h", lane_brake: "brake",
      lane_clutch: "clutch", lane_faults: "faults", lang: "Українська", duration: "duration",
      ok: "UNTOUCHED: the recording is complete and unchanged", interrupted: "INTERRUPTED: incomplete, no sign of changes",
      tampered: "TAMPERED: verification found problems", signed: "signed by key", unsigned: "not signed",
      pause_gap: "Pause between stages", fault_gap: "No picture", no_picture: "No picture",
      left_out: "not part of this clip", clip_left_out: "Clip: the other segments are left out",
      still_tainted: "The browser does not let a page opened as a file save a still: open the recording with `examrec view`.",
      clip_needs_server: "Clip export works when the recording is opened with `examrec view`.",
      clip_range: "Mark the clip's start and end with [ From and To ].",
      session: "Session", stage: "stage",
      types: { start: "start", stop: "stop", pause: "pause", resume: "resume", fault: "fault", recovered: "recovered",
               pedal: "pedal", photo: "photo", checks: "checks", notice: "notice", forced: "forced start", stage: "stage",
               drops: "dropped frames", gps: "GPS", clock_check: "clock", disk_full: "disk full", error: "error",
               restarted: "restarted", repaired: "repaired" },
      pedals: { brake: "brake", clutch: "clutch" },
    },
  };
  let lang = (localStorage.getItem("examrec-review-lang") || navigator.language || "uk").startsWith("en") ? "en" : "uk";
  const t = (key) => TEXT[lang][key] ?? key;

  // ---------------------------------------------------------------- time
  const offsetMin = (() => {
    const m = /^([+-])(\d\d):?(\d\d)$/.exec(D.utc_offset || "+00:00");
    return m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : 0;
  })();
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  function localParts(s) {
    const d = new Date(D.wall_anchor_ms + s * 1000 + offsetMin * 60000);
    return { date: `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`,
             time: `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`,
             ms: pad(d.getUTCMilliseconds(), 3) };
  }
  function durationText(s) {
    const total = Math.max(0, Math.floor(s));
    return `${pad(Math.floor(total / 3600))}:${pad(Math.floor(total % 3600 / 60))}:${pad(total % 60)}`;
  }

  // ---------------------------------------------------------------- where each camera has a picture
  const pauses = D.pauses || [];
  const frameOf = (stream) => 1 / (stream.fps || 25);
  // The time to ask a video for so that it shows the frame captured last at or before t: t
  // itself, unless t falls in a hole after a frame the recorder gave a short, guessed length (a
  // fragment ended early for a late frame); there the browser would show the next frame, which
  // was captured after t, so ask for the middle of the frame before instead.
  function insideFrame(seg, t) {
    const hole = ((seg && seg.stills) || []).find(([, end, next]) => end <= t && t < next);
    return hole ? (hole[0] + hole[1]) / 2 : t;
  }
  function segmentAt(stream, s) {
    for (const seg of stream.segments) {
      const end = (seg.last_pts_s ?? seg.first_pts_s) + frameOf(stream);
      if (s >= seg.first_pts_s - 1e-6 && s < end) return seg;
    }
    return null;
  }
  // Why a camera shows nothing at s: a pause between stages, the stream's own gap, or a clip's edge.
  function gapReason(stream, s, seg) {
    if (seg && seg.absent) return t("left_out");
    const p = pauses.find((g) => s >= g.start_pts_s && s < g.end_pts_s);
    if (p) return `${t("pause_gap")}: ${p.reason || ""}`;
    const g = stream.gaps.find((g) => s >= g.start_pts_s - 1 && (g.end_pts_s == null || s <= g.end_pts_s + 1));
    if (g) return `${t("fault_gap")}: ${g.reason}`;
    return t("no_picture");
  }

  // ---------------------------------------------------------------- feeding a <video>
  class MseFeed {
    // One Media Source per camera; fragments are appended in file order from a keyframe.
    constructor(stream, video) {
      this.stream = stream;
      this.video = video;
      this.appended = new Map();   // "file#offset" -> fragment time
      this.lastInit = null;
      this.chain = Promise.resolve();
      const first = stream.segments.find((s) => s.codecs);
      this.mime = `video/mp4; codecs="${first ? first.codecs : "avc1.42e01e"}"`;
      this.ms = new MediaSource();
      video.src = URL.createObjectURL(this.ms);
      this.open = new Promise((resolve) => this.ms.addEventListener("sourceopen", () => {
        this.sb = this.ms.addSourceBuffer(this.mime);
        this.sb.mode = "segments";
        this.ms.duration = D.duration_s + 1;
        resolve();
      }, { once: true }));
    }
    async bytes(file, ranges) {
      const parts = await Promise.all(ranges.filter(([a, b]) => b > a).map(async ([a, b]) => {
        const r = await fetch(D.base + file, { headers: { Range: `bytes=${a}-${b - 1}` } });
        if (!r.ok) throw new Error(`${file}: HTTP ${r.status}`);
        const buf = new Uint8Array(await r.arrayBuffer());
        // A server that ignores Range sends the whole file: take the part asked for.
        return r.status === 206 ? buf : buf.subarray(a, b);
      }));
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) { out.set(p, at); at += p.length; }
      return out;
    }
    append(data) {
      return new Promise((resolve, reject) => {
        const done = () => { this.sb.removeEventListener("error", fail); resolve(); };
        const fail = () => { this.sb.removeEventListener("updateend", done); reject(new Error("append failed")); };
        this.sb.addEventListener("updateend", done, { once: true });
        this.sb.addEventListener("error", fail, { once: true });
        this.sb.appendBuffer(data);
      });
    }
    remove(a, b) {
      return new Promise((resolve) => {
        this.sb.addEventListener("updateend", () => resolve(), { once: true });
        this.sb.remove(a, b);
      });
    }
    // The fragments to have appended for playing from s: from the keyframe at or before s on,
    // through the following segments while they follow on without a hole, up to the look-ahead.
    plan(s) {
      const out = [];
      const segs = this.stream.segments;
      let i = segs.findIndex((g) => g === segmentAt(this.stream, s));
      if (i < 0) return { run: out, hole: true };
      const frame = frameOf(this.stream);
      for (; i < segs.length; i++) {
        const seg = segs[i];
        if (seg.absent || !seg.fragments || !seg.fragments.length) return { run: out, hole: true };
        const fr = seg.fragments;
        let k = 0;
        // A fragment's frames before its keyframe need the fragment before: start where a
        // keyframe at or before s is.
        for (let j = 0; j < fr.length; j++) if (fr[j][3] !== null && fr[j][3] <= s + 1e-6) k = j;
        for (; k < fr.length; k++) {
          if (fr[k][2] > s + AHEAD_S) return { run: out, hole: false };
          out.push([seg, fr[k]]);
        }
        const next = segs[i + 1];
        if (!next || next.first_pts_s > (seg.last_pts_s ?? 0) + 2.5 * frame) return { run: out, hole: true };
      }
      return { run: out, hole: true };
    }
    ensure(s) {
      this.chain = this.chain.then(() => this.open).then(async () => {
        const { run, hole } = this.plan(s);
        // Where the run stops (a gap, the end): what lies after its last fragment goes.
        await this.evict(s, hole ? Math.max(s, ...run.map(([, fr]) => fr[2])) : Infinity);
        // Appending a fragment again cuts the frames after it up to the next keyframe: once one
        // is appended, the rest of the run is appended too. Neighbouring fragments of one file
        // are neighbouring bytes: one request and one append per file.
        const todo = [];
        for (const item of run) {
          if (!todo.length && this.appended.has(`${item[0].file}#${item[1][0]}`)) continue;
          todo.push(item);
        }
        while (todo.length) {
          const seg = todo[0][0];
          const group = [];
          while (todo.length && todo[0][0] === seg) group.push(todo.shift()[1]);
          if (this.lastInit !== seg.file) {
            await this.append(await this.bytes(seg.file, seg.init));
            this.lastInit = seg.file;
          }
          await this.append(await this.bytes(seg.file, [[group[0][0], group[group.length - 1][1]]]));
          for (const fr of group) this.appended.set(`${seg.file}#${fr[0]}`, fr[2]);
        }
        // Where the picture stops (a gap, a pause, the end) nothing more will come: say so, else
        // the browser waits for more before it shows the last frames (it prerolls the sound
        // past them). Only the last buffered range can end the stream, hence the eviction of
        // what lies after the hole; a later append reopens the source.
        if (run.length && hole && this.ms.readyState === "open" && !this.sb.updating) this.ms.endOfStream();
      }).catch((err) => status(`${this.stream.name}: ${err.message}`));
      return this.chain;
    }
    // Keep what is near s. Where the picture stops ahead (at ``stop``: a gap, the end), also drop
    // whatever begins after it, so the range up to there can end the stream. (Only after it: a
    // range after a stalled frame's hole, before the stop, is what plays next, and dropping it at
    // every tick of the playhead made the feed fetch it again and again, falling behind.)
    async evict(s, stop) {
      const lo = s - KEEP_BEHIND_S, hi = s + AHEAD_S + 5;
      const b = this.sb.buffered;
      const ranges = [];
      for (let i = 0; i < b.length; i++) ranges.push([b.start(i), b.end(i)]);
      const removed = [];
      for (const [a, e] of ranges) {
        if (e < lo || a > hi || a > stop + 0.05) removed.push([a, e]);
        else if (a < lo) removed.push([a, lo]);
        else if (e > hi) removed.push([hi, e]);
      }
      for (const [a, e] of removed) {
        await this.remove(a, e);
        // A fragment's first frames may precede its keyframe (and the range): forget generously,
        // since appending a fragment again would cut the frames that follow it.
        for (const [key, ft] of this.appended) if (ft >= a - 1 && ft < e) this.appended.delete(key);
      }
      if (!this.sb.buffered.length) { this.appended.clear(); this.lastInit = null; }
    }
    has(s) {
      const b = this.video.buffered;
      for (let i = 0; i < b.length; i++) if (s >= b.start(i) - 1e-3 && s < b.end(i)) return true;
      return false;
    }
  }

  class FileFeed {
    // A page opened from file://: the segment files play directly, one at a time.
    constructor(stream, video) { this.stream = stream; this.video = video; this.file = null; }
    async load(seg) {
      if (this.file === seg.file) return;
      this.file = seg.file;
      const v = this.video;
      await new Promise((resolve) => {
        v.addEventListener("loadedmetadata", resolve, { once: true });
        v.addEventListener("error", resolve, { once: true });
        v.src = D.base + seg.file;
      });
    }
    async ensure(s) {
      const seg = segmentAt(this.stream, s);
      if (seg && !seg.absent) await this.load(seg);
    }
    has(s) { const seg = segmentAt(this.stream, s); return !!seg && this.file === seg.file; }
  }

  // ---------------------------------------------------------------- cameras
  class Camera {
    constructor(stream) {
      this.stream = stream;
      const box = document.createElement("div");
      box.className = "cam";
      box.innerHTML = `<video muted playsinline preload="auto"></video><span class="name"></span><div class="gap"></div>`;
      this.box = box;
      this.video = box.querySelector("video");
      this.video.dataset.stream = stream.name;
      box.querySelector(".name").textContent = stream.name;
      this.gapText = box.querySelector(".gap");
      box.addEventListener("click", () => box.classList.toggle("big"));
      const first = stream.segments.find((s) => s.codecs);
      const mse = USE_MSE && first && MediaSource.isTypeSupported(`video/mp4; codecs="${first.codecs}"`);
      this.feed = mse ? new MseFeed(stream, this.video) : new FileFeed(stream, this.video);
      this.mse = !!mse;
      this.seg = null;
      this.pending = false;
      this.settling = false;
      this.holding = null;   // the hole the camera waits out on the frame before it (see hold)
      this.released = null;  // the hole it has just left (the playhead may not have passed it yet)
      this.holdTimer = 0;
      // The frame on screen, not the decoder's clock, is what has to agree between cameras.
      this.shown = null;
      if ("requestVideoFrameCallback" in this.video) {
        const onFrame = (now, meta) => {
          this.shown = { media: meta.mediaTime, at: meta.expectedDisplayTime || now };
          this.video.requestVideoFrameCallback(onFrame);
        };
        this.video.requestVideoFrameCallback(onFrame);
      }
    }
    // Where the picture is now (session seconds), extrapolated from the last frame shown.
    // A picture that has not changed for longer than a frame is behind, whatever currentTime says.
    pictureTime(now) {
      const v = this.video;
      if (v.paused || !this.shown || this.shown.media > v.currentTime + 1) return v.currentTime;
      // A frame the camera held longer (a stall) is right until the next one is due.
      const media = this.shown.media;
      const still = this.seg && (this.seg.stills || []).find(([start, , next]) => Math.abs(start - media) < 2e-3);
      if (still && v.currentTime < still[2]) return Math.max(media, v.currentTime);
      return this.shown.media + Math.min(Math.max(0, now - this.shown.at) / 1000 * v.playbackRate, frameOf(this.stream));
    }
    // Show the picture or the gap at s; returns whether the camera has a picture there.
    place(s) {
      const seg = segmentAt(this.stream, s);
      const inPicture = !!seg && !seg.absent;
      // While it catches up with the playhead a camera shows no picture rather than a wrong one.
      this.box.classList.toggle("in-gap", !inPicture || this.pending);
      if (!inPicture) this.gapText.textContent = gapReason(this.stream, s, seg);
      else if (this.pending) this.gapText.textContent = "\u2026";
      this.seg = inPicture ? seg : null;
      return inPicture;
    }
    // A hole longer than a frame in what this camera plays (its frame before a late one was cut
    // short): the browser has nothing there, and the frame before is the picture of every
    // instant in it. The file:// player reads the closed files, which have no such holes.
    holeAt(s) {
      if (!this.mse || !this.seg) return null;
      const frame = frameOf(this.stream);
      return (this.seg.stills || []).find(([, end, next]) => next - end > frame && end <= s && s < next) || null;
    }
    // While the playhead crosses a hole: show the frame before it, paused (playing into it the
    // browser would wait for data that never comes).
    hold(hole) {
      if (this.holding === hole || this.released === hole) return;
      this.holding = hole;
      this.pending = this.settling = false;
      this.video.pause();
      this.seekVideo((hole[0] + hole[1]) / 2);
      // Go on when the next frame is due, not at the playhead's next tick (up to 0.1 s later).
      const gen = state.gen;
      clearTimeout(this.holdTimer);
      this.holdTimer = setTimeout(() => {
        if (this.holding !== hole || gen !== state.gen || !state.playing) return;
        this.holding = null;
        this.released = hole;
        this.resync(gen, 0.02);  // (what follows is appended already: the seek is quick)
      }, Math.max(0, (hole[2] - state.t) / state.rate * 1000));
    }
    async seek(s) {
      this.holding = this.released = null;
      if (!this.place(s)) { this.video.pause(); return; }
      await this.feed.ensure(s);
      // Land inside the frame that starts at s, never on the previous one through rounding.
      await this.seekVideo(insideFrame(this.seg, s + 0.0005));
    }
    async seekVideo(target) {
      const v = this.video;
      for (let tries = 0; tries < 40; tries++) {
        // A file's duration grows while the browser reads it (file:// pages): seek as far as it
        // allows and again once it knows more.
        const reach = this.mse ? target : Math.min(target, v.duration || target);
        await new Promise((resolve) => {
          v.addEventListener("seeked", resolve, { once: true });
          v.currentTime = reach;
        });
        if (reach >= target - 1e-3 && Math.abs(v.currentTime - target) < 0.01) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // The frame is decoded a moment after "seeked" at times; wait for it (bounded).
      for (let i = 0; i < 100 && v.readyState < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Bring a playing camera back onto the playhead (after a gap, a segment change, a stall).
    // It stays hidden ("pending") until its picture is within a frame of the playhead again.
    // ``lead``: how far ahead of the playhead to seek, for the time the seek takes.
    async resync(gen, lead = 0.1) {
      this.pending = true;
      this.settling = false;
      this.box.classList.add("in-gap");
      try {
        await this.feed.ensure(state.t);
        if (gen !== state.gen || !state.playing) return;
        // Aim a little ahead: the playhead moves on while the camera seeks.
        await this.seekVideo(insideFrame(this.seg, state.t + lead * state.rate));
        if (gen !== state.gen || !state.playing) return;
        this.video.playbackRate = state.rate;
        await this.video.play().catch(() => {});
        this.settling = true;
        this.settleSince = performance.now();
      } finally {
        if (!this.settling) this.pending = false;
      }
    }
  }

  const cams = D.streams.map((s) => new Camera(s));
  cams.forEach((c) => $("grid").appendChild(c.box));

  // ---------------------------------------------------------------- the playhead
  const state = { t: 0, playing: false, rate: 1, wall: 0, seeking: 0, gen: 0 };
  const fps = Math.max(...D.streams.map((s) => s.fps || 25), 1);

  function clampTime(s) { return Math.min(Math.max(0, s), D.duration_s); }

  async function seek(s) {
    s = clampTime(Number(s));
    const wasPlaying = state.playing;
    pauseAll();
    state.t = s;
    state.gen++;
    state.seeking++;
    try {
      render();
      await Promise.all(cams.map((c) => c.seek(s)));
    } finally {
      state.seeking--;
    }
    render();
    if (wasPlaying) play();
    return s;
  }

  function pauseAll() {
    state.playing = false;
    cams.forEach((c) => c.video.pause());
    $("play").textContent = "\u25B6";
  }

  function play() {
    if (state.t >= D.duration_s - 1e-3) state.t = 0;
    state.playing = true;
    state.wall = performance.now();
    $("play").textContent = "\u275A\u275A";
    // Cameras already on the playhead start together; follow() brings the others in. Each
    // starts in its own time, so each is shown once it is within a frame of the playhead.
    for (const c of cams) {
      if (c.place(state.t) && !c.pending && c.feed.has(state.t)) {
        c.pending = c.settling = true;
        c.settleSince = performance.now();
        c.video.playbackRate = state.rate;
        c.video.play().catch(() => {});
      }
    }
    follow(true);
    return Promise.resolve(state.t);
  }

  // The master is the first camera with a picture; the others follow it (rate nudged, or
  // re-seeked when far off), and the playhead runs on the wall clock where no camera has one.
  function master() {
    return cams.find((c) => c.seg && !c.pending && !c.video.paused && c.video.readyState >= 2 &&
                            !c.box.classList.contains("in-gap"));
  }

  function skipPause(s) {
    const p = pauses.find((g) => s >= g.start_pts_s && s < g.end_pts_s);
    return p ? p.end_pts_s : s;
  }

  function follow(restart) {
    let m = restart ? null : master();
    const now = performance.now();
    if (m) state.t = m.pictureTime(now);
    else if (state.seeking === 0) state.t += (now - state.wall) / 1000 * state.rate;
    state.wall = now;
    // Playing through a pause between stages would show nothing for its whole length.
    state.t = skipPause(state.t);
    if (state.t >= D.duration_s) { state.t = D.duration_s; pauseAll(); render(); return; }
    for (const c of cams) {
      const had = c.seg;
      if (!c.place(state.t)) { c.video.pause(); c.pending = c.settling = false; c.holding = null; continue; }
      const hole = c.holeAt(state.t);
      if (hole) { c.hold(hole); continue; }
      if (c.holding) { c.holding = null; c.released = null; c.resync(state.gen, 0.02); continue; }
      const v = c.video;
      const drift = c.pictureTime(now) - state.t;
      if (c.pending) {
        if (!c.settling) continue;                      // its seek is still in flight
        if (v.paused || Math.abs(drift) > HARD_SYNC_S) { c.resync(state.gen); continue; }
        // Shown from the next tick; on a machine too busy to get that close, after a second.
        if (Math.abs(drift) < 0.02 || now - c.settleSince > 1000) {
          c.pending = c.settling = false;
          // With no camera shown yet, the first one shown sets the playhead for the others.
          if (!m) { m = c; state.t = c.pictureTime(now); v.playbackRate = state.rate; continue; }
        } else if (m) {
          // Come to the playhead (it aimed ahead for a seek that may have been quicker).
          v.playbackRate = state.rate * (1 - Math.max(-0.5, Math.min(0.5, 4 * drift)));
          continue;
        }
      }
      if (!c.feed.has(state.t) || (had !== c.seg && !c.mse) || v.paused || v.ended || Math.abs(drift) > HARD_SYNC_S) {
        c.resync(state.gen);
        continue;
      }
      if (c.mse) c.feed.ensure(state.t);
      if (c === m) { v.playbackRate = state.rate; continue; }
      // Catch up within a few tenths of a second: 40 ms behind plays 16 % faster.
      v.playbackRate = state.rate * (1 - Math.max(-0.5, Math.min(0.5, 4 * drift)));
    }
    render();
  }

  let lastFollow = 0;
  function tick(now) {
    if (state.playing && now - lastFollow > 100) { lastFollow = now; follow(false); }
    else if (state.playing) render();
    requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------- timeline
  const W = 1000;
  const x = (s) => D.duration_s > 0 ? s / D.duration_s * W : 0;
  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function drawTimeline() {
    const svg = $("tl");
    svg.textContent = "";
    for (const st of D.stages) {
      const end = st.end_pts_s ?? D.duration_s;
      el("rect", { class: "stage", x: x(st.start_pts_s), y: 0, width: Math.max(0.5, x(end) - x(st.start_pts_s)), height: 12,
                   "data-stage": st.stage }, svg);
    }
    for (const p of pauses) {
      const r = el("rect", { class: "pause", x: x(p.start_pts_s), y: 0, width: Math.max(0.5, x(p.end_pts_s) - x(p.start_pts_s)),
                             height: 12, "data-reason": p.reason }, svg);
      el("title", {}, r).textContent = p.reason;
    }
    const maxSpeed = Math.max(30, ...D.speed.map((p) => p[1]));
    const ySpeed = (v) => 74 - v / maxSpeed * 58;
    el("polyline", { id: "speed", class: "speed", "data-max-kmh": maxSpeed,
                     points: D.speed.map(([s, v]) => `${x(s).toFixed(3)},${ySpeed(v).toFixed(3)}`).join(" ") }, svg);
    for (const p of D.pedals) {
      const y = p.pedal === "brake" ? 78 : 91;
      el("rect", { class: `pedal ${p.pedal}`, x: x(p.start_pts_s), y, height: 10,
                   width: Math.max(0.5, x(p.end_pts_s) - x(p.start_pts_s)),
                   "data-pedal": p.pedal, "data-start": p.start_pts_s, "data-end": p.end_pts_s }, svg);
    }
    for (const s of D.streams) for (const g of s.gaps) {
      const end = g.end_pts_s ?? D.duration_s;
      const r = el("rect", { class: "gap", x: x(g.start_pts_s), y: 104, width: Math.max(0.5, x(end) - x(g.start_pts_s)), height: 14,
                             "data-stream": s.name }, svg);
      el("title", {}, r).textContent = `${s.name}: ${g.reason}`;
    }
    for (const e of D.events) {
      if (e.type !== "fault" || e.pts_s == null) continue;
      el("rect", { class: "fault", x: x(e.pts_s) - 1, y: 102, width: 2, height: 18 }, svg);
    }
    if (D.clip) el("rect", { class: "clip", x: x(D.clip[0]), y: 0, width: x(D.clip[1]) - x(D.clip[0]), height: 120 }, svg);
  }
  $("tl-wrap").addEventListener("click", (ev) => {
    const r = $("tl-wrap").getBoundingClientRect();
    seek((ev.clientX - r.left) / r.width * D.duration_s);
  });

  // ---------------------------------------------------------------- route
  const mercator = ([lat, lon]) => {
    const rad = lat * Math.PI / 180;
    return [(lon + 180) / 360 * 256, (1 - Math.log(Math.tan(rad) + 1 / Math.cos(rad)) / Math.PI) / 2 * 256];
  };
  let routeMarker = null;
  function drawRoute() {
    const svg = $("route");
    svg.textContent = "";
    if (!D.route.length) return;
    const pts = D.route.map((p) => mercator([p[1], p[2]]));
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const padding = Math.max(x1 - x0, y1 - y0, 1e-5) * 0.08;
    x0 -= padding; x1 += padding; y0 -= padding; y1 += padding;
    svg.setAttribute("viewBox", `${x0} ${y0} ${x1 - x0} ${y1 - y0}`);
    if (D.tile_url) {
      const z = Math.max(0, Math.min(19, Math.floor(Math.log2(512 / (x1 - x0)))));
      const n = 2 ** z, size = 256 / n;
      for (let tx = Math.floor(x0 / size); tx <= Math.floor(x1 / size); tx++)
        for (let ty = Math.floor(y0 / size); ty <= Math.floor(y1 / size); ty++)
          el("image", { href: D.tile_url.replace("{z}", z).replace("{x}", tx).replace("{y}", ty),
                        x: tx * size, y: ty * size, width: size, height: size }, svg);
    }
    el("polyline", { class: "track", points: pts.map((p) => p.join(",")).join(" ") }, svg);
    routeMarker = el("circle", { class: "marker", r: (x1 - x0) / 60, cx: pts[0][0], cy: pts[0][1] }, svg);
  }
  function routeAt(s) {
    const r = D.route;
    if (!r.length) return null;
    if (s <= r[0][0]) return [r[0][1], r[0][2]];
    for (let i = 1; i < r.length; i++) {
      if (s <= r[i][0]) {
        const f = (s - r[i - 1][0]) / Math.max(1e-6, r[i][0] - r[i - 1][0]);
        return [r[i - 1][1] + f * (r[i][1] - r[i - 1][1]), r[i - 1][2] + f * (r[i][2] - r[i - 1][2])];
      }
    }
    return [r[r.length - 1][1], r[r.length - 1][2]];
  }

  // ---------------------------------------------------------------- events list and verification
  function eventDetail(e) {
    if (e.type === "pedal") return `${TEXT[lang].pedals[e.pedal] || e.pedal} ${e.peak_percent ?? ""}% ${e.duration_ms ?? ""} ms`;
    if (e.type === "pause" || e.type === "resume") return [e.reason, e.plate].filter(Boolean).join(" · ");
    if (e.type === "stage") return `${t("stage")} ${e.stage ?? ""}`;
    return e.message || e.detail || e.device || e.text || e.reason || "";
  }
  function drawEvents() {
    const list = $("events");
    list.textContent = "";
    for (const e of D.events) {
      const at = e.type === "pedal" ? e.start_pts_s : e.pts_s;
      if (at == null) continue;
      const li = document.createElement("li");
      li.className = e.type;
      li.dataset.pts = at;
      li.dataset.type = e.type;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = `${localParts(at).time} +${durationText(at)}`;
      li.appendChild(when);
      li.appendChild(document.createTextNode(`${TEXT[lang].types[e.type] || e.type}${eventDetail(e) ? ": " + eventDetail(e) : ""}`));
      li.addEventListener("click", () => seek(at));
      list.appendChild(li);
    }
  }
  function drawVerify() {
    const v = D.verify || {};
    const box = $("verify");
    const kind = v.ok ? "ok" : v.untouched ? "interrupted" : "tampered";
    box.className = `verify ${kind}`;
    box.dataset.result = kind;
    box.textContent = `${t(kind)} (${v.signed_by ? t("signed") + " " + v.signed_by : t("unsigned")})`;
    if (v.clip_left_out && v.clip_left_out.length) box.textContent += ` · ${t("clip_left_out")} (${v.clip_left_out.length})`;
    if (v.problems && v.problems.length) {
      const ul = document.createElement("ul");
      for (const p of v.problems) {
        const li = document.createElement("li");
        li.textContent = `${p.file} ${p.kind}: ${p.detail}`;
        ul.appendChild(li);
      }
      box.appendChild(ul);
    }
  }
  function drawTexts() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.dataset.i18n); });
    document.querySelectorAll("[data-i18n-title]").forEach((e) => { e.title = t(e.dataset.i18nTitle); });
    $("lang").textContent = t("lang");
    const d = D.details || {};
    $("title").textContent = `${t("session")} ${D.session_id}` + [d.candidate, d.plate, d.centre].filter(Boolean).map((s) => ` · ${s}`).join("");
    drawVerify();
    drawEvents();
  }
  $("lang").addEventListener("click", () => {
    lang = lang === "uk" ? "en" : "uk";
    localStorage.setItem("examrec-review-lang", lang);
    drawTexts();
    render();
  });

  // ---------------------------------------------------------------- drawing the playhead
  function render() {
    const s = state.t;
    const p = localParts(s);
    $("clock-local").textContent = `${p.date} ${p.time}`;
    $("clock-duration").textContent = `${t("duration")} ${durationText(s)}`;
    $("clock").dataset.t = s.toFixed(3);
    $("seek").value = s;
    $("playhead").style.left = `${D.duration_s > 0 ? s / D.duration_s * 100 : 0}%`;
    const at = routeAt(s);
    if (at && routeMarker) {
      const [mx, my] = mercator(at);
      routeMarker.setAttribute("cx", mx);
      routeMarker.setAttribute("cy", my);
    }
    if (!state.playing) for (const c of cams) c.place(s);
  }

  function status(text) { $("status").textContent = text; }

  // ---------------------------------------------------------------- stills and clips
  function fileStamp(s) { const p = localParts(s); return `${p.date}_${p.time.replaceAll(":", "-")}.${p.ms}`; }
  async function stills() {
    const names = [];
    try {
      for (const c of cams) {
        if (c.box.classList.contains("in-gap") || c.video.readyState < 2) continue;
        const canvas = document.createElement("canvas");
        canvas.width = c.video.videoWidth;
        canvas.height = c.video.videoHeight;
        canvas.getContext("2d").drawImage(c.video, 0, 0);
        const blob = await new Promise((resolve, reject) => {
          try { canvas.toBlob(resolve, "image/png"); } catch (err) { reject(err); }
        });
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = `${D.session_id}_${c.stream.name}_${fileStamp(c.video.currentTime)}.png`;
        document.body.appendChild(a);
        a.click();
        a.remove();
        names.push(a.download);
      }
    } catch (err) {
      status(t("still_tainted"));
      return [];
    }
    status(names.join(", "));
    return names;
  }
  const clipRange = { from: null, to: null };
  function exportClip() {
    if (!D.served) { status(t("clip_needs_server")); return null; }
    const a = clipRange.from, b = clipRange.to;
    if (a == null || b == null || b <= a) { status(t("clip_range")); return null; }
    const url = `clip.zip?start=${a.toFixed(3)}&end=${b.toFixed(3)}`;
    const link = document.createElement("a");
    link.href = url;
    link.download = "";
    document.body.appendChild(link);
    link.click();
    link.remove();
    return url;
  }
  $("still").addEventListener("click", stills);
  $("clip-from").addEventListener("click", () => { clipRange.from = state.t; status(`[ ${durationText(state.t)}`); });
  $("clip-to").addEventListener("click", () => { clipRange.to = state.t; status(`${durationText(clipRange.from ?? 0)} - ${durationText(state.t)} ]`); });
  $("clip").addEventListener("click", exportClip);

  // ---------------------------------------------------------------- transport and keys
  const step = (frames) => seek(state.t + frames / fps);
  const toggle = () => (state.playing ? (pauseAll(), Promise.resolve(state.t)) : play());
  const setRate = (r) => {
    state.rate = Math.min(4, Math.max(0.25, Number(r)));
    $("rate").value = String(state.rate);
    cams.forEach((c) => { c.video.playbackRate = state.rate; });
    return state.rate;
  };
  $("play").addEventListener("click", toggle);
  // Cameras start muted (browsers play muted media without a click); this click lets the sound in.
  const setSound = (on) => {
    cams.forEach((c) => { c.video.muted = !(on && c.stream.audio); });
    $("sound").dataset.i18n = on ? "sound_off" : "sound_on";
    $("sound").textContent = t($("sound").dataset.i18n);
    return on;
  };
  $("sound").addEventListener("click", () => setSound($("sound").dataset.i18n === "sound_on"));
  if (!D.streams.some((s) => s.audio)) $("sound").hidden = true;
  $("frame-back").addEventListener("click", () => step(-1));
  $("frame-forward").addEventListener("click", () => step(1));
  $("rate").addEventListener("change", (e) => setRate(e.target.value));
  $("seek").max = D.duration_s;
  $("seek").addEventListener("input", (e) => seek(e.target.value));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT") return;
    const big = e.shiftKey ? 1 : 5;
    const keys = {
      " ": toggle, "ArrowLeft": () => seek(state.t - big), "ArrowRight": () => seek(state.t + big),
      ",": () => step(-1), ".": () => step(1),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });

  // ---------------------------------------------------------------- start
  window.review = {
    seek, play, pause: () => { pauseAll(); return Promise.resolve(state.t); }, time: () => state.t,
    setRate, setSound, stills, exportClip, clipRange, data: D,
  };
  drawTexts();
  drawTimeline();
  drawRoute();
  requestAnimationFrame(tick);
  window.review.ready = seek(D.clip ? D.clip[0] : 0);
})();
