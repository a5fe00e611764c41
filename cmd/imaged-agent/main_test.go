package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func runAgent(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(context.Background(), append([]string{"imaged-agent"}, args...), &o, &e)
	return o.String(), e.String(), err
}

func TestCommandLine(t *testing.T) {
	if out, _, err := runAgent("-version"); err != nil || !strings.HasPrefix(out, "imaged-agent ") {
		t.Errorf("-version: %q %v", out, err)
	}
	if _, stderr, err := runAgent("-h"); err != nil || !strings.Contains(stderr, "-cmdline") {
		t.Errorf("-h: %v %q", err, stderr)
	}
	for _, args := range [][]string{{"-frobnicate"}, {"serve"}, {"-cmdline", "imaged.server=://nope imaged.token=T"}} {
		_, _, err := runAgent(args...)
		if _, ok := err.(usageError); !ok {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	// Started as /init by hand (not PID 1): RunInit refuses and touches nothing.
	var o, e bytes.Buffer
	err := run(context.Background(), []string{"/init"}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Errorf("as /init outside PID 1: %v", err)
	}
}
