#!/usr/bin/env bash
# The aarch64 binary on an arm64 kernel, not under qemu-user: qemu-user answers `clone3`
# with ENOSYS, so the agent's one piece of assembly for aarch64 (the `clone3`
# trampoline that starts each job in its cgroup) never ran in the test suite. This
# boots Debian's arm64 kernel (its .deb fetched from the mirror's arm64 index, cached)
# in `qemu-system-aarch64 -M virt` (TCG: a whole emulated Cortex-A72, the kernel's
# system calls as on a Pi), with an initramfs of Debian's static arm64 busybox, the
# static aarch64 sudo-agent and tests/vm/inside-aarch64.sh as /init: pure cgroup v2,
# the agent started, jobs sent with its own `run` client and busybox's wget. It checks
# that jobs start in their cgroups through `clone3`, the read-only sandbox, the memory,
# pids and cpu limits, and a timeout that leaves no process. No systemd: that is
# tests/vm/run.sh's, on x86-64.
#
# Needs root, qemu-system-arm, cpio, xz-utils, curl, dpkg-deb and
# dist/sudo-agent-aarch64-unknown-linux-musl (cross/build-release.sh). A missing one
# is a loud skip, or a failure with CI=true.
#
# usage: tests/vm/aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/vm/lib.sh # VM, step, boot_vm, vm_verdict; CACHE, say, fail, skip

[ "$(id -u)" = 0 ] || skip "needs root (the cache in $CACHE)"
for tool in qemu-system-aarch64 cpio xz curl dpkg-deb flock; do
    command -v "$tool" >/dev/null || skip "$tool is missing (apt-get install qemu-system-arm cpio xz-utils curl)"
done
# /init passes the clone3 check when the agent's log lacks this warning, so the
# warning must still be the agent's.
grep -q '"jobs will move themselves into their cgroups: ' src/sys/cgroup.rs ||
    fail "src/sys/cgroup.rs no longer warns 'jobs will move themselves into their cgroups'; update tests/vm/inside-aarch64.sh"
AGENT=dist/sudo-agent-aarch64-unknown-linux-musl
[ -x "$AGENT" ] || skip "$AGENT is missing (run: bash cross/build-release.sh aarch64-unknown-linux-musl)"

step "Debian's arm64 kernel and static busybox (the mirror's arm64 index; cached in $CACHE)"
MIRROR=$(debian_mirror)
curl -fsS "$MIRROR/dists/bookworm/main/binary-arm64/Packages.xz" | xz -dc >"$VM/Packages" ||
    fail "cannot fetch $MIRROR/dists/bookworm/main/binary-arm64/Packages.xz"
# field PACKAGE FIELD: that field of the package in the index (its first word).
field() {
    awk -v want="$1" -v field="$2:" '
        /^Package: / { pkg = $2 }
        pkg == want && $1 == field { print $2; exit }' "$VM/Packages"
}
fetch() { # PACKAGE DIR: the package unpacked in DIR, once
    local file
    file=$(field "$1" Filename)
    [ -n "$file" ] || fail "no $1 in the arm64 index"
    if [ "$(cat "$2.stamp" 2>/dev/null)" != "$file" ]; then
        rm -rf "$2" && mkdir -p "$2"
        curl -fsS -o "$VM/pkg.deb" "$MIRROR/$file" || fail "cannot fetch $MIRROR/$file"
        dpkg-deb -x "$VM/pkg.deb" "$2"
        echo "$file" >"$2.stamp"
    fi
    say "$file"
}
mkdir -p "$CACHE"
exec 8>"$CACHE/vm.lock"
flock 8
# The kernel the metapackage points at.
fetch "$(field linux-image-arm64 Depends)" "$CACHE/vm-arm64-kernel"
fetch busybox-static "$CACHE/vm-arm64-busybox"
flock -u 8
KERNEL=$(ls "$CACHE"/vm-arm64-kernel/boot/vmlinuz-*)

step "initramfs: busybox, the agent, the checks as /init"
INITRD="$VM/initrd"
mkdir -p "$INITRD"/{bin,usr/bin,usr/local/bin,etc}
cp "$CACHE/vm-arm64-busybox/bin/busybox" "$INITRD/bin/busybox"
cp "$AGENT" "$INITRD/usr/bin/sudo-agent"
install -m 0755 tests/vm/inside-aarch64.sh "$INITRD/init"
install -m 0755 tests/vm/bin-aarch64/* "$INITRD/usr/local/bin/"
install -m 0644 tests/vm/aarch64-config.json "$INITRD/etc/vmtest-config.json"
(cd "$INITRD" && find . | cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 >"$VM/initrd.gz")

step "boot (qemu-system-aarch64 -M virt, TCG) and run the checks"
boot_vm qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nic none \
    -kernel "$KERNEL" -initrd "$VM/initrd.gz" -append "console=ttyAMA0 panic=-1 quiet"
vm_verdict
