package agent

import (
	"slices"
	"testing"
)

func TestFamily(t *testing.T) {
	procs := []procStat{
		{pid: 10, ppid: 1, pgrp: 10, sid: 10},               // the exec
		{pid: 11, ppid: 10, pgrp: 10, sid: 10},              // its child
		{pid: 12, ppid: 11, pgrp: 12, sid: 10},              // a child in a group of its own
		{pid: 13, ppid: 12, pgrp: 13, sid: 13},              // left the session, still a descendant
		{pid: 14, ppid: 1, pgrp: 14, sid: 10},               // orphaned, still in the session
		{pid: 15, ppid: 1, pgrp: 10, sid: 10, zombie: true}, // dead already
		{pid: 20, ppid: 1, pgrp: 20, sid: 20},               // another exec
		{pid: 21, ppid: 20, pgrp: 20, sid: 20},
	}
	got := family(procs, 10)
	slices.Sort(got)
	if want := []int{10, 11, 12, 13, 14}; !slices.Equal(got, want) {
		t.Fatalf("family of 10: %v, want %v", got, want)
	}
	if got := family(procs, 20); !slices.Equal(got, []int{20, 21}) {
		t.Fatalf("family of 20: %v", got)
	}
	if got := family(procs, 99); len(got) != 0 {
		t.Fatalf("family of a gone leader: %v", got)
	}
}
