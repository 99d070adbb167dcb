#!/usr/bin/env bash
# Job limits on a pure cgroup v2 box, for real: the machine CI runs on has cgroups in
# hybrid mode (memory, pids and cpu on v1), so there the limit tests skip. Jetson and
# Raspberry Pi OS boot systemd on the unified hierarchy. This boots such a box as a
# virtual machine: Debian's own kernel (downloaded with apt, cached), the fleet's
# debootstrapped bookworm tree (tests/fleet/lib.sh) on an ext4 disk image, systemd as
# PID 1 with systemd.unified_cgroup_hierarchy=1, the amd64 .deb installed and a config
# with limits. tests/vm/inside.py then talks HTTP to the agent inside and reads the
# kernel's files: memory.max enforced (the job killed, `killed_by: memory_limit`),
# pids.max stopping a fork bomb, cpu.max throttling, a timeout and `systemctl stop`
# leaving no process behind. Its VMTEST lines come back on the serial console.
#
# qemu-system-x86_64 runs with TCG (no KVM: nested KVM hangs on this kind of machine);
# SUDO_AGENT_VM_ACCEL=kvm uses KVM where it works. The VM, its disk and its temp files
# are gone when this ends, failed or not.
#
# Needs root, qemu-system-x86, busybox-static, cpio, kmod, e2fsprogs, debootstrap,
# dpkg-deb and the amd64 .deb (deploy/deb/build.sh, after cross/build-release.sh). A
# missing one is a loud skip, or a failure with CI=true.
#
# usage: tests/vm/run.sh [TEST...]   (TEST: only these integration tests run inside, e.g.
#        containment::limits_are_written_to_the_jobs_own_cgroup; for a failure's second look)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
source tests/vm/lib.sh # VM, step, boot_vm, vm_verdict; CACHE, BASE, ensure_base, say, fail, skip

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, dpkg -i into the image)"
for tool in qemu-system-x86_64 busybox file cpio depmod modprobe mkfs.ext4 debootstrap dpkg-deb apt-get flock; do
    command -v "$tool" >/dev/null ||
        skip "$tool is missing (apt-get install qemu-system-x86 busybox-static cpio kmod e2fsprogs debootstrap)"
done
# The initramfs has no C library: busybox must be the static build.
case "$(file -L "$(command -v busybox)")" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) skip "$(command -v busybox) is not statically linked (apt-get install busybox-static)" ;;
esac
VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
DEB="$REPO/dist/sudo-agent_${VERSION//-/\~}_amd64.deb"
[ -f "$DEB" ] || skip "$DEB is missing (run: bash cross/build-release.sh x86_64-unknown-linux-musl aarch64-unknown-linux-musl && bash deploy/deb/build.sh amd64)"

step "Debian's kernel (apt-get download, cached in $CACHE)"
# The kernel the metapackage points at, unpacked once per version.
kernel_pkg() {
    (cd "$VM" && apt-get download -q linux-image-amd64 >/dev/null 2>&1) ||
        fail "apt-get download linux-image-amd64 failed (apt-get update first?)"
    dpkg-deb -f "$VM"/linux-image-amd64_*.deb Depends | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p'
}
PKG=$(kernel_pkg)
[ -n "$PKG" ] || fail "cannot tell which kernel linux-image-amd64 depends on"
KROOT="$CACHE/vm-$PKG"
exec 8>"$CACHE/vm.lock"
flock 8
if [ ! -f "$KROOT.stamp" ]; then
    rm -rf "$KROOT" && mkdir -p "$KROOT"
    (cd "$VM" && apt-get download -q "$PKG" >/dev/null 2>&1) || fail "apt-get download $PKG failed"
    dpkg-deb -x "$VM/$PKG"_*.deb "$KROOT"
    touch "$KROOT.stamp"
fi
flock -u 8
KV=$(ls "$KROOT/lib/modules")
depmod -b "$KROOT" "$KV"
say "$PKG ($KV)"

