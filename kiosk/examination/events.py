"""The examination's entries in the session log (events.jsonl), in one place.

The service writes them; the session record is built from them alone (plus the talkback index), so a
record can be rebuilt, and checked, from the sealed log. Every entry also carries the log's own `t`
(session time), `wall` and `seq`.

    question        action=submitted  question, role, participant, name, text
                    action=allowed    question, by, rephrased (or null), note (or null)
                    action=disallowed question, by, reason
                    action=shown      question, by        (first on the interviewer's screen)
                    action=asked      question, by
                    action=declined   question, by, reason
    objection       action=raised     objection, role, participant, name, text
                    action=ruled      objection, by, decision (sustained|overruled), reason
    break-request   action=requested  request, role, participant, name, reason
                    action=ruled      request, by, decision (granted|refused), reason
    break           action=start      break, by, reason, mode (mark|pause), request
                    action=end        break, by
    break-mode      mode, by
    privacy-mask    video, audio, recording (continue|pause), by
    talkback        action=connected|disconnected|talk-start|talk-stop, participant, name, [reason, spurt]
    talkback-recorded  spurt, file, from, to, seconds_of_audio, bytes, sha256
    counsel-channel state (available|unavailable), defence [names], accused [names]
                    (availability only: the channel's content is never written anywhere)
"""

QUESTION = "question"
OBJECTION = "objection"
BREAK_REQUEST = "break-request"
BREAK = "break"
BREAK_MODE = "break-mode"
PRIVACY_MASK = "privacy-mask"
TALKBACK = "talkback"
TALKBACK_RECORDED = "talkback-recorded"
COUNSEL_CHANNEL = "counsel-channel"
