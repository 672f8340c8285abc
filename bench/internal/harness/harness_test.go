package harness

import (
	"math"
	"strings"
	"testing"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for v := int64(1); v <= 100000; v++ {
		h.add(v * 1000) // 1 µs .. 100 ms
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 50e6}, {0.99, 99e6}, {0.999, 99.9e6}} {
		if got := h.quantile(c.q); math.Abs(got-c.want)/c.want > 0.02 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", c.q, got, c.want)
		}
	}
	var o hist
	o.add(5)
	o.merge(&h)
	if o.n != h.n+1 {
		t.Errorf("merged count %d, want %d", o.n, h.n+1)
	}
}

func TestBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 7 {
		b := bucket(v)
		if b < prev {
			t.Fatalf("bucket(%d) = %d < %d", v, b, prev)
		}
		if mid := bucketMid(b); math.Abs(mid-float64(v)) > float64(v)/50+1 {
			t.Fatalf("bucketMid(bucket(%d)) = %v", v, mid)
		}
		prev = b
	}
}

func TestText(t *testing.T) {
	text := makeText(100, 1234567890123456789, 7, 42)
	if len(text) != 100 {
		t.Fatalf("len %d", len(text))
	}
	if ts, ok := sentAt(text); !ok || ts != 1234567890123456789 {
		t.Errorf("sentAt = %d, %v", ts, ok)
	}
	if s, k, ok := textID(text); !ok || s != 7 || k != 42 {
		t.Errorf("textID = %d, %d, %v", s, k, ok)
	}
}

func TestMedianAndNum(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	for in, want := range map[float64]string{1234567: "1,234,567", 123.4: "123", 12.34: "12.3", 1.234: "1.23"} {
		if got := num(in); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigArgsRoundTrip(t *testing.T) {
	c := DefaultConfig()
	c.BurstClients, c.PacedDuration, c.Verbose = 7, 3e9, true
	fs := newFlagSet("test")
	var d Config
	d.register(fs)
	if err := fs.Parse(c.args()); err != nil {
		t.Fatal(err)
	}
	if d != c {
		t.Errorf("round trip:\n got %+v\nwant %+v", d, c)
	}
}

func TestTextIDAllocs(t *testing.T) {
	text := makeText(100, 1234567890123456789, 7, 42)
	if n := testing.AllocsPerRun(100, func() { textID(text) }); n != 0 {
		t.Errorf("textID allocates %v times", n)
	}
	if _, _, ok := textID("12 3"); ok {
		t.Error("textID accepted a text without a number")
	}
}

func TestWriteDurable(t *testing.T) {
	var results []Result
	for round, rates := range [][2]float64{{1000, 800}, {900, 450}, {1100, 770}} {
		results = append(results,
			Result{Impl: "garou", Scenario: Burst, Round: round + 1, Rate: rates[0], CPUPerDelivery: 1},
			Result{Impl: "garou-bolt", Scenario: Burst, Round: round + 1, Rate: rates[1], CPUPerDelivery: 2})
	}
	var b strings.Builder
	writeDurable(&b, Burst, results)
	// Medians 1000 and 770; per round 0.80, 0.50, 0.70.
	if want := "| garou-bolt | 0.77 | 0.50-0.80 | 2.00 | 2.00-2.00 | 0 |"; !strings.Contains(b.String(), want) {
		t.Errorf("got\n%s\nwant a row %q", b.String(), want)
	}
	b.Reset()
	writeDurable(&b, Burst, results[:1]) // no durable row: nothing to compare
	if b.Len() != 0 {
		t.Errorf("got %q without a durable implementation", b.String())
	}
}
