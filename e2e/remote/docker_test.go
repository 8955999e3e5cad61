//go:build remote

package remotee2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// writeEnvFile writes KEY=VALUE lines to a new 0600 file for docker --env-file: the docker
// client reads it, so the secrets never reach a command line.
func writeEnvFile(t *testing.T, kv ...string) string {
	t.Helper()
	f := filepath.Join(newDir(t, "env", 0o700), "blauth.env")
	if err := os.WriteFile(f, []byte(strings.Join(kv, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// containerEnv returns the environment a container was given (docker inspect), one KEY=VALUE
// per entry.
func (e *engine) containerEnv(t *testing.T, name string) []string {
	t.Helper()
	var env []string
	if err := json.Unmarshal([]byte(e.must(t, 30*time.Second, "inspect", "-f", "{{json .Config.Env}}", name)), &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// stopCleanly stops a container as docker stop does (SIGTERM to blauthd, PID 1) and fails the
// test unless it exits 0 having said it stopped.
func (e *engine) stopCleanly(t *testing.T, name string) {
	t.Helper()
	e.must(t, time.Minute, "stop", "-t", "15", name)
	if code := e.must(t, 30*time.Second, "inspect", "-f", "{{.State.ExitCode}}", name); code != "0" {
		t.Errorf("blauthd in %s exited with %s after docker stop, want 0", name, code)
	}
	if r := e.docker(30*time.Second, "logs", name); !strings.Contains(r.stderr+r.stdout, `"message":"blauthd stopped"`) {
		t.Errorf("blauthd in %s did not log its clean stop:\n%s%s", name, r.stdout, r.stderr)
	}
}

// imageFiles lists what a container of image holds (docker export), with each entry's mode,
// uid and gid.
func (e *engine) imageFiles(t *testing.T, image string) map[string]*tar.Header {
	t.Helper()
	n := e.name(t, "export")
	e.must(t, time.Minute, "create", "--name", n, image)
	e.remember(t, n)
	r := e.docker(2*time.Minute, "export", n)
	if r.code != 0 {
		t.Fatalf("docker export: %s", r)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(strings.NewReader(r.stdout))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
	}
	return files
}

// TestImageIsStaticNonRootAndShellLess builds deploy/Dockerfile with deploy/build-image.sh and
// checks what it holds and how it runs by default: the daemon as uid 65532 with its socket in
// /run/blauth, reached by an application container through a named volume mounted there.
func TestImageIsStaticNonRootAndShellLess(t *testing.T) {
	e := needDocker(t)
	t.Run("two static binaries and the socket directory, nothing else", func(t *testing.T) {
		files := e.imageFiles(t, e.image)
		// What docker create adds to every container's file system.
		stubs := []string{".dockerenv", "dev", "dev/console", "dev/pts", "dev/shm", "etc", "etc/hostname", "etc/hosts", "etc/mtab", "etc/resolv.conf", "proc", "sys"}
		var extra []string
		for name := range files {
			if !slices.Contains(stubs, name) && !slices.Contains([]string{"blauthd", "blauth-helper", "run", "run/blauth"}, name) {
				extra = append(extra, name)
			}
		}
		if len(extra) > 0 {
			t.Errorf("the image holds more than the binaries and /run/blauth: %v", extra)
		}
		for _, want := range []struct {
			name     string
			mode     int64
			uid, gid int
		}{{"blauthd", 0o755, 0, 0}, {"blauth-helper", 0o755, 0, 0}, {"run", 0o755, 0, 0}, {"run/blauth", 0o700, 65532, 65532}} {
			h := files[want.name]
			if h == nil {
				t.Errorf("the image has no /%s", want.name)
				continue
			}
			if h.Mode&0o7777 != want.mode || h.Uid != want.uid || h.Gid != want.gid {
				t.Errorf("/%s is mode %#o uid %d gid %d, want %#o %d %d", want.name, h.Mode&0o7777, h.Uid, h.Gid, want.mode, want.uid, want.gid)
			}
		}
		var cfg struct {
			User       string
			Entrypoint []string
			Env        []string
		}
		if err := json.Unmarshal([]byte(e.must(t, 30*time.Second, "image", "inspect", "-f", "{{json .Config}}", e.image)), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.User != "65532:65532" || !slices.Equal(cfg.Entrypoint, []string{"/blauthd", "--socket", "/run/blauth/blauthd.sock", "--log-format", "json", "--no-keyring"}) ||
			!slices.Contains(cfg.Env, "BLAUTH_SOCKET=/run/blauth/blauthd.sock") {
			t.Errorf("image config: %+v", cfg)
		}
		r, _ := e.runOnce(t, "shell", "--network", "none", "--entrypoint", "/bin/sh", e.image, "-c", "true")
		if r.code == 0 {
			t.Error("a shell ran in the image")
		}
	})

	t.Run("build-image.sh refuses a binary that needs libc", func(t *testing.T) {
		dir := newDir(t, "dynbin", 0o755)
		for _, b := range []string{"blauthd", "blauth-helper"} {
			data, err := os.ReadFile("/bin/true")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, b), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		r := runCmd(time.Minute, append(baseEnv("HOME="+e.dir), e.env...), "", filepath.Join(suite.repo, "deploy/build-image.sh"), dir, "blauth-e2e-never:built")
		if r.code == 0 || !strings.Contains(r.stderr, "was not built with CGO_ENABLED=0") {
			t.Fatalf("build-image.sh with a dynamically linked binary: %s", r)
		}
	})

	t.Run("a named volume on /run/blauth shares the daemon's socket", func(t *testing.T) {
		api, cc, secret := fakeAPI(t, 2*time.Hour, "acme")
		envFile := writeEnvFile(t, "BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS="+cc, "BL_API_URL="+api.Base)
		vol := e.volume(t)
		// --network host: the daemon reaches the fake API on 127.0.0.1 (a real one reaches
		// Blaxel's API over the container's own network).
		side := e.start(t, "sidecar", nil, "--network", "host", "--env-file", envFile, "-v", vol+":/run/blauth", e.image)
		e.waitExec(t, side, 20*time.Second, "/blauth-helper", "ping")
		client := []string{"--network", "none", "-v", vol + ":/run/blauth", "-e", ipc.SocketEnv + "=/run/blauth/blauthd.sock", "-e", "BLAUTH_NO_SPAWN=1"}
		r, _ := e.runOnce(t, "app", append(append([]string{"--user", "65532:65532"}, client...), e.appImage, "/usr/local/bin/blauth-helper", "token")...)
		tok := strings.TrimSpace(r.stdout)
		if r.code != 0 || !apiAccepts(t, api, tok, "acme") {
			t.Fatalf("the app container's token: %s", r)
		}
		// The volume took the image's directory: 0700, uid 65532. Another uid cannot enter it.
		r, _ = e.runOnce(t, "app-other-uid", append(append([]string{"--user", "1000:1000"}, client...), e.appImage, "/usr/local/bin/blauth-helper", "token")...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "permission denied") {
			t.Fatalf("an app container of uid 1000: %s", r)
		}
		e.stopCleanly(t, side)
		logs := e.docker(30*time.Second, "logs", side)
		noSecrets(t, "the sidecar's log", logs.stdout+logs.stderr, cc, secret, tok)
	})
}

// TestDevcontainerGetsTheHostScopedSocket runs a container the way deploy/devcontainer's
// devcontainer.json sets it up, as the devcontainer tools run it on Linux: the host's scoped
// socket directory and the host's helper bind-mounted, its variables set, and the container
// user given the host user's uid (updateRemoteUserUID; here root, the test's user).
func TestDevcontainerGetsTheHostScopedSocket(t *testing.T) {
	e := needDocker(t)
	dc := readDevcontainer(t)
	api, cc, secret := fakeAPI(t, 2*time.Hour, "acme")
	host := newDir(t, "host", 0o700)
	runtimeDir, home := filepath.Join(host, "run"), filepath.Join(host, "home")
	mkdirs(t, 0o700, -1, runtimeDir, home)
	fwd := filepath.Join(runtimeDir, "blauth-fwd", ipc.SocketName)
	d := startDaemon(t, daemonOpts{
		socket: filepath.Join(runtimeDir, "blauth", ipc.SocketName), home: home, sockets: []string{fwd},
		args: []string{"--scoped-socket", fwd + "=acme"},
		env:  []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc, "BL_API_URL=" + api.Base},
	})
	args := []string{"--network", "none"}
	for _, m := range dc.mounts(t, map[string]string{"${localEnv:XDG_RUNTIME_DIR}": runtimeDir, "/usr/bin/blauth-helper": suite.bins.Helper}) {
		args = append(args, "--mount", m)
	}
	for _, k := range sortedKeys(dc.ContainerEnv) {
		args = append(args, "-e", k+"="+dc.ContainerEnv[k])
	}
	// The devcontainer's own image is a Debian one; any image runs the bind-mounted static helper.
	helper := "/usr/local/bin/blauth-helper"
	asHost := append([]string{"--user", "0:0"}, args...)

	r, _ := e.runOnce(t, "devc", append(asHost, e.appImage, helper, "token")...)
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !apiAccepts(t, api, tok, "acme") {
		t.Fatalf("blauth-helper token in the devcontainer: %s", r)
	}
	r, _ = e.runOnce(t, "devc-other", append(asHost, e.appImage, helper, "-w", "other", "token")...)
	if r.code != 1 || !strings.Contains(r.stderr, "workspace other is not served on this socket") {
		t.Errorf("another workspace from the devcontainer: %s", r)
	}
	r, _ = e.runOnce(t, "devc-status", append(asHost, e.appImage, helper, "status")...)
	if r.code != 1 || !strings.Contains(r.stderr, "answers only get, watch and ping") {
		t.Errorf("status from the devcontainer: %s", r)
	}
	// A container user that is not the host user cannot even reach the socket: its directory
	// is 0700 and the socket 0600 (what docs/REMOTE.md tells users to fix with the uid).
	r, _ = e.runOnce(t, "devc-uid", append(append([]string{"--user", "1000:1000"}, args...), e.appImage, helper, "token")...)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("a container user of uid 1000: %s", r)
	}
	d.stop(t)
	noSecrets(t, "blauthd's log", d.log.String(), cc, secret, tok)
}

// TestContainerAsRootIsToldWhy runs the host daemon as an ordinary user (uid 4242) with its
// scoped socket bind-mounted into containers: one run as that user gets a token; one run as
// root, docker's default, reaches the socket (root passes the file modes) and is refused by the
// daemon's peer check, with the reason and the fix.
func TestContainerAsRootIsToldWhy(t *testing.T) {
	e := needDocker(t)
	api, cc, secret := fakeAPI(t, 2*time.Hour, "acme")
	host := newDir(t, "user", 0o755)
	runtimeDir, home := filepath.Join(host, "run"), filepath.Join(host, "home")
	mkdirs(t, 0o700, otherUID, runtimeDir, home)
	fwd := filepath.Join(runtimeDir, "blauth-fwd", ipc.SocketName)
	d := startDaemon(t, daemonOpts{
		uid: otherUID, socket: filepath.Join(runtimeDir, "blauth", ipc.SocketName), home: home, sockets: []string{fwd},
		args: []string{"--scoped-socket", fwd + "=acme"},
		env:  []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc, "BL_API_URL=" + api.Base},
	})
	uid := strconv.Itoa(otherUID)
	args := []string{"--network", "none", "-v", filepath.Dir(fwd) + ":/run/blauth-host", "-e", ipc.SocketEnv + "=/run/blauth-host/" + ipc.SocketName, "-e", "BLAUTH_NO_SPAWN=1"}
	r, _ := e.runOnce(t, "as-user", append(append([]string{"--user", uid + ":" + uid}, args...), e.appImage, "/usr/local/bin/blauth-helper", "token")...)
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !apiAccepts(t, api, tok, "acme") {
		t.Fatalf("a container run as the daemon's user: %s", r)
	}
	r, _ = e.runOnce(t, "as-root", append(append([]string{"--user", "0:0"}, args...), e.appImage, "/usr/local/bin/blauth-helper", "token")...)
	want := "this daemon serves only its own user: the peer runs as uid 0; this daemon serves only uid " + uid
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, want) {
		t.Fatalf("a container run as root: %s\nwant the message %q", r, want)
	}
	d.stop(t)
	if !strings.Contains(d.log.String(), `"peer_uid":0`) {
		t.Errorf("the daemon did not log the refused peer's uid")
	}
	noSecrets(t, "blauthd's log", d.log.String(), cc, secret, tok)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// devcontainer is the part of devcontainer.json the test runs.
type devcontainer struct {
	Name                string            `json:"name"`
	Image               string            `json:"image"`
	UpdateRemoteUserUID bool              `json:"updateRemoteUserUID"`
	Mounts              []string          `json:"mounts"`
	ContainerEnv        map[string]string `json:"containerEnv"`
}

// readDevcontainer reads deploy/devcontainer/devcontainer.json, refusing fields it does not know
// (the test would not run them).
func readDevcontainer(t *testing.T) devcontainer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(suite.repo, "deploy/devcontainer/devcontainer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dc devcontainer
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&dc); err != nil {
		t.Fatalf("devcontainer.json: %v (a field the test does not run must be taught to it)", err)
	}
	if !dc.UpdateRemoteUserUID {
		t.Error("devcontainer.json must keep updateRemoteUserUID: the container user needs the host user's uid")
	}
	return dc
}

// mounts returns the --mount values of the devcontainer's mounts, with host paths replaced as
// the test's machine has them.
func (dc devcontainer) mounts(t *testing.T, replace map[string]string) []string {
	t.Helper()
	var out []string
	for _, m := range dc.Mounts {
		for from, to := range replace {
			m = strings.ReplaceAll(m, from, to)
		}
		if strings.Contains(m, "${") {
			t.Fatalf("devcontainer.json mount %q uses a variable the test does not set", m)
		}
		if !strings.Contains(m, "type=bind") {
			t.Fatalf("devcontainer.json mount %q: the test runs bind mounts only", m)
		}
		out = append(out, m)
	}
	return out
}
