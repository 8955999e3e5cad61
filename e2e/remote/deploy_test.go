//go:build remote

package remotee2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// The deploy/ manifests are run here by translating them to docker run, field by field. Each is
// decoded strictly: a field the test does not know fails it, so nothing shipped goes unread.
// Fields with no docker run equivalent (labels, resource requests, probe timing, Compose's
// health-check timing) are read and have no effect. What the translation cannot
// show (Compose's and the kubelet's own behaviour) is listed in docs/REMOTE.md.

// decodeStrict reads a YAML file of deploy/ into v, refusing unknown fields.
func decodeStrict(t *testing.T, rel string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(suite.repo, rel))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v (a field the test does not translate must be taught to it)", rel, err)
	}
}

// composeFile is the part of the Compose specification deploy/compose.yaml uses.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]struct {
		Driver     string            `yaml:"driver"`
		DriverOpts map[string]string `yaml:"driver_opts"`
	} `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	EnvFile     string            `yaml:"env_file"`
	Command     []string          `yaml:"command"`
	User        string            `yaml:"user"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	CapDrop     []string          `yaml:"cap_drop"`
	SecurityOpt []string          `yaml:"security_opt"`
	Restart     string            `yaml:"restart"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Retries  int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// runArgs translates a service to docker run flags (before the image). vols maps the file's
// volume names to the engine's; env holds the flags standing for env_file.
func (s composeService) runArgs(t *testing.T, vols map[string]string, envFile []string) []string {
	t.Helper()
	var args []string
	if s.EnvFile != "" {
		args = append(args, envFile...)
	}
	if s.User != "" {
		args = append(args, "--user", s.User)
	}
	for _, k := range sortedKeys(s.Environment) {
		args = append(args, "-e", k+"="+s.Environment[k])
	}
	for _, v := range s.Volumes {
		name, target, ok := strings.Cut(v, ":")
		if !ok || vols[name] == "" {
			t.Fatalf("compose volume %q: the test runs named volumes of the file only", v)
		}
		args = append(args, "-v", vols[name]+":"+target)
	}
	for _, c := range s.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	for _, o := range s.SecurityOpt {
		args = append(args, "--security-opt", o)
	}
	if s.Restart != "" {
		args = append(args, "--restart", s.Restart)
	}
	return args
}

// TestComposeSidecar runs deploy/compose.yaml's two services as written (the images replaced by
// the ones built from this checkout, the network by the host's to reach the fake API): the
// daemon with the service account from the env file, its health check, and the app getting a
// token through the scoped socket in the shared tmpfs volume, holding no secret itself.
func TestComposeSidecar(t *testing.T) {
	e := needDocker(t)
	var cf composeFile
	decodeStrict(t, "deploy/compose.yaml", &cf)
	daemonSvc, app := cf.Services["blauthd"], cf.Services["app"]
	if len(cf.Services) != 2 || daemonSvc.Image != "blauth:latest" || app.Image == "" {
		t.Fatalf("compose.yaml: want the services blauthd (image blauth:latest, as build-image.sh tags it) and app, got %+v", cf.Services)
	}
	if app.DependsOn["blauthd"].Condition != "service_healthy" || daemonSvc.Healthcheck == nil || daemonSvc.Healthcheck.Test[0] != "CMD" {
		t.Fatalf("compose.yaml: the app must wait for the daemon's health check, a CMD (the image has no shell)")
	}
	workspace := scopedWorkspace(t, daemonSvc.Command)
	api, cc, secret := fakeAPI(t, 2*time.Hour, workspace)

	vols := map[string]string{}
	for name, v := range cf.Volumes {
		opts := []string{"--driver", v.Driver}
		for _, k := range []string{"type", "device", "o"} {
			if v.DriverOpts[k] != "" {
				opts = append(opts, "--opt", k+"="+v.DriverOpts[k])
			}
		}
		vols[name] = e.volume(t, opts...)
	}
	// blauth.env as the compose file's comment tells users to write it; BL_API_URL points the
	// daemon at the fake API.
	envFile := writeEnvFile(t, "BL_WORKSPACE="+workspace, "BL_CLIENT_CREDENTIALS="+cc, "BL_API_URL="+api.Base)
	side := e.start(t, "compose-blauthd", nil, append(append([]string{"--network", "host"},
		daemonSvc.runArgs(t, vols, []string{"--env-file", envFile})...), append([]string{e.image}, daemonSvc.Command...)...)...)
	// Compose runs the health check itself; here it is the same argv, by docker exec.
	e.waitExec(t, side, 30*time.Second, daemonSvc.Healthcheck.Test[1:]...)

	helper := "/usr/local/bin/blauth-helper"
	if app.Command[0] != helper {
		t.Fatalf("compose.yaml: the app's command should start with %s (the test runs that helper), got %v", helper, app.Command)
	}
	appArgs := append([]string{"--network", "none"}, app.runArgs(t, vols, nil)...)
	r, appName := e.runOnce(t, "compose-app", append(appArgs, e.appImage, helper, "token")...)
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !apiAccepts(t, api, tok, workspace) {
		t.Fatalf("the app service's token: %s", r)
	}
	env := strings.Join(e.containerEnv(t, appName), "\n")
	noSecrets(t, "the app container's environment", env, cc, secret, tok)
	if strings.Contains(env, "BL_CLIENT_CREDENTIALS") {
		t.Errorf("the app container has BL_CLIENT_CREDENTIALS in its environment")
	}
	r, _ = e.runOnce(t, "compose-app-stop", append(appArgs, e.appImage, helper, "stop")...)
	if r.code != 1 || !strings.Contains(r.stderr, "answers only get, watch and ping") {
		t.Errorf("the app asked the daemon to stop: %s", r)
	}
	e.stopCleanly(t, side)
	logs := e.docker(30*time.Second, "logs", side)
	noSecrets(t, "the daemon service's log", logs.stdout+logs.stderr, cc, secret, tok)
}

// scopedWorkspace returns the one workspace of a --scoped-socket PATH=WORKSPACE flag.
func scopedWorkspace(t *testing.T, args []string) string {
	t.Helper()
	for i, a := range args {
		if a == "--scoped-socket" && i+1 < len(args) {
			_, ws, _ := strings.Cut(args[i+1], "=")
			return ws
		}
	}
	t.Fatalf("no --scoped-socket PATH=WORKSPACE in %v", args)
	return ""
}

// pod is the part of the Kubernetes Pod API deploy/kubernetes/pod.yaml uses.
type pod struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
		SecurityContext              struct {
			RunAsNonRoot   bool `yaml:"runAsNonRoot"`
			RunAsUser      int  `yaml:"runAsUser"`
			RunAsGroup     int  `yaml:"runAsGroup"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		Volumes []struct {
			Name     string `yaml:"name"`
			EmptyDir *struct {
				Medium    string `yaml:"medium"`
				SizeLimit string `yaml:"sizeLimit"`
			} `yaml:"emptyDir"`
		} `yaml:"volumes"`
		InitContainers []podContainer `yaml:"initContainers"`
		Containers     []podContainer `yaml:"containers"`
	} `yaml:"spec"`
}

