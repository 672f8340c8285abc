module github.com/garou-chat/garou/bench

go 1.26.0

replace github.com/garou-chat/garou => ..

require (
	github.com/garou-chat/garou v0.0.0-00010101000000-000000000000
	github.com/gorilla/websocket v1.5.3
	github.com/quic-go/quic-go v0.65.0
	golang.org/x/sys v0.47.0
)

require (
	github.com/mtibben/confusables v0.0.0-20210201002637-9d1b0723b659 // indirect
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/net v0.56.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
