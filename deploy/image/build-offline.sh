#!/usr/bin/env bash
# Build (and smoke-run) the image with no container registry: the base is made
# from Debian's packages with mmdebstrap, the wheels come from this host's
# package index, and podman builds with no network. Needs root and Debian's
# podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap).
#   deploy/image/build-offline.sh [TAG]      (default: localhost/inference-router:dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-localhost/inference-router:dev}"
base=localhost/router-base:bookworm
python="${PYTHON:-python3}"
# This VM's limits: podman's default rlimits exceed its hard limits, and crun
# refuses its hybrid cgroups (runc copes).
run_opts=(--runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

if ! podman image exists "$base"; then
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm deploy/image/base.tar
    podman import deploy/image/base.tar "$base"
    rm -f deploy/image/base.tar
fi
# Every wheel the build stage installs (Debian bookworm's Python is 3.11: the
# host's must be too, for the compiled wheels to match).
"$python" -m pip wheel --quiet --wheel-dir deploy/image/wheels hatchling \
    ./packages/router-core "./packages/router-server[bedrock,vertex]" ./packages/router-cli
# docker format: OCI images have no HEALTHCHECK.
podman "${run_opts[@]}" build --format docker --network none "${limits[@]}" \
    --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 \
    -f deploy/Dockerfile -t "$tag" .
podman "${run_opts[@]}" run --rm --network none "${limits[@]}" --entrypoint router "$tag" --version

# Run it: the shipped example config, the data on the image's volume, as the
# non-root user; healthy once the HEALTHCHECK's request to /healthz answers.
name="router-image-check-$$"
podman "${run_opts[@]}" run --detach --name "$name" --network none "${limits[@]}" "$tag" >/dev/null
trap 'podman "${run_opts[@]}" rm --force --time 10 "$name" >/dev/null' EXIT
for _ in $(seq 60); do
    if podman "${run_opts[@]}" healthcheck run "$name" >/dev/null 2>&1; then
        echo "healthy: $(podman "${run_opts[@]}" exec "$name" sh -c 'echo uid $(id -u); ls /var/lib/router')"
        podman "${run_opts[@]}" exec "$name" sh -c '! command -v pip && ! command -v gcc' >/dev/null \
            || { echo "pip or a compiler in the final image" >&2; exit 1; }
        podman "${run_opts[@]}" stop --time 20 "$name" >/dev/null
        podman "${run_opts[@]}" logs "$name" 2>&1 | tail -3
        exit 0
    fi
    sleep 1
done
echo "the container never became healthy:" >&2
podman "${run_opts[@]}" logs "$name" >&2
exit 1
