// Shared by the console and the viewer page: the live-updates WebSocket and a WHEP viewer,
// both reconnecting by themselves after a network drop.
"use strict";

window.kiosk = window.kiosk || {};

kiosk.config = JSON.parse(document.getElementById("config").textContent);

kiosk.$ = (id) => document.getElementById(id);

// STUN/TURN servers: in the page for the operator and admitted parties; a party let in from the lobby
// fetches them now (the server hands TURN credentials only to admitted parties)
kiosk.iceServers = async () => {
  if (!kiosk.config.ice_servers) {
    try { kiosk.config.ice_servers = (await kiosk.api("/api/ice")).ice_servers; } catch (e) { return []; }
  }
  return kiosk.config.ice_servers || [];
};

// extra receivers of every live-update message (panels added by later features, e.g. examination.js)
kiosk.listeners = kiosk.listeners || [];

kiosk.text = (el, value) => { if (el) el.textContent = value == null ? "" : String(value); };

kiosk.api = async (path, body) => {
  const res = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const detail = data && data.detail;
    throw new Error(typeof detail === "string" ? detail : (detail ? JSON.stringify(detail) : res.statusText));
  }
  return data;
};

kiosk.STATE_LABELS = {prepared: "Not recording yet", recording: "Recording", paused: "Paused", ended: "Session ended", none: "No session"};

kiosk.showState = (session) => {
  const el = kiosk.$("state");
  const state = session ? session.state : "none";
  if (el) { el.dataset.state = state; kiosk.text(el, kiosk.STATE_LABELS[state] || state); }
};

kiosk.formatClock = (seconds) => {
  if (seconds == null) return "";
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
};

// ------------------------------------------------------------------ live updates

kiosk.Socket = class {
  constructor(onMessage, onStatus) {
    this.onMessage = onMessage;
    this.onStatus = onStatus || (() => {});
    this.delay = 500;
    this.closed = false;
    this.open();
  }
  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.onStatus(true);
      this.ping = setInterval(() => { if (ws.readyState === 1) ws.send(JSON.stringify({type: "ping", t: Date.now()})); }, 10000);
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); this.onMessage(m); } catch (e) { console.error(e); }
      if (m) for (const fn of kiosk.listeners) { try { fn(m); } catch (e) { console.error(e); } }
    };
    ws.onclose = () => {
      clearInterval(this.ping);
      this.onStatus(false);
      if (this.closed) return;
      setTimeout(() => this.open(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }
  send(message) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(message)); }
  close() { this.closed = true; if (this.ws) this.ws.close(); }
};

// ------------------------------------------------------------------ WHEP viewer

