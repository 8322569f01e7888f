# Two commands on a fresh Debian machine:  `make demo`  and  `make test`.
# Both bootstrap .venv/ (Debian packages first, then pip) when it is missing or stale.
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
APT_PKGS := ffmpeg espeak-ng sox portaudio19-dev libasound2-plugins alsa-utils chromium age openssh-client python3-venv
SECONDS  ?= 20

.PHONY: demo test serve lint bench install clean-venv

$(STAMP): pyproject.toml scripts/bootstrap.sh
	APT_PKGS="$(APT_PKGS)" bash scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kiosk demo --seconds $(SECONDS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/kiosk serve --room rooms/demo.toml

lint: $(STAMP)
	$(VENV)/bin/ruff check kiosk transcripts tests bench

bench: $(STAMP)
	$(VENV)/bin/python bench/capture_encode.py

clean-venv:
	rm -rf $(VENV)
