package sendq

import "testing"

func TestQueue(t *testing.T) {
	q := New(10)
	if !q.Push([]byte("abcd")) || !q.Push([]byte("efgh")) {
		t.Fatal("push under the bound refused")
	}
	if q.Push([]byte("ijk")) {
		t.Fatal("push past the bound accepted")
	}
	items, ok := q.Take()
	if !ok || len(items) != 2 || string(items[0]) != "abcd" || string(items[1]) != "efgh" {
		t.Fatalf("Take = %q, %v", items, ok)
	}
	q.Done(items)
	if !q.Push([]byte("0123456789")) {
		t.Fatal("push after Done refused")
	}
	q.Close()
	if _, ok := q.Take(); ok {
		t.Fatal("Take after Close returned ok")
	}
	if q.Push([]byte("x")) {
		t.Fatal("push after Close accepted")
	}
}

func TestTakeWaits(t *testing.T) {
	q := New(100)
	got := make(chan string)
	go func() {
		items, _ := q.Take()
		got <- string(items[0])
	}()
	q.Push([]byte("hi"))
	if s := <-got; s != "hi" {
		t.Fatalf("got %q", s)
	}
}