type podContainer struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	Env           []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
}

type probe struct {
	Exec struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

var k8sVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// runArgs translates a container to docker run flags (before the image) and its argv after the
// image, as the kubelet would start it: the Pod's user, the container's env (secretKeyRef values
// from secrets, through an env file), $(VAR) references in args expanded from that env, the
// emptyDir volumes, no privilege escalation, the capabilities dropped, the memory limit.
func (c podContainer) runArgs(t *testing.T, p *pod, vols map[string]string, secrets map[string]string) (flags, argv []string) {
	t.Helper()
	sc := p.Spec.SecurityContext
	if !sc.RunAsNonRoot || sc.RunAsUser == 0 || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Fatalf("pod.yaml: the Pod must run as a non-root uid with the runtime's default seccomp profile (docker's default here)")
	}
	flags = []string{"--user", fmt.Sprintf("%d:%d", sc.RunAsUser, sc.RunAsGroup)}
	env := map[string]string{}
	var secretLines []string
	for _, v := range c.Env {
		switch {
		case v.ValueFrom != nil:
			ref := v.ValueFrom.SecretKeyRef
			val, ok := secrets[ref.Name+"/"+ref.Key]
			if !ok {
				t.Fatalf("pod.yaml: env %s refers to secret %s key %s, which the test does not make", v.Name, ref.Name, ref.Key)
			}
			env[v.Name] = val
			secretLines = append(secretLines, v.Name+"="+val)
		default:
			env[v.Name] = v.Value
			flags = append(flags, "-e", v.Name+"="+v.Value)
		}
	}
	if len(secretLines) > 0 {
		flags = append(flags, "--env-file", writeEnvFile(t, secretLines...))
	}
	for _, m := range c.VolumeMounts {
		if vols[m.Name] == "" {
			t.Fatalf("pod.yaml: container %s mounts %s, which is not an emptyDir of the Pod", c.Name, m.Name)
		}
		flags = append(flags, "-v", vols[m.Name]+":"+m.MountPath)
	}
	if ape := c.SecurityContext.AllowPrivilegeEscalation; ape != nil && !*ape {
		flags = append(flags, "--security-opt", "no-new-privileges")
	}
	for _, cap := range c.SecurityContext.Capabilities.Drop {
		flags = append(flags, "--cap-drop", cap)
	}
	if mem := c.Resources.Limits["memory"]; mem != "" {
		flags = append(flags, "--memory", k8sQuantity(t, mem))
	}
	if len(c.Command) > 0 {
		flags = append(flags, "--entrypoint", c.Command[0])
		argv = append(argv, c.Command[1:]...)
	}
	for _, a := range c.Args {
		argv = append(argv, k8sVarRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := k8sVarRef.FindStringSubmatch(ref)[1]
			if v, ok := env[name]; ok {
				return v
			}
			return ref // the kubelet leaves an unknown reference as written
		}))
	}
	return flags, argv
}

