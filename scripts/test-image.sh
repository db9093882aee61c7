#!/usr/bin/env bash
# Builds a busybox OCI image with umoci (no registry needed for that) and
# serves it from Debian's docker-registry on 127.0.0.1, for the node agent's
# tests and the quick start (no public registry is reachable here).
#
#   scripts/test-image.sh [--dir DIR] [--port PORT]   build, serve, push; prints HOST:PORT
#   scripts/test-image.sh [--dir DIR] --stop          stop that registry
#
# Images served (HOST:PORT as printed):
#   HOST:PORT/busybox:latest   busybox with every applet, cmd `sh`
#   HOST:PORT/busybox:pause    the same layer, cmd `sleep infinity`: a pod sandbox ("pause") image
#
# Idempotent: the image is built once per DIR (default /tmp/tug-test-image),
# a registry already answering on PORT (default 5000) is reused, and pushing
# an image that is already there is a no-op. Needs root (umoci unpack keeps
# file ownership) and the packages of scripts/setup.sh.
set -euo pipefail

dir="${TUG_TEST_IMAGE_DIR:-/tmp/tug-test-image}"
port="${TUG_TEST_REGISTRY_PORT:-5000}"
stop=0
while (($#)); do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "test-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
addr="127.0.0.1:$port"
pidfile="$dir/registry-$port.pid"

if ((stop)); then
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  exit 0
fi

for tool in umoci skopeo docker-registry busybox curl; do
  command -v "$tool" >/dev/null || { echo "test-image: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done

# One builder at a time per DIR (tests may call this concurrently).
exec 9>"$dir/.lock"
flock 9

oci="$dir/oci"
if [ ! -f "$dir/.built" ]; then
  rm -rf "$oci" "$dir/bundle"
  umoci init --layout "$oci"
  umoci new --image "$oci:busybox"
  umoci unpack --image "$oci:busybox" "$dir/bundle" >/dev/null
  root="$dir/bundle/rootfs"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,var/www,root,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp "$(readlink -f "$(command -v busybox)")" "$root/bin/busybox"
  # Link every applet except `busybox` itself (linking that one would
  # replace the binary with a link to itself).
  busybox --list-full | while read -r applet; do
    [ "$(basename "$applet")" = busybox ] && continue
    ln -sf /bin/busybox "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo "tugboat test image" >"$root/var/www/index.html"
  umoci repack --image "$oci:busybox" "$dir/bundle"
  rm -rf "$dir/bundle"
  umoci config --image "$oci:busybox" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir / --config.cmd sh
  umoci config --image "$oci:busybox" --tag pause --config.cmd sleep --config.cmd infinity
  umoci gc --layout "$oci"
  touch "$dir/.built"
fi

# The registry: reuse one that answers, else start ours (detached, so it
# outlives this script; `--stop` ends it).
if ! curl -fsS "http://$addr/v2/" >/dev/null 2>&1; then
  mkdir -p "$dir/registry-$port"
  cat >"$dir/registry-$port.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry-$port
  delete:
    enabled: true
http:
  addr: $addr
EOF
  setsid docker-registry serve "$dir/registry-$port.yml" >"$dir/registry-$port.log" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    curl -fsS "http://$addr/v2/" >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "test-image: docker-registry exited:" >&2
      cat "$dir/registry-$port.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  curl -fsS "http://$addr/v2/" >/dev/null || { echo "test-image: registry on $addr did not answer" >&2; exit 1; }
fi

for tag in latest pause; do
  src=busybox
  [ "$tag" = pause ] && src=pause
  if ! curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$addr/v2/busybox/manifests/$tag" 2>/dev/null; then
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
      "oci:$oci:$src" "docker://$addr/busybox:$tag" >&2
  fi
done

echo "$addr"
