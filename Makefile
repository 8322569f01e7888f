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
	@case "$(PREFIX)" in /home/*|/root/*|/root) echo "make install: the service cannot see $(PREFIX) (ProtectHome=yes); clone to /opt/testimony-kiosk and run make install there" >&2; exit 2;; esac
	id -u testimony-kiosk >/dev/null 2>&1 || useradd --system --home /var/lib/testimony-kiosk --shell /usr/sbin/nologin testimony-kiosk
	install -d -m 0755 /etc/testimony-kiosk
	# settings hold no secrets (tokens and keys live in their own 0600 files): readable by both services
	[ -f /etc/testimony-kiosk/kiosk.toml ] || install -m 0644 config/kiosk.toml /etc/testimony-kiosk/kiosk.toml
	[ -f /etc/testimony-kiosk/room.toml ] || install -m 0644 rooms/standard.toml /etc/testimony-kiosk/room.toml
	for u in systemd/*.service; do sed "s#/opt/testimony-kiosk#$(PREFIX)#g" $$u > $(UNITDIR)/$$(basename $$u); done
	systemctl daemon-reload || true
	@echo "installed; enable with: systemctl enable --now testimony-kiosk"
