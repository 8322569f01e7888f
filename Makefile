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

# Install the service: code stays in this checkout (PREFIX), units go to systemd with paths filled in.
PREFIX ?= $(CURDIR)
UNITDIR ?= /etc/systemd/system
install: $(STAMP)
	id -u testimony-kiosk >/dev/null 2>&1 || useradd --system --home /var/lib/testimony-kiosk --shell /usr/sbin/nologin testimony-kiosk
	install -d -m 0755 /etc/testimony-kiosk
	[ -f /etc/testimony-kiosk/kiosk.toml ] || install -m 0640 config/kiosk.toml /etc/testimony-kiosk/kiosk.toml
	[ -f /etc/testimony-kiosk/room.toml ] || install -m 0640 rooms/standard.toml /etc/testimony-kiosk/room.toml
	for u in systemd/*.service; do sed "s#/opt/testimony-kiosk#$(PREFIX)#g" $$u > $(UNITDIR)/$$(basename $$u); done
	systemctl daemon-reload || true
	@echo "installed; enable with: systemctl enable --now testimony-kiosk"
