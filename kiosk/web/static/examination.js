// Examination panels (questions, rulings, objections, breaks, privacy mask, talkback, private counsel
// channel) on the viewer/judge page, the operator console and the interviewer's earpiece page.
// Every piece of text a person typed is put in with textContent: a question containing HTML shows as text.
"use strict";

(() => {
  const $ = kiosk.$;
  const root = $("exam");
  if (!root) return;
  const role = root.dataset.role;
  const labels = kiosk.config.labels || {};
  const S = {questions: new Map(), apps: new Map(), brk: null, mask: {video: false, audio: false},
             counsel: null, talk: null, mode: "mark", active: false};
  const seen = new Set();

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  };
  const clock = (t) => (t == null ? "" : kiosk.formatClock(t));
  const note = (id, text) => kiosk.text($(id), text);
  const send = (m) => { if (kiosk.socket) kiosk.socket.send(m); };
  const who = (by) => (by || "").split(":").slice(1).join(":") || by || "";
  const call = async (path, body, noteId) => {
    try { const r = await kiosk.api(path, body); if (noteId) note(noteId, ""); return r; }
    catch (e) { if (noteId) note(noteId, e.message); else alert(e.message); return null; }
  };

  // keyed list rendering: existing rows keep their inputs while others change
  const keyed = (list, items, make, update) => {
    if (!list) return;
    const want = new Set(items.map((x) => x.id));
    for (const li of [...list.children]) if (!want.has(li.dataset.id)) li.remove();
    let prev = null;
    for (const item of items) {
      let li = [...list.children].find((x) => x.dataset.id === item.id);
      if (!li) { li = make(item); li.dataset.id = item.id; }
      update(li, item);
      if (prev ? prev.nextSibling !== li : list.firstChild !== li) list.insertBefore(li, prev ? prev.nextSibling : list.firstChild);
      prev = li;
    }
  };

  // ------------------------------------------------------------------ state from the server

  async function refresh() {
    let s;
    try { s = await kiosk.api("/api/examination"); } catch (e) { S.active = false; root.hidden = true; return; }
    S.active = true;
    root.hidden = false;
    S.questions = new Map((s.questions || []).map((q) => [q.id, q]));
    S.apps = new Map((s.applications || []).map((a) => [a.id, a]));
    S.brk = s.break || null;
    S.mask = s.mask || S.mask;
    S.counsel = s.counsel || null;
    S.talk = s.talk || null;
    if (s.break_mode) S.mode = s.break_mode;
    render();
  }

  kiosk.listeners.push((m) => {
    if (m.type === "hello") { if (m.session && m.session.state === "ended") hide(); else refresh(); return; }
    if (m.type === "me") { if (m.me.admission === "admitted") { if (!S.active) refresh(); } else hide(); return; }
    if (m.type === "ended" || (m.type === "session" && m.session && m.session.state === "ended")) { hide(); return; }
    if (m.type === "session" && m.session && S.session !== m.session.id) { S.session = m.session.id; refresh(); return; }
    if (!S.active) return;
    if (m.type === "question") S.questions.set(m.question.id, m.question);
    else if (m.type === "application") S.apps.set(m.application.id, m.application);
    else if (m.type === "break") { S.brk = m.break; S.mode = m.mode || S.mode; }
    else if (m.type === "mask") S.mask = {...S.mask, ...m.mask};
    else if (m.type === "talk") S.talk = {...(S.talk || {}), ...m.talk};
    else if (m.type === "talk-state") { S.talk = {...(S.talk || {}), ...m.talk}; }
    else if (m.type === "counsel-state") S.counsel = m.counsel;
    else if (m.type === "counsel") { counselMessage(m); return; }
    else if (m.type === "counsel-sent") return;
    else if (m.type === "exam-error") { examError(m); return; }
    else return;
    render();
  });

  function hide() {
    S.active = false;
    root.hidden = true;
    releaseTalk();
  }

  function examError(m) {
    const target = {counsel: "counsel-state", talk: "talk-state"}[m.for];
    if (target) note(target, m.detail); else console.warn(m.detail);
  }

  // ------------------------------------------------------------------ rendering

  const STATUS = {
    submitted: () => "Waiting for the judge",
    allowed: () => "Allowed, waiting for the interviewer",
    shown: () => "Allowed, on the interviewer's screen",
    asked: (q) => `Asked at ${clock(q.asked_at)}`,
    declined: (q) => `Not asked: ${q.declined_reason || ""}`,
    disallowed: (q) => `Disallowed: ${q.reason || ""}`,
  };

  const sorted = (map, key) => [...map.values()].sort((a, b) => (a[key] || 0) - (b[key] || 0));

  function render() {
    renderBreak();
    renderMask();
    renderTalk();
    if (role === "defence" || role === "prosecution") renderMine();
    if (role === "judge") renderJudge();
    if (role === "operator") renderInterviewer();
    if (role === "defence" || role === "accused") renderCounsel();
    renderApps();
  }

  function renderBreak() {
    const band = $("exam-break");
    if (band) {
      band.hidden = !S.brk;
      if (S.brk) kiosk.text($("exam-break-text"), `called by ${who(S.brk.called_by)} at ${clock(S.brk.started_at)}: ${S.brk.reason}`);
    }
    if ($("btn-break-end")) $("btn-break-end").hidden = !S.brk;
    if ($("btn-break-call")) $("btn-break-call").hidden = !!S.brk;
    if ($("break-mode")) $("break-mode").value = S.mode;
  }

  function renderMask() {
    const band = $("exam-mask");
    if (band) {
      const parts = [];
      if (S.mask.video) parts.push("The picture is hidden");
      if (S.mask.audio) parts.push(S.mask.video ? "the sound is muted" : "The sound is muted");
      band.hidden = parts.length === 0;
      kiosk.text($("exam-mask-text"), parts.length ? `${parts.join(" and ")} for the witness's privacy. It will come back shortly.` : "");
    }
    if ($("mask-state")) {
      $("mask-video").checked = !!S.mask.video;
      $("mask-audio").checked = !!S.mask.audio;
      if (S.mask.recording) $("mask-recording").value = S.mask.recording;
      const on = S.mask.video || S.mask.audio;
      note("mask-state", on ? `Remote viewers: ${S.mask.video ? "picture hidden" : "picture shown"}, ${S.mask.audio ? "sound muted" : "sound on"}` : "Remote viewers see and hear the room.");
      $("mask-state").dataset.masked = on ? "yes" : "no";
    }
  }

  function renderTalk() {
    const banner = $("talk-banner");
    if (banner) {
      const name = S.talk && S.talk.talking;
      banner.hidden = !name;
      kiosk.text(banner, name ? `${name} is speaking to the interviewer` : "");
    }
  }

  function renderMine() {
    const qs = sorted(S.questions, "submitted_at");
    keyed($("q-mine"), qs, (q) => {
      const li = el("li", "item");
      li.append(el("div", "qtext"), el("div", "qwording"), el("div", "qstatus"));
      return li;
    }, (li, q) => {
      li.dataset.status = q.status;
      kiosk.text(li.querySelector(".qtext"), `${q.id} · ${q.text}`);
      kiosk.text(li.querySelector(".qwording"), q.rephrased ? `The judge rephrased it: ${q.rephrased}` : "");
      kiosk.text(li.querySelector(".qstatus"), STATUS[q.status] ? STATUS[q.status](q) : q.status);
    });
  }

  function renderJudge() {
    const qs = sorted(S.questions, "submitted_at");
    const pending = qs.filter((q) => q.status === "submitted");
    $("j-none").hidden = pending.length > 0;
    keyed($("j-pending"), pending, (q) => {
      const li = el("li", "item");
      const meta = el("div", "meta");
      const text = el("div", "qtext");
      const wording = el("textarea", "rephrase");
      wording.rows = 2; wording.maxLength = 1000;
      wording.placeholder = "Rephrase for the child (optional)";
      const allow = el("button", "allow", "Allow");
      const reason = el("input", "reason");
      reason.maxLength = 500; reason.placeholder = "Reason for disallowing";
      const disallow = el("button", "disallow quiet", "Disallow");
      const msg = el("span", "note");
      allow.onclick = async () => {
        const r = await call(`/api/questions/${encodeURIComponent(q.id)}/ruling`, {decision: "allow", rephrased: wording.value}, null);
        if (r) { S.questions.set(r.id, r); render(); }
      };
      disallow.onclick = async () => {
        try {
          const r = await kiosk.api(`/api/questions/${encodeURIComponent(q.id)}/ruling`, {decision: "disallow", reason: reason.value});
          S.questions.set(r.id, r); render();
        } catch (e) { kiosk.text(msg, e.message); }
      };
      const row1 = el("div", "row"); row1.append(allow);
      const row2 = el("div", "row"); row2.append(reason, disallow, msg);
      li.append(meta, text, wording, row1, row2);
      return li;
    }, (li, q) => {
      kiosk.text(li.querySelector(".meta"), `${q.id} · ${labels[q.role] || q.role} (${q.name}) · ${clock(q.submitted_at)}`);
      kiosk.text(li.querySelector(".qtext"), q.text);
    });
    const ruled = qs.filter((q) => q.status !== "submitted").reverse();
    keyed($("j-ruled"), ruled, () => {
      const li = el("li", "item");
      li.append(el("div", "qtext"), el("div", "qwording"), el("div", "qstatus"));
      return li;
    }, (li, q) => {
      li.dataset.status = q.status;
      kiosk.text(li.querySelector(".qtext"), `${q.id} · ${labels[q.role] || q.role}: ${q.text}`);
      kiosk.text(li.querySelector(".qwording"), q.rephrased ? `Rephrased: ${q.rephrased}` : "");
      kiosk.text(li.querySelector(".qstatus"), STATUS[q.status] ? STATUS[q.status](q) : q.status);
    });
  }

  function renderInterviewer() {
    const qs = sorted(S.questions, "ruled_at");
    const open = qs.filter((q) => q.status === "allowed" || q.status === "shown");
    if ($("op-none")) $("op-none").hidden = open.length > 0;
    keyed($("op-open"), open, (q) => {
      const li = el("li", "item");
      const text = el("div", "ask");
      const meta = el("div", "meta");
      const asked = el("button", "asked big", "Asked");
      const reason = el("input", "reason");
      reason.maxLength = 500; reason.placeholder = "Why not (e.g. already answered)";
      const decline = el("button", "decline quiet", "Not asked");
      const msg = el("span", "note");
      asked.onclick = async () => {
        try { const r = await kiosk.api(`/api/questions/${encodeURIComponent(q.id)}/asked`, {}); S.questions.set(r.id, r); render(); }
        catch (e) { kiosk.text(msg, e.message); }
      };
      decline.onclick = async () => {
        try { const r = await kiosk.api(`/api/questions/${encodeURIComponent(q.id)}/decline`, {reason: reason.value}); S.questions.set(r.id, r); render(); }
        catch (e) { kiosk.text(msg, e.message); }
      };
      const row = el("div", "row");
      row.append(asked, reason, decline, msg);
      li.append(text, meta, row);
      return li;
    }, (li, q) => {
      li.dataset.status = q.status;
      kiosk.text(li.querySelector(".ask"), q.to_ask);
      kiosk.text(li.querySelector(".meta"), `${q.id} · from the ${(labels[q.role] || q.role).toLowerCase()} · allowed ${clock(q.ruled_at)}`);
      if (q.status === "allowed" && !seen.has(q.id)) { seen.add(q.id); send({type: "question-seen", id: q.id}); }
    });
    const done = qs.filter((q) => q.status === "asked" || q.status === "declined").reverse();
    keyed($("op-done"), done, () => {
      const li = el("li", "item");
      li.append(el("div", "qtext"), el("div", "qstatus"));
      return li;
    }, (li, q) => {
      li.dataset.status = q.status;
      kiosk.text(li.querySelector(".qtext"), `${q.id} · ${q.to_ask}`);
      kiosk.text(li.querySelector(".qstatus"), STATUS[q.status](q));
    });
  }

  function renderApps() {
    const list = $("j-apps") || $("apps") || $("op-apps");
    if (!list) return;
    const apps = sorted(S.apps, "raised_at").reverse();
    keyed(list, apps, (a) => {
      const li = el("li", "item");
      li.append(el("div", "qtext"), el("div", "qstatus"));
      if (role === "judge") {
        const reason = el("input", "reason");
        reason.maxLength = 500; reason.placeholder = "Reason (optional)";
        const [yes, no] = a.kind === "objection" ? ["sustained", "overruled"] : ["granted", "refused"];
        const path = a.kind === "objection" ? "objections" : "break-requests";
        const row = el("div", "row decide");
        for (const d of [yes, no]) {
          const b = el("button", `decide-${d}${d === no ? " quiet" : ""}`, d === "sustained" ? "Sustain" : d === "overruled" ? "Overrule" : d === "granted" ? "Grant" : "Refuse");
          b.onclick = async () => {
            const r = await call(`/api/${path}/${encodeURIComponent(a.id)}/ruling`, {decision: d, reason: reason.value}, null);
            if (r) { S.apps.set(r.id, r); render(); }
          };
          row.append(b);
        }
        row.prepend(reason);
        li.append(row);
      }
      return li;
    }, (li, a) => {
      li.dataset.status = a.status;
      const kind = a.kind === "objection" ? "Objection" : "Break request";
      kiosk.text(li.querySelector(".qtext"), `${a.id} · ${kind} by ${labels[a.role] || a.role} (${a.name}) at ${clock(a.raised_at)}${a.text ? ": " + a.text : ""}`);
      kiosk.text(li.querySelector(".qstatus"), a.status === "pending" ? "Waiting for the judge" : `${a.status}${a.reason ? ": " + a.reason : ""}`);
      const decide = li.querySelector(".decide");
      if (decide) decide.hidden = a.status !== "pending";
    });
  }

  // ------------------------------------------------------------------ private counsel channel

  function renderCounsel() {
    const c = S.counsel;
    if (!c || !$("counsel-state")) return;
    const other = role === "defence" ? "The accused" : "Your lawyer";
    note("counsel-state", c.available ? `${other} is connected.` : `${other} is not connected right now.`);
    $("counsel-state").dataset.available = c.available ? "yes" : "no";
    $("counsel-send").disabled = !c.available;
  }

  function counselMessage(m) {
    const log = $("counsel-log");
    if (!log) return;
    const mine = m.from === kiosk.config.participant;
    const li = el("li", mine ? "mine" : "theirs");
    li.append(el("span", "from", mine ? "You" : `${labels[m.from_role] || m.from_role} (${m.from_name})`), el("span", "text", m.text));
    log.append(li);
    li.scrollIntoView({block: "nearest"});
  }

  // ------------------------------------------------------------------ talkback (judge)

  const talk = {pc: null, track: null, location: null, timer: null, holding: false};

  async function connectTalk() {
    note("talk-state", "Connecting the microphone…");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
      const track = stream.getAudioTracks()[0];
      track.enabled = false;  // nothing leaves the browser until the button is held
      const pc = new RTCPeerConnection({iceServers: await kiosk.iceServers()});
      pc.addTransceiver(track, {direction: "sendonly"});
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
        setTimeout(resolve, 1500);
      });
      const res = await fetch("/api/talkback", {method: "POST", headers: {"Content-Type": "application/sdp"},
                                                body: pc.localDescription.sdp, credentials: "same-origin"});
      if (res.status !== 201) {
        let detail = res.statusText;
        try { detail = (await res.json()).detail || detail; } catch (e) { /* keep statusText */ }
        pc.close(); track.stop();
        note("talk-state", detail);
        return;
      }
      talk.location = res.headers.get("Location");
      talk.pc = pc; talk.track = track;
      pc.onconnectionstatechange = () => {
        if (pc !== talk.pc) return;
        const st = pc.connectionState;
        if (st === "connected") {
          $("btn-talk").hidden = false; $("btn-talk-connect").hidden = true;
          $("btn-talk").dataset.ready = "yes";
          note("talk-state", "Microphone connected");
        } else if (st === "failed" || st === "closed") {
          releaseTalk();
          talk.pc = null;
          $("btn-talk").hidden = true; $("btn-talk-connect").hidden = false;
          $("btn-talk").dataset.ready = "";
          note("talk-state", "The microphone connection was lost; connect again.");
        }
      };
      await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
    } catch (e) {
      note("talk-state", `Cannot use the microphone: ${e.message}`);
    }
  }

  function pressTalk(ev) {
    if (ev) ev.preventDefault();
    if (!talk.pc || talk.holding) return;
    talk.holding = true;
    talk.track.enabled = true;
    $("btn-talk").classList.add("on");
    kiosk.text($("btn-talk"), "Speaking… release to stop");
    send({type: "talk", on: true});
    talk.timer = setInterval(() => send({type: "talk", on: true}), 1000);  // keep-alive while held
  }

  function releaseTalk() {
    if (!talk.holding) return;
    talk.holding = false;
    clearInterval(talk.timer);
    if (talk.track) talk.track.enabled = false;
    const b = $("btn-talk");
    if (b) { b.classList.remove("on"); kiosk.text(b, "Hold to talk"); }
    send({type: "talk", on: false});
  }

  if ($("btn-talk")) {
    $("btn-talk-connect").onclick = connectTalk;
    const b = $("btn-talk");
    b.addEventListener("pointerdown", pressTalk);
    for (const e of ["pointerup", "pointerleave", "pointercancel"]) b.addEventListener(e, releaseTalk);
    b.addEventListener("keydown", (ev) => { if ((ev.key === " " || ev.key === "Enter") && !ev.repeat) pressTalk(ev); });
    b.addEventListener("keyup", (ev) => { if (ev.key === " " || ev.key === "Enter") releaseTalk(); });
    window.addEventListener("blur", releaseTalk);
    window.addEventListener("pagehide", () => { releaseTalk(); if (talk.location) fetch(talk.location, {method: "DELETE", credentials: "same-origin", keepalive: true}); });
  }

  // ------------------------------------------------------------------ forms

  const on = (id, event, fn) => { const e = $(id); if (e) e.addEventListener(event, fn); };

  on("q-form", "submit", async (ev) => {
    ev.preventDefault();
    const r = await call("/api/questions", {text: $("q-text").value}, "q-note");
    if (r) { $("q-text").value = ""; note("q-note", `Sent to the judge as ${r.id}.`); S.questions.set(r.id, r); render(); }
  });
  on("obj-form", "submit", async (ev) => {
    ev.preventDefault();
    const r = await call("/api/objections", {text: $("obj-text").value}, "q-note");
    if (r) { $("obj-text").value = ""; S.apps.set(r.id, r); render(); }
  });
  on("breq-form", "submit", async (ev) => {
    ev.preventDefault();
    const r = await call("/api/break-requests", {reason: $("breq-reason").value}, "q-note");
    if (r) { $("breq-reason").value = ""; S.apps.set(r.id, r); render(); }
  });
  on("j-break-form", "submit", async (ev) => {
    ev.preventDefault();
    const r = await call("/api/breaks", {reason: $("j-break-reason").value}, null);
    if (r) { $("j-break-reason").value = ""; S.brk = r; render(); }
  });
  on("btn-break-end", "click", async () => { if (await call("/api/breaks/end", {}, null)) { S.brk = null; render(); } });
  on("btn-break-end-op", "click", async () => { if (await call("/api/breaks/end", {}, null)) { S.brk = null; render(); } });
  on("break-mode", "change", () => call("/api/breaks/mode", {mode: $("break-mode").value}, "mask-state"));
  on("mask-form", "submit", async (ev) => {
    ev.preventDefault();
    const r = await call("/api/mask", {video: $("mask-video").checked, audio: $("mask-audio").checked,
                                       recording: $("mask-recording").value}, "mask-state");
    if (r) { S.mask = r; render(); }
  });
  on("btn-mask-lift", "click", async () => {
    const r = await call("/api/mask", {video: false, audio: false, recording: $("mask-recording").value}, "mask-state");
    if (r) { S.mask = r; render(); }
  });
  on("counsel-form", "submit", (ev) => {
    ev.preventDefault();
    const input = $("counsel-text");
    if (!input.value.trim()) return;
    send({type: "counsel", text: input.value});
    input.value = "";
  });

  refresh();
})();
