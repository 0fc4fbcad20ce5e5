package events

import (
	"sync"
	"testing"
)

func TestBrokerFanOutAndFilter(t *testing.T) {
	b := NewBroker()
	all := b.Subscribe(100, nil)
	onlyA := b.Subscribe(100, func(e Event) bool { return e.Tenant == "a" })
	defer all.Close()
	defer onlyA.Close()
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				tenant := "a"
				if g%2 == 1 {
					tenant = "b"
				}
				b.Publish(Event{Type: "sandbox", Tenant: tenant})
			}
		}()
	}
	wg.Wait()
	if len(all.C) != 50 || len(onlyA.C) != 25 {
		t.Fatalf("all got %d (want 50), a got %d (want 25)", len(all.C), len(onlyA.C))
	}
	for len(onlyA.C) > 0 {
		if e := <-onlyA.C; e.Tenant != "a" || e.Time.IsZero() {
			t.Fatalf("filtered subscriber got %+v", e)
		}
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	b := NewBroker()
	s := b.Subscribe(2, nil)
	for i := 0; i < 10; i++ {
		b.Publish(Event{Type: "sandbox"})
	}
	if len(s.C) != 2 || s.Dropped() != 8 || s.Dropped() != 0 {
		t.Fatalf("buffered %d", len(s.C))
	}
	s.Close()
	b.Publish(Event{Type: "sandbox"})
	if len(s.C) != 2 {
		t.Fatal("closed subscription still receives")
	}
}