// k8sQuantity turns a binary-suffixed Kubernetes quantity (64Mi, 1Mi) into docker's (64m).
func k8sQuantity(t *testing.T, q string) string {
	t.Helper()
	for suffix, unit := range map[string]string{"Ki": "k", "Mi": "m", "Gi": "g"} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			if _, err := strconv.Atoi(n); err == nil {
				return n + unit
			}
		}
	}
	t.Fatalf("pod.yaml: the test translates quantities in Ki, Mi or Gi, not %q", q)
	return ""
}

// TestKubernetesPodAsContainers runs deploy/kubernetes/pod.yaml's containers with Docker, as the
// kubelet would start them: the emptyDir (medium Memory) as a tmpfs volume of mode 0777, as the
// kubelet makes one; the Secret's value from the test; the native sidecar first, the app once
// the sidecar's startup probe passed; the probes by docker exec. The app follows the token with
// a long-running watch, and its process's environment is read from /proc: no secret.
func TestKubernetesPodAsContainers(t *testing.T) {
	e := needDocker(t)
	var p pod
	decodeStrict(t, "deploy/kubernetes/pod.yaml", &p)
	if p.APIVersion != "v1" || p.Kind != "Pod" || len(p.Spec.InitContainers) != 1 || len(p.Spec.Containers) != 1 {
		t.Fatalf("pod.yaml: want a v1 Pod with one sidecar (init container) and one app container")
	}
	side, app := p.Spec.InitContainers[0], p.Spec.Containers[0]
	if side.RestartPolicy != "Always" || side.Image != "blauth:latest" {
		t.Fatalf("pod.yaml: the daemon must be a native sidecar (restartPolicy: Always) of image blauth:latest")
	}
	for _, pr := range []*probe{side.StartupProbe, side.LivenessProbe, side.ReadinessProbe} {
		if pr == nil || len(pr.Exec.Command) == 0 {
			t.Fatalf("pod.yaml: the sidecar needs startup, liveness and readiness probes, each an exec (the image has no shell)")
		}
	}
	vols := map[string]string{}
	for _, v := range p.Spec.Volumes {
		if v.EmptyDir == nil || v.EmptyDir.Medium != "Memory" {
			t.Fatalf("pod.yaml: volume %s: the test runs emptyDir volumes in memory only", v.Name)
		}
		vols[v.Name] = e.volume(t, "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
			"--opt", "o=size="+k8sQuantity(t, v.EmptyDir.SizeLimit)+",mode=0777")
	}
	var secretName string
	plain := map[string]string{}
	for _, v := range side.Env {
		if v.ValueFrom != nil {
			secretName = v.ValueFrom.SecretKeyRef.Name + "/" + v.ValueFrom.SecretKeyRef.Key
		} else {
			plain[v.Name] = v.Value
		}
	}
	if secretName != "blauth-service-account/BL_CLIENT_CREDENTIALS" {
		t.Fatalf("pod.yaml: the service account must come from the Secret blauth-service-account, key BL_CLIENT_CREDENTIALS (as the comment makes it), got %q", secretName)
	}
	workspace := k8sVarRef.ReplaceAllStringFunc(scopedWorkspace(t, side.Args), func(ref string) string {
		return plain[k8sVarRef.FindStringSubmatch(ref)[1]]
	})
	if workspace == "" {
		t.Fatalf("pod.yaml: the sidecar's --scoped-socket names no workspace")
	}
	api, cc, secret := fakeAPI(t, 2*time.Hour, workspace)
	secrets := map[string]string{secretName: cc}
	sideFlags, sideArgv := side.runArgs(t, &p, vols, secrets)
	if got := scopedWorkspace(t, sideArgv); got != workspace {
		t.Fatalf("the sidecar's args expand to workspace %q, want %q", got, workspace)
	}
	// BL_API_URL: the fake API for the test, on the host's network.
	name := e.start(t, "pod-blauthd", nil, append(append([]string{"--network", "host", "-e", "BL_API_URL=" + api.Base}, sideFlags...), append([]string{e.image}, sideArgv...)...)...)
	sp := side.StartupProbe
	e.waitExec(t, name, time.Duration(sp.PeriodSeconds*sp.FailureThreshold)*time.Second, sp.Exec.Command...)
	for what, pr := range map[string]*probe{"liveness": side.LivenessProbe, "readiness": side.ReadinessProbe} {
		if r := e.docker(time.Duration(pr.TimeoutSeconds+5)*time.Second, append([]string{"exec", name}, pr.Exec.Command...)...); r.code != 0 {
			t.Errorf("the %s probe fails: %s", what, r)
		}
	}

	appFlags, _ := app.runArgs(t, &p, vols, secrets)
	helper := "/usr/local/bin/blauth-helper"
	if len(app.Command) == 0 || app.Command[0] != helper {
		t.Fatalf("pod.yaml: the app's command should start with %s (the test runs that helper), got %v", helper, app.Command)
	}
	// The app's own command is replaced by a watch: a long-running client, as an agent is.
	appName := e.start(t, "pod-app", nil, append(append([]string{"--network", "none"}, appFlags...), e.appImage, "watch", "--json")...)
	var first string
	if !testkit.Eventually(30*time.Second, func() bool {
		r := e.docker(30*time.Second, "logs", appName)
		first = strings.TrimSpace(r.stdout)
		return first != ""
	}) {
		t.Fatalf("the app's watch printed nothing within 30 s")
	}
	tok := tokenOf(t, first)
	if !apiAccepts(t, api, tok, workspace) {
		t.Fatalf("the app's token is refused by the API: %s", first)
	}
	pid := e.must(t, 30*time.Second, "inspect", "-f", "{{.State.Pid}}", appName)
	environ, err := os.ReadFile(filepath.Join("/proc", pid, "environ"))
	if err != nil {
		t.Fatal(err)
	}
	noSecrets(t, "the app process's environment", string(environ), cc, secret, tok)
	if !strings.Contains(string(environ), ipc.SocketEnv+"=/run/shared/blauth/blauthd.sock") {
		t.Errorf("read the wrong process's environment? %q", environ)
	}
	e.must(t, time.Minute, "stop", "-t", "10", appName)
	if code := e.must(t, 30*time.Second, "inspect", "-f", "{{.State.ExitCode}}", appName); code != "0" {
		t.Errorf("the app's watch exited %s on SIGTERM, want 0", code)
	}
	e.stopCleanly(t, name)
	logs := e.docker(30*time.Second, "logs", name)
	noSecrets(t, "the sidecar's log", logs.stdout+logs.stderr, cc, secret, tok)
}

// tokenOf reads the token of one line of `blauth-helper watch --json`.
func tokenOf(t *testing.T, line string) string {
	t.Helper()
	var m struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(line), &m); err != nil || m.Token == "" {
		t.Fatalf("watch printed %q", line)
	}
	return m.Token
}
