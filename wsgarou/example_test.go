package wsgarou_test

import (
	"context"
	"net/http"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/wsgarou"
)

// A service serves its web clients on its own mux, beside the QUIC
// listener of the others, from one Server.
func Example() {
	srv, err := garou.NewServer()
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/garou", wsgarou.New(srv, &wsgarou.Options{OriginPatterns: []string{"chat.example.com"}}))
	go func() { _ = srv.ListenAndServe(context.Background()) }()
	_ = http.ListenAndServe("127.0.0.1:8080", mux)
}
