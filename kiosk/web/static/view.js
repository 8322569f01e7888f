// The remote party's page: lobby, then live video and audio once admitted; clear notices when removed
// or when the session ends.
"use strict";

(() => {
  const $ = kiosk.$;
  kiosk.session = kiosk.config.session;
  let me = null;
  let finished = false;
  const video = $("video");
  const viewer = new kiosk.Viewer(video, (state, detail) => {
    kiosk.text($("media-state"), {connecting: "Connecting…", live: "", retrying: "Reconnecting…",
                                  refused: detail || "", stopped: ""}[state]);
    if (state === "live") kiosk.playWithSound(video, $("btn-sound"));
  });
  kiosk.viewer = viewer;

  const notice = (title, text) => {
    $("notice").hidden = false;
    kiosk.text($("notice-title"), title);
    kiosk.text($("notice-text"), text);
  };

  const finish = (title, text) => {
    finished = true;
    viewer.stop();
    $("stage").hidden = true;
    $("lobby").hidden = true;
    const panel = $("people-card");
    if (panel) panel.hidden = true;
    notice(title, text);
  };

  const apply = () => {
    if (finished) return;
    kiosk.showState(kiosk.session);
    if (kiosk.session && kiosk.session.state === "ended") {
      finish("The session has ended", "Thank you. You can close this page.");
      return;
    }
    if (!me) return;
    if (me.admission === "removed") {
      finish("You have left the session", "The court has closed your connection to this session.");
      return;
    }
    const admitted = me.admission === "admitted";
    $("lobby").hidden = admitted;
    $("stage").hidden = !admitted;
    const panel = $("people-card");
    if (panel) panel.hidden = !admitted;
    if (admitted && !viewer.wanted) viewer.start();
  };

  const socket = new kiosk.Socket((m) => {
    if (m.type === "hello") {
      kiosk.session = m.session; me = m.me;
      if (m.participants) kiosk.renderParticipants(m.participants, me && me.id);
      // the server lost our stream while we were away: ask again
      if (me && me.admission === "admitted" && !me.streaming && viewer.wanted) viewer.connect();
    } else if (m.type === "session") {
      kiosk.session = m.session;
    } else if (m.type === "ended") {
      kiosk.session = m.session;
    } else if (m.type === "me") {
      me = m.me;
    } else if (m.type === "participants") {
      kiosk.renderParticipants(m.participants, me && me.id);
    } else if (m.type === "media-ended") {
      if (viewer.wanted && m.reason !== "replaced by a new connection") viewer.retry(500, m.reason);
    }
    apply();
  }, (up) => { if (!up && !finished) kiosk.text($("media-state"), "Connection to the court interrupted; reconnecting…"); });
  kiosk.socket = socket;

  setInterval(async () => {
    const q = await viewer.quality();
    const el = $("quality");
    if (!q) { el.dataset.level = "none"; kiosk.text(el, ""); return; }
    el.dataset.level = q.level;
    const rtt = q.rtt_ms == null ? "" : ` · ${Math.round(q.rtt_ms)} ms`;
    kiosk.text(el, `Connection ${q.level}${rtt}`);
  }, 2000);

  apply();
})();
