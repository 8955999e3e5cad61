#!/usr/bin/env bash
# CI: build, install, check, run and remove the blauth packages for real, as root on Debian.
#
#   bash .ci/packaging.sh
#
# (a) cross-compiles both binaries for linux and darwin on amd64 and arm64, and checks the
#     launchd agent's property list;
# (b) builds the .deb and .rpm packages (make package);
# (c) installs the .deb for this machine with dpkg and checks what it installed;
# (d) checks the installed user units with systemd-analyze: verify, and a security exposure
#     score of at most 3.0;
# (e) starts the installed daemon under systemd-socket-activate and gets a token through the
#     installed helper on the first connection;
# (f) checks `make install` into a staging directory, with ExecStart= rewritten to the prefix;
# (g) removes the package and checks that its files are gone.
#
# It removes any installed blauth package at the end: run it on CI or a scratch machine.
# Every wait is bounded; any failure stops the script with a message saying what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
MAX_EXPOSURE="${MAX_EXPOSURE:-3.0}"
start=$(date +%s)
step() { printf '\n=== packaging: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
fail() { echo "packaging: FAIL: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed (${2:-run .ci/install-deps.sh})"; }

need go "install Go"
need dpkg "this check runs on Debian"
need systemd-analyze
need systemd-socket-activate
need timeout "install coreutils"

work=$(mktemp -d /tmp/blauth-packaging.XXXXXX)
chmod 0700 "$work"
activator_pid=""
cleanup() {
  if [ -n "$activator_pid" ] && kill -0 "$activator_pid" 2>/dev/null; then
    kill "$activator_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step "(a) cross-compile $VERSION for linux and darwin, amd64 and arm64"
packaging/release.sh "$VERSION"
for target in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
  os="${target%/*}" arch="${target#*/}"
  for b in blauthd blauth-helper blauth-proxy; do
    f="bin/${os}_${arch}/$b"
    [ -x "$f" ] || fail "$f was not built"
    info=$(go version -m "$f") || fail "go version -m $f"
    grep -q "GOOS=$os\$" <<<"$info" || fail "$f is not built for $os"
    grep -q "GOARCH=$arch\$" <<<"$info" || fail "$f is not built for $arch"
    grep -q "CGO_ENABLED=0\$" <<<"$info" || fail "$f is not a CGO_ENABLED=0 build"
    grep -q -- "-trimpath=true" <<<"$info" || fail "$f is not a -trimpath build"
    # -trimpath leaves -ldflags out of the build info: look for the string itself.
    grep -qaF -- "$VERSION" "$f" || fail "$f does not carry version $VERSION"
  done
done
echo "packaging: 8 binaries built, static, trimmed, version $VERSION"
# No launchd here: check that the agent is a valid property list whose wrapper script parses.
if command -v python3 >/dev/null 2>&1; then
  script=$(python3 -c '
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["Label"] == "dev.blauth.blauthd", p["Label"]
assert p["RunAtLoad"] is True and p["KeepAlive"] == {"SuccessfulExit": False}
assert p["ProgramArguments"][:2] == ["/bin/sh", "-c"]
print(p["ProgramArguments"][2])' packaging/launchd/dev.blauth.blauthd.plist) ||
    fail "packaging/launchd/dev.blauth.blauthd.plist is not the expected property list"
  sh -n -c "$script" || fail "the launchd agent's wrapper script does not parse"
  grep -q '/usr/local/bin/blauthd ' <<<"$script" || fail "the launchd agent does not run /usr/local/bin/blauthd"
  echo "packaging: launchd agent: valid property list, wrapper parses"
else
  echo "packaging: python3 is not installed; the launchd agent is not checked"
fi

# ---------------------------------------------------------------------------------------------
step "(b) build the packages (make package)"
rm -rf dist
make package VERSION="$VERSION"
arch=$(dpkg --print-architecture)
debs=(dist/blauth_*_"$arch".deb)
[ -f "${debs[0]}" ] || fail "no .deb for $arch in dist/"
[ "${#debs[@]}" -eq 1 ] || fail "more than one .deb for $arch in dist/: ${debs[*]}"
deb="${debs[0]}"
for a in amd64 arm64; do
  ls dist/blauth_*_"$a".deb >/dev/null 2>&1 || fail "no .deb for $a"
done
ls dist/blauth-*.x86_64.rpm dist/blauth-*.aarch64.rpm >/dev/null 2>&1 || fail "the .rpm packages are missing"
if command -v rpm >/dev/null 2>&1; then
  rpm -qlp dist/blauth-*.x86_64.rpm | grep -qx /usr/lib/systemd/user/blauthd.service ||
    fail "the .rpm does not hold the user unit"
else
  echo "packaging: rpm is not installed; the .rpm contents are not inspected"
fi
echo "packaging: $(ls dist | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
step "(c) install $deb and check the installed files"
if dpkg -s blauth >/dev/null 2>&1; then
  echo "packaging: removing a blauth package left from an earlier run"
  dpkg -r blauth >/dev/null
fi
timeout 120 dpkg -i "$deb" || fail "dpkg -i $deb"
dpkg -s blauth | grep -q '^Status: install ok installed' || fail "dpkg does not list blauth as installed"
listed=$(dpkg -L blauth)
for f in /usr/bin/blauthd /usr/bin/blauth-helper /usr/bin/blauth-proxy \
         /usr/lib/systemd/user/blauthd.socket /usr/lib/systemd/user/blauthd.service \
         /usr/lib/systemd/user/blauth-sink@.service \
         /usr/share/doc/blauth/README.md /usr/share/doc/blauth/copyright; do
  grep -qx "$f" <<<"$listed" || fail "dpkg -L blauth does not list $f"
  [ -f "$f" ] || fail "$f is not on disk"
done
for f in /usr/bin/blauthd /usr/bin/blauth-helper /usr/bin/blauth-proxy; do
  [ -x "$f" ] || fail "$f is not executable"
  [ "$(stat -c '%U:%G %a' "$f")" = "root:root 755" ] || fail "$f is $(stat -c '%U:%G %a' "$f"), want root:root 755"
done
for f in /usr/lib/systemd/user/blauthd.socket /usr/lib/systemd/user/blauthd.service /usr/lib/systemd/user/blauth-sink@.service; do
  [ "$(stat -c '%a' "$f")" = 644 ] || fail "$f has mode $(stat -c '%a' "$f"), want 644"
done
out=$(timeout 10 /usr/bin/blauthd --version) || fail "blauthd --version failed"
grep -qF "$VERSION" <<<"$out" || fail "blauthd --version says '$out', want $VERSION"
echo "packaging: installed: $out"

# ---------------------------------------------------------------------------------------------
step "(d) systemd-analyze: verify and security of the installed units"
rt="$work/runtime"
install -d -m 0700 "$rt"
# A template is verified through an instance of it, as systemd would load one.
cp /usr/lib/systemd/user/blauth-sink@.service "$work/blauth-sink@check.token.service"
XDG_RUNTIME_DIR="$rt" timeout 60 systemd-analyze verify --user \
  /usr/lib/systemd/user/blauthd.socket /usr/lib/systemd/user/blauthd.service \
  "$work/blauth-sink@check.token.service" ||
  fail "systemd-analyze verify --user rejects the installed units"
echo "packaging: systemd-analyze verify --user: clean"
XDG_RUNTIME_DIR="$rt" timeout 60 systemd-analyze security --offline=true --user \
  /usr/lib/systemd/user/blauthd.service > "$work/security.txt" 2>&1 || true
line=$(grep 'Overall exposure level' "$work/security.txt") ||
  { cat "$work/security.txt"; fail "no 'Overall exposure level' in the systemd-analyze security output"; }
score=$(sed -E 's/.*: *([0-9]+\.[0-9]+).*/\1/' <<<"$line")
[[ "$score" =~ ^[0-9]+\.[0-9]+$ ]] || fail "cannot read the exposure score from: $line"
echo "packaging: $line"
awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s <= max) }' ||
  { grep '✗' "$work/security.txt" || true; fail "exposure $score is above $MAX_EXPOSURE"; }

# ---------------------------------------------------------------------------------------------
step "(e) socket activation: the installed daemon serves the first connection"
home="$work/home"
install -d -m 0700 "$home"
sock="$work/blauthd.sock"
key="pkg-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
log="$work/blauthd.log"
# Only HOME, PATH, TERM and USER pass by default: name the rest. The daemon's environment is
# the only place that holds the key; the helper is run without it.
XDG_RUNTIME_DIR="$rt" HOME="$home" BL_WORKSPACE=pkg-test BL_API_KEY="$key" \
  systemd-socket-activate -l "$sock" -E XDG_RUNTIME_DIR -E HOME -E BL_API_KEY -E BL_WORKSPACE \
  /usr/bin/blauthd --log-format=console >"$log" 2>&1 &
activator_pid=$!
for _ in $(seq 100); do
  [ -S "$sock" ] && break
  kill -0 "$activator_pid" 2>/dev/null || { cat "$log"; fail "systemd-socket-activate exited"; }
  sleep 0.1
done
[ -S "$sock" ] || { cat "$log"; fail "systemd-socket-activate did not create $sock within 10 s"; }
[ "$(cat /proc/"$activator_pid"/comm 2>/dev/null)" = systemd-socket- ] ||
  fail "blauthd runs before the first connection: it should be started by it"
got=$(cd "$work" && env -u BL_API_KEY -u BL_WORKSPACE -u BL_CLIENT_CREDENTIALS \
  HOME="$home" XDG_RUNTIME_DIR="$rt" BLAUTH_SOCKET="$sock" BLAUTH_NO_SPAWN=1 \
  timeout 20 /usr/bin/blauth-helper token) || { cat "$log"; fail "blauth-helper token failed on the first connection"; }
[ "$got" = "$key" ] || { cat "$log"; fail "blauth-helper token printed '$got', want the daemon's key"; }
echo "packaging: the first connection started blauthd and got the key"
[ "$(cat /proc/"$activator_pid"/comm 2>/dev/null)" = blauthd ] ||
  fail "pid $activator_pid is not blauthd: systemd-socket-activate should have exec'd it"
got=$(cd "$work" && env -u BL_API_KEY HOME="$home" BLAUTH_SOCKET="$sock" BLAUTH_NO_SPAWN=1 \
  timeout 20 /usr/bin/blauth-helper token) || fail "the second request failed"
[ "$got" = "$key" ] || fail "the second request printed '$got'"
grep -qF "$key" "$log" && fail "the daemon's log holds the API key"
kill -TERM "$activator_pid"
for _ in $(seq 100); do
  kill -0 "$activator_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$activator_pid" 2>/dev/null; then
  kill -KILL "$activator_pid" 2>/dev/null || true
  fail "blauthd did not stop within 10 s of SIGTERM"
fi
wait "$activator_pid" 2>/dev/null && rc=0 || rc=$?
activator_pid=""
[ "$rc" -eq 0 ] || { cat "$log"; fail "blauthd exited with status $rc after SIGTERM, want 0"; }
echo "packaging: blauthd stopped cleanly on SIGTERM"

# ---------------------------------------------------------------------------------------------
step "(f) make install into a staging directory"
stage="$work/stage"
make install DESTDIR="$stage" PREFIX=/usr/local >/dev/null
for f in /usr/local/bin/blauthd /usr/local/bin/blauth-helper /usr/local/bin/blauth-proxy; do
  [ -x "$stage$f" ] || fail "make install did not install $f"
done
unit="$stage/usr/local/lib/systemd/user/blauthd.service"
[ -f "$stage/usr/local/lib/systemd/user/blauthd.socket" ] || fail "make install did not install the socket unit"
grep -q '^ExecStart=/usr/local/bin/blauthd ' "$unit" || fail "make install did not point ExecStart= at /usr/local/bin"
grep -q '^ExecReload=/usr/local/bin/blauth-helper ' "$unit" || fail "make install did not point ExecReload= at /usr/local/bin"
[ -f "$stage/usr/local/share/doc/blauth/README.md" ] || fail "make install did not install the documentation"
# verify needs ExecStart='s binary at its path: check a copy that points into the stage.
check="$work/check"
install -d "$check"
cp "$stage/usr/local/lib/systemd/user/blauthd.socket" "$check/"
sed -e "s|^ExecStart=/usr/local/bin/blauthd|ExecStart=$stage/usr/local/bin/blauthd|" \
    -e "s|^ExecReload=/usr/local/bin/blauth-helper|ExecReload=$stage/usr/local/bin/blauth-helper|" "$unit" > "$check/blauthd.service"
grep -q '^ExecStart=/usr/local/bin/blauth-helper sink ' "$stage/usr/local/lib/systemd/user/blauth-sink@.service" ||
  fail "make install did not point the sink unit's ExecStart= at /usr/local/bin"
sed -e "s|^ExecStart=/usr/local/bin/blauth-helper|ExecStart=$stage/usr/local/bin/blauth-helper|" \
  "$stage/usr/local/lib/systemd/user/blauth-sink@.service" > "$check/blauth-sink@check.token.service"
XDG_RUNTIME_DIR="$rt" timeout 60 systemd-analyze verify --user "$check/blauthd.socket" "$check/blauthd.service" \
  "$check/blauth-sink@check.token.service" ||
  fail "systemd-analyze verify rejects the units that make install wrote"
echo "packaging: make install PREFIX=/usr/local: binaries, docs, units with ExecStart=/usr/local/bin/blauthd"
# A prefix systemd does not search: the output says how to link the units, lists every file
# (all of which exist), and make uninstall removes exactly them.
out=$(make -s install DESTDIR="$stage" PREFIX=/opt/blauth)
echo "$out" | grep -q "systemctl --user link /opt/blauth/lib/systemd/user/blauthd.socket" ||
  fail "make install PREFIX=/opt/blauth did not say how to link the units: $out"
listed_files=$(echo "$out" | sed -n 's|^  \('"$stage"'/.*\)$|\1|p')
[ "$(echo "$listed_files" | wc -l)" -ge 6 ] || fail "make install listed too few files: $out"
for f in $listed_files; do [ -f "$f" ] || fail "make install listed $f, which is not there"; done
find "$stage/opt/blauth" -type f | sort > "$work/found"
echo "$listed_files" | sort > "$work/listed"
cmp -s "$work/found" "$work/listed" || fail "make install wrote files it did not list: $(diff "$work/listed" "$work/found")"
make -s uninstall DESTDIR="$stage" PREFIX=/opt/blauth >/dev/null
[ -z "$(find "$stage/opt/blauth" -mindepth 1 2>/dev/null)" ] || fail "make uninstall left: $(find "$stage/opt/blauth" -mindepth 1)"
[ -d "$stage/opt/blauth" ] || fail "make uninstall removed PREFIX itself"
echo "packaging: make install PREFIX=/opt/blauth lists every file and says how to link the units; make uninstall removes them all"

# ---------------------------------------------------------------------------------------------
step "(g) remove the package"
timeout 120 dpkg -r blauth || fail "dpkg -r blauth"
dpkg -s blauth 2>/dev/null | grep -q '^Status: install ok installed' && fail "blauth is still installed"
for f in $listed; do
  [ -d "$f" ] && continue
  [ -e "$f" ] && fail "$f is still there after dpkg -r"
done
[ -e /usr/share/doc/blauth ] && fail "/usr/share/doc/blauth is still there after dpkg -r"
echo "packaging: every installed file is gone"

step "passed"