step "the integration tests, built for this Debian (cargo test --no-run)"
SUITE_BIN=$(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tests" and m.get("executable"):
        print(m["executable"])')
SUITE_AGENT="$REPO/target/debug/sudo-agent"
[ -x "$SUITE_BIN" ] && [ -x "$SUITE_AGENT" ] || fail "cargo test --no-run built no tests binary"
say "$SUITE_BIN"

step "the booted tree: the fleet's bookworm, the .deb installed, a config with limits"
ensure_base
ROOT="$VM/root"
cp -a "$BASE" "$ROOT"
cp "$DEB" "$ROOT/root/sudo-agent.deb"
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" dpkg -i /root/sudo-agent.deb >"$VM/dpkg.log" 2>&1 || { cat "$VM/dpkg.log" >&2; fail "dpkg -i failed"; }
chroot "$ROOT" sudo-agent init --config /etc/sudo-agent/config.json --uri-file /root/uri >/dev/null
umount "$ROOT/proc"
rm "$ROOT/root/sudo-agent.deb"
install -m 0755 tests/vm/bin/own-cgroup tests/vm/bin/fork-many tests/vm/bin/escape "$ROOT/usr/local/bin/"
install -m 0755 tests/vm/inside.py "$ROOT/root/inside.py"
# The owner's edit: rules without codes (the driver has no phone), each with limits.
cat >"$ROOT/etc/sudo-agent/config.json" <<'EOF'
{
  "listen": "127.0.0.1:9999",
  "secret_file": "/etc/sudo-agent/secret",
  "jobs": {"kill_grace_s": 2},
  "rules": [
    {"name": "own-cgroup", "argv": ["/usr/local/bin/own-cgroup"], "no_pin": true,
     "limits": {"memory_max": 67108864, "tasks_max": 16, "cpu_max_percent": 50}},
    {"name": "hog", "argv": ["/usr/bin/tail", "/dev/zero"], "no_pin": true,
     "limits": {"memory_max": 33554432}},
    {"name": "self-kill", "argv": ["/bin/sh", "-c", "kill -9 $$"], "no_pin": true,
     "limits": {"memory_max": 33554432}},
    {"name": "fork-many", "argv": ["/usr/local/bin/fork-many"], "no_pin": true,
     "limits": {"tasks_max": 8}},
    {"name": "escape", "argv": ["/usr/local/bin/escape"], "no_pin": true, "timeout_s": 2}
  ]
}
EOF
chmod 600 "$ROOT/etc/sudo-agent/config.json"
cat >"$ROOT/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=sudo-agent on pure cgroup v2 (tests/vm/inside.py)
After=sudo-agent.socket
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /root/inside.py
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStopPost=/usr/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/vmtest.service "$ROOT/etc/systemd/system/multi-user.target.wants/vmtest.service"
# No login prompt on the console the results come back on.
ln -sf /dev/null "$ROOT/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$ROOT/etc/systemd/system/getty@tty1.service"
# The tree has no SSH host keys (the fleet's containers make their own); none needed.
ln -sf /dev/null "$ROOT/etc/systemd/system/ssh.service"
echo vm >"$ROOT/etc/hostname"
# The integration test binary and the agent binary it starts, put back at the paths
# compiled in by inside.py (a clone under /tmp would be emptied at boot by tmpfiles).
mkdir -p "$ROOT/root/suite"
cp "$SUITE_BIN" "$ROOT/root/suite/tests"
cp "$SUITE_AGENT" "$ROOT/root/suite/sudo-agent"
printf '%s\n%s\n' "$SUITE_BIN" "$SUITE_AGENT" >"$ROOT/root/suite/paths"

step "disk image and initramfs"
mkfs.ext4 -q -F -L vmroot -d "$ROOT" "$VM/root.img" 1200M
rm -rf --one-file-system "$ROOT"
# busybox and the modules the root disk needs (virtio and ext4 are modules in Debian's
# kernel), loaded in order by the initramfs's /init.
INITRD="$VM/initrd"
mkdir -p "$INITRD"/{bin,dev,proc,sys,mnt,mod}
cp "$(command -v busybox)" "$INITRD/bin/busybox"
: >"$INITRD/load"
# loop: tests/containment.rs unmounts an ext4 disk on a loop device under the agent.
for module in virtio_pci virtio_blk ext4 loop; do
    while read -r _ ko _; do
        [ -f "$ko" ] && [ ! -f "$INITRD/mod/${ko##*/}" ] || continue
        cp "$ko" "$INITRD/mod/"
        echo "insmod /mod/${ko##*/}" >>"$INITRD/load"
    done < <(modprobe -d "$KROOT" -S "$KV" --show-depends "$module")
done
cat >"$INITRD/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
. /load
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /mnt || { echo "VMTEST FAIL: cannot mount the root disk"; poweroff -f; }
umount /proc /sys
mount -o move /dev /mnt/dev
exec switch_root /mnt /lib/systemd/systemd
EOF
chmod 755 "$INITRD/init"
(cd "$INITRD" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$VM/initrd.gz")
say "$(wc -l <"$INITRD/load") modules in the initramfs"

step "boot (qemu-system-x86_64, ${SUDO_AGENT_VM_ACCEL:-tcg}) and run tests/vm/inside.py"
ACCEL=${SUDO_AGENT_VM_ACCEL:-tcg}
[ "$ACCEL" = tcg ] && ACCEL=tcg,thread=multi
boot_vm qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp 2 -m 1024 -nic none \
    -kernel "$KROOT/boot/vmlinuz-$KV" -initrd "$VM/initrd.gz" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet systemd.unified_cgroup_hierarchy=1 sudo_agent_vm.tests=$(IFS=,; echo "$*")" \
    -drive "file=$VM/root.img,if=virtio,format=raw"
vm_verdict
