//go:build remote

package remotee2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestScopedDropInVerifies checks deploy/systemd/blauthd-scoped.conf.example with
// systemd-analyze verify, applied as a drop-in to the packaged blauthd.service (paths pointed at
// the binaries of this checkout, which verify requires to exist): no warning. A copy with a
// misspelt key is checked too, and must draw a warning, which shows the drop-in was read.
func TestScopedDropInVerifies(t *testing.T) {
	needCommands(t, "systemd", "systemd-analyze")
	dir := newDir(t, "units", 0o700)
	runtimeDir := filepath.Join(dir, "run")
	mkdirs(t, 0o700, -1, runtimeDir, filepath.Join(dir, "user", "blauthd.service.d"))
	paths := strings.NewReplacer("/usr/bin/blauthd", suite.bins.Blauthd, "/usr/bin/blauth-helper", suite.bins.Helper)
	for _, f := range []string{"blauthd.service", "blauthd.socket"} {
		data, err := os.ReadFile(filepath.Join(suite.repo, "systemd", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "user", f), []byte(paths.Replace(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dropIn, err := os.ReadFile(filepath.Join(suite.repo, "deploy/systemd/blauthd-scoped.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ExecStart=\S*blauthd .*--scoped-socket=%t/blauth-fwd/blauthd\.sock=`).Match(dropIn) {
		t.Fatalf("the drop-in's ExecStart= serves no scoped socket in %%t/blauth-fwd:\n%s", dropIn)
	}
	verify := func(text string) result {
		conf := filepath.Join(dir, "user", "blauthd.service.d", "scoped.conf")
		if err := os.WriteFile(conf, []byte(paths.Replace(text)), 0o644); err != nil {
			t.Fatal(err)
		}
		return runCmd(time.Minute, baseEnv("HOME="+dir, "XDG_RUNTIME_DIR="+runtimeDir, "SYSTEMD_UNIT_PATH="+filepath.Join(dir, "user")+":"),
			"", "systemd-analyze", "verify", "--user", filepath.Join(dir, "user", "blauthd.service"))
	}
	if r := verify(string(dropIn)); r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Fatalf("systemd-analyze verify with the drop-in: %s", r)
	}
	if r := verify(string(dropIn) + "RuntimeDirectoryMod=0700\n"); !strings.Contains(r.stderr, "RuntimeDirectoryMod") {
		t.Fatalf("a misspelt key in the drop-in drew no warning, so the drop-in was not read: %s", r)
	}
}

// TestDeployFilesAgree checks what the deploy files must agree on, without running anything:
// the image's user and socket, the paths the daemon serves and the app is told, and the uid of
// every container.
func TestDeployFilesAgree(t *testing.T) {
	df, err := os.ReadFile(filepath.Join(suite.repo, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"FROM scratch\n", "USER 65532:65532\n", "ENV BLAUTH_SOCKET=/run/blauth/blauthd.sock BLAUTH_NO_SPAWN=1\n",
		`ENTRYPOINT ["/blauthd", "--socket", "/run/blauth/blauthd.sock", "--log-format", "json", "--no-keyring"]`,
	} {
		if !strings.Contains(string(df), want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
	if strings.Contains(string(df), "\nRUN ") {
		t.Error("deploy/Dockerfile runs a command: the image has no shell, and nothing may be pulled to build it")
	}

	var cf composeFile
	decodeStrict(t, "deploy/compose.yaml", &cf)
	var p pod
	decodeStrict(t, "deploy/kubernetes/pod.yaml", &p)
	served := strings.SplitN(argAfter(t, cf.Services["blauthd"].Command, "--scoped-socket"), "=", 2)[0]
	podServed := strings.SplitN(argAfter(t, p.Spec.InitContainers[0].Args, "--scoped-socket"), "=", 2)[0]
	if served != podServed {
		t.Errorf("compose serves %s, the pod %s: keep one layout", served, podServed)
	}
	if got := cf.Services["app"].Environment["BLAUTH_SOCKET"]; got != served {
		t.Errorf("compose's app looks for %s, the daemon serves %s", got, served)
	}
	for _, v := range p.Spec.Containers[0].Env {
		if v.Name == "BLAUTH_SOCKET" && v.Value != served {
			t.Errorf("the pod's app looks for %s, the daemon serves %s", v.Value, served)
		}
	}
	if cf.Services["app"].User != "65532:65532" || p.Spec.SecurityContext.RunAsUser != 65532 || p.Spec.SecurityContext.RunAsGroup != 65532 {
		t.Error("every client container must run as the image's user, 65532:65532: the daemon answers only its own uid")
	}
	for _, m := range append(p.Spec.InitContainers[0].VolumeMounts, p.Spec.Containers[0].VolumeMounts...) {
		if !strings.HasPrefix(served, m.MountPath+"/") {
			t.Errorf("the pod mounts %s at %s, which does not hold %s", m.Name, m.MountPath, served)
		}
	}

	dc := readDevcontainer(t)
	if got, want := dc.ContainerEnv["BLAUTH_SOCKET"], "/run/blauth-host/blauthd.sock"; got != want {
		t.Errorf("devcontainer.json sets BLAUTH_SOCKET=%s, want %s (the mount's target and the drop-in's file name)", got, want)
	}
	if !strings.Contains(strings.Join(dc.Mounts, "\n"), "source=${localEnv:XDG_RUNTIME_DIR}/blauth-fwd,target=/run/blauth-host,") {
		t.Errorf("devcontainer.json does not mount the drop-in's socket directory (%%t/blauth-fwd) at /run/blauth-host: %v", dc.Mounts)
	}
}

func argAfter(t *testing.T, args []string, flag string) string {
	t.Helper()
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return ""
}
