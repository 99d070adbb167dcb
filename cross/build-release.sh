#!/usr/bin/env bash
# Builds the static release binaries into dist/: sudo-agent-aarch64-unknown-linux-musl
# (Jetson, Raspberry Pi 4/5 on a 64-bit OS) and sudo-agent-x86_64-unknown-linux-musl,
# stripped, with dist/SHA256SUMS.
#
# Uses cross when it is installed and Docker (or Podman) answers, else cargo with
# rust-lld (.cargo/config.toml): no C cross toolchain either way. BUILDER=cargo or
# BUILDER=cross forces one.
#
# usage: cross/build-release.sh [TARGET...]     (default: both targets)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)

if [ -z "${BUILDER:-}" ]; then
    BUILDER=cargo
    if command -v cross >/dev/null &&
        { docker info >/dev/null 2>&1 || podman info >/dev/null 2>&1; }; then
        BUILDER=cross
    fi
fi
export CROSS_CONFIG="$PWD/cross/Cross.toml"
echo "building ${targets[*]} with $BUILDER"

mkdir -p dist
for target in "${targets[@]}"; do
    if [ "$BUILDER" = cargo ] && command -v rustup >/dev/null; then
        rustup target add "$target" >/dev/null 2>&1
    fi
    "$BUILDER" build --release --locked --target "$target"
    out="dist/sudo-agent-$target"
    cp "target/$target/release/sudo-agent" "$out"
    # Stripped at link time (Cargo.toml: [profile.release] strip = true), by rust-lld
    # or cross's linker alike, so no strip for a foreign architecture is needed here.
    if command -v file >/dev/null && ! file "$out" | grep -q ', stripped'; then
        echo "$out is not stripped: is strip = true still in [profile.release]?" >&2
        exit 1
    fi
    printf '%s: %s bytes\n' "$out" "$(stat -c %s "$out")"
done
(cd dist && sha256sum sudo-agent-* >SHA256SUMS && cat SHA256SUMS)
