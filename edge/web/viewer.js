// edge-pose viewer: live frames with 2D skeletons, a 3D view, stage rates, connection state.
// No build step and no library: the 3D view is a small perspective projection drawn on a 2D
// canvas (lines and dots are all a skeleton needs; a 600 kB WebGL library would be most of
// what a Raspberry Pi serves). Data comes from the API under /v1; a bearer token, when the
// device needs one, is given in the page address as #token=... (never sent in a URL).
// A photo chosen or dropped on the page is posed by the device (POST /v1/pose, its still-image
// mode) and shown in place of the live view until "Back to live"; the stream runs underneath.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "edge-pose-token";
  const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hashToken) {
    sessionStorage.setItem(TOKEN_KEY, hashToken);
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};

  // State the page shows (and tests read).
  const state = {
    conn: "connecting", annotations: 0, framesDrawn: 0, lastAnnotation: null,
    lastDrawn: null, lastFrameAt: 0, stats: null, info: null, view3dDraws: 0,
    mode: "live", photo: null, photoError: "", photosShown: 0, photoErrors: 0,
  };
  window.edgeViewer = state;
  let bones = [];
  const recent = new Map(); // frame_id -> annotation, the newest 120

  // ------------------------------------------------------------------ connection state
  function setConn(conn, message) {
    state.conn = conn;
    const badge = $("conn");
    badge.textContent = conn;
    badge.className = "badge " + conn;
    const banner = $("banner");
    banner.textContent = message || "";
    banner.classList.toggle("hidden", !message);
    $("stack2d").classList.toggle("stale", conn !== "live");  // an old frame looks old
  }

  async function api(path, options) {
    const r = await fetch(path, Object.assign({ headers, cache: "no-store" }, options || {}));
    if (r.status === 401) {
      setConn("unauthorized", "This device needs a token: open the page as /#token=<token>.");
      throw new Error("unauthorized");
    }
    return r;
  }

  // ------------------------------------------------------------------ the stream (SSE)
  // Read with fetch (not EventSource) so that the token can go in a header.
  async function streamLoop() {
    let delay = 1000;
    for (;;) {
      try {
        const r = await api("/v1/stream");
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        setConn("live", "");
        delay = 1000;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            handleMessage(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
        throw new Error("the server closed the stream");
      } catch (e) {
        if (state.conn === "unauthorized") return;
        const s = Math.round(delay / 1000);
        setConn("disconnected", `Stream stopped (${e.message}). Reconnecting in ${s} s...`);
        await new Promise((ok) => setTimeout(ok, delay));
        delay = Math.min(delay * 2, 10000);
        setConn("connecting", `Stream stopped. Reconnecting...`);
      }
    }
  }

  function handleMessage(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "annotation") onAnnotation(payload);
    else if (event === "stats") onStats(payload);
  }

  function onAnnotation(a) {
    state.annotations += 1;
    state.lastAnnotation = a;
    state.lastFrameAt = performance.now();
    recent.set(a.frame_id, a);
    if (recent.size > 120) recent.delete(recent.keys().next().value);
    $("people").textContent = a.persons.length;
    $("frame-id").textContent = a.frame_id;
    if (state.conn !== "live") setConn("live", "");
    if (state.mode === "live") draw3d();
  }

  // A stream that is open but carries nothing is stopped too.
  setInterval(() => {
    if (state.conn === "live" && state.lastFrameAt &&
        performance.now() - state.lastFrameAt > 5000) {
      const s = ((performance.now() - state.lastFrameAt) / 1000).toFixed(0);
      setConn("stalled", `No frames for ${s} s: the camera or the pipeline has stopped.`);
    } else if (state.conn === "stalled" && performance.now() - state.lastFrameAt < 5000) {
      setConn("live", "");
    }
  }, 1000);

  // ------------------------------------------------------------------ stats
  let statsAt = 0;
  function onStats(s) {
    state.stats = s;
    statsAt = performance.now();
    $("fps").textContent = s.fps == null ? "-" : s.fps.toFixed(1);
    const budgets = (state.info && state.info.budgets_fps) || {};
    const body = $("stages").querySelector("tbody");
    body.textContent = "";
    for (const [name, st] of Object.entries(s.stages || {})) {
      const tr = document.createElement("tr");
      const budget = budgets[name];
      const fps = st.fps;
      const cells = [name, fps == null ? "-" : fps.toFixed(1), budget == null ? "-" : budget,
        null, st.p50_ms == null ? "-" : st.p50_ms.toFixed(1),
        st.p90_ms == null ? "-" : st.p90_ms.toFixed(1)];
      for (const c of cells) {
        const td = document.createElement("td");
        if (c === null) {
          td.className = "bar";
          if (budget && fps != null) {
            const bar = document.createElement("div");
            bar.className = fps >= budget ? "ok" : "low";
            bar.style.width = Math.min(100, (100 * fps) / budget / 2) + "%";
            bar.title = `${(fps / budget).toFixed(2)} x budget`;
            td.appendChild(bar);
          }
        } else td.textContent = c;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  async function statsLoop() {
    for (;;) {
      try {
        // The stream carries stats when the runtime pushes them; poll only when it does not.
        if (performance.now() - statsAt > 4000) {
          const r = await api("/v1/stats");
          if (r.ok) onStats(await r.json());
        }
      } catch (e) {
        if (state.conn === "unauthorized") return;
      }
      await new Promise((ok) => setTimeout(ok, 2000));
    }
  }

  // ------------------------------------------------------------------ 2D: frames + skeletons
  function colour(id) {
    return `hsl(${(id * 137.508) % 360}, 100%, 50%)`;
  }

  async function frameLoop() {
    const video = $("video");
    const vctx = video.getContext("2d");
    for (;;) {
      const t0 = performance.now();
      if (state.mode !== "live") { // a photo is shown: no frames to fetch
        await new Promise((ok) => setTimeout(ok, 200));
        continue;
      }
      try {
        // Frames at the size they are shown: encoding is the server's largest cost.
        const shown = video.getBoundingClientRect().width * (window.devicePixelRatio || 1);
        const width = Math.max(320, Math.min(1280, Math.ceil(shown / 64) * 64));
        const r = await api(`/v1/frame.jpg?overlay=0&width=${width}`);
        if (r.ok) {
          const id = Number(r.headers.get("X-Frame-Id"));
          const bitmap = await createImageBitmap(await r.blob());
          if (state.mode === "live") { // (a photo may have come while this frame did)
            if (video.width !== bitmap.width || video.height !== bitmap.height) {
              video.width = $("overlay").width = bitmap.width;
              video.height = $("overlay").height = bitmap.height;
            }
            vctx.drawImage(bitmap, 0, 0);
            drawOverlay(annotationFor(id));
            state.framesDrawn += 1;
          }
          bitmap.close();
        }
      } catch (e) {
        if (state.conn === "unauthorized") return;
        await new Promise((ok) => setTimeout(ok, 1000));
      }
      const wait = 1000 / 12 - (performance.now() - t0); // at most 12 frames/s
      await new Promise((ok) => setTimeout(ok, Math.max(wait, 5)));
    }
  }

  function annotationFor(frameId) {
    if (recent.has(frameId)) return recent.get(frameId);
    let best = null;
    for (const [id, a] of recent) if (id <= frameId && (!best || id > best.frame_id)) best = a;
    return best || state.lastAnnotation;
  }

  function drawOverlay(a) {
    drawSkeletons($("overlay"), a, false);
    if (a) state.lastDrawn = { frame_id: a.frame_id, persons: a.persons.length };
  }

  // Each person's bones, joints and number (with the pose score for a photo) on canvas c.
  function drawSkeletons(c, a, withScore) {
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    if (!a) return;
    const w = c.width, h = c.height;
    const thick = Math.max(2, Math.round(Math.min(w, h) / 240));
    for (const p of a.persons) {
      const col = colour(p.id);
      const pose = p.pose_2d;
      ctx.strokeStyle = ctx.fillStyle = col;
      ctx.lineWidth = thick;
      ctx.lineCap = "round";
      for (const [ja, jb] of bones) {
        const pa = pose[ja], pb = pose[jb];
        if (!pa || !pb) continue;
        ctx.beginPath();
        ctx.moveTo(pa.x * w, pa.y * h);
        ctx.lineTo(pb.x * w, pb.y * h);
        ctx.stroke();
      }
      for (const q of Object.values(pose)) {
        if (!q) continue;
        ctx.beginPath();
        ctx.arc(q.x * w, q.y * h, thick + 1, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.font = `bold ${8 + 6 * thick}px system-ui, sans-serif`;
      const label = "#" + p.id + (withScore ? " " + p.score.toFixed(2) : "");
      ctx.fillText(label, p.bbox.x1 * w, Math.max(p.bbox.y1 * h - 6, 14));
    }
  }

  // ------------------------------------------------------------------ 3D view
  // Camera orbiting a target: yaw around the vertical, pitch above the floor, distance (m).
  const cam = { yaw: -0.6, pitch: 0.35, dist: 6.0, target: [0, 0.9, 0] };

  // World frame of the view: X right, Y up, Z towards the camera of the device (metres).
  function project(p, c) {
    const w = c.width, h = c.height;
    const x = p[0] - cam.target[0], y = p[1] - cam.target[1], z = p[2] - cam.target[2];
    const cy = Math.cos(cam.yaw), sy = Math.sin(cam.yaw);
    const cp = Math.cos(cam.pitch), sp = Math.sin(cam.pitch);
    const x1 = cy * x + sy * z, z1 = -sy * x + cy * z; // yaw
    const y2 = cp * y - sp * z1, z2 = sp * y + cp * z1; // pitch
    const depth = cam.dist - z2;
    if (depth < 0.1) return null;
    const f = h / (2 * Math.tan((50 * Math.PI) / 360));
    return [w / 2 + (f * x1) / depth, h / 2 - (f * y2) / depth, depth];
  }

  function line(ctx, c, a, b) {
    const pa = project(a, c), pb = project(b, c);
    if (!pa || !pb) return;
    ctx.beginPath();
    ctx.moveTo(pa[0], pa[1]);
    ctx.lineTo(pb[0], pb[1]);
    ctx.stroke();
  }

  // A person's joints in the view's frame: the payload's x right, y down, z away from the
  // camera become X, -Y, -Z; the person stands on the floor, placed sideways by image position.
  function personPoints(p) {
    const pts = {};
    let lowest = Infinity;
    for (const [name, q] of Object.entries(p.pose_3d || {})) {
      if (!q) continue;
      pts[name] = [q.x, -q.y, -q.z];
      lowest = Math.min(lowest, -q.y);
    }
    if (!Number.isFinite(lowest)) return null;
    const cx = ((p.bbox.x1 + p.bbox.x2) / 2 - 0.5) * 4.0;
    for (const k of Object.keys(pts)) {
      pts[k] = [pts[k][0] + cx, pts[k][1] - lowest, pts[k][2]];
    }
    return pts;
  }

  function draw3d() {
    const c = $("view3d");
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#0b0e12";
    ctx.fillRect(0, 0, c.width, c.height);
    // Floor grid, 1 m squares, with metre labels along X.
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#2c3540";
    for (let i = -4; i <= 4; i++) {
      line(ctx, c, [i, 0, -4], [i, 0, 4]);
      line(ctx, c, [-4, 0, i], [4, 0, i]);
    }
    ctx.fillStyle = "#7d8793";
    ctx.font = "12px system-ui, sans-serif";
    for (let i = -4; i <= 4; i++) {
      const p = project([i, 0, 0.25], c);
      if (p && i !== 0) ctx.fillText(`${i} m`, p[0] - 10, p[1] + 12);
    }
    const axes = [[[1, 0, 0], "#e74c3c", "x"], [[0, 1, 0], "#2ecc71", "y"],
      [[0, 0, 1], "#3498db", "z"]];
    ctx.lineWidth = 2;
    for (const [d, col, name] of axes) {
      ctx.strokeStyle = ctx.fillStyle = col;
      line(ctx, c, [0, 0, 0], d);
      const p = project(d, c);
      if (p) ctx.fillText(name, p[0] + 3, p[1] - 3);
    }
    const a = state.mode === "photo" ? state.photo.annotation : state.lastAnnotation;
    if (a) {
      for (const person of a.persons) {
        const pts = personPoints(person);
        if (!pts) continue;
        const col = colour(person.id);
        ctx.strokeStyle = ctx.fillStyle = col;
        ctx.lineWidth = 3;
        for (const [ja, jb] of bones) if (pts[ja] && pts[jb]) line(ctx, c, pts[ja], pts[jb]);
        let top = null;
        for (const q of Object.values(pts)) {
          const pq = project(q, c);
          if (!pq) continue;
          ctx.beginPath();
          ctx.arc(pq[0], pq[1], Math.max(2, 12 / pq[2]), 0, 2 * Math.PI);
          ctx.fill();
          if (!top || pq[1] < top[1]) top = pq;
        }
        if (top) {
          ctx.font = "bold 14px system-ui, sans-serif";
          ctx.fillText("#" + person.id, top[0] + 6, top[1] - 8);
        }
      }
    }
    state.view3dDraws += 1;
  }

  function setupOrbit() {
    const c = $("view3d");
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      drag = [e.clientX, e.clientY];
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      cam.yaw += (e.clientX - drag[0]) * 0.01;
      cam.pitch = Math.max(0.02, Math.min(1.5, cam.pitch + (e.clientY - drag[1]) * 0.01));
      drag = [e.clientX, e.clientY];
      draw3d();
    });
    c.addEventListener("pointerup", () => { drag = null; });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      cam.dist = Math.max(1.5, Math.min(30, cam.dist * Math.exp(e.deltaY * 0.001)));
      draw3d();
    }, { passive: false });
  }

  // ------------------------------------------------------------------ a photo (POST /v1/pose)
  // The page draws its own decoding of the file. The device (OpenCV) turns a JPEG upright by
  // its EXIF orientation and so does the browser here (imageOrientation "from-image"), so the
  // keypoints, normalised to the upright image, fall on the drawn one; the two readings'
  // shapes are compared, and a disagreement is said on the page rather than drawn silently.
  const PHOTO_MAX_SIDE = 1600; // px drawn: a 12 MP phone photo needs no more on a screen
  let photoSeq = 0; // the newest request; older answers are dropped
  let photoAbort = null;

  function photoError(message) {
    state.photoError = message;
    $("photo-error-text").textContent = message;
    $("photo-error").classList.toggle("hidden", !message);
  }

  function mib(bytes) {
    return (bytes / 1048576).toFixed(1) + " MiB";
  }

  // The content type from the file's first bytes: a JPEG without a .jpg name is still one.
  async function sniffType(file) {
    const b = new Uint8Array(await file.slice(0, 8).arrayBuffer());
    if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
    if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
    return file.type || "application/octet-stream";
  }

  // A photo in another format the browser reads (WebP, AVIF, GIF, BMP; HEIC in Safari) is
  // sent as the JPEG of the browser's own decoding, already upright: the device reads JPEG
  // and PNG only, and OpenCV's WebP and friends would need header checks of their own.
  async function asJpeg(bitmap) {
    const c = document.createElement("canvas");
    c.width = bitmap.width;
    c.height = bitmap.height;
    c.getContext("2d").drawImage(bitmap, 0, 0);
    return await new Promise((ok, fail) => c.toBlob(
      (blob) => (blob ? ok(blob) : fail(new Error("the browser cannot encode it"))),
      "image/jpeg", 0.95));
  }

  // What a refusal of the device means for the person who chose the photo.
  async function refusal(name, r) {
    let detail = "";
    try {
      detail = (await r.json()).error || "";
    } catch (e) { /* not JSON: the status says enough */ }
    const why = detail ? ` (${detail})` : "";
    switch (r.status) {
      case 400: return `${name} is not an image the device can read${why}.`;
      case 401: return "This device needs a token: open the page as /#token=<token>.";
      case 413: return `${name} is too large for the device${why}.`;
      case 415: return `${name} is not a JPEG or PNG image, nor one this browser can read.`;
      case 429:
        return `Too many photos: try again in ${r.headers.get("Retry-After") || 1} s${why}.`;
      case 503: return `The device is busy${why}: try again in a moment.`;
      default: return `The device could not pose ${name}: HTTP ${r.status}${why}.`;
    }
  }

  async function posePhoto(file) {
    const seq = ++photoSeq;
    if (photoAbort) photoAbort.abort();
    const abort = (photoAbort = new AbortController());
    const name = file.name || "the photo";
    photoError("");
    const t0 = performance.now();
    let message = "";
    let a = null;
    let bitmap = null;
    const limit = state.info && state.info.limits.max_body_bytes;
    if (limit && file.size > limit) { // refused here: the device would close mid-upload
      message = `${name} is too large for the device (${mib(file.size)}, over ` +
        `${mib(limit)}: http.max_body_bytes).`;
    } else {
      $("photo-status").textContent = `Finding people in ${name}...`;
      // Decoded while the device works; the device's answer, if a refusal, says more.
      const decoded = createImageBitmap(file, { imageOrientation: "from-image" })
        .catch((e) => e);
      let body = file;
      let type = await sniffType(file);
      if (type !== "image/jpeg" && type !== "image/png") { // converted if the browser reads it
        const read = await decoded;
        if (read instanceof ImageBitmap) {
          try {
            body = await asJpeg(read);
            type = "image/jpeg";
          } catch (e) { /* sent as it is: the device's refusal says why */ }
        }
      }
      try {
        if (limit && body.size > limit) {
          message = `${name} is too large for the device (${mib(body.size)} as JPEG, over ` +
            `${mib(limit)}: http.max_body_bytes).`;
        } else {
          const r = await fetch("/v1/pose", {
            method: "POST", body, cache: "no-store", signal: abort.signal,
            headers: Object.assign({ "Content-Type": type }, headers),
          });
          if (r.ok) a = await r.json();
          else message = await refusal(name, r);
        }
      } catch (e) {
        if (!abort.signal.aborted) {
          message = `${name} was not posed: the device does not answer ` +
            `(${e.message}). Is edge-pose running?`;
        }
      }
      bitmap = await decoded;
      if (!(bitmap instanceof ImageBitmap)) {
        if (!message) message = `This browser cannot draw ${name} (${bitmap.message}).`;
        bitmap = null;
      }
    }
    if (seq !== photoSeq) { // a newer photo, or back to live, came meanwhile
      if (bitmap) bitmap.close();
      return;
    }
    photoAbort = null;
    $("photo-status").textContent = "";
    if (message) {
      if (bitmap) bitmap.close();
      state.photoErrors += 1;
      photoError(message);
      return;
    }
    showPhoto(name, a, bitmap, t0);
  }

  function showPhoto(name, a, bitmap, t0) {
    const iw = a.image.width, ih = a.image.height;
    const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(iw, ih));
    const video = $("video"), overlay = $("overlay");
    video.width = overlay.width = Math.round(iw * scale);
    video.height = overlay.height = Math.round(ih * scale);
    const turned = Math.abs(bitmap.width / bitmap.height - iw / ih) > 0.02;
    video.getContext("2d").drawImage(bitmap, 0, 0, video.width, video.height);
    bitmap.close();
    state.mode = "photo";
    state.photo = { name, annotation: a, persons: a.persons.length, width: iw, height: ih,
      turned, ms: 0 };
    drawSkeletons(overlay, a, true);
    draw3d();
    const n = a.persons.length;
    $("photo-name").textContent = name;
    $("photo-count").textContent = n;
    $("photo-people").textContent = n === 1 ? "person" : "people";
    state.photo.ms = Math.round(performance.now() - t0);
    $("photo-detail").textContent = `, ${iw}x${ih} px, answered in ` +
      `${(state.photo.ms / 1000).toFixed(2)} s` + (turned ? ". The browser turned this photo " +
      "differently from the device (EXIF orientation): the skeletons follow the device." : "");
    $("title2d").textContent = "Photo, 2D skeletons and pose scores";
    $("title3d").textContent = " of the photo";
    $("photo-bar").classList.remove("hidden");
    document.body.classList.add("photo");
    state.photosShown += 1;
  }

  function backToLive() {
    photoSeq += 1;
    if (photoAbort) photoAbort.abort();
    photoAbort = null;
    $("photo-status").textContent = "";
    photoError("");
    if (state.mode === "live") return;
    state.mode = "live";
    document.body.classList.remove("photo");
    $("photo-bar").classList.add("hidden");
    $("title2d").textContent = "Camera, 2D skeletons";
    $("title3d").textContent = "";
    for (const id of ["video", "overlay"]) { // blank until the next live frame
      const c = $(id);
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
    }
    draw3d();
  }

  function setupPhoto() {
    const input = $("photo-input");
    input.addEventListener("change", () => {
      if (input.files.length) posePhoto(input.files[0]);
      input.value = ""; // choosing the same file again is a new choice
    });
    $("back-live").addEventListener("click", backToLive);
    $("photo-error-close").addEventListener("click", () => photoError(""));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") backToLive();
    });
    const files = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
    let inside = 0; // dragenter/dragleave pairs: children fire them too
    document.addEventListener("dragenter", (e) => {
      if (!files(e)) return;
      inside += 1;
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", (e) => {
      if (!files(e)) return;
      inside = Math.max(0, inside - 1);
      if (!inside) document.body.classList.remove("dragging");
    });
    document.addEventListener("dragover", (e) => {
      if (files(e)) e.preventDefault(); // (a drop target must say so)
    });
    document.addEventListener("drop", (e) => {
      e.preventDefault(); // never let the browser open the file in place of the page
      inside = 0;
      document.body.classList.remove("dragging");
      if (e.dataTransfer && e.dataTransfer.files.length) posePhoto(e.dataTransfer.files[0]);
    });
  }

  // ------------------------------------------------------------------ start
  async function start() {
    setupOrbit();
    setupPhoto();
    draw3d();
    for (;;) {
      try {
        const r = await api("/v1/info");
        if (r.ok) {
          state.info = await r.json();
          bones = state.info.bones;
          $("device").textContent = state.info.device_id + " " + state.info.version;
          break;
        }
      } catch (e) {
        if (state.conn === "unauthorized") return;
        setConn("disconnected", "The device does not answer. Retrying...");
      }
      await new Promise((ok) => setTimeout(ok, 2000));
    }
    streamLoop();
    frameLoop();
    statsLoop();
  }
  start();
})();
