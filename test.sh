#!/usr/bin/env bash
# The whole test suite: the library with its examples, and the benchmark
# module (its own go.mod), both under the race detector (needs gcc).
set -euo pipefail
cd "$(dirname "$0")"
go test -race -count=1 ./...
(cd bench && go test -race -count=1 ./...)
