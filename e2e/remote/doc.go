//go:build remote

// Package remotee2e proves blauth beyond one machine with the engines users already have: a
// real OpenSSH server and client forwarding blauthd's scoped socket, a real Docker engine
// running the project's own container image (built FROM scratch from deploy/Dockerfile) as a
// sidecar and as a client, the deploy/ files (compose.yaml, kubernetes/pod.yaml,
// devcontainer/devcontainer.json, systemd/blauthd-scoped.conf.example) read and run as written,
// and a user namespace that hides the peer's uid (65534). docs/REMOTE.md says what each test
// proved and what was not tested.
//
//	make test-remote    # go test -tags remote -count=1 -timeout 20m -v ./e2e/remote/
//
// It runs as root (sshd, dockerd, setpriv, user namespaces need it) and needs openssh-server,
// openssh-client, docker.io and systemd's systemd-analyze (.ci/install-deps.sh installs them).
// Everything it starts lives under one temporary directory (/tmp/bl-remote-*): sshd on a
// loopback port with a throwaway host key and user key, a private dockerd without a bridge
// network (.ci/dockerd.sh), blauthd processes against the fake Blaxel API on 127.0.0.1. Nothing
// is pulled. TestMain stops all of it and fails the run when any process is left. Where CI=true
// and a component is missing, the tests that need it fail; elsewhere they are skipped with the
// reason.
package remotee2e
