# minifw: `make demo` shows the seed's mini-firewall; `make test` runs every test.
PY ?= python3
VENV := .venv
# gcc and python3-dev build the hook runner's optional C hot path (src/minifw/hooks/_hot.c);
# openssh-server and openssh-client give the lockout guard's and the Ansible tests real sshd and ssh
# sessions (their own sshd in namespaces: an ssh service this install brings is stopped, disabled);
# systemd gives systemd-analyze, which verifies systemd/minifw.service;
# prometheus is the real server that scrapes the daemon's metrics endpoint in its kernel test
APT_PACKAGES := nftables iproute2 iptables conntrack iputils-ping curl tcpdump util-linux kmod procps \
	gcc python3-dev openssh-server openssh-client systemd prometheus
# crowdsec gives the fleet tests a real LAPI; crowdsec-firewall-bouncer is bench/fleet's baseline.
# Both only ever run inside test namespaces: their host services are disabled after install.
CROWDSEC_PACKAGES := crowdsec crowdsec-firewall-bouncer
APT_PACKAGES += $(CROWDSEC_PACKAGES)
STAMP := $(VENV)/.installed

.PHONY: install demo test unit kernel clean

# Byte-compile our sources (quick when nothing changed): where PYTHONDONTWRITEBYTECODE is set,
# Python would otherwise compile every module again at each CLI call (0.3 s of a 0.5 s start).
install: $(STAMP)
	@$(VENV)/bin/python -m compileall -q src >/dev/null

$(STAMP): pyproject.toml setup.py src/minifw/hooks/_hot.c
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  mkdir -p /etc/crowdsec; \
	  [ -s /etc/crowdsec/online_api_credentials.yaml ] || \
	    echo '# not registered to the central API (see README.Debian)' >/etc/crowdsec/online_api_credentials.yaml; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  case " $$missing " in *" openssh-server "*) systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true;; esac; \
	fi
	@for s in $(CROWDSEC_PACKAGES); do \
	  systemctl disable $$s.service >/dev/null 2>&1; \
	  if [ -d /run/systemd/system ]; then systemctl stop $$s.service >/dev/null 2>&1; fi; \
	done; true
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip >/dev/null
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/python -m minifw.lab.demo
	$(VENV)/bin/python -m minifw.lab.demo_hooks

test: install
	$(VENV)/bin/python -m pytest -q tests

unit: install
	$(VENV)/bin/python -m pytest -q tests/unit

kernel: install
	$(VENV)/bin/python -m pytest -q tests/kernel

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
