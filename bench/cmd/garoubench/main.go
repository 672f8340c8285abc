// Command garoubench compares the Garou chat server with two baselines, a
// minimal quic-go broadcast server and a gorilla/websocket hub over TLS, in
// the scenarios burst, paced, idle, crowd and, as root on an emulated
// network, lossy; and measures Garou's reconnect with and without 0-RTT
// and its connection migration there (reconnect, migrate). See the README
// beside go.mod.
package main

import (
	"os"

	"github.com/garou-chat/garou/bench/internal/garouimpl"
	"github.com/garou-chat/garou/bench/internal/garouws"
	"github.com/garou-chat/garou/bench/internal/harness"
	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/bench/internal/quicmin"
	"github.com/garou-chat/garou/bench/internal/wstls"
)

var impls = []impl.Impl{quicmin.Impl, wstls.Impl, garouimpl.Impl, garouimpl.Bolt, garouimpl.Pebble, garouws.Impl}

func main() {
	os.Exit(harness.Main(os.Args[1:], impls))
}
