package agent

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/proc"
)

// account is a user as the sandbox's own /etc/passwd and /etc/group say.
type account struct {
	Name   string
	UID    int
	GID    int
	Groups []uint32
	Home   string
	Shell  string
}

// DefaultUser is who processes run as and files belong to unless the
// caller (or the template's defaults) says otherwise.
const DefaultUser = proc.DefaultUser

// lookupUser resolves a name or a numeric uid against the sandbox's
// /etc/passwd (and /etc/group for supplementary groups). A numeric uid
// without an entry is allowed, with gid equal to uid and home "/".
// "uid:gid" (numbers, as an image's user resolves to) sets the group too.
func lookupUser(etc, who string) (account, error) {
	if who == "" {
		who = DefaultUser
	}
	if u, g, ok := strings.Cut(who, ":"); ok {
		return lookupIDs(etc, u, g)
	}
	numeric, numErr := strconv.Atoi(who)
	if numErr == nil && (numeric < 0 || numeric > 65535) {
		return account{}, fmt.Errorf("uid %d is outside 0..65535", numeric)
	}
	var acc account
	found := false
	err := scanColon(etc+"/passwd", 7, func(f []string) bool {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return true
		}
		if f[0] == who || (numErr == nil && uid == numeric) {
			acc = account{Name: f[0], UID: uid, GID: gid, Home: f[5], Shell: f[6]}
			found = true
			return false
		}
		return true
	})
	if err != nil && !os.IsNotExist(err) {
		return account{}, err
	}
	if !found {
		if numErr != nil {
			return account{}, fmt.Errorf("no user %q in the sandbox's /etc/passwd", who)
		}
		return account{Name: who, UID: numeric, GID: numeric, Home: "/", Shell: "/bin/sh"}, nil
	}
	_ = scanColon(etc+"/group", 4, func(f []string) bool { // best effort: no group file, no extra groups
		gid, err := strconv.Atoi(f[2])
		if err != nil || gid == acc.GID {
			return true
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == acc.Name {
				acc.Groups = append(acc.Groups, uint32(gid))
			}
		}
		return true
	})
	return acc, nil
}

// scanColon calls fn with the fields of every well-formed line of a
// colon-separated file until fn returns false.
func scanColon(path string, nfields int, fn func([]string) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < nfields {
			continue
		}
		if !fn(fields) {
			return nil
		}
	}
	return sc.Err()
}

// lookupIDs resolves "uid:gid": the account of uid if /etc/passwd has one
// (its name, home, shell and supplementary groups), with gid as its group.
func lookupIDs(etc, u, g string) (account, error) {
	gid, err := strconv.Atoi(g)
	if err != nil || gid < 0 || gid > 65535 {
		return account{}, fmt.Errorf("user %s:%s: want uid:gid, numbers in 0..65535", u, g)
	}
	if _, err := strconv.Atoi(u); err != nil {
		return account{}, fmt.Errorf("user %s:%s: want uid:gid, numbers in 0..65535", u, g)
	}
	acc, err := lookupUser(etc, u)
	if err != nil {
		return account{}, err
	}
	if acc.GID != gid {
		acc.GID = gid
		acc.Groups = nil // they were the passwd entry's group's neighbours
	}
	return acc, nil
}
