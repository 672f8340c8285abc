#!/usr/bin/env bash
# The whole test suite: the library with its examples, the benchmark
# module, the durable history stores (bbolt and Pebble), the Prometheus
# exporter, the WebSocket transport (wsgarou), the example server (a module
# too, for boltstore and NATS), the NATS broker and the cluster example, each
# with its own go.mod, all
# under the race detector (needs gcc). As root with nft, iptables and ping,
# the benchmark module's tests also run on an emulated lossy network in a
# namespace of their own; otherwise they skip.
set -euo pipefail
cd "$(dirname "$0")"
go test -race -count=1 ./...
(cd bench && go test -race -count=1 ./...)
(cd boltstore && go test -race -count=1 ./...)
(cd pebblestore && go test -race -count=1 ./...)
(cd promgarou && go test -race -count=1 ./...)
(cd wsgarou && go test -race -count=1 ./...)
(cd examples/server && go test -race -count=1 ./...)
(cd natsbroker && go test -race -count=1 ./...)
(cd examples/cluster && go test -race -count=1 ./...)
# The web example's browser test drives chromium-headless-shell (Debian's
# package; .ci/run installs it) and skips where it is not installed; its
# tests of garou.js under Node.js (node 20.10 or later) skip without node.
(cd examples/web && go test -race -count=1 ./...)
# The web example's patched copy of webtransport-go (PATCHES.md): its own
# tests, on the quic-go Garou uses.
(cd examples/web/third_party/webtransport-go && go test -race -count=1 ./...)
