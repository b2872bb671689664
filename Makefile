# vigil: `make run` starts the agent, `make test` runs the tests.
# Both install what they need first (apt packages, .venv, BPF objects), idempotently.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BPF_SRC := src/vigil/kernel/bpf
BPF_OUT := $(BPF_SRC)/build
# every kernel/bpf/<sensor>.bpf.c is a sensor; every object depends on every header
BPF_OBJS := $(patsubst $(BPF_SRC)/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(wildcard $(BPF_SRC)/*.bpf.c))
BPF_HDRS := $(wildcard $(BPF_SRC)/*.h)
# vigil doctor's hook probes (not a sensor: no .bpf.o suffix, the sensor glob skips it)
PROBES_OBJ := $(BPF_OUT)/probes.o
BPF_CFLAGS := -target bpf -g -O2 -D__TARGET_ARCH_x86 -Wall -Werror -I$(BPF_SRC)
# kernel/bpf/metrics/<name>.bpf.c: the aggregating programs of vigil.metrics (not sensors)
METRICS_SRC := $(BPF_SRC)/metrics
METRICS_OBJS := $(patsubst $(METRICS_SRC)/%.bpf.c,$(BPF_OUT)/metrics/%.bpf.o,$(wildcard $(METRICS_SRC)/*.bpf.c))
APT_PKGS := clang llvm libbpf-dev libbpf1 bpftool make podman runc containerd busybox-static bpftrace strace \
            iproute2 util-linux prometheus libcap2-bin redis-server redis-tools postgresql \
            postgresql-client nginx wrk tmux
STAMP := .venv/.installed

# the container image (podman), both stages from a Debian 12 base made locally from Debian
# packages when missing (no image registry needed); BASE_IMAGE=docker.io/library/debian:12-slim
# uses the public one instead
IMAGE ?= localhost/vigil:latest
BASE_IMAGE ?= localhost/vigil-base:12
BUILD_FLAGS ?=
# the build stage's pip trusts the host's CA bundle (a site's TLS-inspecting proxy
# is in it); PIP_CERT= (empty) builds with the image's own CAs only
PIP_CERT ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)

.PHONY: all setup deps venv bpf run test bench clean image wheel test-kernels kernel-deps

# `make test-kernels`: the kernel smoke suite (tests/kernels) on Debian's kernels in TCG VMs
# (virtme-ng + QEMU) and on this host; the matrix goes to bench/results/kernels.md (docs/KERNELS.md).
# KERNELS picks rows (6.1 6.1-cloud 6.12 host); BROKEN=1 builds one sensor program the verifier
# refuses (objects in build-broken/, never the normal ones) to show it is one degraded row.
KERNEL_APT_PKGS := qemu-system-x86
KERNELS ?= 6.1 6.1-cloud 6.12 host
BROKEN ?=
BROKEN_OUT := $(BPF_SRC)/build-broken

all: setup

setup: deps venv bpf

# apt packages, only when something is missing
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@bash scripts/setup-podman.sh

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

bpf: $(BPF_OBJS) $(METRICS_OBJS) $(PROBES_OBJ)
$(PROBES_OBJ): $(BPF_SRC)/probes/probes.bpf.c $(BPF_SRC)/vmlinux.h
	@mkdir -p $(BPF_OUT)
	clang $(BPF_CFLAGS) -c $< -o $@
$(BPF_OUT)/%.bpf.o: $(BPF_SRC)/%.bpf.c $(BPF_HDRS)
	@mkdir -p $(BPF_OUT)
	clang $(BPF_CFLAGS) -c $< -o $@
$(BPF_OUT)/metrics/%.bpf.o: $(METRICS_SRC)/%.bpf.c $(BPF_HDRS) $(wildcard $(METRICS_SRC)/*.h)
	@mkdir -p $(BPF_OUT)/metrics
	clang $(BPF_CFLAGS) -I$(METRICS_SRC) -c $< -o $@

image:
	@case "$(BASE_IMAGE)" in localhost/*) bash scripts/base-image.sh $(BASE_IMAGE);; esac
	podman build $(BUILD_FLAGS) --build-arg BASE=$(BASE_IMAGE) $(if $(PIP_CERT),--volume $(PIP_CERT):/run/host-ca.crt:ro) \
	  -t $(IMAGE) -f Containerfile .

# the wheel carries the compiled CO-RE objects: pip install elsewhere needs no clang
wheel: setup
	$(VENV)/bin/pip wheel -q --no-deps -w dist .

run: setup
	$(VENV)/bin/vigil run

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

kernel-deps: setup
	@missing=""; for p in $(KERNEL_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@test -x $(VENV)/bin/vng || $(VENV)/bin/pip install -q -e '.[test,kernels]'

test-kernels: kernel-deps
ifneq ($(BROKEN),)
	$(MAKE) bpf BPF_OUT=$(BROKEN_OUT) BPF_CFLAGS='$(BPF_CFLAGS) -DVIGIL_TEST_BROKEN'
	$(VENV)/bin/python tests/kernels/matrix.py --bpf-dir $(BROKEN_OUT) --out bench/results/kernels-broken.md $(KERNELS)
else
	$(VENV)/bin/python tests/kernels/matrix.py $(KERNELS)
endif

bench: setup
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(BPF_OUT) $(BROKEN_OUT) $(VENV) *.egg-info src/*.egg-info