kiosk.Viewer = class {
  // onState(kind, detail): "connecting", "live", "retrying", "refused", "stopped"
  constructor(video, onState) {
    this.video = video;
    this.onState = onState || (() => {});
    this.pc = null;
    this.location = null;
    this.wanted = false;
    this.timer = null;
    this.attempt = 0;
  }
  get active() { return this.pc !== null; }

  start() {
    if (this.wanted && this.pc) return;
    this.wanted = true;
    this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (!this.wanted) return;
    this.teardown();
    const session = kiosk.session;
    if (!session) { this.retry(2000, "no session"); return; }
    this.onState("connecting");
    const iceServers = await kiosk.iceServers();
    if (!this.wanted) return;
    const pc = new RTCPeerConnection({iceServers});
    this.pc = pc;
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    const stream = new MediaStream();
    pc.ontrack = (ev) => {
      stream.addTrack(ev.track);
      this.video.srcObject = stream;
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const st = pc.connectionState;
      if (st === "connected") { this.attempt = 0; this.onState("live"); }
      if (st === "failed" || st === "closed") this.retry(1000, "connection lost");
      if (st === "disconnected") {
        clearTimeout(this.lost);
        this.lost = setTimeout(() => { if (pc === this.pc && pc.connectionState === "disconnected") this.retry(0, "connection lost"); }, 3000);
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
        pc.addEventListener("icegatheringstatechange", done);
        setTimeout(resolve, 1500);
      });
      if (pc !== this.pc) return;
      const url = `/whep/${encodeURIComponent(session.id)}`;
      const res = await fetch(url, {method: "POST", headers: {"Content-Type": "application/sdp"},
                                    body: pc.localDescription.sdp, credentials: "same-origin"});
      if (res.status !== 201) {
        let reason = res.statusText;
        try { reason = (await res.json()).detail || reason; } catch (e) { /* keep statusText */ }
        this.teardown();
        if (res.status === 409 || res.status >= 500) {
          const after = parseInt(res.headers.get("Retry-After") || "2", 10);
          if (res.headers.get("Retry-After")) this.retry(after * 1000, reason); else this.refused(reason);
        } else {
          this.refused(reason);
        }
        return;
      }
      this.location = res.headers.get("Location");
      await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
    } catch (e) {
      this.retry(2000, "network problem");
    }
  }

  retry(ms, why) {
    if (!this.wanted) return;
    this.teardown();
    this.attempt += 1;
    const wait = Math.min(ms + 500 * this.attempt, 5000);
    this.onState("retrying", why);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  refused(reason) {
    this.wanted = false;
    this.teardown();
    this.onState("refused", reason);
  }

  teardown() {
    const pc = this.pc;
    this.pc = null;
    if (this.location) {
      fetch(this.location, {method: "DELETE", credentials: "same-origin"}).catch(() => {});
      this.location = null;
    }
    if (pc) pc.close();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.teardown();
    this.video.srcObject = null;
    this.onState("stopped");
  }

  async quality() {
    // the page's own view of its link: frames per second, RTT, loss, bitrate
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    const now = performance.now();
    let frames = 0, bytes = 0, lost = 0, received = 0, rtt = null, audioLevel = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        bytes += s.bytesReceived || 0; lost += Math.max(0, s.packetsLost || 0); received += s.packetsReceived || 0;
        if (s.kind === "video") frames = s.framesDecoded || 0;
        if (s.kind === "audio" && s.audioLevel !== undefined) audioLevel = s.audioLevel;
      }
      if (s.type === "candidate-pair" && s.state === "succeeded" && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    });
    if (!this.last || this.lastPc !== this.pc) {
      this.last = {t: now, frames, bytes, lost, received};
      this.lastPc = this.pc;
      return null;
    }
    const last = this.last;
    const dt = Math.max(0.001, (now - last.t) / 1000);
    const q = {
      fps: (frames - last.frames) / dt,
      kbps: (bytes - last.bytes) * 8 / 1000 / dt,
      loss: (received - last.received + lost - last.lost) > 0 ? (lost - last.lost) / (received - last.received + lost - last.lost) : 0,
      rtt_ms: rtt == null ? null : rtt * 1000,
      audioLevel,
    };
    this.last = {t: now, frames, bytes, lost, received};
    q.level = q.fps < 5 || q.loss > 0.1 || (q.rtt_ms || 0) > 800 ? "poor" : (q.loss > 0.02 || (q.rtt_ms || 0) > 300 ? "fair" : "good");
    return q;
  }
};

kiosk.playWithSound = async (video, button) => {
  video.muted = false;
  try { await video.play(); if (button) button.hidden = true; }
  catch (e) {
    video.muted = true;
    try { await video.play(); } catch (e2) { /* nothing to play yet */ }
    if (button) {
      button.hidden = false;
      button.onclick = () => { video.muted = false; video.play(); button.hidden = true; };
    }
  }
};

// ------------------------------------------------------------------ participant list (console and judge)

kiosk.renderParticipants = (list, selfId) => {
  const ul = kiosk.$("participants");
  if (!ul) return;
  ul.replaceChildren();
  const others = list.filter((p) => p.id !== selfId);
  kiosk.$("no-participants").hidden = others.length > 0;
  const labels = kiosk.config.labels || {};
  for (const p of others) {
    const li = document.createElement("li");
    li.dataset.participant = p.id;
    li.dataset.admission = p.admission;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = `${p.name} · ${labels[p.role] || p.role}`;
    const st = document.createElement("span");
    st.className = "hint";
    const conn = p.connected ? (p.streaming ? "watching" : "connected") : "not connected";
    const link = p.link && p.link.rtt_ms != null ? ` · ${Math.round(p.link.rtt_ms)} ms` : "";
    st.textContent = `${p.admission === "waiting" ? "waiting" : p.admission} · ${conn}${link}`;
    li.append(who, st);
    if (p.admission === "waiting") {
      const b = document.createElement("button");
      b.textContent = "Admit"; b.className = "admit";
      b.onclick = () => kiosk.api(`/api/participants/${p.id}/admit`, {}).catch((e) => alert(e.message));
      li.append(b);
    }
    if (p.admission !== "removed") {
      const b = document.createElement("button");
      b.textContent = "Remove"; b.className = "remove quiet";
      b.onclick = () => kiosk.api(`/api/participants/${p.id}/remove`, {}).catch((e) => alert(e.message));
      li.append(b);
    }
    ul.append(li);
  }
};
