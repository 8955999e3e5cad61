package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// cmdExec runs a command with BL_WORKSPACE and BL_API_KEY set to the daemon's answer, in place
// of the helper's process; with --proxy, behind blauth-proxy (proxy.go).
func (a *app) cmdExec(args []string) int {
	if len(args) > 0 {
		if name, _, _ := strings.Cut(args[0], "="); slices.Contains(execFollowFlags, name) {
			return a.cmdExecFollow(args) // restart.go
		}
	}
	viaProxy := false
	if len(args) > 0 && args[0] == "--proxy" {
		viaProxy, args = true, args[1:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	} else if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		return a.usageError(unknownFlag(args[0], append([]string{"--proxy"}, append(execFollowFlags, globalOptions...)...)))
	}
	if len(args) == 0 {
		return a.usageError("exec needs a command: blauth-helper exec [--proxy] -- CMD [ARGS]")
	}
	t, err := a.token(a.workspace)
	if err != nil {
		return a.fail(err)
	}
	if err := ipc.DotenvConflict(t, viaProxy); err != nil {
		return a.fail(err)
	}
	if viaProxy {
		return a.execProxy(t, append([]string{"exec", "--"}, args...))
	}
	path, err := a.lookPath(args[0])
	if err != nil {
		a.printError(err.Error(), "")
		return 127
	}
	a.warn(t.Hint)
	env := withEnv(a.environ(), "BL_WORKSPACE", t.Workspace, "BL_API_KEY", t.Token)
	status, err := a.exec(path, args, env)
	if err != nil {
		a.printError(fmt.Sprintf("exec %s: %v", args[0], err), "")
		return 126
	}
	return status
}

// withEnv returns environ with the given variables set, replacing any earlier value.
func withEnv(environ []string, kv ...string) []string {
	set := map[string]bool{}
	for i := 0; i+1 < len(kv); i += 2 {
		set[kv[i]] = true
	}
	out := make([]string, 0, len(environ)+len(set))
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		if !set[k] {
			out = append(out, e)
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}
