//go:build remote

package remotee2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
)

// engine is a private Docker engine for the run (.ci/dockerd.sh: no bridge network, no
// iptables, its own data and exec roots under the run's directory), and the images built on it
// from the project's binaries. Nothing is pulled.
type engine struct {
	dir string   // dockerd.sh's DIR
	env []string // DOCKER_HOST and DOCKER_BUILDKIT=0, added to the client's environment

	image    string // the project's image, built from deploy/Dockerfile
	appImage string // an application image holding only the helper (COPY --from the image)

	mu         sync.Mutex
	containers []string // ids of every container started
	names      []string // names given, for removal
	volumes    []string
}

var (
	engineOnce sync.Once
	engineErr  error
)

// needDocker returns the run's engine, started (and its images built) by the first test that
// needs it; TestMain stops it. The test fails in CI, and is skipped elsewhere, when root,
// dockerd or the docker client is missing; it fails when the engine cannot start.
func needDocker(t *testing.T) *engine {
	t.Helper()
	needRoot(t)
	needCommands(t, "docker.io", "dockerd", "docker")
	engineOnce.Do(func() {
		e := &engine{dir: filepath.Join(suite.root, "d")}
		suite.mu.Lock()
		suite.engine = e
		suite.mu.Unlock()
		t0 := time.Now()
		r := runCmd(2*time.Minute, nil, "", filepath.Join(suite.repo, ".ci/dockerd.sh"), "start", e.dir)
		if r.code != 0 {
			engineErr = fmt.Errorf(".ci/dockerd.sh start: %s", r)
			return
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		host := lines[len(lines)-1]
		if !strings.HasPrefix(host, "unix://") {
			engineErr = fmt.Errorf(".ci/dockerd.sh printed %q, not a DOCKER_HOST", host)
			return
		}
		e.env = []string{"DOCKER_HOST=" + host, "DOCKER_BUILDKIT=0"}
		timing("docker: start a private dockerd", time.Since(t0))
		t0 = time.Now()
		engineErr = e.buildImages()
		timing("docker: build the image (deploy/build-image.sh) and an app image", time.Since(t0))
	})
	if engineErr != nil {
		t.Fatalf("the Docker engine or the images could not be set up: %v", engineErr)
	}
	return suite.engine
}

// docker runs the docker client against the engine.
func (e *engine) docker(timeout time.Duration, args ...string) result {
	return e.dockerEnv(timeout, nil, args...)
}

// dockerEnv runs the docker client with more variables in its environment (`-e NAME` takes a
// value from there, so that a secret stays off the command line).
func (e *engine) dockerEnv(timeout time.Duration, env []string, args ...string) result {
	return runCmd(timeout, append(append(baseEnv("HOME="+e.dir), e.env...), env...), "", "docker", args...)
}

// must runs docker and fails the test on a non-zero exit.
func (e *engine) must(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	r := e.docker(timeout, args...)
	if r.code != 0 {
		t.Fatalf("docker %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.stdout)
}

const appDockerfile = `FROM scratch
# An application image that needs a token: only the helper, taken from blauth's image as
# docs/REMOTE.md suggests.
COPY --from=%s /blauth-helper /usr/local/bin/blauth-helper
USER 65532:65532
`

func (e *engine) buildImages() error {
	id := strings.ToLower(strings.TrimPrefix(filepath.Base(suite.root), "bl-remote-"))
	e.image = "blauth-e2e-remote:" + id
	e.appImage = "blauth-e2e-remote-app:" + id
	// Exactly what users run: the script lays out the context, deploy/Dockerfile builds it.
	env := append(append(baseEnv("HOME="+e.dir), e.env...), "GOFLAGS="+os.Getenv("GOFLAGS"))
	r := runCmd(5*time.Minute, env, "", filepath.Join(suite.repo, "deploy/build-image.sh"), suite.bins.Dir, e.image)
	if r.code != 0 {
		return fmt.Errorf("deploy/build-image.sh: %s", r)
	}
	ctx, err := os.MkdirTemp(suite.root, "app-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(fmt.Sprintf(appDockerfile, e.image)), 0o644); err != nil {
		return err
	}
	if r := e.docker(5*time.Minute, "build", "-q", "-t", e.appImage, ctx); r.code != 0 {
		return fmt.Errorf("docker build of the app image: %s", r)
	}
	return nil
}

// name returns a container or volume name unique to the run, and remembers it for removal.
func (e *engine) name(t *testing.T, what string) string {
	n := fmt.Sprintf("bl-%s-%s-%d", what, strings.TrimPrefix(filepath.Base(suite.root), "bl-remote-"), time.Now().UnixNano()%1e9)
	e.mu.Lock()
	e.names = append(e.names, n)
	e.mu.Unlock()
	t.Cleanup(func() { e.docker(time.Minute, "rm", "-f", "-v", n) })
	return n
}

// remember records a container's id: the leftover check looks for processes in its cgroup.
func (e *engine) remember(t *testing.T, name string) {
	t.Helper()
	r := e.docker(30*time.Second, "inspect", "-f", "{{.Id}}", name)
	if r.code != 0 {
		return // it was never created
	}
	e.mu.Lock()
	e.containers = append(e.containers, strings.TrimSpace(r.stdout))
	e.mu.Unlock()
}

// start runs a container in the background (docker run -d) and returns its name.
func (e *engine) start(t *testing.T, what string, env []string, args ...string) string {
	t.Helper()
	n := e.name(t, what)
	r := e.dockerEnv(time.Minute, env, append([]string{"run", "-d", "--name", n}, args...)...)
	e.remember(t, n)
	if r.code != 0 {
		t.Fatalf("docker run %s: %s", strings.Join(args, " "), r)
	}
	t.Cleanup(func() {
		if r := e.docker(30*time.Second, "logs", n); r.code == 0 {
			t.Logf("container %s logged:\n%s%s", n, r.stdout, r.stderr)
		}
	})
	return n
}

// runOnce runs a container to its end (docker run, bounded) and returns the result: stdout and
// stderr are the container's.
func (e *engine) runOnce(t *testing.T, what string, args ...string) (result, string) {
	t.Helper()
	n := e.name(t, what)
	r := e.docker(2*time.Minute, append([]string{"run", "--name", n}, args...)...)
	e.remember(t, n)
	return r, n
}

// volume creates a volume (removed when the test ends) and returns its name.
func (e *engine) volume(t *testing.T, opts ...string) string {
	t.Helper()
	n := fmt.Sprintf("bl-vol-%s-%d", strings.TrimPrefix(filepath.Base(suite.root), "bl-remote-"), time.Now().UnixNano()%1e9)
	e.must(t, time.Minute, append(append([]string{"volume", "create"}, opts...), n)...)
	e.mu.Lock()
	e.volumes = append(e.volumes, n)
	e.mu.Unlock()
	// Registered after the containers' removal (cleanups run last first), so it runs after them.
	t.Cleanup(func() {
		if r := e.docker(time.Minute, "volume", "rm", n); r.code != 0 {
			t.Errorf("docker volume rm %s: %s", n, r)
		}
	})
	return n
}

// waitExec runs argv in a container until it exits 0 (a probe), at most timeout.
func (e *engine) waitExec(t *testing.T, container string, timeout time.Duration, argv ...string) {
	t.Helper()
	var last result
	if !testkit.Eventually(timeout, func() bool {
		last = e.docker(30*time.Second, append([]string{"exec", container}, argv...)...)
		return last.code == 0
	}) {
		t.Fatalf("%s in %s did not succeed within %s: %s", strings.Join(argv, " "), container, timeout, last)
	}
}

func (e *engine) containerIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.containers...)
}

// stop removes what the run made in the engine, then the engine itself (dockerd.sh stop also
// removes any container left and the whole data root).
func (e *engine) stop() error {
	var errs []error
	if e.env != nil {
		e.mu.Lock()
		names, vols := e.names, e.volumes
		e.mu.Unlock()
		for _, n := range names {
			e.docker(time.Minute, "rm", "-f", "-v", n)
		}
		for _, v := range vols {
			e.docker(time.Minute, "volume", "rm", "-f", v)
		}
		for _, img := range []string{e.appImage, e.image} {
			if img != "" {
				e.docker(time.Minute, "rmi", "-f", img)
			}
		}
		if r := e.docker(30*time.Second, "ps", "-aq"); strings.TrimSpace(r.stdout) != "" {
			errs = append(errs, fmt.Errorf("containers left in the engine: %s", strings.TrimSpace(r.stdout)))
		}
	}
	if r := runCmd(3*time.Minute, nil, "", filepath.Join(suite.repo, ".ci/dockerd.sh"), "stop", e.dir); r.code != 0 {
		errs = append(errs, fmt.Errorf(".ci/dockerd.sh stop: %s", r))
	}
	return errors.Join(errs...)
}
