module github.com/garou-chat/garou/examples/web

go 1.26.0

replace (
	github.com/garou-chat/garou => ../..
	github.com/garou-chat/garou/boltstore => ../../boltstore
	github.com/garou-chat/garou/wsgarou => ../../wsgarou
	// v0.13.0 does not build with quic-go v0.65.0: a patched copy
	// (third_party/webtransport-go/PATCHES.md), for this example only.
	github.com/quic-go/webtransport-go => ./third_party/webtransport-go
)

require (
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/garou-chat/garou v0.0.0-00010101000000-000000000000
	github.com/garou-chat/garou/boltstore v0.0.0-00010101000000-000000000000
	github.com/garou-chat/garou/wsgarou v0.0.0-00010101000000-000000000000
	github.com/quic-go/quic-go v0.65.0
	github.com/quic-go/webtransport-go v0.13.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/dunglas/httpsfv v1.1.1 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/mtibben/confusables v0.0.0-20210201002637-9d1b0723b659 // indirect
	github.com/quic-go/qpack v0.6.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/net v0.56.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
