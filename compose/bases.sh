#!/usr/bin/env bash
# Stand-ins for the base images compose/Dockerfile names, for machines that cannot reach Docker Hub but have
# a Debian mirror (this project's CI): made with mmdebstrap and imported into podman under the names the
# Dockerfile uses, so that it builds unchanged.
#
#   compose/bases.sh [python|node|redis|all]     (root; podman, mmdebstrap; default: python and node)
#
#   docker.io/library/python:3.11-slim   Debian bookworm (minbase) with the runtime libraries CPython needs and
#                                        this machine's CPython 3.11 in /usr/local (Debian's own 3.11.2 is too
#                                        old for the lock: redis pulls async-timeout below 3.11.3)
#   docker.io/library/node:22-slim       the same Debian with this machine's Node and npm
#   docker.io/library/redis:7.4          Debian's redis-server (7.0) for the smoke test's Redis container
#
# The machine's CA certificates go in too (the sandbox's egress CA): pip and npm inside the build verify with
# them (PIP_CERT, NODE_EXTRA_CA_CERTS). An image that exists already is kept (podman rmi it to make it again).
set -euo pipefail

what=${1:-default}
suite=bookworm
mirror=${DEBIAN_MIRROR:-}  # empty: mmdebstrap takes the machine's apt sources
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python_libs="libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libuuid1,zlib1g,libexpat1"
common="ca-certificates,netbase,tzdata"
certs=(/usr/local/share/ca-certificates/*.crt)

exists() { podman image exists "$1"; }

# mmdebstrap NAME PACKAGES HOOK...: a minbase root file system as a tarball in $work/NAME.tar
debootstrap() {
  local name=$1 packages=$2
  shift 2
  local hooks=()
  if [ -e "${certs[0]}" ]; then
    hooks+=(--customize-hook="cp ${certs[*]} \"\$1/usr/local/share/ca-certificates/\" && chroot \"\$1\" update-ca-certificates >/dev/null")
  fi
  hooks+=("$@")
  # shellcheck disable=SC2086  # the mirror is one word or none
  mmdebstrap --quiet --variant=minbase --include="$packages" --format=tar "${hooks[@]}" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' "$suite" "$work/$name.tar" $mirror
}

# import_base NAME TAG CHANGE...: $work/NAME.tar as image TAG, with /usr/local first on PATH
import_base() {
  local name=$1 tag=$2
  shift 2
  local changes=(--change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin')
  for change in "$@"; do changes+=(--change "$change"); done
  podman import --quiet "${changes[@]}" "$work/$name.tar" "$tag" >/dev/null
}

make_python() {
  local tag=docker.io/library/python:3.11-slim
  if exists "$tag"; then echo "bases: $tag exists"; return; fi
  local prefix version
  prefix=$(python3 -c 'import sys; print(sys.base_prefix)')
  version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$version" = "3.11" ] || { echo "bases: python3 here is $version; the image needs 3.11" >&2; exit 1; }
  # CPython without the packages this machine installed into it (site-packages) and without its test suite.
  tar -C "$prefix" -cf "$work/cpython.tar" --exclude='lib/python3.11/site-packages/*' \
    --exclude='lib/python3.11/test' --exclude='lib/python3.11/idlelib' \
    bin/python3.11 lib/libpython3.11.so lib/libpython3.11.so.1.0 lib/python3.11
  debootstrap python "$common,$python_libs" \
    --customize-hook="tar -C \"\$1/usr/local\" -xf $work/cpython.tar" \
    --customize-hook='ln -s python3.11 "$1/usr/local/bin/python3" && ln -s python3.11 "$1/usr/local/bin/python"' \
    --customize-hook='chroot "$1" ldconfig'
  import_base python "$tag" 'ENV LANG=C.UTF-8' 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' 'CMD ["python3"]'
  echo "bases: made $tag (CPython from $prefix)"
}

make_node() {
  local tag=docker.io/library/node:22-slim
  if exists "$tag"; then echo "bases: $tag exists"; return; fi
  local node npm
  node=$(command -v node)
  npm=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  debootstrap node "$common,libstdc++6" \
    --customize-hook="cp $node \"\$1/usr/local/bin/node\" && mkdir -p \"\$1/usr/local/lib/node_modules\"" \
    --customize-hook="cp -r $npm \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"'
  import_base node "$tag" 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' 'CMD ["node"]'
  echo "bases: made $tag (Node $("$node" --version))"
}

make_redis() {
  local tag=docker.io/library/redis:7.4
  if exists "$tag"; then echo "bases: $tag exists"; return; fi
  debootstrap redis "$common,redis-server,redis-tools" \
    --customize-hook='mkdir -p "$1/data" && chroot "$1" chown redis:redis /data'
  podman import --quiet --change 'WORKDIR /data' --change 'USER redis' --change 'CMD ["redis-server"]' \
    "$work/redis.tar" "$tag" >/dev/null
  echo "bases: made $tag (Debian's redis-server)"
}

case $what in
  python) make_python ;;
  node) make_node ;;
  redis) make_redis ;;
  default) make_python; make_node ;;
  all) make_python; make_node; make_redis ;;
  *) echo "usage: compose/bases.sh [python|node|redis|all]" >&2; exit 2 ;;
esac
