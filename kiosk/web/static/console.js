// The operator console: create and run the session, watch the preview and the meters, invite and admit.
"use strict";

(() => {
  const $ = kiosk.$;
  kiosk.session = kiosk.config.session;
  let clockBase = null;

  const note = (text) => kiosk.text($("action-note"), text);

  const preview = new kiosk.Viewer($("preview"), (state, detail) => {
    kiosk.text($("preview-state"), {connecting: "Connecting…", live: "", retrying: "Reconnecting…",
                                    refused: detail || "", stopped: ""}[state]);
  });
  kiosk.viewer = preview;
  $("btn-sound").onclick = () => {
    const v = $("preview");
    v.muted = !v.muted;
    kiosk.text($("btn-sound"), v.muted ? "Sound on" : "Sound off");
  };

  const apply = () => {
    const s = kiosk.session;
    kiosk.showState(s);
    const running = s && s.state !== "ended";
    $("create-card").hidden = !!running;
    $("session-card").hidden = !running;
    $("invite-card").hidden = !running;
    if (s) {
      kiosk.text($("case"), `Case ${s.case_reference}`);
      kiosk.text($("pseudonym"), s.interviewee);
      kiosk.text($("interviewer"), `Interviewer ${s.interviewer}`);
      clockBase = s.session_time == null ? null : {t: s.session_time, at: performance.now()};
    }
    const st = s ? s.state : "none";
    $("btn-start").hidden = st !== "prepared";
    $("btn-pause").hidden = st !== "recording";
    $("btn-resume").hidden = st !== "paused";
    $("marker-form").hidden = !(st === "recording" || st === "paused");
    if (running) preview.start(); else preview.stop();
  };

  setInterval(() => {
    kiosk.text($("clock"), clockBase ? kiosk.formatClock(clockBase.t + (performance.now() - clockBase.at) / 1000) : "");
  }, 500);

  const meters = (levels) => {
    const box = $("meters");
    for (const [name, dbfs] of Object.entries(levels || {})) {
      let row = box.querySelector(`[data-mic="${CSS.escape(name)}"]`);
      if (!row) {
        row = document.createElement("div");
        row.className = "meter"; row.dataset.mic = name;
        const label = document.createElement("span"); label.textContent = name;
        const bar = document.createElement("meter"); bar.min = -60; bar.max = 0; bar.low = -30; bar.high = -6; bar.optimum = -20;
        row.append(label, bar);
        box.append(row);
      }
      row.querySelector("meter").value = Math.max(-60, Math.min(0, dbfs == null ? -60 : dbfs));
    }
  };

  const devices = (list) => {
    const ul = $("devices");
    ul.replaceChildren();
    for (const d of list || []) {
      const li = document.createElement("li");
      li.dataset.state = d.state;
      li.textContent = `${d.name} (${d.kind}): ${d.state}${d.detail ? " · " + d.detail : ""}`;
      ul.append(li);
    }
  };

  // status strip: devices, disk (minutes of recording left), ledger, clock, transcriber
  const health = (h) => {
    const ul = $("health");
    ul.replaceChildren();
    for (const item of (h && h.items) || []) {
      const li = document.createElement("li");
      li.dataset.ok = item.ok ? "yes" : "no";
      li.textContent = `${item.item.replace(/^device:/, "")}: ${item.detail}`;
      ul.append(li);
    }
  };

  const socket = new kiosk.Socket((m) => {
    if (m.type === "hello" || m.type === "session" || m.type === "ended") {
      kiosk.session = m.session;
      apply();
    }
    if (m.participants) kiosk.renderParticipants(m.participants, null);
    if (m.type === "status" && m.status) {
      meters(m.status.audio_levels);
      devices(m.status.devices);
      health(m.status.health);
      const disk = m.status.disk;
      if (disk && disk.minutes_left != null) kiosk.text($("disk"), `Space for about ${Math.floor(disk.minutes_left)} minutes of recording`);
    }
  });
  kiosk.socket = socket;

  $("create-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      kiosk.session = await kiosk.api("/api/session", Object.fromEntries(f.entries()));
      note("Session prepared. Start recording when the room is ready.");
      apply();
    } catch (e) { note(e.message); }
  };

  for (const id of ["btn-start", "btn-pause", "btn-resume"]) {
    $(id).onclick = async () => {
      try { await kiosk.api(`/api/session/${$(id).dataset.action}`, {}); note(""); kiosk.session = await kiosk.api("/api/session"); apply(); }
      catch (e) { note(e.message); }
    };
  }
  $("btn-end").onclick = () => { $("confirm-end").hidden = false; };
  $("confirm-end-no").onclick = () => { $("confirm-end").hidden = true; };
  $("confirm-end-yes").onclick = async () => {
    $("confirm-end").hidden = true;
    try { await kiosk.api("/api/session/end", {}); kiosk.session = await kiosk.api("/api/session"); apply(); }
    catch (e) { note(e.message); }
  };

  $("marker-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const input = ev.target.elements.label;
    try { await kiosk.api("/api/session/marker", {label: input.value}); note(`Marker added: ${input.value}`); input.value = ""; }
    catch (e) { note(e.message); }
  };

  $("invite-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      const r = await kiosk.api("/api/invites", Object.fromEntries(f.entries()));
      $("invite-result").hidden = false;
      // the QR code is SVG rendered by the kiosk itself from the link (no user text in it)
      const svg = new DOMParser().parseFromString(r.qr_svg, "text/html").querySelector("svg");
      $("invite-qr").replaceChildren(document.importNode(svg, true));
      $("invite-url").value = r.url;
    } catch (e) { note(e.message); }
  };
  $("btn-copy").onclick = () => { $("invite-url").select(); navigator.clipboard && navigator.clipboard.writeText($("invite-url").value); };

  apply();
})();
