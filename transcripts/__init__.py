"""Offline transcription with vosk: per microphone channel, on the session clock, resumable.

audio (any audio -> 16 kHz mono), engine (one recogniser per channel), checkpoint (journal of cuts),
source (segments or one MP4), worker (the resumable loop and the live process), live (station side),
formats (VTT, SRT, JSON, HTML), models (lookup and pinned-hash install), cli (`kiosk models`,
`kiosk transcribe`), synthetic (espeak-ng test speech in contract segment files).
"""
