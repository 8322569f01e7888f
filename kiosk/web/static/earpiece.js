// The interviewer's earpiece page (a tablet beside the interviewer): the live-updates socket and the
// session state; examination.js draws the allowed questions in large type.
"use strict";

(() => {
  kiosk.session = kiosk.config.session;
  kiosk.showState(kiosk.session);
  kiosk.socket = new kiosk.Socket((m) => {
    if (m.session) { kiosk.session = m.session; kiosk.showState(m.session); }
  });
})();
