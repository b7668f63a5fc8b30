# leveret: tests run against a real RabbitMQ started by scripts/broker.sh (see BROKER-NOTES).
SHELL := /bin/bash
GO ?= go

.PHONY: test demo fuzz broker broker4 cluster bench

# The default broker; an extra independent node (port 5673) that the recovery tests stop and
# start (rabbitmqctl stop_app) and the memory-alarm test blocks, without disturbing the tests
# that share the default one; and the TLS node (amqps on 5671, SASL EXTERNAL, certificates made
# by scripts/gencerts).
broker:
	scripts/broker.sh up
	scripts/broker.sh node leveret2 5673
	scripts/broker.sh tls

# go test runs with -v so that .ci/run can count the top-level "--- PASS/FAIL/SKIP" lines; the
# per-package "ok"/"FAIL" lines stay in the output as usual.
# Generated code must match its generator: after go generate, internal/proto must equal both the
# index (git diff) and a copy taken before generating. The copy also catches files git does not
# track yet and works on a machine without git.
# A 3-node cluster (nodes lc1-lc3, AMQP ports 5681-5683) for tests/cluster; see scripts/cluster.sh.
cluster:
	scripts/cluster.sh up

# RabbitMQ 4.x (the newest Debian packages, sid; 4.0 from trixie when sid cannot be built) with the
# defaults RabbitMQ announces as the next ones: a node for the suite (5690), an extra one that
# the recovery tests stop and start (5692), one with the OAuth 2 backend (5696) and one with
# an amqps listener (5697, amqps 5698). scripts/chroot-broker.sh builds the chroot once.
BROKER4 = scripts/chroot-broker.sh
broker4: broker
	$(BROKER4) node newest lnext 5690 next
	$(BROKER4) node newest lnext2 5692 next
	@# A node that takes OAuth 2 tokens signed with the test key (tests/oauth_test.go, both passes).
	$(BROKER4) oauth newest loauth 5696
	@# The TLS node of the 4.x pass (amqps on 5698), with the certificates scripts/broker.sh tls made.
	$(BROKER4) tls newest ltls4 5697 5698

# The environment that points tests/ at the 4.x nodes.
ENV4 = AMQP_URL=amqp://guest:guest@127.0.0.1:5690/%2f AMQP_URL_NODE2=amqp://guest:guest@127.0.0.1:5692/%2f \
	LEVERET_NODE2=lnext2 LEVERET_CTL="$(CURDIR)/$(BROKER4) ctl newest lnext" \
	LEVERET_TLS_NODE=ltls4 LEVERET_TLS_PORT=5698

test: broker broker4 cluster
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	cd tests/netfaults && $(GO) vet ./...
	cd otelleveret && $(GO) vet ./...
	cd cmd/leveret-perf && $(GO) vet ./...
	@out=$$(gofmt -l .); if [[ -n $$out ]]; then echo "gofmt -l: these files need gofmt:"; echo "$$out"; exit 1; fi
	@if [[ -f internal/proto/doc.go ]]; then \
		echo "$(GO) generate ./internal/proto && git diff --exit-code -- internal/proto"; \
		snap=$$(mktemp -d) && cp -a internal/proto "$$snap/" && \
		$(GO) generate ./internal/proto && \
		{ ! git rev-parse --is-inside-work-tree >/dev/null 2>&1 || git diff --exit-code -- internal/proto; } && \
		diff -ru "$$snap/proto" internal/proto; \
		rc=$$?; rm -rf "$$snap"; \
		if ((rc != 0)); then echo "internal/proto: generated code is stale; run go generate ./internal/proto"; fi; \
		exit $$rc; \
	fi
	@echo "== the library's tests and the broker-facing suites on RabbitMQ $$(rabbitmqctl -q eval 'rabbit_misc:version().' | tr -d '\"') [$$(date +%s)]"
	$(GO) test -race -count=1 -timeout 30m -v $$($(GO) list ./... | grep -v /tests/cluster)
	@# The broker-facing suites again on RabbitMQ 4.x with its next defaults: tests/ (with the
	@# examples' programs), the examples' own tests, the root package's examples, otelleveret and
	@# leveret-perf.
	@echo "== the broker-facing suites on RabbitMQ $$($(BROKER4) ctl newest lnext -q eval 'rabbit_misc:version().' | tr -d '\"') (next defaults) [$$(date +%s)]"
	cd tests && $(ENV4) $(GO) test -race -count=1 -timeout 30m -v ./
	$(ENV4) $(GO) test -race -count=1 -timeout 5m -v ./examples/...
	$(ENV4) $(GO) test -race -count=1 -timeout 5m -v -run '^Example' .
	cd otelleveret && $(ENV4) $(GO) test -race -count=1 -timeout 5m -v ./...
	cd cmd/leveret-perf && $(ENV4) $(GO) test -race -count=1 -timeout 5m -v ./...
	@echo "== the step-kill harness, the cluster, netfaults, otelleveret, leveret-perf and bench on RabbitMQ 3.10 [$$(date +%s)]"
	@# The recovery's step-kill harness (recovery_steps_test.go), 20 runs in a row: the connection
	@# that recovers is killed at each step in turn; timing varies which step is which.
	$(GO) test -race -count=20 -timeout 10m -run '^TestRecoveryStepKill$$' .
	@# The cluster tests stop and start nodes and time the failover: they run on their own, after
	@# the rest, so that no other package competes with them for the two cores.
	$(GO) test -race -count=1 -timeout 15m -v ./tests/cluster
	@# tests/netfaults is its own module (toxiproxy stays out of the library's go.mod).
	cd tests/netfaults && $(GO) test -race -count=1 -timeout 10m -v ./...
	@# otelleveret is its own module (OpenTelemetry stays out of the library's go.mod).
	cd otelleveret && $(GO) test -race -count=1 -timeout 5m -v ./...
	@# cmd/leveret-perf is its own module (the HDR histogram stays out of the library's go.mod).
	cd cmd/leveret-perf && $(GO) test -race -count=1 -timeout 5m -v ./...
	@# bench/ is its own module: its report tests, plus each client-path benchmark run briefly
	@# (no broker) so that they keep working and goleak sees them end cleanly.
	cd bench && $(GO) test -race -count=1 -timeout 10m -v -bench . -benchtime 100x ./...
	@# The cluster tests again on a 4.x cluster (Khepri), in place of the 3.10 one: the two
	@# cores cannot time failovers with six more nodes idling beside.
	scripts/cluster.sh down
	scripts/cluster.sh up newest
	@echo "== the cluster tests on a RabbitMQ $$($(BROKER4) ctl newest lx1 -q eval 'rabbit_misc:version().' | tr -d '\"') cluster (next defaults) [$$(date +%s)]"
	LEVERET_CLUSTER=newest $(GO) test -race -count=1 -timeout 15m -v ./tests/cluster
	scripts/cluster.sh down newest
	@echo "== end [$$(date +%s)]"

demo: broker
	$(GO) run ./examples/hello

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzFrameReader -fuzztime 60s ./internal/proto

# Side-by-side benchmarks against amqp091-go (bench/ is its own module); see BENCHMARKS.md.
bench: broker
	$(MAKE) -C bench bench
